"""Keys, encryption, seeded evaluation keys and the byte formats."""
import warnings

import numpy as np
import pytest

from fheml._core import (EvaluationKeys, LweCiphertext, SecretKeys, SerializationError,
                         select_parameters)
from fheml._core.keys import INSECURE_SEED_ENV
from tests._core.keyring import keys_for

rng = np.random.default_rng(9)


def test_encrypt_decrypt_roundtrip_and_fresh_randomness():
    params, sk, _ = keys_for(4)
    m = rng.integers(0, 16, (3, 5))
    c1, c2 = sk.encrypt(m), sk.encrypt(m)
    assert c1.shape == (3, 5) and c1.dimension == params.big_lwe_dimension
    assert np.array_equal(sk.decrypt(c1), m)
    assert not np.array_equal(c1.data, c2.data)  # fresh masks and noise every time
    s = rng.integers(-8, 8, 10)
    assert np.array_equal(sk.decrypt(sk.encrypt(s, signed=True), signed=True), s)


def test_secret_key_bits_are_balanced():
    params, sk, _ = keys_for(4)
    bits = np.concatenate([sk.lwe_key, sk.glwe_key.reshape(-1)])
    assert set(np.unique(bits)) == {0, 1}
    assert abs(bits.mean() - 0.5) < 5 * 0.5 / np.sqrt(bits.size)


def test_fixed_seed_refused_outside_tests(monkeypatch):
    params = select_parameters(2)
    monkeypatch.delenv(INSECURE_SEED_ENV, raising=False)
    with pytest.raises(RuntimeError, match="tests"):
        SecretKeys.generate(params, seed=bytes(32))
    monkeypatch.setenv(INSECURE_SEED_ENV, "1")
    a = SecretKeys.generate(params, seed=bytes(32))
    b = SecretKeys.generate(params, seed=bytes(32))
    assert a.insecure and np.array_equal(a.glwe_key, b.glwe_key)
    assert not SecretKeys.generate(params).insecure


def test_secret_keys_roundtrip_and_no_pickle():
    import pickle

    params, sk, _ = keys_for(3)
    sk2 = SecretKeys.from_bytes(sk.to_bytes())
    assert sk2.key_id == sk.key_id and sk2.params == params
    m = rng.integers(0, 8, 6)
    assert np.array_equal(sk2.decrypt(sk.encrypt(m)), m)
    with pytest.raises(TypeError):
        pickle.dumps(sk)


def test_evaluation_keys_are_seeded_and_roundtrip():
    params, sk, ek = keys_for(3)
    blob = ek.to_bytes()
    # what travels: bodies + seed, (k+1)x smaller than the BSK and ~(n+1)x smaller than the KSK
    assert len(blob) < params.bsk_bytes / (params.glwe_dimension + 1) + params.ksk_bytes / params.lwe_dimension + 4096
    assert len(blob) < params.seeded_bsk_bytes + params.seeded_ksk_bytes + 4096
    ek2 = EvaluationKeys.from_bytes(blob, expected_params=params)
    assert np.array_equal(ek2.ksk, ek.ksk)
    assert np.array_equal(ek2.bsk_fourier, ek.bsk_fourier)
    m = np.arange(8)
    table = rng.integers(0, 8, 8)
    assert np.array_equal(sk.decrypt(ek2.programmable_bootstrap(sk.encrypt(m), table)), table[m])


def test_evaluation_keys_contain_no_secret():
    params, sk, ek = keys_for(2)
    blob = ek.to_bytes()
    assert sk.lwe_key.tobytes() not in blob
    assert sk.glwe_key.tobytes() not in blob


