"""Time Concrete ML's deployment API on the model of bench_http.py (the peer's side).

Run by the peer's interpreter (``$FHEML_PEER_PYTHON``, with concrete-ml installed), never
by fheml's.  Fits concrete-ml's LogisticRegression(n_bits=8) on the first 469 rows of
breast_cancer (the rows bench_http.py trains on), saves it with FHEModelDev, then times in
one process: key generation, the evaluation-key size, and requests of 1 and of 100 rows
through FHEModelClient.quantize_encrypt_serialize / FHEModelServer.run /
deserialize_decrypt_dequantize (a 100-row request is one batched call when the API takes
it, else 100 one-row requests; ``batched`` says which).

Output (stdout): one JSON object.  Progress goes to stderr.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer


def log(*msg):
    print(*msg, file=sys.stderr, flush=True)


def main(n_requests):
    from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer
    from concrete.ml.sklearn import LogisticRegression

    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # native code may write to fd 1: keep stdout for the JSON
    warnings.simplefilter("ignore")
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(n_bits=8, solver="newton-cholesky").fit(X[:469], y[:469])
    model.compile(X[:469])
    root = tempfile.mkdtemp()
    try:
        FHEModelDev(os.path.join(root, "model"), model).save()
        client = FHEModelClient(os.path.join(root, "model"), key_dir=os.path.join(root, "keys"))
        t0 = time.perf_counter()
        client.generate_private_and_evaluation_keys()
        keys = client.get_serialized_evaluation_keys()
        keygen_s = time.perf_counter() - t0
        server = FHEModelServer(os.path.join(root, "model"))
        server.load()

        def request(rows):
            answer = server.run(client.quantize_encrypt_serialize(rows), keys)
            return client.deserialize_decrypt_dequantize(answer)

        out = {"peer": "concrete-ml", "keygen_s": keygen_s, "eval_key_bytes": len(keys),
               "batches": {}}
        for batch in (1, 100):
            rows = X[469:469 + batch]
            batched = True
            try:
                request(rows)
            except Exception as exc:  # the API takes one sample per call
                log(f"batch of {batch}: {type(exc).__name__}: {exc}; one row per request")
                batched = False

            def work():
                if batched:
                    return request(rows)
                return [request(rows[i:i + 1]) for i in range(batch)]

            work()
            latencies = []
            for _ in range(n_requests if batch == 1 else max(3, n_requests // 10)):
                t = time.perf_counter()
                work()
                latencies.append(time.perf_counter() - t)
            out["batches"][batch] = {"batched": batched,
                                     "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
                                     "p95_ms": 1e3 * float(np.percentile(latencies, 95))}
            log(f"batch {batch}: {out['batches'][batch]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    real_stdout.write(json.dumps(out) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
