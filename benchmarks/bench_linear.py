"""Benchmark of encrypted linear-model inference: FHELogisticRegression, packed and LWE paths.

    python benchmarks/bench_linear.py                       # batches 1, 100, 10000
    python benchmarks/bench_linear.py --batches 1 100 --repeat 5 --json
    FHEML_PEER_PYTHON=~/peer/bin/python FHEML_HELAYERS_PYTHON=~/helayers/bin/python \\
        python benchmarks/bench_linear.py

Datasets: breast_cancer (30 standardized features) and a 300-feature synthetic set
(``make_classification``).  For each, the one-time costs (fit, compile, keygen) and, per
batch size, the per-sample encrypt / run / decrypt latency (one call for the whole batch,
minimum over ``--repeat``), the path the client chose (packed GLWE or one LWE ciphertext
per value), upload / result sizes per sample (serialized bytes) and the evaluation keys;
every decrypted batch is checked equal to the clear integer run.  At batch 100 the LWE
path is also timed (forced) for comparison.

Peers in the same run, on the same standardized data:

- ``FHEML_PEER_PYTHON`` (concrete-ml 1.9): its LogisticRegression through its deployment
  API, one row per call (``peer_concreteml_linear.py``);
- ``FHEML_HELAYERS_PYTHON`` (pyhelayers): HElayers' LogisticRegression, SEAL CKKS, batch
  100, optimizer target CLIENT_SIDE_CPU_PER_SAMPLE, scores (no activation), the weights of
  fheml's float model (``peer_helayers.py``).
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
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fheml.linear_model import FHELogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))


def _datasets(names):
    for name in names:
        if name == "breast_cancer":
            X, y = load_breast_cancer(return_X_y=True)
        elif name == "synthetic300":
            X, y = make_classification(3000, 300, n_informative=40, random_state=0)
        else:
            raise ValueError(f"unknown dataset {name!r}")
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3,
                                                            random_state=0, stratify=y)
        scaler = StandardScaler().fit(X_train)  # clear preprocessing on the client
        yield name, scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def _timed(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, min(times)


def _run_batch(circuit, q, repeat, packing=None):
    client, server, keys = circuit.client, circuit.server, circuit.client.evaluation_keys
    args, enc = _timed(lambda: client.encrypt(q, packing=packing), repeat)
    result, run = _timed(lambda: server.run(args, keys), repeat)
    out, dec = _timed(lambda: client.decrypt(result), repeat)
    assert np.array_equal(out, circuit.run(q)), "decryption differs from the clear run"
    n = len(q)
    return {"rows": n, "path": "packed" if args.rows is not None else "lwe",
            "encrypt_ms": 1e3 * enc / n, "run_ms": 1e3 * run / n, "decrypt_ms": 1e3 * dec / n,
            "total_ms": 1e3 * (enc + run + dec) / n,
            "upload_bytes_per_sample": len(args.to_bytes()) / n,
            "result_bytes_per_sample": len(result.to_bytes()) / n}


def _peer(python, script, spec, timeout=3600):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    cmd = [python, os.path.join(HERE, script), "--model", path]
    print(f"peer: {' '.join(cmd)}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        print(f"peer failed: {exc}\n{(getattr(exc, 'stderr', '') or '')[-2000:]}",
              file=sys.stderr)
        return None
    finally:
        os.unlink(path)


def _packed_description(plan):
    if plan is None:
        return None
    digits = (f", {plan.digits} weight digits in base 2^{plan.digit_base_log}"
              if plan.digits > 1 else ", one weight digit")
    return f"{plan.params}{digits}"


def bench_dataset(name, X_train, X_test, y_train, y_test, args):
    t = time.perf_counter()
    model, float_model = FHELogisticRegression(n_bits=args.n_bits).fit_benchmark(X_train, y_train)
    fit_s = time.perf_counter() - t
    circuit, compile_s = _timed(lambda: model.compile(X_train), 1)
    eval_keys, keygen_s = _timed(circuit.keygen, 1)
    _, packed_keygen_s = _timed(circuit.client.packed_key, 1)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipping of held-out rows
        q_test = model.quantize_input(X_test)
    report = {"dataset": name, "features": X_train.shape[1], "n_bits": args.n_bits,
              "fit_s": fit_s, "compile_s": compile_s,
              "keygen_s": keygen_s + packed_keygen_s,
              "max_bit_width": circuit.max_bit_width, "lwe_parameters": str(circuit.parameters),
              "packed_parameters": _packed_description(circuit.client.spec.packed),
              "evaluation_key_bytes": len(eval_keys.to_bytes()), "batches": []}
    for b in args.batches:
        q = q_test[rng.integers(0, len(q_test), b)] if b > len(q_test) else q_test[:b]
        repeat = max(1, min(args.repeat, 100_000 // (b * X_train.shape[1]) + 1))
        report["batches"].append(_run_batch(circuit, q, repeat))
        if b == 100:
            report["batch100_lwe"] = _run_batch(circuit, q, repeat, packing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report["accuracy_test"] = {
            "float": float(np.mean(float_model.predict(X_test) == y_test)),
            "clear_quantized": float(np.mean(model.predict(X_test) == y_test)),
            "encrypted": float(np.mean(model.predict(X_test, fhe="execute") == y_test))}

    concrete = os.environ.get("FHEML_PEER_PYTHON")
    if concrete:
        report["concrete_ml"] = _peer(os.path.expanduser(concrete), "peer_concreteml_linear.py", {
            "X_train": X_train.tolist(), "y_train": y_train.tolist(),
            "X": X_test[:args.peer_samples].tolist(), "n_bits": args.n_bits})
    helayers = os.environ.get("FHEML_HELAYERS_PYTHON")
    if helayers:
        coef = float_model.coef_.reshape(1, -1)
        report["helayers"] = _peer(os.path.expanduser(helayers), "peer_helayers.py", {
            "coef": coef.tolist(), "intercept": np.ravel(float_model.intercept_).tolist(),
            "X": X_test[:100].tolist() if len(X_test) >= 100 else X_test.tolist(),
            "batch": 100, "model_encrypted": False})
    return report


def _print(report):
    print(f"\nFHELogisticRegression on {report['dataset']} ({report['features']} features, "
          f"n_bits={report['n_bits']}, {report['max_bit_width']}-bit accumulator)")
    print(f"  LWE path:    {report['lwe_parameters']}")
    print(f"  packed path: {report['packed_parameters']}")
    print(f"  one-time: fit {report['fit_s']:.2f} s, compile {report['compile_s']:.2f} s, "
          f"keygen {1e3 * report['keygen_s']:.1f} ms, evaluation keys "
          f"{report['evaluation_key_bytes']} B")
    print("   rows  path    encrypt     run  decrypt   total (ms/sample)  upload   result "
          "(B/sample)")
    rows = report["batches"] + ([dict(report["batch100_lwe"], path="lwe*")]
                                if "batch100_lwe" in report else [])
    for r in rows:
        print(f"  {r['rows']:5d}  {r['path']:6s} {r['encrypt_ms']:8.4f} {r['run_ms']:7.4f} "
              f"{r['decrypt_ms']:8.4f} {r['total_ms']:8.4f}          "
              f"{r['upload_bytes_per_sample']:8.0f} {r['result_bytes_per_sample']:8.0f}")
    print("  (lwe* = LWE path forced at batch 100)")
    acc = report["accuracy_test"]
    print(f"  accuracy on the test set: float {acc['float']:.4f}, clear quantized "
          f"{acc['clear_quantized']:.4f}, encrypted {acc['encrypted']:.4f}")
    ours = next((r for r in report["batches"] if r["rows"] == 100), None)
    for key in ("concrete_ml", "helayers"):
        peer = report.get(key)
        if not peer:
            continue
        print(f"  peer {peer['peer']}: encrypt {peer['encrypt_ms']:.3f}, run "
              f"{peer['run_ms']:.3f}, decrypt {peer['decrypt_ms']:.3f}, total "
              f"{peer['total_ms']:.3f} ms/sample; upload "
              f"{peer['upload_bytes_per_sample']:.0f} B/sample, result "
              f"{peer['result_bytes_per_sample']:.0f} B/sample, keys "
              f"{peer.get('context_and_keys_bytes', peer.get('eval_key_bytes'))} B")
        if ours:
            print(f"    fheml (batch 100) / peer per-sample latency: "
                  f"{ours['total_ms'] / peer['total_ms']:.4f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 100, 10_000])
    ap.add_argument("--datasets", nargs="+", default=["breast_cancer", "synthetic300"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n-bits", type=int, default=8)
    ap.add_argument("--peer-samples", type=int, default=20,
                    help="rows run one at a time in concrete-ml")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()
    reports = []
    for name, X_train, X_test, y_train, y_test in _datasets(args.datasets):
        reports.append(bench_dataset(name, X_train, X_test, y_train, y_test, args))
        _print(reports[-1])
    if args.json:
        print(json.dumps(reports))


if __name__ == "__main__":
    main()
