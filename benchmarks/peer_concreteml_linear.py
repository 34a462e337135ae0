"""Peer benchmark: concrete-ml's LogisticRegression, served one sample at a time.

Run by the peer's interpreter (``$FHEML_PEER_PYTHON`` with concrete-ml 1.9), never by
fheml's; called by ``bench_linear.py`` with a JSON file::

    {"X_train": [[...]], "y_train": [...], "X": [[...]], "n_bits": 8}

Fits ``concrete.ml.sklearn.LogisticRegression(n_bits=...)`` on the same (standardized) data,
compiles it, and serves it through its deployment API (FHEModelDev / FHEModelClient /
FHEModelServer), as the incumbent serves a model: each row is quantized, encrypted and
serialized, run by the server, then deserialized, decrypted and dequantized.  concrete-ml
runs one row per circuit call (it has no batched encrypted predict).  Prints one JSON
line: per-sample medians and minima of each stage, sizes and agreement with the clear
quantized model.  Progress goes to stderr.
"""

import os

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics as stats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer  # noqa: E402
from concrete.ml.sklearn import LogisticRegression  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    spec = json.load(open(args.model))
    X_train = np.asarray(spec["X_train"], dtype=np.float64)
    y_train = np.asarray(spec["y_train"])
    X = np.asarray(spec["X"], dtype=np.float64)

    model = LogisticRegression(n_bits=int(spec.get("n_bits", 8)))
    model.fit(X_train, y_train)
    t = time.perf_counter()
    model.compile(X_train)
    compile_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        FHEModelDev(os.path.join(d, "model"), model).save()
        client = FHEModelClient(os.path.join(d, "model"), key_dir=os.path.join(d, "keys"))
        t = time.perf_counter()
        client.generate_private_and_evaluation_keys()
        keys = client.get_serialized_evaluation_keys()
        keygen_s = time.perf_counter() - t
        server = FHEModelServer(os.path.join(d, "model"))
        server.load()
        enc, run, dec, up, down, outs = [], [], [], [], [], []
        for i, x in enumerate(X):
            print(f"concrete-ml sample {i + 1}/{len(X)}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            blob = client.quantize_encrypt_serialize(x[None])
            t1 = time.perf_counter()
            result = server.run(blob, keys)
            t2 = time.perf_counter()
            out = client.deserialize_decrypt_dequantize(result)
            t3 = time.perf_counter()
            enc.append(t1 - t0)
            run.append(t2 - t1)
            dec.append(t3 - t2)
            up.append(len(blob))
            down.append(len(result))
            outs.append(np.asarray(out).reshape(-1))
    clear = np.asarray(model.predict_proba(X, fhe="disable"))
    totals = [a + b + c for a, b, c in zip(enc, run, dec)]
    print(json.dumps({
        "peer": "concrete-ml 1.9 LogisticRegression (deployment API, one row per call)",
        "n_samples": len(X), "compile_s": compile_s, "keygen_s": keygen_s,
        "encrypt_ms": 1e3 * stats.median(enc), "run_ms": 1e3 * stats.median(run),
        "decrypt_ms": 1e3 * stats.median(dec), "total_ms": 1e3 * stats.median(totals),
        "total_ms_min": 1e3 * min(totals),
        "upload_bytes_per_sample": stats.median(up), "result_bytes_per_sample": stats.median(down),
        "eval_key_bytes": len(keys),
        "equals_clear": bool(np.allclose(np.stack(outs), clear.reshape(len(X), -1))),
    }))


if __name__ == "__main__":
    main()
