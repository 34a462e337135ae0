"""Modes (clear, simulate, encrypted), parameters, statistics and the graph listing."""

import time

import numpy as np
import pytest

import fheml
from fheml._core import select_parameters
from tests.compiler.conftest import encrypted_run


def test_decorator_and_call():
    @fheml.compiler({"x": "encrypted", "w": "clear"})
    def f(x, w):
        return (x * 3 + w) % 7

    assert f(np.array([2]), np.array([1]))[0] == 0  # still a plain function
    circuit = f.compile([(np.array([i]), np.array([1])) for i in range(8)])
    assert isinstance(circuit, fheml.Circuit)
    np.testing.assert_array_equal(circuit.run(np.array([2]), np.array([1])), [0])


def test_linear_batch_circuit_has_no_bootstrap_and_is_fast():
    rng = np.random.default_rng(0)
    W = rng.integers(-127, 128, size=(30, 3))
    b = rng.integers(-1000, 1000, size=3)
    X = rng.integers(0, 256, size=(200, 30))
    circuit = fheml.compile(lambda x: x @ W + b, X[:100])  # 100 samples of shape (30,)
    assert not circuit.parameters.has_bootstrap
    assert circuit.statistics["lookups"] == 0
    batch = X[100:]
    expected = batch @ W + b
    np.testing.assert_array_equal(circuit.run(batch), expected)
    circuit.keygen()
    start = time.perf_counter()
    got = circuit.encrypt_run_decrypt(batch)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(got, expected)
    assert elapsed < 10, elapsed


def test_parameters_follow_widest_lookup_and_norm():
    W = np.array([3, -2, 1])
    circuit = fheml.compile(lambda x: (x @ W) // 2, [np.array(v) for v in
                                                     np.ndindex(4, 4, 4)])
    # x @ W in [-6, 12]: 19 values -> 5-bit lookup.  It reads fresh encryptions only, whose
    # noise (times sqrt(14)) is far below a bootstrap output's: the norm does not count.
    assert circuit.parameters.precision == 5
    assert circuit.parameters == select_parameters(5, 2**-40, 1.0)
    assert circuit.statistics["global_p_error"] <= 2**-40
    # After a first lookup, the weights multiply bootstrap noise: the norm counts.
    circuit = fheml.compile(lambda x: (((x // 2) + 1) @ W) // 2,
                            [np.array(v) for v in np.ndindex(8, 8, 8)])
    assert circuit.parameters.norm2 == pytest.approx(np.sqrt(14))
    assert circuit.parameters == select_parameters(5, 2**-40, np.sqrt(14))


def test_global_p_error_is_split_over_lookups():
    circuit = fheml.compile(lambda x: x // 2, np.arange(16).reshape(8, 2) % 8,
                            global_p_error=1e-3)
    stats = circuit.statistics
    assert stats["lookups"] == 2
    per = 1 - (1 - 1e-3) ** 0.5
    assert stats["p_error"] == pytest.approx(per)
    assert stats["global_p_error"] <= 1e-3


def test_statistics_content():
    circuit = fheml.compile(lambda x, y: (x * y) // 3 + (x > 1), [
        (np.array([a, b]), np.array([b, a])) for a in range(4) for b in range(4)])
    s = circuit.statistics
    assert s["lookups"] == sum(s["lookups_by_precision"].values())
    assert s["levels"] == 2  # products, then the division
    assert s["estimated_cost"] == pytest.approx(s["lookups"] * circuit.parameters.cost)
    for key in ("bootstrapping_key", "keyswitching_key", "seeded_bootstrapping_key",
                "seeded_keyswitching_key"):
        assert s["key_sizes"][key] > 0
    assert s["key_sizes"]["seeded_bootstrapping_key"] < s["key_sizes"]["bootstrapping_key"]
    assert 0 < s["global_p_error"] < 1e-9


def test_graph_format_lists_nodes_with_widths_and_lines():
    def f(x):
        y = x * 3 + 1
        return np.round(np.sqrt(y)).astype(np.int64)

    circuit = fheml.compile(f, np.arange(8))
    text = circuit.graph.format()
    assert "sqrt" in text and "uint5" in text and "float" in text
    assert "y = x * 3 + 1" in text and "test_modes.py" in text
    assert circuit.max_bit_width == 3  # the lookup reads x, not x * 3 + 1 (issue 8, item 3)
    assert circuit.statistics["lookups"] == 1  # the whole float chain is one lookup


def test_simulation_matches_clear_at_low_p_error_and_fails_at_high():
    inputset = np.arange(8)
    exact = fheml.compile(lambda x: (x * 5) % 8, inputset)
    x = np.tile(np.arange(8), 50)
    np.testing.assert_array_equal(exact.simulate(x, seed=1), exact.run(x))
    noisy = fheml.compile(lambda x: (x * 5) % 8, inputset, p_error=0.2)
    p_fail = noisy.parameters.p_fail(noisy.program.lookups[0].attrs["pin"])
    assert 0.05 < p_fail <= 0.2
    wrong = np.mean(noisy.simulate(x, seed=1) != noisy.run(x))
    assert 0.3 * p_fail < wrong < 3 * p_fail


def test_run_modes_agree():
    circuit = fheml.compile(lambda x: np.abs(x - 3) * 2, np.arange(8))
    x = np.arange(8)
    expected = np.abs(x - 3) * 2
    np.testing.assert_array_equal(circuit.run(x, fhe="disable"), expected)
    np.testing.assert_array_equal(circuit.run(x, fhe="simulate"), expected)
    np.testing.assert_array_equal(encrypted_run(circuit, x), expected)
    with pytest.raises(ValueError, match="fhe must be"):
        circuit.run(x, fhe="fast")


def test_levels_batch_lookups_in_one_engine_call(monkeypatch):
    from fheml._core import EvaluationKeys
    circuit = fheml.compile(lambda x, y: (x // 2, y % 3, (x + y) // 4),
                            [(np.arange(4) + i, np.arange(4)[::-1]) for i in range(4)])
    calls = []
    original = EvaluationKeys.programmable_bootstrap

    def spy(self, ct, *args, **kwargs):
        calls.append(ct.shape)
        return original(self, ct, *args, **kwargs)

    monkeypatch.setattr(EvaluationKeys, "programmable_bootstrap", spy)
    x, y = np.array([[0, 1, 2, 6], [3, 3, 3, 3]]), np.array([[3, 2, 1, 0], [0, 1, 2, 3]])
    got = encrypted_run(circuit, x, y)
    assert calls == [(2 * 3 * 4,)]  # 3 lookup nodes x 4 values x 2 samples, one call
    for g, e in zip(got, (x // 2, y % 3, (x + y) // 4)):
        np.testing.assert_array_equal(g, e)


def test_output_independent_of_the_inputs():
    """All-zero weights: the output's noise norm is 0, the parameters must still let the
    inputs be encrypted (regression: they were chosen for norm ~0)."""
    import fheml

    w = np.zeros((3, 2), dtype=np.int64)
    circuit = fheml.compile(lambda x: x @ w + 5, [np.array([a, b, c]) for a in (0, 7) for b in (0, 7) for c in (0, 7)])
    x = np.array([3, 1, 6])
    assert np.array_equal(circuit.encrypt_run_decrypt(x), x @ w + 5)
    assert np.array_equal(circuit.run(x), x @ w + 5)
