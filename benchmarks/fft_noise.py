"""FFT noise of the bootstrap kernels per kernel path, against the noise model's FFT term.

    python benchmarks/fft_noise.py                   # sets selected for p = 1..8 at 2^-40
    python benchmarks/fft_noise.py --bits 4 --trials 20

For each selected set, one CMux step on uniform data runs on every kernel path the CPU has
and exactly (fheml._core._reference); the phase variance of the difference is divided by
TFHE.md's FFT term for one step (parameters.var_fft_step).  The ratios are what
parameters.FFT_NOISE_FACTORS must cover.  N = 32768 takes a few minutes (exact reference).

    python benchmarks/fft_noise.py --grouping 2 3    # multi-bit steps

With --grouping, one multi-bit step of each factor at each selected set's (k, N, base,
level), divided by 2·(2^g - 1) classic FFT terms: what parameters.MULTIBIT_FFT_NOISE_FACTOR
must cover.
"""
import argparse
import time

import numpy as np

from fheml._core import _kernels, _reference, parameters, select_parameters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--p-error", type=float, default=2.0**-40)
    ap.add_argument("--grouping", type=int, nargs="+", default=[1],
                    help="grouping factors of the measured steps (1: classic CMux)")
    ap.add_argument("--trials", type=int, default=None,
                    help="CMux steps per set (default: 8 up to N=4096, then 2, 1 at N=32768)")
    a = ap.parse_args()
    rng = np.random.default_rng()
    print(f"# paths {_kernels.available_simd_levels()}; factors in use {parameters.FFT_NOISE_FACTORS}")
    for p in a.bits:
        s = select_parameters(p, p_error=a.p_error)
        k, N, b, l = s.glwe_dimension, s.polynomial_size, s.pbs_base_log, s.pbs_level
        trials = a.trials or (8 if N <= 4096 else 2 if N <= 16384 else 1)
        for g in a.grouping:
            t = time.perf_counter()
            measured = _reference.fft_noise_of_external_product(_kernels, k, N, b, l, trials,
                                                                rng, grouping=g)
            model = parameters.var_fft_step(k, N, b, l) * (1 if g == 1 else 2 * (2**g - 1))
            ratios = ", ".join(f"{path} {v / model:.3f}" for path, v in measured.items())
            print(f"p={p} k={k} N={N} pbs=2^{b}x{l} g={g}: measured / model {ratios} "
                  f"({trials} steps, {time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
