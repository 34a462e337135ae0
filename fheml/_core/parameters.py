"""TFHE parameter sets: noise model, cost model and parameter selection.

Everything here follows ``TFHE.md`` sections 4 and 5 (binary keys, Gaussian noise,
64-bit torus, the KS -> PBS atomic pattern of Concrete / tfhe-rs).

Conventions
-----------
- Variances are in torus² units (the torus is [0, 1), so a standard deviation of
  ``2**-20`` means an error of ``2**-20`` of the torus, i.e. ``2**44`` on a ``uint64``).
- A lookup of ``precision`` bits uses one extra padding bit, so decoding fails when the
  error exceeds ``2**-(precision + 2)``.
- ``norm2`` (ν) is the 2-norm of the clear weights of the linear combination of bootstrap
  outputs that feeds a lookup; it scales the bootstrap noise by ν².

The module reads top to bottom: noise terms, failure probability, cost model, the
:class:`ParameterSet` entity, then the search behind :func:`select_parameters`.
"""

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping

import numpy as np

__all__ = [
    "GlweParameters",
    "MAX_BASE_LOG",
    "MAX_LWE_DIMENSION",
    "MAX_GROUPING_FACTOR",
    "MIN_SECURE_DIMENSION",
    "ParameterSet",
    "cost_ks",
    "cost_pbs",
    "time_ks",
    "time_pbs",
    "log2_p_fail",
    "select_glwe_parameters",
    "select_parameters",
    "key_weight_factor",
    "max_key_weight",
    "var_keyswitch",
    "var_min",
    "var_modulus_switch",
    "var_pbs",
    "var_pbs_parts",
    "var_rounding",
]

# Ciphertext modulus q = 2^64 and the f64 mantissa that limits the FFT precision.
_Q = 2.0**64
_TORUS_BITS = 64
_F64_MANTISSA_BITS = 53

# Seeded keys replace all masks by one CSPRNG seed.
_SEED_BYTES = 32

# Published sets round their standard deviations to 5 significant digits, which can put
# them up to 5e-5 (relative) below the exact minimum; accept that much (1.4e-4 bits).
_SECURITY_RTOL = 1e-4

_MAX_PRECISION_BOOTSTRAP = 8
_MAX_PRECISION_NO_BOOTSTRAP = 30
_MIN_POLYNOMIAL_SIZE = 256
_MAX_POLYNOMIAL_SIZE = 65536

# The secure-noise curve (var_min) is the 132-bit security curve of the Concrete optimizer
# (lattice-estimator fit: log2 sigma = 2.65735 - 0.0248915 * d), published as valid from a
# minimal LWE dimension of 450. No key (LWE n, or GLWE k*N) below it is selected or accepted.
MIN_SECURE_DIMENSION = 450
# Largest key dimension (n or k*N) anything is built for: bounds every allocation a
# parameter set implies and keeps sizes inside the kernels' int arithmetic.
MAX_LWE_DIMENSION = 1 << 17
# Largest decomposition base the kernels run: keyswitch digits are int32 in [-B/2, B/2];
# bootstrap digits are exact in f64 up to 2^51, but the FFT noise grows as B^2 and reaches
# the message spacing of typical sets near B = 2^32 (the model refuses those anyway).
MAX_BASE_LOG = 31

# Search space of select_parameters.
_SEARCH_GLWE_DIMENSIONS = range(1, 7)
_SEARCH_POLYNOMIAL_SIZES = tuple(2**e for e in range(8, 17))
_SEARCH_MAX_BIG_DIMENSION = 65536
_SEARCH_LWE_DIMENSIONS = np.arange(MIN_SECURE_DIMENSION, 2049)
_SEARCH_PBS_LEVELS = np.arange(1, 7)
_SEARCH_KS_LEVELS = np.arange(1, 21)
# var_min reaches its floor (sigma = 2^-62) near d = 2600; no-bootstrap sets stop there.
_SEARCH_NO_BOOTSTRAP_DIMENSIONS = np.arange(MIN_SECURE_DIMENSION, 3073)
# Grouping factors of the multi-bit blind rotation (key bits per step; 1: classic).
MAX_GROUPING_FACTOR = 3
_SEARCH_GROUPING_FACTORS = (1, 2, 3)


# --------------------------------------------------------------------------------------
# Noise model (TFHE.md section 4). All functions accept floats or numpy arrays.
# --------------------------------------------------------------------------------------


def var_min(dimension):
    """Smallest 128-bit secure noise variance for a binary key of a given dimension.

    Curve fit (132-bit, Gaussian noise, binary key) from TFHE.md section 4, with a floor
    of ``2**-124`` (standard deviation ``2**-62``) reached near ``dimension = 2600``.

    Parameters
    ----------
    dimension : int or ndarray
        Key dimension: ``n`` for an LWE key, ``k * N`` for a GLWE key.

    Returns
    -------
    float or ndarray
        Variance in torus² units.

    Examples
    --------
    >>> round(math.sqrt(var_min(833)) * 1e6, 2)
    3.62
    """
    return 2.0 ** (4 - 128) + 2.0 ** (5.31469187675068 - 0.0497829131652661 * dimension)


# Key weight.  The rounding terms of the model (decomposition of the bootstrap and of the
# keyswitch, the standard modulus switch) multiply a binary key: their variance is
# proportional to the key's weight (for a multi-bit bootstrap, to the number of its non-zero
# groups of g bits), which the textbook formulas take at its mean.  A key drawn uniformly is
# a few per cent heavier than the mean half the time (measured: the bootstrap output
# variance of the p=3 classic set at 2^-40 tracks the weights within the sample error,
# 0.96-1.05x the mean-weight model over eight keys), so a mean-weight model would exceed
# p_error for half the keys.  SecretKeys.generate draws again (from the CSPRNG) any key part
# whose weight exceeds the mean by more than KEY_WEIGHT_SIGMAS standard deviations, and the
# model charges that bound.  Redrawing happens for 2.3 % of the draws and removes at most
# log2(1/0.977) = 0.03 bits of key entropy.
KEY_WEIGHT_SIGMAS = 2.0


def _nonzero_fraction(grouping_factor):
    return 1.0 - 2.0 ** -grouping_factor


def max_key_weight(dimension, grouping_factor=1):
    """Largest weight a generated binary key of ``dimension`` bits may have: its number of
    non-zero groups of ``grouping_factor`` consecutive bits (its Hamming weight for 1),
    at most the mean plus ``KEY_WEIGHT_SIGMAS`` standard deviations.

    Returns
    -------
    int
    """
    p = _nonzero_fraction(grouping_factor)
    groups = dimension // grouping_factor
    return int(math.floor(groups * p + KEY_WEIGHT_SIGMAS * math.sqrt(groups * p * (1 - p))))


def key_weight(key_bits, grouping_factor=1):
    """The weight :func:`max_key_weight` bounds, of a binary key (int)."""
    bits = np.asarray(key_bits).reshape(-1, grouping_factor)
    return int(np.count_nonzero(bits.any(axis=1)))


def key_weight_factor(dimension, grouping_factor=1):
    """Ratio of the largest to the mean key weight (see :func:`max_key_weight`): the factor
    the model applies to noise terms proportional to the key's weight.

    Parameters
    ----------
    dimension : int, float or ndarray
        Key dimension (``n``, or ``k * N`` for the GLWE key).
    grouping_factor : int, default=1

    Returns
    -------
    float or ndarray
    """
    p = _nonzero_fraction(grouping_factor)
    groups = np.asarray(dimension, dtype=float) / grouping_factor
    return 1.0 + KEY_WEIGHT_SIGMAS * np.sqrt((1 - p) / (p * groups))


# The kernels' modulus switch is centred (see var_modulus_switch); the tests set this to
# False to compare with TFHE.md's model of the standard switch, as pfail.py computes it.
MODULUS_SWITCH_CENTERED = True


