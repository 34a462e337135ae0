"""Measure the cost of one blind-rotation step for the selector's cost model.

    python benchmarks/pbs_cost_table.py               # kernel path in use (FHEML_SIMD)

For each N, times blind-rotation steps (four accumulators through a random Fourier key of
about 8 MB, so that the key streams from memory as in a real bootstrap) at several
(k, level), and fits  step = (k+1)·l·A + (k+1)·B + (k+1)²·l·C  microseconds per accumulator:
A the decomposition and forward FFT of one digit polynomial, B the rotation, inverse FFT and
conversion of one output polynomial, C the multiply-accumulate per GGSW row and column.
The printed dictionary is ``parameters._STEP_COST_US``; the keyswitch constant
``_KS_COST_US`` is the CPU time per multiply-subtract of the keyswitch kernel.
"""
import argparse
import time

import numpy as np
from scipy.optimize import nnls

from fheml._core import _kernels

CONFIGS = [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (5, 1)]
GROUP = 4


def step_us(N, k, level, rng, repeat=3):
    """Microseconds per accumulator per blind-rotation step."""
    R, K1 = (k + 1) * level, k + 1
    n = int(np.clip(8e6 // (R * K1 * N * 8), 8, 256))
    plan = _kernels.FourierPlan(N)
    # aligned like the engine's keys and workspaces
    bsk = _kernels.aligned_empty((n, R, K1, N), np.float64)
    bsk[...] = rng.uniform(-0.5, 0.5, bsk.shape) * 1e-3
    abar = rng.integers(1, 2 * N, (GROUP, n)).astype(np.int32)
    acc = _kernels.aligned_empty((GROUP, K1, N), np.uint64)
    acc[...] = rng.integers(0, 2**64, acc.shape, dtype=np.uint64)
    base_log = min(23, 60 // level)
    ws = _kernels.PbsWorkspace(n, k, N, level, 1, GROUP)
    best = np.inf
    for _ in range(repeat):
        t = time.thread_time()
        _kernels.blind_rotate(plan, bsk, base_log, level, abar, acc, ws)
        best = min(best, time.thread_time() - t)
    return best / n / GROUP * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2**e for e in range(8, 16)])
    ap.add_argument("--ks", action="store_true", help="also measure the keyswitch constant")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# kernel path {_kernels.simd_level()}")
    table = {}
    for N in a.sizes:
        rows, times = [], []
        for k, level in CONFIGS:
            if k * N > 65536:
                continue
            rows.append([(k + 1) * level, k + 1, (k + 1) ** 2 * level])
            times.append(step_us(N, k, level, rng))
        X, y = np.array(rows, float), np.array(times)
        coef, _ = nnls(X / y[:, None], np.ones_like(y))  # relative least squares
        fit = X @ coef / y - 1
        table[N] = tuple(round(float(c), 3) for c in coef)
        print(f"# N={N}: steps {np.round(y, 2).tolist()} us, fit error "
              f"{np.abs(fit).max() * 100:.1f} %", flush=True)
    print("_STEP_COST_US = {")
    for N, c in table.items():
        print(f"    {N}: {c},")
    print("}")
    if a.ks:
        n_in, level, n = 2048, 5, 800
        ksk = rng.integers(0, 2**32, (n_in, level, n + 1), dtype=np.uint64).astype(np.uint32)
        cts = rng.integers(0, 2**64, (16, n_in + 1), dtype=np.uint64)
        best = np.inf
        for _ in range(3):
            t = time.thread_time()
            _kernels.keyswitch_batch(ksk, 3, level, cts, group=8)
            best = min(best, time.thread_time() - t)
        print(f"_KS_COST_US = {best / 16 / (n_in * level * (n + 1)) * 1e6:.3g}")


if __name__ == "__main__":
    main()
