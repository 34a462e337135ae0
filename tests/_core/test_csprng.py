import numpy as np
import pytest

from fheml._core._csprng import Csprng, chacha20_block_raw, keystream_u64

# RFC 8439, section 2.3.2 (block function test vector).
RFC_KEY = bytes(range(32))
RFC_NONCE = bytes.fromhex("000000090000004a00000000")
RFC_BLOCK = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
)


def test_rfc8439_block():
    assert chacha20_block_raw(RFC_KEY, 1, RFC_NONCE) == RFC_BLOCK


def test_rfc8439_keystream_against_cryptography():
    crypto = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
    from cryptography.hazmat.primitives.ciphers import algorithms

    key = bytes(np.random.default_rng(3).integers(0, 256, 32, dtype=np.uint8))
    nonce = bytes(np.random.default_rng(4).integers(0, 256, 12, dtype=np.uint8))
    enc = crypto.Cipher(algorithms.ChaCha20(key, (7).to_bytes(4, "little") + nonce), mode=None).encryptor()
    expected = enc.update(bytes(64 * 3))
    got = b"".join(chacha20_block_raw(key, 7 + i, nonce) for i in range(3))
    assert got == expected


def test_keystream_random_access_matches_sequential():
    seed = bytes(range(32))
    full = keystream_u64(seed, 5, 0, 100)
    assert np.array_equal(keystream_u64(seed, 5, 13, 50), full[13:63])
    rng = Csprng(seed, stream=5)
    assert np.array_equal(np.concatenate([rng.uniform_u64(7), rng.uniform_u64(93)]), full)
    assert not np.array_equal(keystream_u64(seed, 6, 0, 100), full)


def test_os_seeded_generators_differ():
    assert not np.array_equal(Csprng().uniform_u64(4), Csprng().uniform_u64(4))
    with pytest.raises(ValueError):
        Csprng(b"short")


def test_csprng_cannot_be_pickled_or_printed_with_seed():
    import pickle

    rng = Csprng(bytes(32))
    with pytest.raises(TypeError):
        pickle.dumps(rng)
    assert bytes(32).hex() not in repr(rng)


def test_binary_and_uniform_statistics():
    rng = Csprng()
    bits = rng.binary(200_000)
    assert set(np.unique(bits)) <= {0, 1}
    assert abs(bits.mean() - 0.5) < 0.005  # 4.5 sigma
    words = rng.uniform_u64(100_000)
    top = (words >> np.uint64(60)).astype(int)
    counts = np.bincount(top, minlength=16)
    chi2 = ((counts - 100_000 / 16) ** 2 / (100_000 / 16)).sum()
    assert chi2 < 50  # 15 degrees of freedom: p < 1e-5 for a correct generator


@pytest.mark.parametrize("std", [2.0**-20, 3.6e-6, 2.2e-19 * 2**40])
def test_gaussian_noise_moments(std):
    x = Csprng().gaussian_torus(200_000, std).view(np.int64).astype(float) / 2.0**64
    assert abs(x.mean()) < 5 * std / np.sqrt(x.size)
    assert abs(x.std() / std - 1) < 0.02
    # Gaussian kurtosis is 3
    assert abs(((x / x.std()) ** 4).mean() - 3) < 0.15


def test_gaussian_rejects_bad_std():
    with pytest.raises(ValueError):
        Csprng().gaussian_torus(4, -1.0)
    with pytest.raises(ValueError):
        Csprng().gaussian_torus(4, 0.5)


@pytest.mark.parametrize("start", [0, 1, 7, 8, 13, 64, 100])
@pytest.mark.parametrize("count", [1, 63, 64, 129, 200, 700])
def test_keystream_matches_block_function(simd, start, count):
    """Long ranges take the 8-blocks-at-once AVX2 path or the 16-blocks-at-once AVX-512 one:
    on every kernel path, every word must equal the RFC 8439 block function's output
    (counter = block index, nonce = stream)."""
    key = bytes(range(32))
    stream = 5
    blocks = (start + count) // 8 + 1
    ref = b"".join(chacha20_block_raw(key, c & 0xFFFFFFFF, (c >> 32).to_bytes(4, "little")
                                      + stream.to_bytes(8, "little")) for c in range(blocks))
    ref = np.frombuffer(ref, dtype="<u8")
    assert np.array_equal(keystream_u64(key, stream, start, count), ref[start:start + count])