def var_modulus_switch(lwe_dimension, polynomial_size, centered=None):
    """Variance added by rounding an LWE ciphertext from modulus 2^64 to 2N.

    Each mask word ``a_i`` is rounded with an error ``e_i`` the server knows, and the phase
    moves by ``-sum_i e_i s_i``.  Over a uniform binary key the mean of that sum is
    ``sum_i e_i / 2``: the engine's modulus switch adds it to the body before rounding
    (``centered``, tfhe-rs's "centered mean" switch), which leaves
    ``sum_i e_i (s_i - 1/2)``, whose variance is half the standard switch's
    (``E[(s_i - 1/2)^2] = 1/4`` against ``E[s_i^2] = 1/2``).

    Parameters
    ----------
    lwe_dimension : int or ndarray
        Dimension ``n`` of the (small) LWE ciphertext being switched.
    polynomial_size : int or ndarray
        ``N``; the new modulus is ``2 * N``.
    centered : bool, optional
        ``True``: the engine's centred switch; ``False``: the standard one (as
        ``shared/tools/pfail.py`` and TFHE.md model it); ``None``:
        :data:`MODULUS_SWITCH_CENTERED`.

    Returns
    -------
    float or ndarray
        Variance in torus² units.
    """
    q2 = _Q * _Q
    two_n_sq = (2.0 * polynomial_size) ** 2
    if MODULUS_SWITCH_CENTERED if centered is None else centered:
        # the mask's n rounding errors times 1/4, the body's rounding (the half sum is
        # floored to the 2^-32 grid first: below 1/(12 q²)-scale terms, counted once)
        return lwe_dimension * (1 / (48 * q2) + 1 / (48 * two_n_sq)) + 1 / (12 * two_n_sq)
    return (
        lwe_dimension * (1 / (48 * q2) + key_weight_factor(lwe_dimension) / (24 * two_n_sq))
        - 1 / (12 * q2)
        + 1 / (12 * two_n_sq)
    )


def var_keyswitch(input_dimension, ks_base_log, ks_level, ksk_variance, weight_factor=None):
    """Variance added by an LWE keyswitch.

    Parameters
    ----------
    input_dimension : int or ndarray
        Dimension of the input ciphertext (``k * N`` in the KS -> PBS pattern).
    ks_base_log : int or ndarray
        Log2 of the decomposition base.
    ks_level : int or ndarray
        Number of decomposition levels.
    ksk_variance : float or ndarray
        Noise variance of the keyswitching key (that of the output LWE key).
    weight_factor : float, optional
        Factor on the rounding term, which multiplies the input key's bits; defaults to
        ``key_weight_factor(input_dimension)`` (a generated key's largest weight).

    Returns
    -------
    float or ndarray
        Variance in torus² units.
    """
    if weight_factor is None:
        weight_factor = key_weight_factor(input_dimension)
    base = 2.0**ks_base_log
    return ks_level * input_dimension * ksk_variance * (base * base / 12 + 1 / 6) + (
        input_dimension * (1 / (48 * _Q * _Q) + weight_factor * base ** (-2 * ks_level) / 24)
    )


# The FFT term of TFHE.md is calibrated for tfhe-rs's FFT.  fheml's kernels were measured
# against it, per kernel path (benchmarks/fft_noise.py: one CMux step on uniform data against
# the exact integer result, phase variance under a binary key, at the sets selected for
# p = 1..8 at 2^-40, 16 steps up to N=8192): the largest ratio is 1.22 on the portable path
# (no FMA: more rounding) and 1.10 on AVX2, both at p=4; AVX-512 is bit-identical to AVX2.
# (Before the radix-4 passes took the product twiddles from a table they were 1.36 and
# 1.23.)  Each path's factor is its largest measured ratio plus ~10 % (statistics and the
# spread between sets); tests/_core/test_noise.py re-measures them.
FFT_NOISE_FACTORS = {"portable": 1.35, "avx2": 1.2, "avx512": 1.2}
# A server need not have the client's CPU: selection covers every path that may run the
# circuit, so the model uses the largest factor.  Sets are never less conservative than
# shared/tools/pfail.py (which uses 1).
FFT_NOISE_MARGIN = max(FFT_NOISE_FACTORS.values())


def var_fft_step(glwe_dimension, polynomial_size, pbs_base_log, pbs_level):
    """TFHE.md's FFT noise term of one CMux step (calibrated for tfhe-rs, no margin).

    Parameters are those of :func:`var_pbs_parts`.

    Returns
    -------
    float or ndarray
        Variance in torus² units.
    """
    base = 2.0**pbs_base_log
    k = glwe_dimension
    return (
        0.00705
        * 2.0 ** (2 * max(0, _TORUS_BITS - _F64_MANTISSA_BITS))
        * base * base / (_Q * _Q)
        * pbs_level**1.01827
        * k**1.22003
        * polynomial_size**2.22003
        * (k + 1) ** 1.01827
    )


# The multi-bit blind rotation (grouping factor g > 1, kernels_impl.h) runs n/g steps of
#     ACC += sum_c (X^<a,c> - 1) * ExtProd(GGSW([s == c]), ACC)
# over the 2^g - 1 non-empty subsets c of each group of g key bits.  Per step, against one
# classic CMux step: each subset's key noise is multiplied by X^e - 1 (two independent
# copies of its coefficients: variance x2), so the key term is 2·(2^g - 1) times; only the
# one subset that equals the key bits carries ACC and its decomposition error, times
# X^e - 1 (variance x2), and there is one with probability 1 - 2^-g (none when the bits
# are all 0), where the classic term counts the error of a CMux with probability 1/2 (its
# key bit is 1): 4·(1 - 2^-g) times the decomposition term (a first model with 2 was
# 1.42x short of the measured output noise at p = 4, tests/_core/test_noise.py; with
# 4·(1 - 2^-g) the model is 1.4x above it on every path); each subset's
# multiply-accumulate rounding is multiplied by the same monomials: 2·(2^g - 1) times the
# FFT term, times MULTIBIT_FFT_NOISE_FACTOR.  (tfhe-rs, which sums X^<a,c> · GGSW_c over
# all 2^g subsets, has 2^g times the key term; the "- 1" form saves one GGSW per group and
# pays 2·(2^g - 1).)  The factor covers what the FFT error of the monomials' transforms and
# of their products adds: benchmarks/fft_noise.py --grouping measures one multi-bit step
# against the exact reference on every path, as a multiple of 2·(2^g - 1) classic FFT
# terms: up to 1.42 (g = 2) and 1.59 (g = 3) on the portable path, 1.36 and 1.41 on
# AVX2/AVX-512 (k = 1, 2; N = 512..2048; 2-4 steps each), 1.05-1.33 at the sets selected
# for p = 1..3 (8 steps each); ~10 % is added to the largest.  At the larger selected sets
# (4 steps each): 1.36 / 1.24 (portable / AVX2) at p = 5 (N = 2048), 1.17 / 1.04 at p = 6
# (N = 8192), 0.98 / 0.89 at p = 8 (N = 32768, l = 2).
MULTIBIT_FFT_NOISE_FACTOR = 1.75


def _step_factors(grouping_factor):
    """(fft, key, decomposition) multipliers of one blind-rotation step with grouping
    factor g against a classic CMux step (see MULTIBIT_FFT_NOISE_FACTOR)."""
    if grouping_factor == 1:
        return 1.0, 1.0, 1.0
    subsets = 2.0**grouping_factor - 1
    return (2 * subsets * MULTIBIT_FFT_NOISE_FACTOR, 2 * subsets,
            4 * (1 - 2.0**-grouping_factor))


def var_pbs_parts(lwe_dimension, glwe_dimension, polynomial_size, pbs_base_log, pbs_level,
                  bsk_variance, grouping_factor=1, lwe_weight_factor=None):
    """The three parts of the output variance of one programmable bootstrap.

    Parameters
    ----------
    lwe_dimension : int or ndarray
        ``n``, the number of CMux steps of the blind rotation.
    glwe_dimension : int or ndarray
        ``k``.
    polynomial_size : int or ndarray
        ``N``.
    pbs_base_log : int or ndarray
        Log2 of the gadget decomposition base of the external product.
    pbs_level : int or ndarray
        Number of gadget levels.
    bsk_variance : float or ndarray
        Noise variance of the bootstrapping key (that of the GLWE key).
    grouping_factor : int, default=1
        Key bits per blind-rotation step (multi-bit bootstrap: ``n/g`` steps, each with the
        multipliers of ``_step_factors``).
    lwe_weight_factor : float or ndarray, optional
        Factor on the decomposition term for the LWE key's weight; defaults to
        ``key_weight_factor(lwe_dimension, grouping_factor)`` (the GLWE key's factor is
        applied too).

    Returns
    -------
    dict
        ``{"fft": ..., "key": ..., "dec": ...}``, each already summed over the ``n/g``
        steps so the three sum to :func:`var_pbs`. ``fft`` is the f64 FFT rounding error
        (:func:`var_fft_step` times ``FFT_NOISE_MARGIN``, the largest measured factor of the
        kernel paths), ``key`` the noise of the key itself, ``dec`` the gadget decomposition
        rounding.
    """
    base = 2.0**pbs_base_log
    k = glwe_dimension
    n_poly = polynomial_size
    q2 = _Q * _Q
    fft = FFT_NOISE_MARGIN * var_fft_step(glwe_dimension, polynomial_size, pbs_base_log, pbs_level)
    key = pbs_level * n_poly * (k + 1) * bsk_variance * (base * base / 12 + 1 / 6)
    rounding = base ** (-2 * pbs_level) / 24
    dec = -1 / (24 * q2) + (k * n_poly / 2) * (1 / (48 * q2) + rounding) + rounding
    if lwe_weight_factor is None:
        lwe_weight_factor = key_weight_factor(lwe_dimension, grouping_factor)
    # the rounding error reaches the output through the LWE key's bits (the GGSW messages)
    # and the GLWE key's: both at their largest generated weight
    dec = dec * lwe_weight_factor * key_weight_factor(k * n_poly)
    f_fft, f_key, f_dec = _step_factors(grouping_factor)
    steps = lwe_dimension / grouping_factor
    return {
        "fft": steps * f_fft * fft,
        "key": steps * f_key * key,
        "dec": steps * f_dec * dec,
    }


