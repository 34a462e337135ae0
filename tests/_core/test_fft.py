import numpy as np
import pytest

from fheml._core import _kernels, _reference

rng = np.random.default_rng(11)


def fft_mul(plan, a_int, b_torus):
    """a * b mod X^N + 1 through the kernel's negacyclic FFT, as the external product does."""
    M = plan.polynomial_size // 2
    fa = _kernels.fft_forward_i32(plan, a_int[None])
    fb = _kernels.fft_forward_torus(plan, b_torus[None])
    re = fa[:, :M] * fb[:, :M] - fa[:, M:] * fb[:, M:]
    im = fa[:, :M] * fb[:, M:] + fa[:, M:] * fb[:, :M]
    out = np.zeros(plan.polynomial_size, dtype=np.uint64)
    _kernels.add_f64_to_torus(_kernels.fft_backward(plan, np.concatenate([re, im], 1))[0], out)
    return out


def torus_error(x, y):
    return np.abs((x - y).view(np.int64).astype(float)) / 2.0**64


@pytest.mark.parametrize("N", [256, 512, 1024, 2048, 4096])
def test_fft_product_matches_exact_dense(simd, N):
    plan = _kernels.FourierPlan(N)
    a = rng.integers(-(2**22), 2**22, N)
    b = rng.integers(0, 2**64, N, dtype=np.uint64)
    err = torus_error(fft_mul(plan, a.astype(np.int32), b), _reference.negacyclic_mul(a, b))
    # f64 keeps ~53 bits: the error is tiny compared with any message (< 2^-18 worst case)
    assert err.max() < 2.0**-18
    # small values: the product is computed exactly
    bs = rng.integers(0, 1000, N, dtype=np.uint64)
    assert np.array_equal(fft_mul(plan, a.astype(np.int32), bs), _reference.negacyclic_mul(a, bs))


@pytest.mark.parametrize("N", [8192, 16384, 32768, 65536])
def test_fft_product_large_sizes_against_sparse_reference(simd, N):
    """Exact reference for large N: a sparse left operand is a sum of a few rotations."""
    plan = _kernels.FourierPlan(N)
    a = np.zeros(N, dtype=np.int64)
    idx = rng.choice(N, 6, replace=False)
    a[idx] = rng.integers(-(2**15), 2**15, 6)
    b = rng.integers(0, 2**64, N, dtype=np.uint64)
    err = torus_error(fft_mul(plan, a.astype(np.int32), b), _reference.negacyclic_mul(a, b))
    assert err.max() < 2.0**-30
    bs = rng.integers(0, 1 << 20, N, dtype=np.uint64)
    assert np.array_equal(fft_mul(plan, a.astype(np.int32), bs), _reference.negacyclic_mul(a, bs))


@pytest.mark.parametrize("N", [256, 2048, 65536])
def test_forward_backward_roundtrip(simd, N):
    plan = _kernels.FourierPlan(N)
    a = rng.integers(-(2**20), 2**20, (3, N)).astype(np.int32)
    back = _kernels.fft_backward(plan, _kernels.fft_forward_i32(plan, a))
    assert np.abs(back - a).max() < 1e-6


@pytest.mark.parametrize("N", [256, 1024])
def test_binary_key_product_is_exact(simd, N):
    plan = _kernels.FourierPlan(N)
    key = rng.integers(0, 2, N)
    a = rng.integers(0, 2**64, (2, N), dtype=np.uint64)
    got = _kernels.mul_binary_exact(plan, key, a)
    for r in range(2):
        assert np.array_equal(got[r], _reference.negacyclic_mul(key, a[r]))


def _on_path(level, fn):
    previous = _kernels.set_simd_level(level)
    try:
        return fn()
    finally:
        _kernels.set_simd_level(previous)


@pytest.mark.parametrize("N", [256, 2048, 16384])
def test_simd_paths_agree(N):
    """AVX-512 does per lane what AVX2 does (same operations, same order): bit-identical.
    The portable path (no FMA) differs only by rounding."""
    levels = _kernels.available_simd_levels()
    if len(levels) < 2:
        pytest.skip("CPU without SIMD kernels")
    plan = _kernels.FourierPlan(N)
    a = rng.integers(-(2**22), 2**22, (4, N)).astype(np.int32)
    t = rng.integers(0, 2**64, (2, N), dtype=np.uint64)

    def run():
        f = _kernels.fft_forward_i32(plan, a)
        return f, _kernels.fft_forward_torus(plan, t), _kernels.fft_backward(plan, f)

    got = {level: _on_path(level, run) for level in levels}
    for x, y in zip(got["portable"], got["avx2"]):
        assert np.abs(x - y).max() <= 1e-9 * np.abs(x).max()
    if "avx512" in got:
        for x, y in zip(got["avx2"], got["avx512"]):
            assert np.array_equal(x, y)


def test_add_f64_to_torus_is_exact_modular_conversion(simd):
    x = np.concatenate([rng.normal(0, 1e6, 1000), rng.normal(0, 1e-6, 1000), [0.0, -0.0, 0.5, -0.5, -0.25, 2.0**40 + 0.75, 2.0**51 + 0.5, -(2.0**52 + 1), 2.0**60,
                        3 * 2.0**-65, 5 * 2.0**-65, -3 * 2.0**-65, 1 - 2.0**-53, 2.0**-1074]])
    acc = np.zeros(x.size, dtype=np.uint64)
    _kernels.add_f64_to_torus(x, acc)
    from fractions import Fraction

    scaled = [Fraction(v) * 2**64 for v in x]
    got = [int(v) for v in acc]
    for g, f in zip(got, scaled):
        # exact; a tie (fraction exactly 1/2, ~1 in 512 of the small values) rounds to even
        expected = round(f)
        assert g == expected % 2**64, (f, g)


def test_plan_rejects_bad_sizes():
    for N in (100, 4, 1 << 18):
        with pytest.raises(ValueError):
            _kernels.FourierPlan(N)


def test_plan_tables_and_transforms_are_cache_line_aligned():
    """Large numpy arrays start 16 bytes into a page; the kernels' 64-byte loads would then
    straddle cache lines (~20 % slower bootstraps), so the arrays they stream are aligned."""
    plan = _kernels.FourierPlan(4096)
    for table in plan.tables.values():
        assert table.ctypes.data % _kernels.ALIGNMENT == 0 and table.dtype == np.float64
    f = _kernels.fft_forward_torus(plan, rng.integers(0, 2**64, (3, 4096), dtype=np.uint64))
    assert f.ctypes.data % _kernels.ALIGNMENT == 0 and f.flags.c_contiguous
    for shape, dtype in (((5, 3, 1000), np.float64), ((7,), np.uint32), ((0, 4), np.uint64)):
        a = _kernels.aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % _kernels.ALIGNMENT == 0 or a.size == 0
