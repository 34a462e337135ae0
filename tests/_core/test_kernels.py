"""Kernels against the exact pure-numpy reference (fheml._core._reference)."""
import numpy as np
import pytest

from fheml._core import _kernels, _reference

rng = np.random.default_rng(5)


@pytest.mark.parametrize("base_log,level", [(23, 1), (15, 2), (3, 5), (2, 11), (1, 20), (8, 8), (16, 4)])
def test_decompose_matches_reference(simd, base_log, level):
    v = np.concatenate([rng.integers(0, 2**64, 500, dtype=np.uint64),
                        np.array([0, 2**63, 2**64 - 1, 2**63 - 1, 1], dtype=np.uint64)])
    got = _kernels.decompose(v, base_log, level)
    assert np.array_equal(got, _reference.decompose(v, base_log, level))
    B = 1 << base_log
    assert got.min() >= -B // 2 and got.max() <= B // 2
    # recomposition error is at most half the smallest kept step
    weights = np.array([1 << (64 - (l + 1) * base_log) for l in range(level)], dtype=object)
    rec = [sum(int(d) * w for d, w in zip(got[:, j], weights)) % 2**64 for j in range(v.size)]
    err = [min((r - int(x)) % 2**64, (int(x) - r) % 2**64) for r, x in zip(rec, v)]
    assert max(err) <= 1 << (63 - base_log * level) if base_log * level < 64 else max(err) == 0


def test_decompose_rejects_bad_arguments():
    for b, l in ((0, 1), (32, 1), (8, 9), (3, 0)):
        with pytest.raises(ValueError):
            _kernels.decompose(np.zeros(3, np.uint64), b, l)


@pytest.mark.parametrize("group", [1, 3, 8])
def test_keyswitch_matches_reference(simd, group):
    n_in, n_out, base_log, level = 64, 20, 4, 3
    ksk = rng.integers(0, 2**32, (n_in, level, n_out + 1), dtype=np.uint64).astype(np.uint32)
    cts = rng.integers(0, 2**64, (7, n_in + 1), dtype=np.uint64)
    got = _kernels.keyswitch_batch(ksk, base_log, level, cts, group=group)
    for b in range(7):
        assert np.array_equal(got[b], _reference.keyswitch(ksk, base_log, level, cts[b]))


def _run_kernel(bsk, ksk, ks_base, ks_level, base_log, level, luts, idx, cts, group,
                grouping=1, n=None):
    """pbs_range over all of ``cts``; with ``grouping`` > 1, ``bsk`` holds the multi-bit
    GGSWs of an LWE key of dimension ``n``."""
    count, _, K1, N = bsk.shape
    k = K1 - 1
    plan = _kernels.FourierPlan(N)
    bsk_f = _kernels.fft_forward_torus(plan, bsk.reshape(-1, N)).reshape(bsk.shape)
    out = np.empty((cts.shape[0], k * N + 1), dtype=np.uint64)
    _kernels.pbs_range(plan, ksk, ks_base, ks_level, bsk_f, count if n is None else n, k,
                       base_log, level, luts, idx, cts, out, 0, cts.shape[0], group,
                       grouping=grouping)
    return out


@pytest.mark.parametrize("k,N,base_log,level,use_ks,group", [
    (1, 256, 10, 2, True, 1),
    (2, 256, 7, 3, True, 3),
    (1, 512, 23, 1, False, 2),
])
def test_pbs_kernel_matches_exact_reference_one_iteration(simd, k, N, base_log, level, use_ks, group):
    """Random (not encrypted) keys, one blind-rotation step: the arithmetic must match the
    exact reference up to the f64 FFT error, whatever the data.  (With random keys and more
    steps, an FFT error that flips one rounding is amplified by the random key, so longer
    rotations are compared through decryption below.)"""
    n, ks_base, ks_level = 1, 4, 3
    bsk = rng.integers(0, 2**64, (n, (k + 1) * level, k + 1, N), dtype=np.uint64)
    ksk = rng.integers(0, 2**32, (k * N, ks_level, n + 1), dtype=np.uint64).astype(np.uint32) if use_ks else None
    in_dim = k * N if use_ks else n
    cts = rng.integers(0, 2**64, (5, in_dim + 1), dtype=np.uint64)
    luts = rng.integers(0, 2**64, (2, N), dtype=np.uint64)
    idx = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    out = _run_kernel(bsk, ksk, ks_base, ks_level, base_log, level, luts, idx, cts, group)
    for b in range(5):
        ref = _reference.programmable_bootstrap(ksk, ks_base, ks_level, bsk, base_log, level,
                                                luts[idx[b]], cts[b])
        err = np.abs((out[b] - ref).view(np.int64).astype(float)) / 2.0**64
        assert err.max() < 2.0**-20, (b, err.max())


