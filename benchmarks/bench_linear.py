"""Benchmark of encrypted linear-model inference: FHELogisticRegression on breast_cancer.

    python benchmarks/bench_linear.py                   # batch of 100 test rows, 5 repeats
    python benchmarks/bench_linear.py --batch 100 --repeat 7 --n-bits 8
    FHEML_PEER_PYTHON=/work/peer-venv/bin/python python benchmarks/bench_linear.py

Reports the one-time costs (fit, compile, keygen), the per-batch encrypt / run / decrypt
breakdown and the per-sample latency of an encrypted predict over the batch (one batch:
all rows encrypted together, the circuit run once), key and ciphertext sizes, and the
accuracy of the float model, the clear quantized model (``fhe="disable"``) and the
encrypted one.  Times are wall-clock (minimum and median over ``--repeat`` runs).

With ``FHEML_PEER_PYTHON`` naming an interpreter that has concrete-python, the same
integer circuit (``x @ q_W + q_b``, 30 encrypted 8-bit features) is compiled there and run
one sample at a time (``benchmarks/peer_linear_concrete.py``), as the incumbent serves a
linear model, and the ratio of per-sample latencies is printed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fheml.linear_model import FHELogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, min(times), float(np.median(times))


def run_peer(python, model, q_batch, samples):
    spec = {"q_weights": model.quantized_layer_.q_weights.tolist(),
            "q_bias": model.quantized_layer_.q_bias.tolist(),
            "inputset": np.concatenate([model.quantized_layer_.extreme_inputs(),
                                        q_batch]).tolist(),
            "samples": q_batch[:samples].tolist()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    cmd = [python, os.path.join(HERE, "peer_linear_concrete.py"), "--model", path]
    print(f"peer: {' '.join(cmd)}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        print(f"peer failed: {exc}\n{stderr[-2000:]}", file=sys.stderr)
        return None
    finally:
        os.unlink(path)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n-bits", type=int, default=8)
    ap.add_argument("--peer-samples", type=int, default=30,
                    help="samples run one at a time in the peer")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(X_train)  # clear preprocessing on the client
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    X_batch, y_batch = X_test[:args.batch], y_test[:args.batch]

    t = time.perf_counter()
    model, float_model = FHELogisticRegression(n_bits=args.n_bits).fit_benchmark(X_train,
                                                                                 y_train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    circuit = model.compile(X_train)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    eval_keys = circuit.keygen()
    keygen_s = time.perf_counter() - t

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # clipping of held-out rows
        q_batch = model.quantize_input(X_batch)
    encrypted, enc_min, enc_med = _timed(lambda: circuit.client.encrypt(q_batch), args.repeat)
    result, run_min, run_med = _timed(lambda: circuit.server.run(encrypted, eval_keys),
                                      args.repeat)
    q_out, dec_min, dec_med = _timed(lambda: circuit.client.decrypt(result), args.repeat)
    assert np.array_equal(q_out, circuit.run(q_batch)), "decryption differs from clear run"

    def end_to_end():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return model.predict(X_batch, fhe="execute")

    y_enc, e2e_min, e2e_med = _timed(end_to_end, args.repeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y_clear_batch = model.predict(X_batch)
        acc_test = {"float": float(np.mean(float_model.predict(X_test) == y_test)),
                    "clear_quantized": float(np.mean(model.predict(X_test) == y_test)),
                    "encrypted": float(np.mean(model.predict(X_test, fhe="execute") == y_test))}
    acc_batch = {"float": float(np.mean(float_model.predict(X_batch) == y_batch)),
                 "clear_quantized": float(np.mean(y_clear_batch == y_batch)),
                 "encrypted": float(np.mean(y_enc == y_batch))}

    n = len(X_batch)
    per_sample_ms = 1e3 * (enc_min + run_min + dec_min) / n
    sizes = {"evaluation_keys": len(eval_keys.to_bytes()),
             "secret_keys": len(circuit.client.secret_keys.to_bytes()),
             "encrypted_batch": len(encrypted.to_bytes()),
             "encrypted_result": len(result.to_bytes())}
    report = {
        "model": "FHELogisticRegression", "dataset": "breast_cancer", "n_bits": args.n_bits,
        "batch": n, "features": X.shape[1], "max_bit_width": circuit.max_bit_width,
        "parameters": str(circuit.parameters), "fit_s": fit_s, "compile_s": compile_s,
        "keygen_s": keygen_s,
        "batch_s": {"encrypt": [enc_min, enc_med], "run": [run_min, run_med],
                    "decrypt": [dec_min, dec_med], "predict_end_to_end": [e2e_min, e2e_med]},
        "per_sample_ms": per_sample_ms, "per_sample_end_to_end_ms": 1e3 * e2e_min / n,
        "bytes": sizes, "accuracy_batch": acc_batch, "accuracy_test": acc_test,
        "encrypted_equals_clear": float(np.mean(y_enc == y_clear_batch)),
    }

    print(f"FHELogisticRegression on breast_cancer, n_bits={args.n_bits}, batch of {n} rows "
          f"x {X.shape[1]} features")
    print(f"  circuit: {circuit.max_bit_width}-bit accumulator, no lookup; {circuit.parameters}")
    print(f"  one-time: fit {fit_s:.3f} s, compile {compile_s:.3f} s, keygen {keygen_s:.4f} s")
    print(f"  batch (min / median of {args.repeat}):")
    for name, lo, med in (("encrypt", enc_min, enc_med), ("run", run_min, run_med),
                          ("decrypt", dec_min, dec_med), ("predict() end to end", e2e_min,
                                                          e2e_med)):
        print(f"    {name:22s} {1e3 * lo:9.2f} ms / {1e3 * med:9.2f} ms"
              f"   ({1e3 * lo / n:.3f} ms per sample)")
    print(f"  per-sample encrypted latency: {per_sample_ms:.3f} ms "
          f"(encrypt+run+decrypt), {report['per_sample_end_to_end_ms']:.3f} ms with "
          "quantization and post-processing")
    print("  sizes: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items()))
    print(f"  accuracy on the batch : float {acc_batch['float']:.4f}, clear quantized "
          f"{acc_batch['clear_quantized']:.4f}, encrypted {acc_batch['encrypted']:.4f}")
    print(f"  accuracy on test set  : float {acc_test['float']:.4f}, clear quantized "
          f"{acc_test['clear_quantized']:.4f}, encrypted {acc_test['encrypted']:.4f}")
    print(f"  encrypted == clear quantized on {100 * report['encrypted_equals_clear']:.1f}% "
          "of rows")

    python = os.environ.get("FHEML_PEER_PYTHON")
    if python:
        peer = run_peer(python, model, q_batch, min(args.peer_samples, n))
        report["peer"] = peer
        if peer:
            ratio = peer["total_ms"] / per_sample_ms
            report["speedup_vs_peer"] = ratio
            print(f"  peer {peer['peer']} (one sample at a time, 1 thread, "
                  f"{peer['n_samples']} samples, correct={peer['correct']}): encrypt "
                  f"{peer['encrypt_ms']:.2f} ms, run {peer['run_ms']:.2f} ms, decrypt "
                  f"{peer['decrypt_ms']:.2f} ms, total {peer['total_ms']:.2f} ms per sample "
                  f"(median), keygen {peer['keygen_s']:.2f} s")
            print(f"  per-sample latency ratio peer / fheml (batched): {ratio:.1f}x")
    else:
        print("  (set FHEML_PEER_PYTHON to time the same circuit in concrete-python)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
