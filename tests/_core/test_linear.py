"""Linear operations on LWE batches against numpy integer arithmetic."""
import numpy as np
import pytest

from fheml._core import linear
from tests._core.keyring import keys_for

rng = np.random.default_rng(17)


@pytest.fixture(scope="module")
def keys():
    return keys_for(6)


def test_add_subtract_negate(keys):
    params, sk, _ = keys
    a, b = rng.integers(0, 16, (4, 5)), rng.integers(0, 16, (4, 5))
    ca, cb = sk.encrypt(a), sk.encrypt(b)
    assert np.array_equal(sk.decrypt(ca + cb), a + b)
    assert np.array_equal(sk.decrypt(ca - cb, signed=True), a - b)
    assert np.array_equal(sk.decrypt(-ca, signed=True), -a)
    # broadcasting over the batch shape
    assert np.array_equal(sk.decrypt(ca + cb[0]), a + b[0])


def test_plain_and_multiply(keys):
    params, sk, _ = keys
    a = rng.integers(0, 8, (3, 4))
    ca = sk.encrypt(a)
    assert np.array_equal(sk.decrypt(linear.add_plain(ca, 5, 6)), a + 5)
    offsets = rng.integers(-5, 5, 4)
    assert np.array_equal(sk.decrypt(linear.add_plain(ca, offsets, 6), signed=True), a + offsets)
    w = rng.integers(-3, 4, (3, 4))
    assert np.array_equal(sk.decrypt(ca * w, signed=True), a * w)
    assert np.array_equal(sk.decrypt(3 * ca), 3 * a)


def test_sum_and_matmul(keys):
    params, sk, _ = keys
    a = rng.integers(0, 4, (5, 6))
    ca = sk.encrypt(a)
    assert np.array_equal(sk.decrypt(linear.sum(ca, axis=1)), a.sum(axis=1))
    assert np.array_equal(sk.decrypt(linear.sum(ca, axis=(0, 1))), a.sum())
    assert np.array_equal(sk.decrypt(linear.sum(ca)), a.sum())
    w = rng.integers(-2, 3, (6, 3))
    assert np.array_equal(sk.decrypt(ca @ w, signed=True), a @ w)
    v = rng.integers(-2, 3, 6)
    assert np.array_equal(sk.decrypt(linear.dot(ca, v), signed=True), a @ v)


def test_errors(keys):
    params, sk, _ = keys
    _, sk2, _ = keys_for(4)
    ca = sk.encrypt([1, 2])
    with pytest.raises(ValueError, match="different keys"):
        ca + sk2.encrypt([1, 2])
    with pytest.raises(TypeError, match="integers"):
        ca * np.array([0.5, 1.0])
    with pytest.raises(ValueError, match="cannot multiply"):
        ca @ np.ones((3, 2), dtype=int)
    with pytest.raises(ValueError, match="out of bounds"):
        linear.sum(ca, axis=3)
    with pytest.raises(TypeError):
        linear.add(ca, np.array([1, 2]))
