"""GLWE primitives: kernels against the exact reference, encryption round trips, products,
modulus switching, sample extraction, byte formats and the noise model."""
import numpy as np
import pytest

from fheml._core import SecretKeys, _kernels, _reference, decode, encode, select_parameters
from fheml._core.glwe import (
    GlweCiphertext,
    GlweSecretKey,
    decrypt_glwe,
    encrypt_glwe,
    glwe_add_plain,
    glwe_polynomial_matmul,
    modulus_switch,
    sample_extract,
)
from fheml._core.parameters import GlweParameters, select_glwe_parameters, var_rounding
from fheml._core.serialization import SerializationError

rng = np.random.default_rng(14)
_U = np.uint64


def _signed_error(phase, plain):
    return (phase - plain).astype(np.int64).astype(np.float64) * 2.0**-64


@pytest.fixture(scope="module")
def key():
    return GlweSecretKey.generate(1, 2048)


def test_poly_matmul_kernel_matches_reference(simd):
    G, C, R, N, O, S = 2, 3, 2, 64, 2, 20
    polys = rng.integers(0, 2**64, (G, C, R, N), dtype=np.uint64)
    polys[:, :, 1, 40:] = 0
    weights = rng.integers(-2**62, 2**62, (C, O, S), dtype=np.int64)
    weights[0, 0, :5] = 0
    weights[1, 1, 3] = -1
    weights[2, 0, :4] = [2**32 - 1, -(2**32 - 1), 2**32, -(2**32)]  # both multiply paths
    got = _kernels.glwe_poly_matmul(polys, [N, 40], weights)
    for g in range(G):
        for o in range(O):
            for r in range(R):
                want = _reference.polynomial_matmul(polys[g, :, r], weights[:, o])
                assert np.array_equal(got[g, o, r], want)


def test_poly_matmul_kernel_full_degree_and_validation(simd):
    N = 16
    polys = rng.integers(0, 2**64, (1, 1, 1, N), dtype=np.uint64)
    w = rng.integers(-9, 9, (1, 1, N), dtype=np.int64)  # degree N - 1: every wrap path
    got = _kernels.glwe_poly_matmul(polys, [N], w)
    assert np.array_equal(got[0, 0, 0], _reference.polynomial_matmul(polys[0, :, 0], w[:, 0]))
    with pytest.raises(ValueError):
        _kernels.glwe_poly_matmul(polys, [N], np.zeros((1, 1, N + 1), np.int64))
    with pytest.raises(ValueError):
        _kernels.glwe_poly_matmul(polys, [N + 1], w)
    with pytest.raises(ValueError):
        _kernels.glwe_poly_matmul(polys.astype(np.int64), [N], w)


def test_encrypt_decrypt_round_trip_and_noise(key):
    plain = encode(rng.integers(0, 2**20, (3, 5, 2000)), 20)
    ct = encrypt_glwe(key, plain)
    assert ct.shape == (3, 5) and ct.coefficients == (0, 2000, 1) and ct.mask_seed is not None
    phase = decrypt_glwe(key, ct)
    assert phase.shape == plain.shape
    assert np.array_equal(decode(phase, 20), decode(plain, 20))
    err = _signed_error(phase, plain)
    assert abs(err.std() / key.noise_std - 1) < 0.05
    assert abs(err.mean()) < 5 * key.noise_std / np.sqrt(err.size)


def test_bit_packing_kernels_match_reference():
    for bits in (1, 7, 8, 13, 26, 31, 32, 57, 63, 64):
        for n in (0, 1, 3, 8, 17, 1000):
            shift = _U(64 - bits)
            w = (rng.integers(0, 2**64, n, dtype=np.uint64) >> shift) << shift
            data = _kernels.pack_top_bits(w, bits)
            ref = np.packbits(np.unpackbits(w.astype(">u8").view(np.uint8).reshape(n, 8),
                                            axis=1)[:, :bits].reshape(-1))
            assert np.array_equal(data, ref)
            assert np.array_equal(_kernels.unpack_top_bits(data, n, bits), w)
            if n * bits % 8:
                bad = data.copy()
                bad[-1] |= 1  # a padding bit set: not a canonical stream
                with pytest.raises(ValueError, match="padding"):
                    _kernels.unpack_top_bits(bad, n, bits)
    with pytest.raises(ValueError):
        _kernels.unpack_top_bits(np.zeros(4, np.uint8), 2, 17)
    with pytest.raises(ValueError):
        _kernels.pack_top_bits(np.zeros(4, np.uint64), 65)


