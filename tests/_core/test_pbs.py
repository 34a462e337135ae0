"""Programmable bootstrapping with real 128-bit parameter sets."""
import numpy as np
import pytest

from fheml._core import LweCiphertext, _kernels, linear
from tests._core.keyring import keys_for

rng = np.random.default_rng(2024)


def _all_inputs_several_tables(p, n_tables, n_jobs=2):
    params, sk, ek = keys_for(p)
    m = np.arange(1 << p)
    tables = rng.integers(0, 1 << p, (n_tables, 1 << p))
    ct = sk.encrypt(np.tile(m, n_tables))
    index = np.repeat(np.arange(n_tables), m.size)
    out = ek.programmable_bootstrap(ct, tables, table_index=index, n_jobs=n_jobs)
    assert np.array_equal(sk.decrypt(out), tables[index, np.tile(m, n_tables)])


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 6])
def test_every_input_several_tables(p):
    _all_inputs_several_tables(p, 4 if p <= 4 else 2)


@pytest.mark.slow
@pytest.mark.parametrize("p", [7, 8])
def test_every_input_several_tables_wide(p):
    _all_inputs_several_tables(p, 2)


def test_every_kernel_path_gives_the_same_results(simd):
    params, sk, ek = keys_for(4)
    m = rng.integers(0, 16, 12)
    table = rng.integers(0, 16, 16)
    assert np.array_equal(sk.decrypt(ek.programmable_bootstrap(sk.encrypt(m), table)), table[m])


def test_one_table_per_ciphertext_and_batch_shapes():
    params, sk, ek = keys_for(3)
    m = rng.integers(0, 8, (2, 3))
    tables = rng.integers(0, 8, (2, 3, 8))
    out = ek.programmable_bootstrap(sk.encrypt(m), tables)
    assert out.shape == (2, 3)
    expected = np.take_along_axis(tables, m[..., None], axis=-1)[..., 0]
    assert np.array_equal(sk.decrypt(out), expected)