def var_pbs(lwe_dimension, glwe_dimension, polynomial_size, pbs_base_log, pbs_level,
            bsk_variance, grouping_factor=1, lwe_weight_factor=None):
    """Output variance of one programmable bootstrap (independent of its input noise).

    Parameters are those of :func:`var_pbs_parts`.

    Returns
    -------
    float or ndarray
        Variance in torus² units.
    """
    parts = var_pbs_parts(lwe_dimension, glwe_dimension, polynomial_size, pbs_base_log,
                          pbs_level, bsk_variance, grouping_factor, lwe_weight_factor)
    return parts["fft"] + parts["key"] + parts["dec"]


# --------------------------------------------------------------------------------------
# Failure probability
# --------------------------------------------------------------------------------------

# Beyond this argument math.erfc is replaced by its asymptotic series, whose truncation
# error there is ~3e-10 (relative); math.erfc itself underflows near 27.
_ERFC_ASYMPTOTIC_FROM = 20.0


def _log2_erfc(x):
    """log2(erfc(x)) for x >= 0, finite even where erfc underflows."""
    if x < _ERFC_ASYMPTOTIC_FROM:
        return math.log2(math.erfc(x))
    # erfc(x) = exp(-x²)/(x·√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) + 105/(16x⁸) - ...)
    inv = 1.0 / (2.0 * x * x)
    series = -inv + 3 * inv**2 - 15 * inv**3 + 105 * inv**4
    return (-x * x - math.log(x * math.sqrt(math.pi)) + math.log1p(series)) / math.log(2)


def _check_precision_bits(precision, name="precision"):
    if isinstance(precision, bool) or not isinstance(precision, numbers.Integral):
        raise TypeError(f"{name} must be an integer number of bits, got {precision!r}")
    precision = int(precision)
    if precision < 1:
        raise ValueError(f"{name} must be at least 1 bit, got {precision}")
    return precision


def log2_p_fail(variance, precision):
    """Log2 of the probability that a lookup (or decryption) decodes the wrong value.

    The error is Gaussian with the given variance; decoding of ``precision`` bits plus a
    padding bit fails when ``|error| > 2**-(precision + 2)``, so
    ``p_fail = erfc(2**-(precision + 2) / sqrt(2 * variance))``.

    Parameters
    ----------
    variance : float
        Variance of the error at the decision point, torus² units, > 0.
    precision : int
        Message bits (without the padding bit).

    Returns
    -------
    float
        ``log2(p_fail)``, always finite: an asymptotic expansion of erfc takes over where
        the direct evaluation would underflow (``p_fail`` below about ``2**-600``).

    Examples
    --------
    >>> round(log2_p_fail((2.0**-6 / 9.16) ** 2, 4))  # sigma_max = 2^-(p+2) / 9.16
    -64
    """
    precision = _check_precision_bits(precision)
    if isinstance(variance, bool) or not isinstance(variance, numbers.Real):
        raise TypeError(f"variance must be a real number, got {variance!r}")
    variance = float(variance)
    if not (variance > 0 and math.isfinite(variance)):
        raise ValueError(f"variance must be positive and finite, got {variance!r}")
    x = 2.0 ** -(precision + 2) / math.sqrt(2.0 * variance)
    return _log2_erfc(x)


@functools.lru_cache(maxsize=256)
def _max_variance(precision, log2_target):
    """Largest variance whose log2 p_fail at ``precision`` bits is <= ``log2_target``."""
    # log2 erfc(x) decreases with x: bisect for the smallest x reaching the target and keep
    # the upper end of the bracket so the returned variance is on the safe side.
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _log2_erfc(mid) <= log2_target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (2.0 ** -(precision + 2) / hi) ** 2 / 2.0


# --------------------------------------------------------------------------------------
# Cost model (TFHE.md section 4: Concrete optimizer / tfhe-rs "algorithmic cost")
# --------------------------------------------------------------------------------------


def cost_pbs(lwe_dimension, glwe_dimension, polynomial_size, pbs_level, grouping_factor=1):
    """Algorithmic cost of one programmable bootstrap, in operations.

    ``n · [(k+1)·l·(N·log2 N + N) + (k+1)·(N·log2 N + N) + (k+1)²·l·N]``: forward FFTs of
    the decomposed digits, inverse FFTs, and the Fourier-domain multiply-accumulate.  With
    grouping factor ``g > 1``: ``n/g`` steps, each with ``2^g - 1`` multiply-accumulates and
    monomial transforms (``N`` operations each).

    Parameters
    ----------
    lwe_dimension, glwe_dimension, polynomial_size, pbs_level : int or ndarray
        ``n``, ``k``, ``N`` and the number of gadget levels.
    grouping_factor : int, default=1
        Key bits per blind-rotation step.

    Returns
    -------
    float or ndarray
    """
    k1 = glwe_dimension + 1
    fft = polynomial_size * np.log2(polynomial_size) + polynomial_size
    mac = k1 * k1 * pbs_level * polynomial_size
    if grouping_factor > 1:
        subsets = 2**grouping_factor - 1
        return lwe_dimension / grouping_factor * (
            k1 * pbs_level * fft + k1 * fft + subsets * (mac + polynomial_size))
    return lwe_dimension * (k1 * pbs_level * fft + k1 * fft + mac)


def cost_ks(input_dimension, output_dimension, ks_level):
    """Algorithmic cost of one keyswitch, in operations: ``2 · n_in · l · (n_out + 1)``.

    Parameters
    ----------
    input_dimension : int or ndarray
        ``k * N``.
    output_dimension : int or ndarray
        ``n``.
    ks_level : int or ndarray
        Number of decomposition levels.

    Returns
    -------
    float or ndarray
    """
    return 2.0 * input_dimension * ks_level * (output_dimension + 1)


# Measured cost (what the selector minimises).  The algorithmic cost above weighs an FFT,
# a decomposition and a multiply-accumulate as the operation counts say; the kernels do not
# (e.g. k=2, N=1024 costs 1.3x less per step than k=1, N=2048 at equal operation counts,
# and large N pays for the cache).  One blind-rotation step of one accumulator (four
# bootstrapped together, the key streamed from memory) costs
#     (k+1)·l·A_N + (k+1)·B_N + (k+1)²·l·C_N   microseconds
# (A: decomposition and forward FFT of one digit polynomial; B: rotation, inverse FFT and
# conversion of one output polynomial; C: multiply-accumulate per GGSW row and column),
# fitted by benchmarks/pbs_cost_table.py (fit within ~5 % from N=1024 on, 13 % at 256; the
# machine was shared) on one thread of the AVX-512 kernels (Xeon of the development
# machine); N = 65536 is extrapolated (x2.2 per doubling, as 16384 -> 32768).
# The keyswitch costs _KS_COST_US per multiply-subtract (n_in·l·(n+1) of them), keyswitched
# eight at a time.  Only ratios matter to the selector.
_STEP_COST_US = {
    256: (0.239, 0.254, 0.035),
    512: (0.472, 0.605, 0.075),
    1024: (0.947, 1.322, 0.13),
    2048: (1.681, 2.71, 0.395),
    4096: (4.052, 5.411, 1.072),
    8192: (7.805, 9.6, 3.877),
    16384: (23.165, 19.21, 10.494),
    32768: (35.428, 61.344, 25.301),
}
_STEP_COST_US[65536] = tuple(2.2 * c for c in _STEP_COST_US[32768])
_KS_COST_US = 9.4e-5
# Multi-bit steps (grouping factor g > 1) cost
#     (k+1)·l·A_N + (k+1)·B_N + (2^g - 1)·((k+1)²·l·C'_N + D_N)
# (C': the multiply-accumulate with the monomial applied in its epilogue, D: building one
# monomial's transform), fitted by benchmarks/pbs_cost_table.py --grouping with A and B
# above (same machine, AVX-512, shared; N = 65536 not measured, so not searched); values
# (C'_N, D_N).
_MULTIBIT_COST_US = {
    256: (0.025, 0.191),
    512: (0.095, 0.146),
    1024: (0.144, 0.576),
    2048: (0.447, 0.481),
    4096: (1.122, 1.193),
    8192: (3.568, 0.0),
    16384: (11.17, 0.0),
    32768: (24.841, 0.0),
}


