"""Peak memory of an encrypted predict, run in a subprocess by test_estimator_habits.py.

Usage: python -m tests.peak_memory ROWS FEATURES [WORKING_MEMORY_MB [N_BITS]]
Prints the peak resident memory (MB) of predict(X, fhe="execute") above the memory the
process had before it, and whether the encrypted predictions equal the clear ones.
"""

import resource
import sys

import numpy as np


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
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with fheml.config_context(working_memory=working_memory):
        encrypted = model.predict(X, fhe="execute")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak - before:.0f} {int(np.array_equal(clear, encrypted))}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
