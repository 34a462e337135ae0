"""Seeded encryption that keeps only the bodies, and per-column mask regeneration."""

import numpy as np
import pytest

from fheml._core import LweCiphertext, SecretKeys, SeededLweCiphertext, select_parameters
from fheml._core.serialization import SerializationError


@pytest.fixture(scope="module")
def keys():
    return SecretKeys.generate(select_parameters(4, 2**-40, 1.0))


def test_select_equals_the_full_expansion(keys):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 16, size=(3, 700))
    seeded = keys.encrypt_seeded(values, precision=4, chunk=128, n_jobs=2)
    data = seeded.to_bytes()
    # the same bytes as LweCiphertext's compact form: a full expansion reads them
    full = LweCiphertext.from_bytes(data)
    np.testing.assert_array_equal(keys.decrypt(full, precision=4), values)
    columns = np.array([699, 0, 5, 5, 341])
    part = SeededLweCiphertext.from_bytes(data).select(columns)
    np.testing.assert_array_equal(part.data, full.data[:, columns])
    np.testing.assert_array_equal(keys.decrypt(part, precision=4), values[:, columns])
    assert len(data) < 8 * values.size + 1024


def test_bad_inputs(keys):
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        keys.encrypt_seeded(np.array([[16]]), precision=4)
    with pytest.raises(TypeError):
        keys.encrypt_seeded(np.array([0.5, 1.0]), precision=4)
    seeded = keys.encrypt_seeded(np.zeros((2, 3), dtype=int), precision=4)
    with pytest.raises(ValueError, match="column"):
        seeded.select([3])
    with pytest.raises(SerializationError):
        SeededLweCiphertext.from_bytes(seeded.to_bytes()[:-40])
    with pytest.raises(ValueError, match="other keys"):
        SeededLweCiphertext.from_bytes(seeded.to_bytes(), expected_key_id="someone else")
