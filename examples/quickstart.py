"""Encrypted prediction of a logistic regression on breast_cancer, end to end.

The client quantizes and encrypts the rows, the server computes the integer scores
x_q @ W_q + b_q on ciphertexts (no secret key), the client decrypts and takes the argmax.
Prints accuracy (encrypted vs clear quantized vs float scikit-learn) and per-sample latency.
"""
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fheml._core import SecretKeys, select_parameters

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=100, random_state=0, stratify=y)
scaler = StandardScaler().fit(X_train)
model = LogisticRegression(max_iter=1000).fit(scaler.transform(X_train), y_train)

# Quantize: inputs to 8 unsigned bits on the training range, weights to 8 signed bits.
n_bits = 8
Z_train, Z_test = scaler.transform(X_train), scaler.transform(X_test)
lo, hi = Z_train.min(axis=0), Z_train.max(axis=0)
s_x = (hi - lo) / (2**n_bits - 1)
q = lambda Z: np.clip(np.round((Z - lo) / s_x), 0, 2**n_bits - 1).astype(np.int64)
w = model.coef_[0] * s_x  # fold the input scale into the weights
s_w = np.abs(w).max() / (2 ** (n_bits - 1) - 1)
W = np.round(w / s_w).astype(np.int64)
b = model.intercept_[0] + model.coef_[0] @ lo  # clear offset, added after decryption
acc_bits = int(np.ceil(np.log2(np.abs(W).sum() * (2**n_bits - 1) + 1))) + 1

params = select_parameters(acc_bits, p_error=2.0**-40, norm2=float(np.linalg.norm(W)), bootstrap=False)
t0 = time.perf_counter()
sk = SecretKeys.generate(params)
t1 = time.perf_counter()
ct = sk.encrypt(q(Z_test), precision=acc_bits)          # client: one batch of 100 rows
t2 = time.perf_counter()
scores_ct = ct @ W                                        # server: encrypted integer scores
t3 = time.perf_counter()
scores = sk.decrypt(scores_ct, precision=acc_bits, signed=True) * s_w + b   # client
t4 = time.perf_counter()

pred_fhe = (scores > 0).astype(int)
pred_clear = ((q(Z_test) @ W) * s_w + b > 0).astype(int)
pred_float = model.predict(Z_test)
print(f"parameters: {params}")
print(f"accuracy  encrypted {np.mean(pred_fhe == y_test):.3f}   clear quantized "
      f"{np.mean(pred_clear == y_test):.3f}   float {np.mean(pred_float == y_test):.3f}")
print(f"encrypted == clear on {np.mean(pred_fhe == pred_clear):.1%} of rows")
n = len(y_test)
print(f"latency per sample (batch of {n}): encrypt {(t2 - t1) / n * 1e3:.3f} ms, run "
      f"{(t3 - t2) / n * 1e3:.3f} ms, decrypt {(t4 - t3) / n * 1e3:.3f} ms; keygen {t1 - t0:.3f} s")