def test_signed_outputs_and_other_output_precision():
    params, sk, ek = keys_for(4)
    m = np.arange(16)
    table = m - 8  # negative outputs wrap; decrypt as signed
    out = ek.programmable_bootstrap(sk.encrypt(m), table)
    assert np.array_equal(sk.decrypt(out, signed=True), table)
    small = ek.programmable_bootstrap(sk.encrypt(m), m // 4, output_precision=2)
    assert np.array_equal(sk.decrypt(small, precision=2), m // 4)


def test_lower_input_precision_reads_the_top_bits():
    """A 4-bit message read as a 2-bit one rounds away its low 2 bits (round_bit_pattern)."""
    params, sk, ek = keys_for(4)
    table = np.array([3, 1, 0, 2])
    # m % 4 == 2 sits exactly between two 2-bit values: noise decides, so leave it out here
    m = np.array([v for v in range(14) if v % 4 != 2])
    out = ek.programmable_bootstrap(sk.encrypt(m), table, input_precision=2, output_precision=4)
    assert np.array_equal(sk.decrypt(out), table[(m + 2) // 4])
    # a clear offset of -1/2 of a 4-bit step makes ties round down deterministically, with
    # the same noise margin as a 4-bit lookup
    m = np.arange(14)
    fresh = sk.encrypt(m)  # read-only (its seed stands for its masks): offset a copy
    ct = LweCiphertext(fresh.data.copy(), fresh.key_id)
    ct.data[..., -1] -= np.uint64(1 << (63 - 4 - 1))
    out = ek.programmable_bootstrap(ct, table, input_precision=2, output_precision=4)
    assert np.array_equal(sk.decrypt(out), table[(m + 1) // 4])


def test_threads_and_groups_agree():
    params, sk, ek = keys_for(3)
    m = rng.integers(0, 8, 23)
    table = rng.integers(0, 8, 8)
    ct = sk.encrypt(m)
    for n_jobs, group in ((1, 1), (2, 3), (-1, 16), (3, 5)):
        assert np.array_equal(sk.decrypt(ek.programmable_bootstrap(ct, table, n_jobs=n_jobs, group=group)), table[m])


def test_chain_of_100_lookups_with_weighted_sums():
    """100 levels of lookups at p = 4, each fed by 2a + 2b + c of the previous outputs
    (2-norm 3), against the same computation in the clear."""
    nu = 3.0
    params, sk, ek = keys_for(4, 2.0**-40, nu)
    ta = rng.integers(0, 4, 16)
    tb = rng.integers(0, 4, 16)
    tc = rng.integers(0, 2, 16)
    tables = np.stack([ta, tb, tc])
    s = np.array([5, 11])  # two independent chains in the batch
    ct = sk.encrypt(s)
    index = np.repeat([[0, 1, 2]], 2, axis=0)
    for _ in range(100):
        abc = ek.programmable_bootstrap(_stack3(ct),
                                        tables, table_index=index, n_jobs=2)
        ct = abc @ np.array([2, 2, 1])
        s = 2 * ta[s] + 2 * tb[s] + tc[s]
        assert np.array_equal(sk.decrypt(ct), s)


def _stack3(ct):
    return LweCiphertext(np.repeat(ct.data[:, None, :], 3, axis=1), ct.key_id)


def test_errors():
    params, sk, ek = keys_for(3)
    _, sk4, ek4 = keys_for(4)
    ct = sk.encrypt([1, 2])
    with pytest.raises(ValueError, match="entries"):
        ek.programmable_bootstrap(ct, np.arange(4))
    with pytest.raises(ValueError, match="must be in"):
        ek.programmable_bootstrap(ct, np.arange(8) * 100)
    with pytest.raises(ValueError, match="different key"):
        ek4.programmable_bootstrap(ct, np.arange(16))
    with pytest.raises(ValueError, match="exceeds"):
        ek.programmable_bootstrap(ct, np.arange(16), input_precision=4)
    with pytest.raises(ValueError, match="table_index"):
        ek.programmable_bootstrap(ct, np.zeros((2, 8), int), table_index=[0, 2])
    with pytest.raises(TypeError):
        ek.programmable_bootstrap(ct.data, np.arange(8))
    with pytest.raises(ValueError, match="other keys"):
        sk.decrypt(sk4.encrypt([1]))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        sk.encrypt([8])
    with pytest.raises(TypeError):
        sk.encrypt([0.5])


@pytest.mark.parametrize("pin,t", [(2, 4), (3, 2), (2, 3), (4, 1)])
def test_many_lut_equals_separate_lookups(simd, pin, t):
    """t tables from one blind rotation: each output decrypts to its table's value, as the
    separate lookups do (inputs of pin bits under the 4-bit set: pin + ceil(log2 t) <= 4)."""
    params, sk, ek = keys_for(4)
    m = np.arange(3 * (1 << pin)) % (1 << pin)
    tables = rng.integers(-8, 8, (t, 1 << pin))
    ct = sk.encrypt(m, pin)
    outs = ek.programmable_bootstrap_many(ct, tables, input_precision=pin)
    assert len(outs) == t
    for i, out in enumerate(outs):
        assert out.shape == ct.shape
        got = sk.decrypt(out, signed=True)
        assert np.array_equal(got, tables[i][m])
        alone = ek.programmable_bootstrap(ct, tables[i], input_precision=pin)
        assert np.array_equal(got, sk.decrypt(alone, signed=True))


def test_many_lut_tables_per_ciphertext_and_shapes():
    params, sk, ek = keys_for(4)
    m = rng.integers(0, 4, (2, 3))
    tables = rng.integers(0, 16, (2, 3, 2, 4))  # two 2-bit tables per ciphertext
    outs = ek.programmable_bootstrap_many(sk.encrypt(m, 2), tables, input_precision=2)
    for i in range(2):
        expected = np.take_along_axis(tables[..., i, :], m[..., None], axis=-1)[..., 0]
        assert outs[i].shape == (2, 3)
        assert np.array_equal(sk.decrypt(outs[i]), expected)


def test_many_lut_refuses_tables_the_noise_cannot_carry():
    params, sk, ek = keys_for(4)
    ct = sk.encrypt([1, 2], 3)
    with pytest.raises(ValueError, match="packed tables"):
        ek.programmable_bootstrap_many(ct, np.zeros((3, 8), int), input_precision=3)
    with pytest.raises(ValueError, match="tables must have shape"):
        ek.programmable_bootstrap_many(ct, np.zeros((5, 2, 8), int), input_precision=3)


def test_group_size_does_not_change_results(simd):
    """Ciphertexts sharing a pass over the key (group) get bit-identical outputs to ones
    bootstrapped alone, on every kernel path."""
    params, sk, ek = keys_for(3)
    m = np.arange(9) % 8
    ct = sk.encrypt(m)
    alone = ek.programmable_bootstrap(ct, np.arange(8)[::-1], group=1).data
    for group in (3, 4, 9):
        assert np.array_equal(ek.programmable_bootstrap(ct, np.arange(8)[::-1], group=group).data, alone)


# --------------------------------------------------------------- lockstep threads ------
from fheml._core import keys as _keys  # noqa: E402


def _lockstep_case(p, B, grouping_factors=None):
    params, sk, ek = keys_for(p, grouping_factors=grouping_factors)
    m = rng.integers(0, 1 << p, B)
    tables = rng.integers(0, 1 << p, (3, 1 << p))
    index = rng.integers(0, 3, B).astype(np.int64)
    luts = _keys.make_luts(tables, params.polynomial_size, p, p)
    cts = np.ascontiguousarray(sk.encrypt(m).data.reshape(B, -1))
    out = np.empty((B, 1, params.big_lwe_dimension + 1), dtype=np.uint64)
    return sk, ek, m, tables, index, luts, cts, out


def _run_with_deadline(fn, seconds=300):
    """fn() in a thread: a lockstep run that deadlocks fails the test instead of hanging it."""
    import threading

    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "lockstep run did not finish (deadlock?)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.mark.skipif(not _kernels.HAVE_STEP_BARRIER, reason="no POSIX threads")
@pytest.mark.parametrize("grouping", [1, 2])
@pytest.mark.parametrize("jobs,B", [(2, 7), (3, 7), (2, 2)])
def test_lockstep_bootstrap_equals_one_thread(simd, grouping, jobs, B):
    """Threads in lockstep (uneven chunks: one leaves the barrier while the others still
    rotate) give word for word what one thread gives, on every kernel path."""
    sk, ek, m, tables, index, luts, cts, out = _lockstep_case(3, B, (grouping,))
    assert ek.params.grouping_factor == grouping
    alone = _keys.run_pbs_batch(ek, cts, luts, index, out.copy(), n_jobs=1, lockstep=False)
    together = _run_with_deadline(lambda: _keys.run_pbs_batch(
        ek, cts, luts, index, out.copy(), n_jobs=jobs, lockstep=True))
    assert np.array_equal(together, alone)
    decrypted = sk.decrypt(LweCiphertext(np.ascontiguousarray(together[:, 0]), ek.key_id))
    assert np.array_equal(decrypted, tables[index, m])


@pytest.mark.skipif(not _kernels.HAVE_STEP_BARRIER, reason="no POSIX threads")
def test_lockstep_rounds_report_progress(monkeypatch):
    sk, ek, m, tables, index, luts, cts, out = _lockstep_case(2, 9)
    monkeypatch.setattr(_keys, "_PROGRESS_CHUNK", 2)

    class Bar:
        updates = []

        def update(self, n):
            self.updates.append(n)

    bar = Bar()
    alone = _keys.run_pbs_batch(ek, cts, luts, index, out.copy(), n_jobs=1)
    together = _run_with_deadline(lambda: _keys.run_pbs_batch(
        ek, cts, luts, index, out.copy(), n_jobs=2, lockstep=True, bar=bar))
    assert np.array_equal(together, alone)
    assert sum(bar.updates) == 9 and len(bar.updates) == 3  # rounds of 2 x 2, 2 x 2, 1


@pytest.mark.skipif(not _kernels.HAVE_STEP_BARRIER, reason="no POSIX threads")
def test_lockstep_error_in_one_thread_is_raised_and_releases_the_others():
    """A thread whose chunk is refused leaves the barrier: the other finishes, the error is
    raised in the caller."""
    sk, ek, m, tables, index, luts, cts, out = _lockstep_case(2, 6)
    bad = index.copy()
    bad[-1] = 7  # only the second thread's rows hold an out-of-range table index
    with pytest.raises(ValueError, match="lut_index out of range"):
        _run_with_deadline(lambda: _keys.run_pbs_batch(ek, cts, luts, bad, out, n_jobs=2,
                                                       lockstep=True))
    assert np.array_equal(sk.decrypt(LweCiphertext(np.ascontiguousarray(out[:3, 0]),
                                                   ek.key_id)),
                          tables[index[:3], m[:3]])


def test_lockstep_is_chosen_by_key_size(monkeypatch):
    sk, ek, m, tables, index, luts, cts, out = _lockstep_case(2, 4)
    calls = []
    real = _keys._lockstep_rounds
    monkeypatch.setattr(_keys, "_lockstep_rounds", lambda *a: calls.append(a) or real(*a))
    _keys.run_pbs_batch(ek, cts, luts, index, out, n_jobs=2)
    assert calls == []  # a small key: threads run freely
    monkeypatch.setattr(_keys, "LOCKSTEP_MIN_KEY_BYTES", ek.bsk_fourier.nbytes)
    _keys.run_pbs_batch(ek, cts, luts, index, out, n_jobs=2)
    assert len(calls) == (1 if _kernels.HAVE_STEP_BARRIER else 0)
    _keys.run_pbs_batch(ek, cts, luts, index, out, n_jobs=1)  # one thread: nothing to share
    assert len(calls) == (1 if _kernels.HAVE_STEP_BARRIER else 0)
    monkeypatch.setattr(_keys, "_cpus", lambda: 1)  # more threads than CPUs: no spinning
    _keys.run_pbs_batch(ek, cts, luts, index, out, n_jobs=2)
    assert len(calls) == (1 if _kernels.HAVE_STEP_BARRIER else 0)


@pytest.mark.skipif(not _kernels.HAVE_STEP_BARRIER, reason="no POSIX threads")
def test_step_barrier_needs_a_party():
    with pytest.raises(ValueError, match="at least one party"):
        _kernels.StepBarrier(0)
    barrier = _kernels.StepBarrier(1)
    barrier.leave()  # a party that never rotates
    assert barrier.parties == 1


def test_progress_tasks_are_shared_evenly_between_threads(monkeypatch):
    """With progress reported, a batch is cut in tasks of about _PROGRESS_CHUNK rows, as
    many per thread (640 rows on 2 threads were 3 tasks: one thread did two)."""
    sk, ek, m, tables, index, luts, cts, out = _lockstep_case(2, 10)
    monkeypatch.setattr(_keys, "_PROGRESS_CHUNK", 4)  # 10 rows: 3 chunks -> 4 tasks
    seen = []
    real = _keys._pbs_chunk
    monkeypatch.setattr(_keys, "_pbs_chunk",
                        lambda ek_, c, l, i, o, a, b, *rest: seen.append(b - a)
                        or real(ek_, c, l, i, o, a, b, *rest))

    class Bar:
        def update(self, n):
            pass

    _keys.run_pbs_batch(ek, cts, luts, index, out, n_jobs=2, bar=Bar(), lockstep=False)
    assert len(seen) % 2 == 0 and sum(seen) == 10 and max(seen) - min(seen) <= 1
    assert np.array_equal(sk.decrypt(LweCiphertext(np.ascontiguousarray(out[:, 0]),
                                                   ek.key_id)), tables[index, m])
