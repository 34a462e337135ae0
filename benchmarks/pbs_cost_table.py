"""Measure the cost of one blind-rotation step for the selector's cost model.

    python benchmarks/pbs_cost_table.py               # kernel path in use (FHEML_SIMD)

For each N, times blind-rotation steps (four accumulators through a random Fourier key of
about 8 MB, so that the key streams from memory as in a real bootstrap) at several
(k, level), and fits  step = (k+1)·l·A + (k+1)·B + (k+1)²·l·C  microseconds per accumulator:
A the decomposition and forward FFT of one digit polynomial, B the rotation, inverse FFT and
conversion of one output polynomial, C the multiply-accumulate per GGSW row and column.
The printed dictionary is ``parameters._STEP_COST_US``; the keyswitch constant
``_KS_COST_US`` is the CPU time per multiply-subtract of the keyswitch kernel.

    python benchmarks/pbs_cost_table.py --grouping    # multi-bit steps: _MULTIBIT_COST_US

times multi-bit steps (grouping factors 2 and 3) and classic steps of the same (k, level)
in the same run, and fits  step_g = (k+1)·l·A + (k+1)·B + (2^g - 1)·((k+1)²·l·C' + D)
with A, B from ``parameters._STEP_COST_US``, after scaling the measurements by the ratio
of that table's classic times to this run's (the machine's load varies between runs;
only the multi-bit/classic ratio is taken from this run).
"""
import argparse
import time

import numpy as np
from scipy.optimize import nnls

from fheml._core import _kernels, parameters

CONFIGS = [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (5, 1)]
GROUP = 4


def step_us(N, k, level, rng, repeat=3, grouping=1):
    """Microseconds per accumulator per blind-rotation step (of ``grouping`` key bits)."""
    R, K1 = (k + 1) * level, k + 1
    S = (1 << grouping) - 1
    n = grouping * int(np.clip(8e6 // (S * R * K1 * N * 8), 8, 256))
    plan = _kernels.FourierPlan(N)
    # aligned like the engine's keys and workspaces
    bsk = _kernels.aligned_empty((n // grouping * S, R, K1, N), np.float64)
    bsk[...] = rng.uniform(-0.5, 0.5, bsk.shape) * 1e-3
    abar = rng.integers(1, 2 * N, (GROUP, n)).astype(np.int32)
    acc = _kernels.aligned_empty((GROUP, K1, N), np.uint64)
    acc[...] = rng.integers(0, 2**64, acc.shape, dtype=np.uint64)
    base_log = min(23, 60 // level)
    ws = _kernels.PbsWorkspace(n, k, N, level, 1, GROUP, grouping)
    best = np.inf
    for _ in range(repeat):
        t = time.thread_time()
        _kernels.blind_rotate(plan, bsk, base_log, level, abar, acc, ws, grouping=grouping)
        best = min(best, time.thread_time() - t)
    return best / (n // grouping) / GROUP * 1e6


def multibit_table(sizes, rng):
    """Fit (C', D) per N (see the module docstring); prints the table."""
    table = {}
    for N in sizes:
        a, b, c = parameters._STEP_COST_US[N]
        rows, ys, ratios = [], [], []
        for k, level in CONFIGS[:4]:
            if k * N > 65536:
                continue
            K1 = k + 1
            classic = step_us(N, k, level, rng)
            ratios.append((K1 * level * a + K1 * b + K1 * K1 * level * c) / classic)
            for g in (2, 3):
                S = (1 << g) - 1
                ys.append((step_us(N, k, level, rng, grouping=g), K1 * level * a + K1 * b, S))
                rows.append([S * K1 * K1 * level, S])
        scale = float(np.median(ratios))
        y = np.array([t * scale - fixed for t, fixed, _ in ys])
        X = np.array(rows, float)
        coef, _ = nnls(X, y)
        table[N] = tuple(round(float(v), 3) for v in coef)
        print(f"# N={N}: multi-bit steps {[round(t, 2) for t, _, _ in ys]} us "
              f"(g = 2, 3 per config), table/run scale {scale:.2f}", flush=True)
    print("_MULTIBIT_COST_US = {")
    for N, v in table.items():
        print(f"    {N}: {v},")
    print("}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2**e for e in range(8, 16)])
    ap.add_argument("--ks", action="store_true", help="also measure the keyswitch constant")
    ap.add_argument("--grouping", action="store_true",
                    help="fit the multi-bit table (_MULTIBIT_COST_US) instead")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# kernel path {_kernels.simd_level()}")
    if a.grouping:
        multibit_table(a.sizes, rng)
        return
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