def _toy_bsk(lwe_key, glwe_key, base_log, level, noise_std):
    """GGSW encryptions of each bit of lwe_key (toy sizes, reference arithmetic)."""
    k, N = glwe_key.shape
    R = (k + 1) * level
    bsk = np.empty((lwe_key.size, R, k + 1, N), dtype=np.uint64)
    for i, mu in enumerate(lwe_key):
        for q in range(k + 1):
            for l in range(level):
                r = q * level + l
                masks = rng.integers(0, 2**64, (k, N), dtype=np.uint64)
                body = (rng.normal(0, noise_std * 2.0**64, N)).astype(np.int64).astype(np.uint64)
                for p in range(k):
                    body += _reference.negacyclic_mul(glwe_key[p], masks[p])
                g = np.uint64(1 << (64 - (l + 1) * base_log))
                if mu:
                    if q < k:
                        body -= glwe_key[q].astype(np.uint64) * g
                    else:
                        body[0] += g
                bsk[i, r, :k] = masks
                bsk[i, r, k] = body
    return bsk


def test_pbs_kernel_matches_reference_through_decryption(simd):
    """Toy encryptions (insecure sizes), 12 blind-rotation steps: kernel and reference
    outputs decrypt to phases within FFT noise of each other, and to the right message."""
    k, N, n, base_log, level = 1, 256, 12, 10, 2
    lwe_key = rng.integers(0, 2, n)
    glwe_key = rng.integers(0, 2, (k, N))
    bsk = _toy_bsk(lwe_key, glwe_key, base_log, level, 2.0**-40)
    p = 2
    delta = 1 << (63 - p)
    msgs = np.array([0, 1, 2, 3, 1])
    a = rng.integers(0, 2**64, (msgs.size, n), dtype=np.uint64)
    b = (a * lwe_key.astype(np.uint64)).sum(axis=1, dtype=np.uint64) + msgs.astype(np.uint64) * np.uint64(delta)
    cts = np.concatenate([a, b[:, None]], axis=1)
    from fheml._core.keys import make_luts

    table = np.array([3, 0, 2, 1])
    luts = make_luts(table[None], N, p, p)
    idx = np.zeros(msgs.size, dtype=np.int64)
    out = _run_kernel(bsk, None, 4, 3, base_log, level, luts, idx, cts, 2)
    big = glwe_key.reshape(-1).astype(bool)
    phase = lambda c: c[-1] - c[:-1][big].sum(dtype=np.uint64)
    for j in range(msgs.size):
        ref = _reference.programmable_bootstrap(None, 4, 3, bsk, base_log, level, luts[0], cts[j])
        diff = abs(int((phase(out[j]) - phase(ref)).view(np.int64))) / 2.0**64
        # The FFT error can flip the rounding of a last-level digit of a mask polynomial
        # (weight 2^-(base_log*level)); through the GGSW row of that mask the phase then moves
        # by that weight times a binary key polynomial: at most N * 2^-20 = 2^-12 here.
        # Wrong arithmetic gives differences of order 1.
        assert diff < N * 2.0 ** -(base_log * level)
        got = int(((int(phase(out[j])) + delta // 2) // delta) % (1 << (p + 1)))
        assert got == table[msgs[j]]


def _on_avx2_and_avx512(run):
    """``run()`` on the AVX2 and on the AVX-512 path: {path: result}."""
    got = {}
    for path in ("avx2", "avx512"):
        previous = _kernels.set_simd_level(path)
        try:
            got[path] = run()
        finally:
            _kernels.set_simd_level(previous)
    return got


@pytest.mark.parametrize("k,N,base_log,level", [(1, 2048, 23, 1), (2, 512, 12, 3), (1, 8192, 15, 2)])
def test_avx512_bootstrap_is_bit_identical_to_avx2(k, N, base_log, level):
    """The AVX-512 copy does per lane what the AVX2 copy does (fused decomposition and first
    FFT pass, 16-point register stages, fused last pass and conversion): a whole KS + blind
    rotation + extraction gives the same words.  (Each path is checked against the exact
    reference above; random keys turn any rounding difference after one step into noise of
    order 1, so only identical arithmetic can pass this.)"""
    if "avx512" not in _kernels.available_simd_levels():
        pytest.skip("CPU without AVX-512")
    n, ks_base, ks_level = 6, 4, 3
    bsk = rng.integers(0, 2**64, (n, (k + 1) * level, k + 1, N), dtype=np.uint64)
    ksk = rng.integers(0, 2**32, (k * N, ks_level, n + 1), dtype=np.uint64).astype(np.uint32)
    cts = rng.integers(0, 2**64, (5, k * N + 1), dtype=np.uint64)
    luts = rng.integers(0, 2**64, (1, N), dtype=np.uint64)
    idx = np.zeros(5, dtype=np.int64)
    got = _on_avx2_and_avx512(
        lambda: _run_kernel(bsk, ksk, ks_base, ks_level, base_log, level, luts, idx, cts, 4))
    assert np.array_equal(got["avx2"], got["avx512"])


def test_pbs_kernel_validates_shapes():
    plan = _kernels.FourierPlan(256)
    n, k = 4, 1
    bsk_f = np.zeros((n, 2, 2, 256))
    luts = np.zeros((1, 256), np.uint64)
    cts = np.zeros((2, n + 1), np.uint64)
    out = np.empty((2, 257), np.uint64)
    ok = dict(ks_base_log=4, ks_level=2)
    _kernels.pbs_range(plan, None, 4, 2, bsk_f, n, k, 10, 1, luts, np.zeros(2, np.int64), cts, out, 0, 2)
    with pytest.raises(ValueError):  # lut index out of range
        _kernels.pbs_range(plan, None, 4, 2, bsk_f, n, k, 10, 1, luts, np.ones(2, np.int64), cts, out, 0, 2)
    with pytest.raises(ValueError):  # wrong ciphertext width
        _kernels.pbs_range(plan, None, 4, 2, bsk_f, n, k, 10, 1, luts, np.zeros(2, np.int64), cts[:, :-1].copy(), out, 0, 2)
    with pytest.raises(ValueError):  # key does not match parameters
        _kernels.pbs_range(plan, None, 4, 2, bsk_f, n + 1, k, 10, 1, luts, np.zeros(2, np.int64), cts, out, 0, 2)
    with pytest.raises(ValueError):  # workspace made for another shape
        ws = _kernels.PbsWorkspace(n, k, 512, 1, 2, 1)
        _kernels.pbs_range(plan, None, 4, 2, bsk_f, n, k, 10, 1, luts, np.zeros(2, np.int64), cts, out, 0, 2, 1, ws)
    assert ok


def test_dot_binary_matches_numpy(simd):
    a = rng.integers(0, 2**64, (37, 101), dtype=np.uint64)
    key = rng.integers(0, 2, 100)
    expected = a[:, :100][:, key.astype(bool)].sum(axis=1, dtype=np.uint64)
    assert np.array_equal(_kernels.dot_binary(a, key), expected)          # body column ignored
    assert np.array_equal(_kernels.dot_binary(a[:, :100].copy(), key), expected)
    with pytest.raises(ValueError):
        _kernels.dot_binary(a[:, :50].copy(), key)


def _run_multibit(bsk, ksk, base_log, level, luts, idx, cts, group, grouping, n):
    return _run_kernel(bsk, ksk, 4, 3, base_log, level, luts, idx, cts, group, grouping, n)


@pytest.mark.parametrize("grouping,k,N,base_log,level,use_ks,group", [
    (2, 1, 256, 10, 2, True, 1),
    (2, 2, 256, 7, 3, False, 3),
    (3, 1, 512, 23, 1, True, 4),
])
def test_multibit_kernel_matches_exact_reference_one_step(simd, grouping, k, N, base_log,
                                                           level, use_ks, group):
    """Random keys, one multi-bit step (2^g - 1 external products combined in the Fourier
    domain with the monomials' transforms): the exact reference up to the f64 FFT error."""
    n, S = grouping, (1 << grouping) - 1
    bsk = rng.integers(0, 2**64, (S, (k + 1) * level, k + 1, N), dtype=np.uint64)
    ksk = rng.integers(0, 2**32, (k * N, 3, n + 1), dtype=np.uint64).astype(np.uint32) if use_ks else None
    cts = rng.integers(0, 2**64, (6, (k * N if use_ks else n) + 1), dtype=np.uint64)
    if not use_ks:
        cts[0, :n] = 0  # nothing rotates: the step is skipped
        cts[1, 0] = 0  # some subsets' monomials are 1
    luts = rng.integers(0, 2**64, (2, N), dtype=np.uint64)
    idx = np.array([0, 1, 1, 0, 1, 0], dtype=np.int64)
    out = _run_multibit(bsk, ksk, base_log, level, luts, idx, cts, group, grouping, n)
    for b in range(cts.shape[0]):
        ref = _reference.programmable_bootstrap(ksk, 4, 3, bsk, base_log, level, luts[idx[b]],
                                                cts[b], grouping=grouping)
        err = np.abs((out[b] - ref).view(np.int64).astype(float)) / 2.0**64
        assert err.max() < 2.0**-20, (b, err.max())


@pytest.mark.parametrize("grouping,k,N,base_log,level", [(2, 1, 2048, 23, 1), (3, 2, 512, 12, 3)])
def test_avx512_multibit_bootstrap_is_bit_identical_to_avx2(grouping, k, N, base_log, level):
    """The monomial transforms and the multiply-accumulate with its monomial epilogue do per
    lane on AVX-512 what they do on AVX2 (see the classic test above)."""
    if "avx512" not in _kernels.available_simd_levels():
        pytest.skip("CPU without AVX-512")
    n, S = 2 * grouping, (1 << grouping) - 1
    bsk = rng.integers(0, 2**64, (n // grouping * S, (k + 1) * level, k + 1, N), dtype=np.uint64)
    ksk = rng.integers(0, 2**32, (k * N, 3, n + 1), dtype=np.uint64).astype(np.uint32)
    cts = rng.integers(0, 2**64, (5, k * N + 1), dtype=np.uint64)
    luts = rng.integers(0, 2**64, (1, N), dtype=np.uint64)
    idx = np.zeros(5, dtype=np.int64)
    got = _on_avx2_and_avx512(
        lambda: _run_multibit(bsk, ksk, base_log, level, luts, idx, cts, 4, grouping, n))
    assert np.array_equal(got["avx2"], got["avx512"])


def test_multibit_kernel_validates_grouping():
    plan = _kernels.FourierPlan(256)
    bsk = np.zeros((3, 2, 2, 256))
    acc = np.zeros((1, 2, 256), np.uint64)
    for grouping, n in ((4, 4), (0, 2), (2, 3)):
        with pytest.raises(ValueError, match="grouping"):
            _kernels.blind_rotate(plan, bsk, 10, 1, np.zeros((1, n), np.int32), acc,
                                  grouping=grouping)
    with pytest.raises(ValueError, match="does not match"):
        _kernels.blind_rotate(plan, bsk, 10, 1, np.zeros((1, 4), np.int32), acc, grouping=2)
    # the workspace holds the monomials of 2^g - 1 subsets: one made for fewer is refused
    bsk = _kernels.aligned_empty((3, 2, 2, 256), np.float64)
    bsk[...] = 0
    abar = np.ones((1, 2), np.int32)
    small = _kernels.PbsWorkspace(2, 1, 256, 1, 1, 1)
    with pytest.raises(ValueError, match="workspace was made for other parameters"):
        _kernels.blind_rotate(plan, bsk, 10, 1, abar, acc, small, grouping=2)
    _kernels.blind_rotate(plan, bsk, 10, 1, abar, acc,
                          _kernels.PbsWorkspace(2, 1, 256, 1, 1, 1, 2), grouping=2)
    with pytest.raises(ValueError, match="grouping must be in"):
        _kernels.PbsWorkspace(2, 1, 256, 1, 1, 1, 4)
