"""Concrete ML's NeuralNetClassifier (3 layers, ReLU) on the same split, one sample at a time.

This is fheml's optional *peer* for ``benchmarks/bench_mlp.py``.  It is run by the PEER'S
interpreter (``FHEML_PEER_PYTHON``, with concrete-ml installed), never by fheml's, and
imports only the stdlib, numpy, scikit-learn and concrete-ml.

    $FHEML_PEER_PYTHON benchmarks/peer_mlp_concrete.py --data split.npz --samples 2

``split.npz`` holds ``X_train, y_train, X_test, y_test`` (already standardized).  The
model is Concrete ML's ``NeuralNetClassifier(module__n_layers=3,
module__activation_function=torch.nn.ReLU)`` with its other defaults (quantization-aware,
brevitas), compiled on the training set; ``--samples`` test rows are run encrypted one at
a time, as the incumbent serves a network (``predict(x, fhe="execute")`` per row).

Output: one JSON object on the last stdout line: ``{"peer", "fit_s", "compile_s",
"keygen_s", "per_sample_s" (list), "per_sample_cpu_s" (process CPU time, all threads),
"accuracy_clear" (test set, fhe="disable"),
"encrypted_equals_clear", "max_bit_width", "pbs_count", "layers"}``.
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np


def _hidden_sizes(model):
    """Widths of the hidden layers of the trained torch module (None if not found)."""
    import torch

    module = getattr(getattr(model, "sklearn_model", None), "module_", None)
    if module is None:
        return None
    widths = [int(m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return widths[:-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import concrete.ml
    import torch
    from concrete.ml.sklearn import NeuralNetClassifier

    data = np.load(args.data)
    X_train, y_train = data["X_train"].astype(np.float32), data["y_train"].astype(np.int64)
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"].astype(np.int64)
    model = NeuralNetClassifier(module__n_layers=3,
                                module__activation_function=torch.nn.ReLU, verbose=0)
    t = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    circuit = model.compile(X_train)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    circuit.client.keygen(force=False)
    keygen_s = time.perf_counter() - t
    clear = model.predict(X_test, fhe="disable")
    times, cpu, same = [], [], []
    for i in range(args.samples):
        t, c = time.perf_counter(), time.process_time()
        pred = model.predict(X_test[i:i + 1], fhe="execute")
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        same.append(bool(pred[0] == clear[i]))
        print(f"peer sample {i}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    stats = getattr(circuit, "statistics", {}) or {}
    pbs = stats.get("programmable_bootstrap_count")
    print(json.dumps({
        "peer": f"concrete-ml {concrete.ml.__version__} NeuralNetClassifier(n_layers=3, ReLU)",
        "fit_s": fit_s, "compile_s": compile_s, "keygen_s": keygen_s, "per_sample_s": times, "per_sample_cpu_s": cpu,
        "accuracy_clear": float(np.mean(clear == y_test)),
        "encrypted_equals_clear": float(np.mean(same)) if same else None,
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "pbs_count": int(pbs) if pbs is not None else None,
        "hidden": _hidden_sizes(model),
    }))


if __name__ == "__main__":
    main()