def test_ciphertext_roundtrip():
    params, sk, _ = keys_for(3)
    ct = sk.encrypt(rng.integers(0, 8, (2, 4)))
    ct2 = LweCiphertext.from_bytes(ct.to_bytes(), expected_key_id=sk.key_id,
                                   expected_dimension=params.big_lwe_dimension)
    assert np.array_equal(ct2.data, ct.data) and ct2.key_id == ct.key_id
    with pytest.raises(ValueError, match="other keys"):
        LweCiphertext.from_bytes(ct.to_bytes(), expected_key_id="someone-else")
    with pytest.raises(ValueError, match="dimension"):
        LweCiphertext.from_bytes(ct.to_bytes(), expected_dimension=5)


@pytest.mark.parametrize("make", ["secret", "evaluation", "ciphertext"])
def test_corrupted_truncated_or_wrong_kind_bytes_are_rejected(make):
    params, sk, ek = keys_for(2)
    blob, load = {
        "secret": (sk.to_bytes(), SecretKeys.from_bytes),
        "evaluation": (ek.to_bytes(), EvaluationKeys.from_bytes),
        "ciphertext": (sk.encrypt([1]).to_bytes(), LweCiphertext.from_bytes),
    }[make]
    for pos in (0, 10, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(SerializationError):
            load(bytes(bad))
    with pytest.raises(SerializationError):
        load(blob[: len(blob) // 2])
    with pytest.raises(SerializationError):
        load(blob + b"\0")
    with pytest.raises(SerializationError):
        load(b"")
    other = sk.to_bytes() if make != "secret" else ek.to_bytes()
    with pytest.raises(SerializationError, match="expected"):
        load(other)
    with pytest.raises(TypeError):
        load("not bytes")


def test_evaluation_keys_for_other_parameters_are_refused():
    params, sk, ek = keys_for(2)
    with pytest.raises(ValueError, match="other parameters"):
        EvaluationKeys.from_bytes(ek.to_bytes(), expected_params=select_parameters(3))


def test_parameters_without_bootstrap():
    params = select_parameters(20, p_error=2.0**-40, norm2=100.0, bootstrap=False)
    sk = SecretKeys.generate(params)
    ek = sk.evaluation_keys()
    assert ek.ksk is None and ek.bsk_fourier is None
    assert EvaluationKeys.from_bytes(ek.to_bytes()).params == params
    x = rng.integers(0, 16, (50, 30))
    w = rng.integers(-30, 31, (30, 2))
    ct = sk.encrypt(x, precision=20)
    acc = ct @ w
    assert np.array_equal(sk.decrypt(acc, precision=20, signed=True), x @ w)
    with pytest.raises(ValueError, match="no bootstrapping key"):
        ek.programmable_bootstrap(ct, np.arange(4))


def test_fresh_ciphertexts_serialize_as_seed_and_bodies():
    params, sk, _ = keys_for(4)
    m = rng.integers(0, 16, (10, 3))
    ct = sk.encrypt(m)
    blob = ct.to_bytes()
    assert len(blob) < ct.data.nbytes / params.big_lwe_dimension + 1024
    back = LweCiphertext.from_bytes(blob, expected_key_id=sk.key_id)
    assert np.array_equal(back.data, ct.data)
    assert np.array_equal(sk.decrypt(back), m)
    # two encryptions never share masks (fresh seed per call)
    assert not np.array_equal(sk.encrypt(m).data[..., :-1], ct.data[..., :-1])


def test_edited_or_computed_ciphertexts_serialize_in_full():
    params, sk, _ = keys_for(4)
    m = rng.integers(0, 8, 5)
    ct = sk.encrypt(m)
    with pytest.raises(ValueError, match="read-only"):
        ct.data[2, 7] += np.uint64(1)  # the seed stands for the masks: no edit in place
    assert len(ct.to_bytes()) < ct.data.nbytes
    ct.data.flags.writeable = True
    ct.data[2, 7] += np.uint64(1)  # made writable and edited: the seed no longer describes it
    back = LweCiphertext.from_bytes(ct.to_bytes())
    assert np.array_equal(back.data, ct.data)
    assert not LweCiphertext.from_bytes(sk.encrypt(m).to_bytes()).data.flags.writeable
    total = sk.encrypt(m) + sk.encrypt(m)
    assert len(total.to_bytes()) > total.data.nbytes
    assert np.array_equal(sk.decrypt(LweCiphertext.from_bytes(total.to_bytes())), 2 * m)


def test_empty_and_scalar_batches():
    params, sk, ek = keys_for(2)
    empty = sk.encrypt(np.zeros((0, 3), dtype=int))
    assert empty.shape == (0, 3) and sk.decrypt(empty).shape == (0, 3)
    assert ek.programmable_bootstrap(empty, [0, 1, 2, 3]).shape == (0, 3)
    scalar = sk.encrypt(2)
    assert scalar.shape == () and sk.decrypt(scalar) == 2
    assert sk.decrypt(ek.programmable_bootstrap(scalar, [3, 2, 1, 0])) == 1


def test_multi_bit_key_encrypts_the_indicators_of_each_group():
    """Decrypt GGSW rows of a multi-bit key: row (k, l) of GGSW (j, c) has phase
    [bits of group j == c] * 2^(64 - (l+1) B) at coefficient 0 (reference indicators)."""
    from fheml._core import _reference
    from fheml._core.keys import _bsk_masks

    params, sk, ek = keys_for(3)
    g, k, levels = params.grouping_factor, params.glwe_dimension, params.pbs_level
    assert g > 1
    mu = _reference.multibit_indicators(sk.lwe_key, g).reshape(-1)
    assert ek._bsk_bodies.shape[0] == mu.size == params.bsk_ggsw_count
    for i in np.concatenate([np.flatnonzero(mu)[:3], np.flatnonzero(mu == 0)[:3]]):
        masks = _bsk_masks(params, ek.mask_seed, int(i))
        for l in range(levels):
            r = k * levels + l
            phase = _reference.glwe_phase(sk.glwe_key, masks[r], ek._bsk_bodies[i, r])
            phase[:1] -= np.uint64(int(mu[i]) << (64 - (l + 1) * params.pbs_base_log))
            assert np.abs(phase.view(np.int64)).max() < 2.0**(64 - 40)


def test_multi_bit_keys_refused_for_other_grouping():
    import dataclasses

    from fheml._core.serialization import MismatchError, pack, unpack

    params, sk, ek = keys_for(3)
    blob = ek.to_bytes()
    classic = dataclasses.replace(params, grouping_factor=1)
    with pytest.raises(MismatchError, match="other parameters"):
        EvaluationKeys.from_bytes(blob, expected_params=classic)
    # a header edited to another grouping no longer fits the bodies
    header, arrays = unpack(blob, "evaluation-keys")
    header["params"]["grouping_factor"] = 1
    with pytest.raises(SerializationError, match="shapes"):
        EvaluationKeys.from_bytes(pack("evaluation-keys", header, arrays))


def test_keys_heavier_than_the_model_assumes_load_with_a_warning():
    """Keygen bounds the key weight the noise model charges (parameters.max_key_weight);
    keys made otherwise that exceed it still load, with a warning."""
    from fheml._core import parameters
    params, sk, _ = keys_for(4)
    g = params.grouping_factor
    assert parameters.key_weight(sk.lwe_key, g) <= parameters.max_key_weight(sk.lwe_key.size, g)
    heavy = sk.lwe_key.reshape(-1, g).copy()
    empty = np.flatnonzero(~heavy.any(axis=1))
    excess = parameters.max_key_weight(sk.lwe_key.size, g) + 1 - parameters.key_weight(heavy, g)
    heavy[empty[:excess], 0] = 1
    with pytest.warns(RuntimeWarning, match="LWE key of these secret keys is heavier"):
        SecretKeys(params, heavy.reshape(-1), sk.glwe_key, "old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SecretKeys(params, sk.lwe_key, sk.glwe_key, "same")
