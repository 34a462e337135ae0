"""Deploy a model: the developer saves it, a client and a server exchange only bytes.

The developer fits and saves FHELinearSVC (iris) into two artifacts; the client (who owns
the data and the secret key) quantizes and encrypts a batch; the server (who has the
circuit and the client's evaluation keys, no secret) computes on the ciphertexts; the client
decrypts and gets the labels the model would predict.

    python examples/deployment.py
"""
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer
from fheml.linear_model import FHELinearSVC

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=30, random_state=0,
                                                    stratify=y)
root = Path(tempfile.mkdtemp())

# Developer: fit, save (compiles the model).
model = FHELinearSVC(C=0.5).fit(X_train, y_train)
FHEModelDev(root / "model", model).save()
for name in ("server.fheml", "client.fheml"):
    print(f"{name}: {(root / 'model' / name).stat().st_size} bytes")

# Client: keys (secret key stays in key_dir, mode 0600), encrypt a batch.
client = FHEModelClient(root / "model", key_dir=root / "keys")
evaluation_keys = client.get_serialized_evaluation_keys()
t0 = time.perf_counter()
request = client.quantize_encrypt_serialize(X_test)

# Server: only bytes in, bytes out.
server = FHEModelServer(root / "model")
answer = server.run(request, evaluation_keys)

# Client: decrypt and post-process.
labels = client.deserialize_decrypt_dequantize(answer, method="predict")
scores = client.deserialize_decrypt_dequantize(answer, method="decision_function")
t1 = time.perf_counter()
print(f"evaluation keys {len(evaluation_keys)} B, request {len(request)} B, "
      f"answer {len(answer)} B, round trip {1e3 * (t1 - t0):.1f} ms for {len(X_test)} rows")
print(f"encrypted labels == model.predict: {np.array_equal(labels, model.predict(X_test))}; "
      f"accuracy {np.mean(labels == y_test):.3f}; scores shape {scores.shape}")
assert np.array_equal(labels, model.predict(X_test))
