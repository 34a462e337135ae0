"""Benchmark of encrypted tree models on breast_cancer: DT depth 5, RF 20 x 4, GBDT / XGB 20 x 3.

    python benchmarks/bench_trees.py                     # batch of 20 test rows
    python benchmarks/bench_trees.py --batch 40 --models dt,rf
    FHEML_PEER_PYTHON=~/peer/bin/python python benchmarks/bench_trees.py

For each model: one-time costs (fit, compile, keygen), the per-batch encrypt / run /
decrypt breakdown and the per-sample latency of one encrypted batch (all rows encrypted
together, the server called once, both cores), lookups per sample and their precision,
evaluation-key size (seeded, as sent) and upload per sample, and the accuracy of the float
model, the clear quantized model and the encrypted run on the batch.

With ``FHEML_PEER_PYTHON`` naming an interpreter that has concrete-ml, the same models are
fitted there (Concrete ML's classes, same hyperparameters, its default quantization) and run
one sample at a time (``benchmarks/peer_trees_concrete.py``) in the same run; the ratios of
per-sample latency and of evaluation-key size are printed.  The peer's per-sample time
includes its per-call overhead, ours is amortised over the batch: say so with the numbers.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from fheml.ensemble import FHEGradientBoostingClassifier, FHERandomForestClassifier
from fheml.tree import FHEDecisionTreeClassifier

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "dt": ("DT depth 5", FHEDecisionTreeClassifier, "DecisionTreeClassifier",
           {"max_depth": 5, "random_state": 0}),
    "rf": ("RF 20 x 4", FHERandomForestClassifier, "RandomForestClassifier",
           {"n_estimators": 20, "max_depth": 4, "random_state": 0}),
    "gbdt": ("GBDT 20 x 3", FHEGradientBoostingClassifier, "GradientBoostingClassifier",
             {"n_estimators": 20, "max_depth": 3, "random_state": 0}),
    "xgb": ("XGB 20 x 3", "FHEXGBClassifier", "XGBClassifier",
            {"n_estimators": 20, "max_depth": 3}),
}


def _fhe_class(cls):
    if isinstance(cls, str):
        from fheml import ensemble
        return getattr(ensemble, cls, None)
    return cls


def run_ours(cls, params, X_train, y_train, X_test, y_test, batch, n_jobs):
    t = time.perf_counter()
    model, float_model = cls(n_jobs=n_jobs, **params).fit_benchmark(X_train, y_train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    circuit = model.compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    keys = circuit.keygen()
    keygen_s = time.perf_counter() - t
    rows = X_test[:batch]
    t0 = time.perf_counter()
    encrypted = model.encrypt_input(rows)
    upload = encrypted.to_bytes()
    t1 = time.perf_counter()
    result = model.run_encrypted(upload, keys)
    download = result.to_bytes()
    t2 = time.perf_counter()
    raw = model.decrypt_output(download)
    proba = model._proba(raw)
    encrypted = model.classes_[np.argmax(proba, axis=1)]
    t3 = time.perf_counter()
    clear = model.predict(rows)
    stats = circuit.statistics
    return {
        "fit_s": fit_s, "compile_s": compile_s, "keygen_s": keygen_s,
        "encrypt_ms": 1e3 * (t1 - t0) / batch, "run_ms": 1e3 * (t2 - t1) / batch,
        "decrypt_ms": 1e3 * (t3 - t2) / batch, "total_ms": 1e3 * (t3 - t0) / batch,
        "lookups": stats["lookups"], "lookups_by_precision": stats["lookups_by_precision"],
        "params": str(circuit.parameters),
        "eval_key_bytes": len(keys.to_bytes()),
        "upload_bytes_per_sample": len(upload) / batch,
        "download_bytes_per_sample": len(download) / batch,
        "levels_encoded": model.input_quantizer_.n_levels,
        "input_word_bits": model.input_word_bits_,
        "output_groups": model.n_output_groups_,
        "bits_read": len(model.circuit_plan_.used_columns),
        "accuracy_float": float(np.mean(float_model.predict(X_test) == y_test)),
        "accuracy_clear": float(np.mean(model.predict(X_test) == y_test)),
        "agree_encrypted_clear": float(np.mean(encrypted == clear)),
        "accuracy_encrypted_batch": float(np.mean(encrypted == y_test[:batch])),
    }


def run_peer(python, entries, X_train, y_train, X_test, y_test, samples):
    spec = {"X_train": X_train.tolist(), "y_train": y_train.tolist(),
            "X_test": X_test.tolist(), "y_test": y_test.tolist(), "samples": samples,
            "models": entries}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    cmd = [python, os.path.join(HERE, "peer_trees_concrete.py"), "--spec", path]
    print(f"peer: {' '.join(cmd)}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"peer failed: {exc}\n{(getattr(exc, 'stderr', '') or '')[-3000:]}",
              file=sys.stderr)
        return {}
    finally:
        os.unlink(path)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--models", default="dt,rf,gbdt,xgb")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--peer-samples", type=int, default=3,
                    help="samples run one at a time in the peer")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0,
                                                        stratify=y)
    ours, names = {}, []
    for key in args.models.split(","):
        label, cls, peer_kind, params = MODELS[key]
        cls = _fhe_class(cls)
        if cls is None:
            print(f"{label}: optional package not installed, skipped", file=sys.stderr)
            continue
        names.append((key, label, peer_kind, params))
        ours[key] = run_ours(cls, params, X_train, y_train, X_test, y_test, args.batch,
                             args.n_jobs)
        print(f"{label}: {json.dumps(ours[key])}", file=sys.stderr)

    peer = {}
    python = os.environ.get("FHEML_PEER_PYTHON")
    if python:
        peer = run_peer(os.path.expanduser(python),
                        [{"name": k, "kind": kind, "params": p} for k, _, kind, p in names],
                        X_train, y_train, X_test, y_test, args.peer_samples)

    load = os.getloadavg()[0]
    print(f"\nbreast_cancer, batch of {args.batch} rows, {args.n_jobs} threads, p_error 2^-40 "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")
    header = (f"{'model':12} {'ms/sample':>9} {'enc':>6} {'run':>7} {'dec':>5} {'lookups':>8} "
              f"{'prec':>5} {'keys MB':>8} {'up KB':>6} {'acc float/clear/enc':>20} "
              f"{'peer ms':>8} {'ratio':>6} {'key ratio':>9}")
    print(header)
    for key, label, _, _ in names:
        r = ours[key]
        p = peer.get(key, {})
        ratio = r["total_ms"] / p["total_ms"] if p.get("total_ms") else float("nan")
        key_ratio = (r["eval_key_bytes"] / p["eval_key_bytes"]
                     if p.get("eval_key_bytes") else float("nan"))
        precision = ",".join(str(b) for b in r["lookups_by_precision"])
        print(f"{label:12} {r['total_ms']:9.1f} {r['encrypt_ms']:6.1f} {r['run_ms']:7.1f} "
              f"{r['decrypt_ms']:5.1f} {r['lookups']:8d} {precision:>5} "
              f"{r['eval_key_bytes'] / 1e6:8.1f} {r['upload_bytes_per_sample'] / 1e3:6.1f} "
              f"{r['accuracy_float']:.3f}/{r['accuracy_clear']:.3f}/"
              f"{r['accuracy_encrypted_batch']:.3f} "
              f"{p.get('total_ms', float('nan')):8.1f} {ratio:6.3f} {key_ratio:9.3f}")
    if peer:
        print("peer: Concrete ML, one sample per call (its per-call overhead included); ours: "
              "per sample of one batch")
    if args.json:
        print(json.dumps({"ours": ours, "peer": peer}))


if __name__ == "__main__":
    main()