def time_pbs(lwe_dimension, glwe_dimension, polynomial_size, pbs_level, grouping_factor=1):
    """Measured one-thread time of one programmable bootstrap, in seconds.

    ``n`` blind-rotation steps of ``(k+1)·l·A_N + (k+1)·B_N + (k+1)²·l·C_N`` microseconds
    (``_STEP_COST_US``, from ``benchmarks/pbs_cost_table.py``); with grouping factor
    ``g > 1``, ``n/g`` steps of ``(k+1)·l·A_N + (k+1)·B_N + (2^g - 1)·((k+1)²·l·C'_N + D_N)``
    (``_MULTIBIT_COST_US``).

    Parameters
    ----------
    lwe_dimension, glwe_dimension, pbs_level : int or ndarray
        ``n``, ``k`` and the number of gadget levels.
    polynomial_size : int
        ``N``, a power of two in 256..65536.
    grouping_factor : int, default=1
        Key bits per blind-rotation step.

    Returns
    -------
    float or ndarray
    """
    a, b, c = _STEP_COST_US[int(polynomial_size)]
    k1 = glwe_dimension + 1
    if grouping_factor == 1:
        return lwe_dimension * (k1 * pbs_level * a + k1 * b + k1 * k1 * pbs_level * c) * 1e-6
    c_mono, d = _MULTIBIT_COST_US[int(polynomial_size)]
    subsets = 2**grouping_factor - 1
    return lwe_dimension / grouping_factor * (
        k1 * pbs_level * a + k1 * b + subsets * (k1 * k1 * pbs_level * c_mono + d)) * 1e-6


def time_ks(input_dimension, output_dimension, ks_level):
    """Measured one-thread time of one keyswitch, in seconds (see :func:`time_pbs`).

    Parameters
    ----------
    input_dimension, output_dimension, ks_level : int or ndarray
        ``k * N``, ``n`` and the number of decomposition levels.

    Returns
    -------
    float or ndarray
    """
    return _KS_COST_US * 1e-6 * input_dimension * ks_level * (output_dimension + 1)


# --------------------------------------------------------------------------------------
# ParameterSet
# --------------------------------------------------------------------------------------

_INT_FIELDS = ("precision", "lwe_dimension", "glwe_dimension", "polynomial_size",
               "pbs_base_log", "pbs_level", "ks_base_log", "ks_level", "grouping_factor")
_FLOAT_FIELDS = ("lwe_noise_std", "glwe_noise_std", "p_error", "norm2")
_BOOTSTRAP_ONLY_FIELDS = ("glwe_dimension", "polynomial_size", "pbs_base_log", "pbs_level",
                          "ks_base_log", "ks_level")


def _check_secure_std(name, std, dimension):
    minimum = math.sqrt(var_min(dimension))
    if std < minimum * (1 - _SECURITY_RTOL):
        raise ValueError(
            f"{name}={std:.4e} is below the 128-bit secure minimum {minimum:.4e} for key "
            f"dimension {dimension}; use a larger noise or a larger dimension"
        )


