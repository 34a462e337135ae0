"""round_bit_pattern: lookups reading only the top bits of a value."""

import math

import numpy as np
import pytest

import fheml
from tests.compiler.conftest import encrypted_run


def _floor_ceil(x, k):
    step = 1 << k
    return (x // step) * step, -(-x // step) * step


def test_rounding_cuts_lookup_precision():
    inputset = np.arange(64)
    plain = fheml.compile(lambda x: x // 8, inputset)
    rounded = fheml.compile(lambda x: fheml.round_bit_pattern(x, 3) // 8, inputset)
    assert plain.statistics["lookups_by_precision"] == {6: 1}
    # 0..63 rounded to multiples of 8 gives 9 values (64 is the carry): 4-bit lookups.
    assert rounded.statistics["lookups_by_precision"] == {4: 1}
    assert rounded.parameters.precision == 4
    assert rounded.statistics["estimated_cost"] < plain.statistics["estimated_cost"]


def test_carry_into_the_top_bit_is_kept():
    # 61..63 round up to 64, one more than the 6-bit input range: the index needs a 4th bit.
    circuit = fheml.compile(lambda x: fheml.round_bit_pattern(x, 3) + 0 * x, np.arange(64))
    x = np.arange(64)
    np.testing.assert_array_equal(circuit.run(x), ((x + 4) >> 3) << 3)
    assert circuit.max_bit_width == 7


def test_encrypted_rounding_is_exact_away_from_ties():
    k = 3
    circuit = fheml.compile(lambda x: fheml.round_bit_pattern(x, k) // 8 * 3, np.arange(64))
    x = np.array([0, 2, 5, 14, 19, 33, 46, 57, 63, 56, 8, 15])
    exact = circuit.run(x)
    np.testing.assert_array_equal(exact, ((x + 4) >> 3) * 3)
    got = encrypted_run(circuit, x)
    lo, hi = _floor_ceil(x, k)
    # Values within the noise of a rounding boundary (x % 8 == 4) may round either way;
    # with 4-bit parameters, 3 units of 8 away from it is ~5 noise deviations.
    ok = (got == lo // 8 * 3) | (got == hi // 8 * 3)
    assert ok.all(), (got, exact)
    far = np.abs((x % 8) - 4) >= 3
    np.testing.assert_array_equal(got[far], exact[far])


def test_exact_ties_round_upward_mostly():
    # Encrypted, a tie is half a unit above its box boundary (rounded upward as in the
    # clear): with 4-unit boxes that is about 1.8 noise deviations.
    circuit = fheml.compile(lambda x: fheml.round_bit_pattern(x, 2) // 4, np.arange(32))
    x = np.full(400, 10)  # 10 = 2.5 * 4: a tie
    np.testing.assert_array_equal(circuit.run(x), np.full(400, 3))
    sim = circuit.simulate(x, seed=0)
    assert set(np.unique(sim)) <= {2, 3} and 0.9 < np.mean(sim == 3) < 1.0
    assert np.mean(encrypted_run(circuit, x[:100]) == 3) >= 0.85


def test_simulation_models_the_approximate_rounding_near_ties():
    """Encrypted, a value near a rounding tie rounds the other way with the probability
    its noise gives; simulation draws the same flips (the MLPs rely on it to predict how
    often encrypted predictions differ from the clear ones)."""
    circuit = fheml.compile(lambda x: fheml.round_bit_pattern(x, 8) // 256,
                            np.arange(4096 - 128))
    (std,) = circuit._simulation_noise.values()  # in units of x
    # half a noise deviation below the tie at 128 (mod 256): about 30 % round up (the
    # encrypted rounding adds half a unit: d - 1/2 from the boundary)
    d = int(round(std / 2))
    x = 256 * np.arange(1200) % 3840 + 128 - d  # 1,200: flip rates within ~0.014
    rounded_down = x >> 8
    flips_sim = np.mean(circuit.simulate(x, seed=0) != rounded_down)
    expected = 0.5 * math.erfc((d - 0.5) / std / math.sqrt(2))
    assert abs(flips_sim - expected) < 0.07
    flips_enc = np.mean(encrypted_run(circuit, x) != rounded_down)
    assert abs(flips_enc - flips_sim) < 0.1, (flips_enc, flips_sim, std)
    # far from the ties (four deviations) nothing moves, in either run
    far = 256 * np.arange(50) % 3840 + 128 - int(4 * std)
    np.testing.assert_array_equal(circuit.simulate(far, seed=0), far >> 8)


def test_plain_numpy_semantics():
    x = np.array([-5, -2, 0, 1, 2, 3, 6, 7])
    np.testing.assert_array_equal(fheml.round_bit_pattern(x, 2), [-4, 0, 0, 0, 4, 4, 8, 8])
    with pytest.raises(ValueError, match="lsbs_to_remove"):
        fheml.round_bit_pattern(x, -1)
