"""The cheapest lookup whatever the spelling (issue 8, item 3)."""

import re
import warnings

import numpy as np
import pytest

import fheml
from fheml._warnings import FHEMLPerformanceWarning

from .conftest import encrypted_run


def _lookups(circuit):
    return circuit.statistics["lookups_by_precision"]


def test_square_spelled_as_product_is_one_lookup_at_the_input_precision():
    x = np.arange(128)
    for fn in (lambda x: (x * x) // 128, lambda x: (x ** 2) // 128):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FHEMLPerformanceWarning)
            circuit = fheml.compile(fn, x)
        assert _lookups(circuit) == {7: 1}
        np.testing.assert_array_equal(circuit.run(x), fn(x))


def test_float_polynomial_of_one_value_is_one_lookup_like_univariate():
    def poly(x):
        return np.round(0.3 * x ** 3 - 2.5 * x * x + x / 3 + np.sqrt(x * 2 + 1)).astype(np.int64)

    x = np.arange(16)
    circuit = fheml.compile(poly, x)
    wrapped = fheml.compile(lambda x: fheml.univariate(poly)(x), x)
    assert _lookups(circuit) == _lookups(wrapped) == {4: 1}
    np.testing.assert_array_equal(circuit.run(x), poly(x))
    np.testing.assert_array_equal(encrypted_run(circuit, x), poly(x))


def test_affine_step_before_a_lookup_is_read_at_the_leaf_precision():
    # tanh((x * 3 + 1) / 8): the table is indexed by x (3 bits), not by x * 3 + 1 (5 bits)
    circuit = fheml.compile(lambda x: np.round(np.tanh((x * 3 + 1) / 8) * 4).astype(np.int64),
                            np.arange(8))
    assert _lookups(circuit) == {3: 1}


def test_where_with_clear_branches_needs_no_lookup_of_its_own():
    pairs = [(np.array([a]), np.array([b])) for a in range(8) for b in range(8)]
    circuit = fheml.compile(lambda x, y: np.where(x > y, 3, -2), pairs)
    assert circuit.statistics["lookups"] == 1  # the comparison only; then cond * 5 - 2
    x, y = np.arange(8)[:, None], np.arange(8)[::-1, None]
    np.testing.assert_array_equal(circuit.run(x, y), np.where(x > y, 3, -2))


def test_where_with_encrypted_branches_packs_condition_and_difference():
    pairs = [(np.array([a]), np.array([b])) for a in range(8) for b in range(8)]
    circuit = fheml.compile(lambda x, y: np.where(x > y, x, y // 2), pairs)
    # comparison, y // 2, and one lookup on (cond, x - y // 2): 1 + 4 bits, not 1 + 3 + 2
    assert circuit.statistics["lookups"] == 3
    assert max(_lookups(circuit)) == 5
    x, y = np.repeat(np.arange(8), 8)[:, None], np.tile(np.arange(8), 8)[:, None]
    np.testing.assert_array_equal(circuit.run(x, y), np.where(x > y, x, y // 2))


def test_wide_lookup_warns_with_cost_and_source_line():
    with pytest.warns(FHEMLPerformanceWarning) as record:
        circuit = fheml.compile(lambda x: (x.sum() * 3) // 7,
                                [np.arange(i, i + 12) % 16 for i in range(4)])
    msg = str(record[0].message)
    assert "test_cheapest_lookup.py" in msg and "(x.sum() * 3) // 7" in msg
    assert "8-bit values" in msg and "MB of evaluation keys" in msg
    # the time is the selection's measured model of this circuit's set, not an op count
    ms, four_bit = re.search(r"about (\d+) ms per lookup.*about (\d+) ms\)", msg).groups()
    assert int(ms) == round(circuit.parameters.time_estimate * 1e3)
    assert int(four_bit) < int(ms)
    assert record[0].filename == __file__  # points at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLPerformanceWarning)
        fheml.compile(lambda x: x // 3, np.arange(64))  # 6 bits: no warning
