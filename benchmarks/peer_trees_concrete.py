"""Time Concrete ML's tree models one sample at a time (peer of ``bench_trees.py``).

Run by the PEER'S interpreter (``$FHEML_PEER_PYTHON``, with concrete-ml installed), never by
fheml's.  Input: a JSON file (``--spec``) with the training split, the rows to run and the
models (``{"name", "kind", "params"}``, kind in DecisionTreeClassifier,
RandomForestClassifier, XGBClassifier, GradientBoostingClassifier -- the last one has no
Concrete ML counterpart and is skipped).  Each model is fitted with Concrete ML's defaults
for everything not given, compiled on the training data, keys generated, then every row is
predicted with ``fhe="execute"`` on its own (encrypt, run, decrypt), as the incumbent serves.

Output (stdout, one JSON object): per model {"total_ms" (median per sample), "total_ms_min",
"n_samples", "keygen_s", "eval_key_bytes", "lookups" (if reported), "max_bit_width",
"accuracy" (clear, on the given test rows), "agree" (encrypted == clear on the timed rows)}.
"""

import os

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics as stats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def log(*msg):
    print(*msg, file=sys.stderr, flush=True)


def _model(kind, params):
    from concrete.ml import sklearn as cml
    return getattr(cml, kind)(**params)


def _lookups(circuit):
    try:
        stats_ = circuit.statistics
        return int(stats_.get("programmable_bootstrap_count"))
    except Exception:  # noqa: BLE001 - informative only
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    args = ap.parse_args()
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # native code may write to fd 1: keep stdout for the JSON

    with open(args.spec) as f:
        spec = json.load(f)
    X_train = np.array(spec["X_train"])
    y_train = np.array(spec["y_train"])
    X_test = np.array(spec["X_test"])
    y_test = np.array(spec["y_test"])
    rows = X_test[:spec["samples"]]
    out = {}
    for entry in spec["models"]:
        try:
            model = _model(entry["kind"], entry["params"])
        except AttributeError:
            log(f"{entry['name']}: no Concrete ML counterpart, skipped")
            continue
        model.fit(X_train, y_train)
        accuracy = float(np.mean(model.predict(X_test) == y_test))
        t = time.perf_counter()
        circuit = model.compile(X_train)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        circuit.keygen(force=True)
        keygen_s = time.perf_counter() - t
        try:
            eval_key_bytes = len(circuit.keys.evaluation.serialize())
        except Exception:  # noqa: BLE001 - informative only
            eval_key_bytes = None
        model.predict(rows[:1], fhe="execute")  # warm-up
        times, agree = [], 0
        clear = model.predict(rows)
        for x, c in zip(rows, clear):
            t0 = time.perf_counter()
            y = model.predict(x[None], fhe="execute")
            times.append(1e3 * (time.perf_counter() - t0))
            agree += int(y[0] == c)
        out[entry["name"]] = {
            "peer": "concrete-ml", "total_ms": stats.median(times), "total_ms_min": min(times),
            "n_samples": len(times), "compile_s": compile_s, "keygen_s": keygen_s,
            "eval_key_bytes": eval_key_bytes, "lookups": _lookups(circuit),
            "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
            "accuracy": accuracy, "agree": agree / max(1, len(times)),
        }
        log(f"{entry['name']}: {out[entry['name']]}")
    real_stdout.write(json.dumps(out) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