@dataclasses.dataclass(frozen=True)
class ParameterSet:
    """Cryptographic parameters of a TFHE circuit (KS -> PBS atomic pattern).

    Every instance is validated on construction: the 128-bit security of both keys (noise
    at least ``sqrt(var_min(dimension))``, dimensions in the curve's validated range from
    ``MIN_SECURE_DIMENSION``), what the kernels can run (bases up to ``2**MAX_BASE_LOG``),
    and the set's own claim (``log2_p_fail() <= log2(p_error)``). A set without
    bootstrapping (for circuits with no lookup, decrypted directly) has ``glwe_dimension``,
    ``polynomial_size``, the four base/level fields and ``glwe_noise_std`` all zero.

    Parameters
    ----------
    precision : int
        Message bits ``p`` of the lookups (or of the decrypted values when there is no
        bootstrap); the padding bit is extra. 1..8 with bootstrap, 1..30 without.
    lwe_dimension : int
        ``n``, dimension of the small LWE key (the only key without bootstrap);
        ``450 <= n <= 2**17``.
    glwe_dimension : int
        ``k``, with ``450 <= k * N <= 2**17``.
    polynomial_size : int
        ``N``, a power of two in 256..65536.
    lwe_noise_std : float
        Noise standard deviation of the LWE key / keyswitching key, torus units.
    glwe_noise_std : float
        Noise standard deviation of the GLWE key / bootstrapping key, torus units.
    pbs_base_log, pbs_level : int
        Gadget decomposition of the bootstrap (``1 <= base_log <= 31``,
        ``base_log * level <= 64``).
    ks_base_log, ks_level : int
        Decomposition of the keyswitch (same limits).
    p_error : float
        Per-lookup failure probability the set was selected for; the set's model must
        meet it at ``precision`` and ``norm2``.
    norm2 : float
        2-norm ν of the linear combinations feeding lookups that the set was selected for.
    grouping_factor : int, default=1
        Key bits per blind-rotation step: 1 for the classic bootstrap, 2 or 3
        (``MAX_GROUPING_FACTOR``) for the multi-bit one, whose key holds ``2^g - 1`` GGSWs
        per group of ``g`` bits (``lwe_dimension`` a multiple of ``g``). 1 without
        bootstrap.

    Examples
    --------
    >>> params = select_parameters(4, p_error=2**-40)
    >>> params.log2_p_fail() <= -40
    True
    """

    precision: int
    lwe_dimension: int
    glwe_dimension: int
    polynomial_size: int
    lwe_noise_std: float
    glwe_noise_std: float
    pbs_base_log: int
    pbs_level: int
    ks_base_log: int
    ks_level: int
    p_error: float
    norm2: float
    grouping_factor: int = 1

    def __post_init__(self):
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)

        if not 0.0 < self.p_error < 1.0:
            raise ValueError(f"p_error must be in (0, 1), got {self.p_error!r}")
        if not self.norm2 > 0.0:
            raise ValueError(f"norm2 must be > 0, got {self.norm2!r}")
        if not MIN_SECURE_DIMENSION <= self.lwe_dimension <= MAX_LWE_DIMENSION:
            raise ValueError(
                f"lwe_dimension must be in {MIN_SECURE_DIMENSION}..{MAX_LWE_DIMENSION} (the "
                f"secure-noise curve is only validated from {MIN_SECURE_DIMENSION}), got "
                f"{self.lwe_dimension}")
        if not 0.0 < self.lwe_noise_std < 1.0:
            raise ValueError(
                f"lwe_noise_std must be in (0, 1) (torus units, a fraction of 1, not scaled "
                f"by 2^64), got {self.lwe_noise_std!r}"
            )
        _check_secure_std("lwe_noise_std", self.lwe_noise_std, self.lwe_dimension)

        if self.has_bootstrap:
            self._validate_bootstrap_fields()
        else:
            nonzero = [f"{name}={getattr(self, name)}" for name in _BOOTSTRAP_ONLY_FIELDS
                       if getattr(self, name) != 0]
            if self.glwe_noise_std != 0.0:
                nonzero.append(f"glwe_noise_std={self.glwe_noise_std!r}")
            if self.grouping_factor != 1:
                nonzero.append(f"grouping_factor={self.grouping_factor} (must be 1)")
            if nonzero:
                raise ValueError(
                    "polynomial_size=0 means a set without bootstrapping, which needs "
                    f"every bootstrap field at 0; got {', '.join(nonzero)}"
                )
            if not 1 <= self.precision <= _MAX_PRECISION_NO_BOOTSTRAP:
                raise ValueError(
                    f"precision must be in 1..{_MAX_PRECISION_NO_BOOTSTRAP} without "
                    f"bootstrapping, got {self.precision}"
                )
        self._check_own_claim()

    def _check_own_claim(self):
        """The set must meet the failure probability it claims (at its precision and ν)."""
        log2_fail = self.log2_p_fail()
        if log2_fail > math.log2(self.p_error) + 1e-9:
            raise ValueError(
                f"this set fails a lookup of {self.precision} bits at norm2={self.norm2:g} "
                f"with probability 2^{log2_fail:.1f}, above its own p_error "
                f"2^{math.log2(self.p_error):.1f}; lower the precision or norm2, or raise "
                "p_error")

    def _validate_bootstrap_fields(self):
        if not 1 <= self.precision <= _MAX_PRECISION_BOOTSTRAP:
            raise ValueError(
                f"precision must be in 1..{_MAX_PRECISION_BOOTSTRAP} with bootstrapping, "
                f"got {self.precision}"
            )
        size = self.polynomial_size
        if (size & (size - 1)) or not _MIN_POLYNOMIAL_SIZE <= size <= _MAX_POLYNOMIAL_SIZE:
            raise ValueError(
                f"polynomial_size must be a power of two in {_MIN_POLYNOMIAL_SIZE}.."
                f"{_MAX_POLYNOMIAL_SIZE} (or 0 for no bootstrapping), got {size}"
            )
        if not 1 <= self.glwe_dimension <= MAX_LWE_DIMENSION // size:
            raise ValueError(
                f"glwe_dimension must be in 1..{MAX_LWE_DIMENSION // size} (k * N <= "
                f"{MAX_LWE_DIMENSION}), got {self.glwe_dimension}")
        if self.big_lwe_dimension < MIN_SECURE_DIMENSION:
            raise ValueError(
                f"glwe_dimension * polynomial_size must be at least {MIN_SECURE_DIMENSION} "
                f"(the secure-noise curve is only validated from there), got "
                f"{self.big_lwe_dimension}")
        for prefix in ("pbs", "ks"):
            base_log = getattr(self, f"{prefix}_base_log")
            level = getattr(self, f"{prefix}_level")
            if not (1 <= base_log <= MAX_BASE_LOG and level >= 1
                    and base_log * level <= _TORUS_BITS):
                raise ValueError(
                    f"{prefix}_base_log must be in 1..{MAX_BASE_LOG} and {prefix}_level >= 1 "
                    f"with {prefix}_base_log * {prefix}_level <= {_TORUS_BITS}, got "
                    f"{base_log} and {level}"
                )
        if not 0.0 < self.glwe_noise_std < 1.0:
            raise ValueError(
                f"glwe_noise_std must be in (0, 1) (torus units, a fraction of 1, not "
                f"scaled by 2^64), got {self.glwe_noise_std!r}"
            )
        _check_secure_std("glwe_noise_std", self.glwe_noise_std, self.big_lwe_dimension)
        g = self.grouping_factor
        if not 1 <= g <= MAX_GROUPING_FACTOR or self.lwe_dimension % g:
            raise ValueError(
                f"grouping_factor must be in 1..{MAX_GROUPING_FACTOR} and divide lwe_dimension "
                f"({self.lwe_dimension}), got {g}")

    # -- derived quantities ------------------------------------------------------------

    @property
    def has_bootstrap(self):
        """bool: whether the set has bootstrapping (lookup) keys."""
        return self.polynomial_size != 0

    @property
    def big_lwe_dimension(self):
        """int: dimension ciphertexts are encrypted under (``k * N``, or ``n``)."""
        if self.has_bootstrap:
            return self.glwe_dimension * self.polynomial_size
        return self.lwe_dimension

    @property
    def big_noise_std(self):
        """float: encryption noise of fresh ciphertexts (under the big key)."""
        return self.glwe_noise_std if self.has_bootstrap else self.lwe_noise_std

    @property
    def variance_ks(self):
        """float: variance added by one keyswitch (0 without bootstrap)."""
        if not self.has_bootstrap:
            return 0.0
        return var_keyswitch(self.big_lwe_dimension, self.ks_base_log, self.ks_level,
                             self.lwe_noise_std**2)

    @property
    def variance_ms(self):
        """float: variance added by the modulus switch (0 without bootstrap)."""
        if not self.has_bootstrap:
            return 0.0
        return var_modulus_switch(self.lwe_dimension, self.polynomial_size)

    @property
    def variance_pbs(self):
        """float: output variance of one bootstrap (0 without bootstrap)."""
        if not self.has_bootstrap:
            return 0.0
        return var_pbs(self.lwe_dimension, self.glwe_dimension, self.polynomial_size,
                       self.pbs_base_log, self.pbs_level, self.glwe_noise_std**2,
                       self.grouping_factor)

    @property
    def variance_output(self):
        """float: error variance of a ciphertext decrypted as it is, the larger of a fresh
        encryption's and a bootstrap output's."""
        return max(self.big_noise_std ** 2, self.variance_pbs)

    def variance_at_lookup(self, norm2=None):
        """Error variance at the decision point of a lookup (or of the decryption).

        Parameters
        ----------
        norm2 : float, optional
            2-norm ν of the linear combination feeding the lookup; defaults to
            ``self.norm2``.

        Returns
        -------
        float
            ``ν²·Var_PBS + Var_KS + Var_MS``; without bootstrap, ``ν²·big_noise_std²``
            (a linear combination of fresh ciphertexts, decrypted directly).
        """
        norm2 = self.norm2 if norm2 is None else float(norm2)
        if not norm2 > 0:
            raise ValueError(f"norm2 must be > 0, got {norm2!r}")
        if not self.has_bootstrap:
            return norm2**2 * self.big_noise_std**2
        return norm2**2 * self.variance_pbs + self.variance_ks + self.variance_ms

    def log2_p_fail(self, precision=None, norm2=None):
        """Modelled log2 failure probability of one lookup.

        Parameters
        ----------
        precision : int, optional
            Bits of the lookup; defaults to ``self.precision``.
        norm2 : float, optional
            ν; defaults to ``self.norm2``.

        Returns
        -------
        float
        """
        precision = self.precision if precision is None else precision
        return log2_p_fail(self.variance_at_lookup(norm2), precision)

    def p_fail(self, precision=None, norm2=None):
        """Modelled failure probability of one lookup (see :meth:`log2_p_fail`).

        Returns
        -------
        float
            Underflows to 0.0 only below about 5e-324.
        """
        return 2.0 ** self.log2_p_fail(precision, norm2)

    @property
    def cost(self):
        """float: algorithmic cost of one lookup (KS + PBS) in operations; 0 without."""
        if not self.has_bootstrap:
            return 0.0
        return float(
            cost_pbs(self.lwe_dimension, self.glwe_dimension, self.polynomial_size,
                     self.pbs_level, self.grouping_factor)
            + cost_ks(self.big_lwe_dimension, self.lwe_dimension, self.ks_level)
        )

    @property
    def time_estimate(self):
        """float: measured one-thread time of one lookup (KS + PBS) in seconds, the cost
        the selection minimises (:func:`time_pbs`, :func:`time_ks`); 0 without."""
        if not self.has_bootstrap:
            return 0.0
        return float(
            time_pbs(self.lwe_dimension, self.glwe_dimension, self.polynomial_size,
                     self.pbs_level, self.grouping_factor)
            + time_ks(self.big_lwe_dimension, self.lwe_dimension, self.ks_level)
        )

    @property
    def bsk_ggsw_count(self):
        """int: GGSWs in the bootstrapping key: ``n``, or ``n/g·(2^g - 1)`` (multi-bit)."""
        if not self.has_bootstrap:
            return 0
        g = self.grouping_factor
        return self.lwe_dimension // g * ((1 << g) - 1)

    @property
    def bsk_bytes(self):
        """int: size of the bootstrapping key, ``(k+1)²·l·N`` u64 words per GGSW."""
        if not self.has_bootstrap:
            return 0
        return (self.bsk_ggsw_count * (self.glwe_dimension + 1) ** 2 * self.pbs_level
                * self.polynomial_size * 8)

    @property
    def ksk_bytes(self):
        """int: size of the keyswitching key, ``k·N·l·(n+1)`` u64 words."""
        if not self.has_bootstrap:
            return 0
        return self.big_lwe_dimension * self.ks_level * (self.lwe_dimension + 1) * 8

    @property
    def seeded_bsk_bytes(self):
        """int: bootstrapping key with masks replaced by a seed (bodies + 32 bytes)."""
        if not self.has_bootstrap:
            return 0
        return self.bsk_bytes // (self.glwe_dimension + 1) + _SEED_BYTES

    @property
    def seeded_ksk_bytes(self):
        """int: keyswitching key with masks replaced by a seed (bodies + 32 bytes)."""
        if not self.has_bootstrap:
            return 0
        return self.ksk_bytes // (self.lwe_dimension + 1) + _SEED_BYTES

    # -- serialisation -----------------------------------------------------------------

    def to_dict(self):
        """Return the fields as a JSON-safe dict (Python ints and floats only)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data):
        """Build a validated set from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or any value is invalid.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of parameters, got {type(data).__name__}")
        expected = {field.name for field in dataclasses.fields(cls)}
        # sets saved before the multi-bit bootstrap have no grouping factor: classic
        missing = sorted(expected - set(data) - {"grouping_factor"})
        unknown = sorted(set(data) - expected, key=str)
        if missing or unknown:
            raise ValueError(
                f"invalid parameter set: missing keys {missing}, unknown keys {unknown}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"invalid parameter set: {exc}") from exc

    def __str__(self):
        if not self.has_bootstrap:
            return (
                f"ParameterSet(no bootstrap, p={self.precision}, n={self.lwe_dimension}, "
                f"sigma={self.lwe_noise_std:.3e}, nu={self.norm2:g}, "
                f"log2 p_fail={self.log2_p_fail():.1f})"
            )
        return (
            f"ParameterSet(p={self.precision}, n={self.lwe_dimension}, "
            f"k={self.glwe_dimension}, N={self.polynomial_size}, "
            f"pbs=2^{self.pbs_base_log}x{self.pbs_level}"
            + (f" multi-bit g={self.grouping_factor}" if self.grouping_factor > 1 else "")
            + f", ks=2^{self.ks_base_log}x{self.ks_level}, nu={self.norm2:g}, "
            f"log2 p_fail={self.log2_p_fail():.1f}, cost={self.cost / 1e6:.0f} Mop "
            f"(~{self.time_estimate * 1e3:.1f} ms), "
            f"BSK {self.bsk_bytes / 1e6:.0f} MB, KSK {self.ksk_bytes / 1e6:.0f} MB)"
        )


# --------------------------------------------------------------------------------------
# Parameter selection
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _ks_table(input_dimension):
    """Best keyswitch base per (level, n) over the search grid, from an input key of
    ``input_dimension`` bits (``k * N``).

    The keyswitch variance is ``n_in`` times a function of (base, level, var_min(n)) and
    of the input key's weight factor, so the best base depends on ``n_in`` only through it.

    Returns
    -------
    var_per_input : ndarray, shape (len(_SEARCH_KS_LEVELS), len(_SEARCH_LWE_DIMENSIONS))
        Smallest ``Var_KS / n_in``.
    base_log : ndarray of int, same shape
        The base achieving it.
    """
    levels = _SEARCH_KS_LEVELS[:, None, None]
    base_logs = np.arange(1, MAX_BASE_LOG + 1)[None, :, None]
    ksk_var = var_min(_SEARCH_LWE_DIMENSIONS.astype(float))[None, None, :]
    per_input = var_keyswitch(1.0, base_logs, levels, ksk_var,
                              weight_factor=key_weight_factor(input_dimension))
    per_input = np.where(base_logs * levels <= _TORUS_BITS, per_input, np.inf)
    best = np.argmin(per_input, axis=1)
    return np.take_along_axis(per_input, best[:, None, :], axis=1)[:, 0, :], best + 1


@functools.lru_cache(maxsize=None)
def _pbs_table(glwe_dimension, polynomial_size, grouping_factor=1):
    """Best bootstrap base per level (chosen at the smallest n's key-weight factor).

    Returns
    -------
    fixed, dec : ndarray
        Per pbs level, ``Var_PBS / n`` without the decomposition term and that term
        without the LWE key's weight factor: ``Var_PBS(n) = n * (fixed + dec *
        key_weight_factor(n, g))`` (see :func:`_pbs_variance`).
    base_log : ndarray of int
    """
    levels = _SEARCH_PBS_LEVELS[:, None]
    base_logs = np.arange(1, MAX_BASE_LOG + 1)[None, :]
    bsk_var = var_min(glwe_dimension * polynomial_size)
    parts = var_pbs_parts(1.0, glwe_dimension, polynomial_size, base_logs, levels, bsk_var,
                          grouping_factor, lwe_weight_factor=1.0)
    fixed, dec = parts["fft"] + parts["key"], parts["dec"]
    per_n = fixed + dec * key_weight_factor(_SEARCH_LWE_DIMENSIONS[0], grouping_factor)
    per_n = np.where(base_logs * levels <= _TORUS_BITS, per_n, np.inf)
    best = np.argmin(per_n, axis=1)
    rows = np.arange(len(best))
    return fixed[rows, best], dec[rows, best], best + 1


def _pbs_variance(glwe_dimension, polynomial_size, grouping_factor, dims):
    """Var_PBS of the best base per level, shape (pbs levels, len(dims)), and the bases."""
    fixed, dec, base = _pbs_table(glwe_dimension, polynomial_size, grouping_factor)
    factor = key_weight_factor(dims, grouping_factor)
    return dims[None, :] * (fixed[:, None] + dec[:, None] * factor[None, :]), base


def _search_space(grouping_factors=_SEARCH_GROUPING_FACTORS):
    """(k, N, g) triples, cheapest first (N ascending, then k), g only where the cost
    table has multi-bit measurements for N."""
    return [(k, size, g) for size in _SEARCH_POLYNOMIAL_SIZES for k in _SEARCH_GLWE_DIMENSIONS
            for g in grouping_factors
            if MIN_SECURE_DIMENSION <= k * size <= _SEARCH_MAX_BIG_DIMENSION
            and (g == 1 or size in _MULTIBIT_COST_US)]


def _search_bootstrap(precision, max_variance, norm2, max_variance_pbs=math.inf,
                      grouping_factors=_SEARCH_GROUPING_FACTORS, bootstrap_first=False):
    """Cheapest (k, N, n, pbs, ks) meeting the variance budgets, or None.

    The engine keyswitches first (ciphertexts under the big key: the combination of 2-norm
    ``norm2`` feeding a lookup multiplies the bootstrap noise only).  ``bootstrap_first``
    models the other order (ciphertexts under the small key, a keyswitch after each
    bootstrap, so ``norm2`` multiplies both); ``benchmarks/lookup_order.py`` compares them:
    never cheaper per lookup, 12-29 % dearer for ``norm2`` of 4-16 at 2^-40.
    """
    dims = _SEARCH_LWE_DIMENSIONS
    n_min = dims[0]
    nu2 = norm2 * norm2
    best = None
    best_cost = math.inf
    for k, size, g in _search_space(grouping_factors):
        big = k * size
        # Smallest possible cost for this (k, N, g); it only grows with n and the levels.
        if time_pbs(n_min, k, size, 1, g) + time_ks(big, n_min, 1) >= best_cost:
            continue
        pbs_variance, pbs_base = _pbs_variance(k, size, g, dims)
        ks_per_input, ks_base = _ks_table(big)
        ks_variance = big * ks_per_input[None, :, :]
        variance = (
            nu2 * (pbs_variance[:, None, :] + (ks_variance if bootstrap_first else 0.0))
            + (0.0 if bootstrap_first else ks_variance)
            + var_modulus_switch(dims, size)[None, None, :]
        )
        feasible = ((variance <= max_variance)
                    & (pbs_variance[:, None, :] <= max_variance_pbs)
                    & (dims % g == 0)[None, None, :])
        found = feasible.any(axis=-1)
        if not found.any():
            continue
        # Cost grows with n, so for each (pbs level, ks level) the first feasible n wins.
        first = np.argmax(feasible, axis=-1)
        n_at = dims[first]
        costs = (time_pbs(n_at, k, size, _SEARCH_PBS_LEVELS[:, None], g)
                 + time_ks(big, n_at, _SEARCH_KS_LEVELS[None, :]))
        costs = np.where(found, costs, np.inf)
        i_pbs, i_ks = np.unravel_index(np.argmin(costs), costs.shape)
        if costs[i_pbs, i_ks] < best_cost:
            best_cost = float(costs[i_pbs, i_ks])
            i_n = first[i_pbs, i_ks]
            best = dict(
                lwe_dimension=int(dims[i_n]),
                glwe_dimension=k,
                polynomial_size=size,
                pbs_base_log=int(pbs_base[i_pbs]),
                pbs_level=int(_SEARCH_PBS_LEVELS[i_pbs]),
                ks_base_log=int(ks_base[i_ks, i_n]),
                ks_level=int(_SEARCH_KS_LEVELS[i_ks]),
                grouping_factor=g,
            )
    return best


def _explain_no_bootstrap_set(precision, p_error, norm2, max_variance):
    """Say which limit made the bootstrap search fail (raised as ValueError)."""
    dims = _SEARCH_LWE_DIMENSIONS
    largest_norm2_sq = 0.0
    for k, size, g in _search_space():
        pbs_variance, _ = _pbs_variance(k, size, g, dims)
        ks_per_input, _ = _ks_table(k * size)
        room = max_variance - k * size * ks_per_input - var_modulus_switch(dims, size)
        ratio = room[None, :, :] / pbs_variance[:, None, :]
        largest_norm2_sq = max(largest_norm2_sq, float(ratio.max()))
    where = (f"precision={precision} at p_error={p_error:.3g} "
             f"(2^{math.log2(p_error):.1f})")
    if largest_norm2_sq <= 0:
        raise ValueError(
            f"no bootstrap parameter set reaches {where}, whatever norm2: keyswitch and "
            f"modulus-switch noise alone exceed the budget even at N="
            f"{_SEARCH_POLYNOMIAL_SIZES[-1]}; lower the precision or raise p_error"
        )
    raise ValueError(
        f"no bootstrap parameter set reaches {where} with norm2={norm2:g}: the "
        f"bootstrap noise grows as norm2² and the largest norm2 any set supports here is "
        f"about {math.sqrt(largest_norm2_sq):.4g}; lower norm2 (smaller weights or fewer "
        f"terms before the lookup), lower the precision, or raise p_error"
    )


def _select_no_bootstrap(precision, p_error, norm2, max_variance):
    dims = _SEARCH_NO_BOOTSTRAP_DIMENSIONS
    feasible = norm2 * norm2 * var_min(dims.astype(float)) <= max_variance
    if not feasible.any():
        floor_std = math.sqrt(var_min(dims[-1]))
        raise ValueError(
            f"no LWE dimension decrypts a sum of 2-norm norm2={norm2:g} at "
            f"precision={precision} with p_error={p_error:.3g}: even the noise floor "
            f"sigma={floor_std:.3g} (n={dims[-1]}) is too large; lower the precision "
            f"or norm2, or raise p_error"
        )
    n = int(dims[np.argmax(feasible)])
    return ParameterSet(
        precision=precision, lwe_dimension=n, glwe_dimension=0, polynomial_size=0,
        lwe_noise_std=math.sqrt(var_min(n)), glwe_noise_std=0.0,
        pbs_base_log=0, pbs_level=0, ks_base_log=0, ks_level=0,
        p_error=p_error, norm2=norm2,
    )


@functools.lru_cache(maxsize=512)
def _select_cached(precision, p_error, norm2, bootstrap, max_variance_pbs=math.inf,
                   grouping_factors=_SEARCH_GROUPING_FACTORS):
    log2_target = math.log2(p_error)
    max_variance = _max_variance(precision, log2_target)
    if not bootstrap:
        return _select_no_bootstrap(precision, p_error, norm2, max_variance)
    found = _search_bootstrap(precision, max_variance, norm2, max_variance_pbs,
                              grouping_factors)
    if found is None:
        if math.isfinite(max_variance_pbs):
            return None
        _explain_no_bootstrap_set(precision, p_error, norm2, max_variance)
    big = found["glwe_dimension"] * found["polynomial_size"]
    params = ParameterSet(
        precision=precision,
        lwe_noise_std=math.sqrt(var_min(found["lwe_dimension"])),
        glwe_noise_std=math.sqrt(var_min(big)),
        p_error=p_error,
        norm2=norm2,
        **found,
    )
    # The search works on a variance budget; confirm with the exact failure model.
    if params.log2_p_fail() > log2_target + 1e-9:
        raise RuntimeError(f"parameter search returned a set missing its target: {params}")
    return params


def select_parameters(precision, p_error=2.0**-40, norm2=1.0, *, bootstrap=True,
                      max_variance_pbs=None, grouping_factors=None):
    """Cheapest 128-bit secure parameter set meeting a per-lookup failure probability.

    With ``bootstrap=True`` the search covers ``k`` in 1..6 with ``k*N <= 65536``, ``N``
    in 256..65536, ``n`` in 256..2048, 1..6 bootstrap levels, 1..20 keyswitch levels and
    every base with ``base_log * level <= 64``; noise is the secure minimum
    ``sqrt(var_min(d))`` for each key. The returned set minimises the measured one-thread
    time (KS + PBS, :attr:`ParameterSet.time_estimate`) subject to ``p_fail <= p_error`` at a lookup of ``precision`` bits fed by a
    linear combination of bootstrap outputs of 2-norm ``norm2``.

    With ``bootstrap=False`` it returns the smallest LWE dimension whose secure noise lets
    a linear combination of fresh ciphertexts of 2-norm ``norm2`` be decrypted at
    ``precision`` bits with ``p_fail <= p_error``.

    Results are memoised (the search is deterministic) and the returned object is
    immutable.

    Parameters
    ----------
    precision : int
        Message bits: 1..8 with bootstrap, 1..30 without.
    p_error : float, default=2**-40
        Failure probability allowed per lookup (per decryption without bootstrap), in
        (0, 1). For a circuit of ``c`` lookups the global failure is
        ``1 - (1 - p_error)**c``.
    norm2 : float, default=1.0
        2-norm ν of the clear weights feeding each lookup (or the decryption).
    bootstrap : bool, default=True
        Whether the circuit has lookups.
    max_variance_pbs : float, optional
        Upper bound on the output variance of one bootstrap (torus²), for circuits whose
        lookup outputs are decrypted at a higher precision than the lookups read: the
        search then also pays for a quieter bootstrap (more levels) where needed.
    grouping_factors : sequence of int, optional
        Grouping factors of the blind rotation to search (default: 1, 2 and 3, each
        where its measured cost is known); ``(1,)`` keeps the classic bootstrap (a multi-bit
        key is ``(2^g - 1)/g`` times larger).

    Returns
    -------
    ParameterSet or None
        ``None`` only when ``max_variance_pbs`` is given and no set meets it.

    Raises
    ------
    ValueError
        If an argument is out of range or no set in the search space meets the target
        (the message says which limit was hit and what to lower).

    Examples
    --------
    >>> params = select_parameters(4, p_error=2**-64)
    >>> (params.glwe_dimension, params.polynomial_size)
    (1, 2048)
    """
    if not isinstance(bootstrap, (bool, np.bool_)):
        raise TypeError(f"bootstrap must be a bool, got {bootstrap!r}")
    bootstrap = bool(bootstrap)
    precision = _check_precision_bits(precision)
    max_precision = _MAX_PRECISION_BOOTSTRAP if bootstrap else _MAX_PRECISION_NO_BOOTSTRAP
    if precision > max_precision:
        hint = (" (use bootstrap=False for circuits without lookups, up to "
                f"{_MAX_PRECISION_NO_BOOTSTRAP} bits)" if bootstrap else "")
        raise ValueError(
            f"precision must be in 1..{max_precision} with bootstrap={bootstrap}, got "
            f"{precision}; lower the bit width{hint}"
        )
    for name, value in (("p_error", p_error), ("norm2", norm2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    p_error, norm2 = float(p_error), float(norm2)
    if not 0.0 < p_error < 1.0:
        raise ValueError(f"p_error must be in (0, 1), got {p_error!r}")
    if not (norm2 > 0.0 and math.isfinite(norm2)):
        raise ValueError(f"norm2 must be positive and finite, got {norm2!r}")
    if grouping_factors is None:
        grouping_factors = _SEARCH_GROUPING_FACTORS
    grouping_factors = tuple(sorted({int(g) for g in grouping_factors}))
    if not grouping_factors or not set(grouping_factors) <= set(_SEARCH_GROUPING_FACTORS):
        raise ValueError(f"grouping_factors must be a non-empty subset of "
                         f"{_SEARCH_GROUPING_FACTORS}, got {grouping_factors}")
    if max_variance_pbs is None:
        max_variance_pbs = math.inf
    elif not max_variance_pbs > 0.0:
        raise ValueError(f"max_variance_pbs must be positive, got {max_variance_pbs!r}")
    return _select_cached(precision, p_error, norm2, bootstrap, float(max_variance_pbs),
                          grouping_factors)


# --------------------------------------------------------------------------------------
# Packed GLWE linear circuits (no bootstrap)
# --------------------------------------------------------------------------------------

_GLWE_POLYNOMIAL_SIZES = tuple(2**e for e in range(11, 17))


def var_rounding(dimension, word_bits):
    """Variance added to the phase by rounding a ciphertext's mask and body words to their
    top ``word_bits`` bits (a modulus switch from 2^64 to 2^word_bits).

    Same form as :func:`var_modulus_switch` (binary key of ``dimension`` bits, half of them
    set on average), with the new modulus ``2^word_bits``; 0 when nothing is rounded.

    Parameters
    ----------
    dimension : int
        Key dimension (``k * N`` for a GLWE ciphertext); 0 when only a body is rounded.
    word_bits : int
        Bits kept, 1..64.

    Returns
    -------
    float
        Variance in torus² units.
    """
    if word_bits >= _TORUS_BITS:
        return 0.0
    q2 = _Q * _Q
    new_sq = 2.0 ** (2 * word_bits)
    return dimension * (1 / (48 * q2) + 1 / (24 * new_sq)) - 1 / (12 * q2) + 1 / (12 * new_sq)


@dataclasses.dataclass(frozen=True)
class GlweParameters:
    """Parameters of a packed linear circuit on GLWE ciphertexts (no bootstrap).

    The client encrypts coefficient vectors (seeded GLWE, bodies sent as their top
    ``input_bits`` bits); the server multiplies by clear integer polynomials whose
    coefficients have 2-norm at most ``norm2`` and switches the result to its top
    ``output_bits`` bits; the client decrypts at ``precision`` bits (plus padding).

    Parameters
    ----------
    precision : int
        Bits of the decrypted values, 1..30.
    glwe_dimension, polynomial_size : int
        ``k`` and ``N`` (a power of two in 2048..65536).
    noise_std : float
        Encryption noise, at least the 128-bit minimum for ``k * N``.
    input_bits, output_bits : int
        Bits kept per word of the upload (bodies) and of the result (masks and bodies),
        1..64; words travel bit-packed.
    p_error : float
        Failure probability of one decrypted value the set was selected for.
    norm2 : float
        2-norm of the clear weights feeding each decrypted value.
    """

    precision: int
    glwe_dimension: int
    polynomial_size: int
    noise_std: float
    input_bits: int
    output_bits: int
    p_error: float
    norm2: float

    def __post_init__(self):
        for name in ("precision", "glwe_dimension", "polynomial_size", "input_bits",
                     "output_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("noise_std", "p_error", "norm2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not \
                    math.isfinite(value):
                raise TypeError(f"{name} must be a finite real number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 1 <= self.precision <= _MAX_PRECISION_NO_BOOTSTRAP:
            raise ValueError(f"precision must be in 1..{_MAX_PRECISION_NO_BOOTSTRAP}, got "
                             f"{self.precision}")
        size = self.polynomial_size
        if size & (size - 1) or not _GLWE_POLYNOMIAL_SIZES[0] <= size <= _MAX_POLYNOMIAL_SIZE:
            raise ValueError(f"polynomial_size must be a power of two in "
                             f"{_GLWE_POLYNOMIAL_SIZES[0]}..{_MAX_POLYNOMIAL_SIZE}, got {size}")
        if not 1 <= self.glwe_dimension * size <= _SEARCH_MAX_BIG_DIMENSION:
            raise ValueError(f"glwe_dimension must be in 1..{_SEARCH_MAX_BIG_DIMENSION // size}")
        for name in ("input_bits", "output_bits"):
            if not 1 <= getattr(self, name) <= _TORUS_BITS:
                raise ValueError(f"{name} must be in 1..{_TORUS_BITS}, got "
                                 f"{getattr(self, name)}")
        if not 0.0 < self.p_error < 1.0 or not self.norm2 > 0.0:
            raise ValueError("p_error must be in (0, 1) and norm2 > 0")
        if not self.noise_std < 2.0**-4:
            raise ValueError(f"noise_std must be below 2^-4, got {self.noise_std!r}")
        _check_secure_std("noise_std", self.noise_std, self.big_dimension)

    @property
    def big_dimension(self):
        """int: ``k * N``, the dimension of the key (and of extracted LWE ciphertexts)."""
        return self.glwe_dimension * self.polynomial_size

    def variance(self, norm2=None):
        """Error variance of a decrypted value: ``ν²·(σ² + Var_round(input)) +
        Var_round(output)``.

        Parameters
        ----------
        norm2 : float, optional
            2-norm ν of the weights; defaults to ``self.norm2``.
        """
        nu = self.norm2 if norm2 is None else float(norm2)
        return (nu * nu * (self.noise_std**2 + var_rounding(0, self.input_bits))
                + var_rounding(self.big_dimension, self.output_bits))

    def log2_p_fail(self, norm2=None):
        """Modelled log2 failure probability of one decrypted value."""
        return log2_p_fail(self.variance(norm2), self.precision)

    def to_dict(self):
        """The fields as a JSON-safe dict."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data):
        """Validated set from :meth:`to_dict` output (ValueError otherwise)."""
        if not isinstance(data, Mapping):
            raise ValueError("expected a mapping of GLWE parameters")
        expected = {field.name for field in dataclasses.fields(cls)}
        if set(data) != expected:
            raise ValueError(f"invalid GLWE parameters: expected keys {sorted(expected)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"invalid GLWE parameters: {exc}") from exc


@functools.lru_cache(maxsize=256)
def select_glwe_parameters(precision, p_error=2.0**-40, norm2=1.0, min_polynomial_size=2048):
    """Smallest 128-bit secure packed-GLWE set (``k = 1``) decrypting a product of 2-norm
    ``norm2`` at ``precision`` bits with failure probability at most ``p_error``.

    ``N`` is the smallest power of two ``>= min_polynomial_size`` whose secure noise fits;
    then the fewest upload bits per word, then the fewest result bits.

    Parameters
    ----------
    precision : int
        1..30 bits.
    p_error : float
    norm2 : float
    min_polynomial_size : int, default=2048

    Returns
    -------
    GlweParameters

    Raises
    ------
    ValueError
        If no set up to ``N = 65536`` meets the target.
    """
    precision = _check_precision_bits(precision)
    if precision > _MAX_PRECISION_NO_BOOTSTRAP:
        raise ValueError(f"precision must be in 1..{_MAX_PRECISION_NO_BOOTSTRAP}")
    if not 0.0 < p_error < 1.0 or not (norm2 > 0 and math.isfinite(norm2)):
        raise ValueError("p_error must be in (0, 1) and norm2 positive and finite")
    max_variance = _max_variance(precision, math.log2(p_error))
    for size in _GLWE_POLYNOMIAL_SIZES:
        if size < min_polynomial_size:
            continue
        std = math.sqrt(var_min(size))

        def fits(in_bits, out_bits):
            params = GlweParameters(precision, 1, size, std, in_bits, out_bits, p_error, norm2)
            return params if params.variance() <= max_variance else None

        bits = range(1, _TORUS_BITS + 1)
        in_bits = next((b for b in bits if fits(b, _TORUS_BITS)), None)
        if in_bits is not None:
            return next(p for p in map(lambda b: fits(in_bits, b), bits) if p is not None)
    raise ValueError(f"no packed GLWE parameters decrypt a product of 2-norm {norm2:g} at "
                     f"{precision} bits with p_error={p_error:.3g}; lower the bit widths")


def _table(p_error=2.0**-40, norm2=1.0, precisions=range(1, 9)):
    """Print the selected sets for each precision (for docs and reviews)."""
    print(f"p_error = 2^{math.log2(p_error):.1f}, norm2 = {norm2:g}")
    print(" p     n  k      N  pbs B/l  ks B/l  log2 p_fail  cost(Mop)  BSK MB  KSK MB")
    for precision in precisions:
        s = select_parameters(precision, p_error, norm2)
        print(
            f"{precision:2d} {s.lwe_dimension:5d} {s.glwe_dimension:2d} "
            f"{s.polynomial_size:6d} {'2^%d/%d' % (s.pbs_base_log, s.pbs_level):>8} "
            f"{'2^%d/%d' % (s.ks_base_log, s.ks_level):>7} {s.log2_p_fail():12.1f} "
            f"{s.cost / 1e6:10.1f} {s.bsk_bytes / 1e6:7.0f} {s.ksk_bytes / 1e6:7.0f}"
        )


if __name__ == "__main__":
    _table()
    _table(2.0**-64)
