"""A client of the HTTP service in its own process (used by test_http.py).

    python http_client_process.py URL MODEL_DIR KEY_DIR X.npy OUT.npy ROUNDS

Uploads its evaluation keys once, then sends ROUNDS encrypted batches of the rows of X.npy
and saves the probabilities of the last one (every round must give the same answer).
"""

import sys

import numpy as np

from fheml.deployment.http_client import HTTPClient


def main(url, model_dir, key_dir, x_path, out_path, rounds):
    client = HTTPClient(url, model_dir, key_dir=key_dir, timeout=120)
    client.upload_keys()
    X = np.load(x_path, allow_pickle=False)
    answers = [client.predict(X, method="predict_proba") for _ in range(int(rounds))]
    for other in answers[1:]:
        np.testing.assert_array_equal(other, answers[0])
    np.save(out_path, answers[0], allow_pickle=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