def test_seeded_bytes_carry_only_seed_and_bodies(key):
    plain = encode(rng.integers(0, 256, (4, 300)), 20)
    ct = encrypt_glwe(key, plain, word_bits=27)
    ct.masks  # regenerated on access, still sent as the seed
    data = ct.to_bytes()
    assert 4 * 300 * 27 / 8 < len(data) < 4 * 300 * 27 / 8 + 600  # bodies + header + digest
    back = GlweCiphertext.from_bytes(data, expected_key_id=key.key_id)
    assert back.coefficients == (0, 300, 1) and back.word_bits == 27
    assert np.array_equal(back.masks, ct.masks)
    assert np.array_equal(decrypt_glwe(key, back), decrypt_glwe(key, ct))
    assert np.array_equal(decode(decrypt_glwe(key, back), 20), decode(plain, 20))
    with pytest.raises(ValueError):
        GlweCiphertext.from_bytes(data, expected_key_id="other")
    with pytest.raises(SerializationError):
        GlweCiphertext.from_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SerializationError):
        GlweCiphertext.from_bytes(data, max_words=10)
    # one carried coefficient may not claim a huge batch of regenerated masks
    tiny = encrypt_glwe(key, np.zeros((3000, 1), np.uint64), word_bytes=1)
    with pytest.raises(SerializationError, match="exceed"):
        GlweCiphertext.from_bytes(tiny.to_bytes())
    assert GlweCiphertext.from_bytes(tiny.to_bytes(), max_words=2**24).shape == (3000,)
    with pytest.raises(SerializationError):
        GlweCiphertext.from_bytes(key.to_bytes())


def test_masks_are_fresh_per_encryption_and_read_only(key):
    plain = np.zeros((2, 8), np.uint64)
    a, b = encrypt_glwe(key, plain), encrypt_glwe(key, plain)
    assert a.mask_seed != b.mask_seed
    assert not np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks[0], a.masks[1])
    with pytest.raises(ValueError):
        a.masks[0, 0, 0] = 1


def test_product_matches_clear_and_noise_model(key):
    """Packed layout of the linear models: sample i's F features at i*F .. i*F+F-1, product
    by the reversed weights, dot product of sample i at coefficient i*F + F - 1."""
    N, F, P = 2048, 30, 24
    B = N // F
    x = rng.integers(0, 256, (32, B, F))
    w = rng.integers(-127, 128, (F, 2))
    ct = encrypt_glwe(key, encode(x.reshape(32, 1, B * F), P))  # (32 groups, C=1)
    out = glwe_polynomial_matmul(ct, w[::-1].T[None])  # (C=1, O=2, S=F)
    bias = np.array([5, -7])
    slots = np.arange(B) * F + F - 1
    plain_bias = np.zeros((2, N), np.uint64)
    plain_bias[:, slots] = encode(bias, P)[:, None]
    out = glwe_add_plain(out, plain_bias).with_coefficients(F - 1, B * F, F)
    phase = decrypt_glwe(key, out)  # (32, 2, B)
    want = np.einsum("gbf,fo->gob", x, w) + bias[None, :, None]
    assert np.array_equal(decode(phase, P, signed=True), want)
    err = _signed_error(phase, encode(want, P))
    model = GlweParameters(P, 1, N, key.noise_std, 64, 64, 2**-40, 1.0)
    for o in range(2):
        var = model.variance(np.linalg.norm(w[:, o]))
        assert abs(err[:, o].var() / var - 1) < 0.15


