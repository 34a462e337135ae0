"""Encrypted prediction with FHELogisticRegression on breast_cancer, end to end.

Fit in the clear, compile, then predict 100 held-out rows encrypted in ONE batch: the
client quantizes and encrypts every row, the server computes the integer scores
q_x @ q_W + q_b on ciphertexts (no secret key, no bootstrapping), the client decrypts,
dequantizes and applies the sigmoid/argmax.  Prints accuracy (encrypted vs clear quantized
vs float scikit-learn) and the per-sample latency.

    python examples/quickstart.py
"""
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fheml.linear_model import FHELogisticRegression
from fheml.quantization import FHEMLClipWarning

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=100, random_state=0,
                                                    stratify=y)

# The scaler runs in the clear on the client; the FHE model is the last step.
model = make_pipeline(StandardScaler(), FHELogisticRegression(n_bits=8))
model.fit(X_train, y_train)
fhe_model = model[-1]
float_model = make_pipeline(model[0], fhe_model.sklearn_model_)  # same fit, float weights

t0 = time.perf_counter()
circuit = fhe_model.compile(model[0].transform(X_train))
t1 = time.perf_counter()
circuit.keygen()                                           # once; reused by every predict
t2 = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", FHEMLClipWarning)
    y_enc = model.predict(X_test, execute_in_fhe=True)     # one encrypted batch of 100 rows
    t3 = time.perf_counter()
    y_clear = model.predict(X_test)                        # fhe="disable": same integers
clipped = [w for w in caught if issubclass(w.category, FHEMLClipWarning)]
y_float = float_model.predict(X_test)

print(f"circuit: {circuit.max_bit_width}-bit integer scores, no lookup ({circuit.parameters})")
print(f"compile {t1 - t0:.3f} s, keygen {t2 - t1:.3f} s")
print(f"accuracy: encrypted {np.mean(y_enc == y_test):.4f}, clear quantized "
      f"{np.mean(y_clear == y_test):.4f}, float {np.mean(y_float == y_test):.4f}")
print(f"encrypted == clear on {100 * np.mean(y_enc == y_clear):.1f}% of rows")
print(f"per-sample latency (encrypt + run + decrypt, batch of {len(X_test)}): "
      f"{1e3 * (t3 - t2) / len(X_test):.2f} ms")
if clipped:
    print(f"note: {clipped[0].message}".split(";")[0] + " (held-out rows; expected, see docs)")
