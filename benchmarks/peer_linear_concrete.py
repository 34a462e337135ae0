"""Time a quantized linear model (``x @ W + b``) one sample at a time in concrete-python.

fheml's peer for ``benchmarks/bench_linear.py``.  It is run by the PEER'S interpreter
(``$FHEML_PEER_PYTHON``, e.g. ``/work/peer-venv/bin/python`` with concrete-python 2.10; no
concrete-ml), never by fheml's, and imports only the stdlib, numpy and ``concrete.fhe``.

Input: a JSON file (``--model``) written by bench_linear.py with the integer circuit of
the fheml model: ``q_weights`` (n_features x n_outputs), ``q_bias``, ``inputset`` (quantized
rows covering the extremes) and ``samples`` (quantized rows to run).  The same integer
program is compiled with ``x`` encrypted (one sample, shape (n_features,)) -- what a
concrete-ml linear model compiles to, minus its clear pre/post-processing -- and each
sample goes through encrypt / server.run / decrypt on its own, as the incumbent does.

Output (stdout, one JSON object): {"peer", "threads", "n_samples", "keygen_s",
"encrypt_ms", "run_ms", "decrypt_ms", "total_ms" (medians per sample), "total_ms_min",
"correct" (all decrypted outputs equal the clear integers), "eval_key_bytes",
"compile_s", "max_bit_width"}.  Progress goes to stderr.
"""

import os

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics as stats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from concrete import fhe  # noqa: E402


def log(*msg):
    print(*msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="JSON file written by bench_linear.py")
    ap.add_argument("--p-error", type=float, default=2.0**-40)
    args = ap.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # concrete's native code may write to fd 1: keep stdout for the JSON

    with open(args.model) as f:
        spec = json.load(f)
    weights = np.array(spec["q_weights"], dtype=np.int64)
    bias = np.array(spec["q_bias"], dtype=np.int64)
    inputset = [np.array(r, dtype=np.int64) for r in spec["inputset"]]
    samples = np.array(spec["samples"], dtype=np.int64)

    def linear(x):
        return x @ weights + bias

    config = fhe.Configuration(
        p_error=args.p_error, global_p_error=None,
        loop_parallelize=False, dataflow_parallelize=False, auto_parallelize=False,
        use_gpu=False, use_insecure_key_cache=False)
    t = time.perf_counter()
    circuit = fhe.Compiler(linear, {"x": "encrypted"}).compile(inputset, config)
    compile_s = time.perf_counter() - t
    log(f"compiled: {circuit.graph.maximum_integer_bit_width()} bits in {compile_s:.2f} s")

    t = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - t
    eval_keys = circuit.keys.evaluation
    try:
        eval_key_bytes = len(eval_keys.serialize())
    except Exception:  # noqa: BLE001 - size is informative only
        eval_key_bytes = None

    # Warm-up (first run builds the runtime context).
    circuit.decrypt(circuit.server.run(circuit.encrypt(samples[0]), evaluation_keys=eval_keys))
    enc_ms, run_ms, dec_ms, total_ms = [], [], [], []
    correct = True
    for x in samples:
        t0 = time.perf_counter()
        enc = circuit.encrypt(x)
        t1 = time.perf_counter()
        out = circuit.server.run(enc, evaluation_keys=eval_keys)
        t2 = time.perf_counter()
        y = circuit.decrypt(out)
        t3 = time.perf_counter()
        correct &= bool(np.array_equal(np.asarray(y).reshape(-1), linear(x).reshape(-1)))
        enc_ms.append(1e3 * (t1 - t0))
        run_ms.append(1e3 * (t2 - t1))
        dec_ms.append(1e3 * (t3 - t2))
        total_ms.append(1e3 * (t3 - t0))

    report = {
        "peer": f"concrete-python {fhe.__version__}", "threads": 1, "pinned_cpu": cpu,
        "n_samples": len(samples), "compile_s": compile_s, "keygen_s": keygen_s,
        "encrypt_ms": stats.median(enc_ms), "run_ms": stats.median(run_ms),
        "decrypt_ms": stats.median(dec_ms), "total_ms": stats.median(total_ms),
        "total_ms_min": min(total_ms), "correct": correct, "eval_key_bytes": eval_key_bytes,
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
    }
    real_stdout.write(json.dumps(report) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