def test_product_reference_on_random_ciphertext_data(key):
    ct = encrypt_glwe(key, encode(rng.integers(0, 9, (2, 3, 100)), 10))
    w = rng.integers(-2**40, 2**40, (3, 2, 7))
    out = glwe_polynomial_matmul(ct, w)
    for g in range(2):
        for o in range(2):
            masks = ct.masks[g, :, 0]
            bodies = ct.bodies[g]
            assert np.array_equal(out.masks[g, o, 0], _reference.polynomial_matmul(masks, w[:, o]))
            assert np.array_equal(out.bodies[g, o], _reference.polynomial_matmul(bodies, w[:, o]))


def test_modulus_switch_noise_and_size(key):
    P = 12
    x = rng.integers(0, 2**P, (256, 2048))
    fresh = encrypt_glwe(key, encode(x[:, None], P))
    ct = modulus_switch(glwe_polynomial_matmul(fresh, np.ones((1, 1, 1), np.int64)),
                        word_bits=22)
    assert ct.word_bits == 22 and not np.any(ct.masks & _U(2**42 - 1))
    assert modulus_switch(ct, 3).word_bits == 24
    phase = decrypt_glwe(key, ct)[:, 0]
    assert np.array_equal(decode(phase, P), x)
    # errors of the coefficients of one ciphertext are correlated (the mask rounding errors
    # are shared): measure over many ciphertexts
    err = _signed_error(phase, encode(x, P))
    var = key.noise_std**2 + var_rounding(2048, 22)
    assert abs(np.mean(err**2) / var - 1) < 0.1
    back = GlweCiphertext.from_bytes(ct.to_bytes())
    assert np.array_equal(decrypt_glwe(key, back), decrypt_glwe(key, ct))
    assert len(ct.to_bytes()) < 256 * 2 * 2048 * 22 / 8 + 600


def test_sample_extract_matches_reference_and_decrypts():
    params = select_parameters(2, p_error=2**-40)  # a set with a GLWE key
    sk = SecretKeys.generate(params)
    gk = sk.glwe_secret_key()
    assert gk.key_id == sk.key_id and np.array_equal(gk.key, sk.glwe_key)
    k, N = gk.key.shape
    x = rng.integers(0, 4, (2, N))
    ct = encrypt_glwe(gk, encode(x, 2))
    idx = np.array([0, 1, N // 2, N - 1])
    lwe = sample_extract(ct, idx)
    assert lwe.shape == (2, 4) and lwe.dimension == k * N
    for g in range(2):
        for m, h in enumerate(idx):
            assert np.array_equal(lwe.data[g, m], _reference.sample_extract(ct.masks[g],
                                                                         ct.bodies[g], h))
    assert np.array_equal(sk.phase(lwe), decrypt_glwe(gk, ct)[:, idx])
    assert np.array_equal(sk.decrypt(lwe, precision=2), x[:, idx])


def test_phase_reference_and_key_checks(key):
    ct = encrypt_glwe(key, encode(rng.integers(0, 4, (1, 64)), 2))
    ref = _reference.glwe_phase(key.key, ct.masks[0], ct.bodies[0])[:64]
    assert np.array_equal(decrypt_glwe(key, ct)[0], ref)
    other = GlweSecretKey.generate(1, 2048)
    with pytest.raises(ValueError, match="another key"):
        decrypt_glwe(other, ct)
    back = GlweSecretKey.from_bytes(key.to_bytes())
    assert back.key_id == key.key_id and np.array_equal(back.key, key.key)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(key)
    with pytest.raises(ValueError, match="128-bit"):
        GlweSecretKey(key.key, "id", key.noise_std / 2)
    with pytest.raises(RuntimeError):
        GlweSecretKey.generate(1, 2048, seed=bytes(32))
    with pytest.raises(ValueError):
        encrypt_glwe(key, np.zeros((1, 2049), np.uint64))


def test_select_glwe_parameters_meets_target():
    for P, nu in ((21, 500.0), (25, 2200.0), (30, 2.0**14)):
        params = select_glwe_parameters(P, 2**-40, nu)
        assert params.log2_p_fail() <= -40
        smaller = GlweParameters(**{**params.to_dict(), "input_bits": params.input_bits - 1})
        assert smaller.log2_p_fail() > -40  # the fewest bytes that work
        assert GlweParameters.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match="128-bit"):
        GlweParameters(20, 1, 2048, 1e-16, 5, 5, 2**-40, 1.0)
