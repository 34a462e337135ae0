"""Peak memory of an encrypted predict, run in a subprocess by test_estimator_habits.py.

Usage: python -m tests.peak_memory ROWS FEATURES [WORKING_MEMORY_MB [N_BITS]]
Prints the peak resident memory (MB) of predict(X, fhe="execute") above the memory the
process had before it (Linux: /proc/self/status), and whether the encrypted predictions
equal the clear ones.
"""

import sys

import numpy as np


def _status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(rows, features, working_memory=None, n_bits=8):
    import fheml
    from fheml.linear_model import FHELogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(max(rows, 60), features))
    y = (X[:, :3].sum(axis=1) > 0).astype(int)
    model = FHELogisticRegression(max_iter=50, n_bits=n_bits).fit(X, y)
    model.compile(X)
    model.fhe_circuit.keygen()
    X = X[:rows]
    clear = model.predict(X)
    # ru_maxrss would include the parent's peak (inherited across fork/exec) and this
    # process's fit: reset the high-water mark (VmHWM) just before the run instead.
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    with fheml.config_context(working_memory=working_memory):
        encrypted = model.predict(X, fhe="execute")
    peak = _status_mb("VmHWM")
    print(f"{peak - before:.0f} {int(np.array_equal(clear, encrypted))}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
