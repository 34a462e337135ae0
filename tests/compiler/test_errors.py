"""Errors a user can hit: they name the operation, the source line and what to do."""

import numpy as np
import pytest

import fheml
from fheml.compiler import InputRangeError, TracingError


def _inputset(n=20, shape=(3,), hi=7, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, hi + 1, size=shape) for _ in range(n)] + [np.full(shape, hi),
                                                                      np.zeros(shape, int)]


def test_unsupported_numpy_function_names_op_and_line():
    def f(x):
        return np.cumsum(x)  # the line the error must point at

    with pytest.raises(TracingError) as info:
        fheml.compile(f, _inputset())
    msg = str(info.value)
    assert "np.cumsum" in msg
    assert "test_errors.py" in msg and "np.cumsum(x)  # the line" in msg


def test_unsupported_control_flow():
    def f(x):
        if x.sum() > 3:
            return x
        return x + 1

    with pytest.raises(TracingError, match="control flow.*np.where"):
        fheml.compile(f, _inputset())


def test_unsupported_ufunc_method():
    with pytest.raises(TracingError, match=r"np.add.accumulate"):
        fheml.compile(lambda x: np.add.accumulate(x), _inputset())


def test_encrypted_times_encrypted_matrix_is_a_sum_of_products():
    # Issue 8, item 3: lowered to elementwise products (lookups) and a sum.
    rng = np.random.default_rng(5)
    pairs = [(rng.integers(0, 4, (2, 3)), rng.integers(0, 4, (3, 2))) for _ in range(30)]
    circuit = fheml.compile(lambda x, y: x @ y, pairs)
    x, y = rng.integers(0, 4, (10, 2, 3)), rng.integers(0, 4, (10, 3, 2))
    assert np.array_equal(circuit.run(x, y), x @ y)
    vec = fheml.compile(lambda x, y: np.dot(x, y), [(a, a[::-1]) for a in _inputset()])
    assert int(vec.run(np.array([7, 0, 3]), np.array([1, 2, 7]))) == 28


def test_float_output_asks_for_astype():
    with pytest.raises(TracingError, match=r"astype\(np.int64\)"):
        fheml.compile(lambda x: x * 0.5, _inputset())


def test_too_wide_lookup_names_node_width_limit_and_fix():
    def f(x):
        return x.sum() // 7  # wide lookup

    with pytest.raises(TracingError) as info:
        fheml.compile(f, _inputset(shape=(40,)))
    msg = str(info.value)
    assert "floor_divide" in msg and "x.sum() // 7  # wide lookup" in msg
    assert "9-bit" in msg and "8 bits" in msg and "round_bit_pattern" in msg


def test_too_wide_packed_lookup():
    with pytest.raises(TracingError, match=r"5 \+ 5 = 10 bits"):
        fheml.compile(lambda x, y: x // (y + 1),
                      [(a, b) for a, b in zip(_inputset(hi=31), _inputset(hi=31, seed=1))])


def test_round_bit_pattern_fixes_too_wide_lookup():
    def f(x):
        return fheml.round_bit_pattern(x.sum(), 1) // 7

    circuit = fheml.compile(f, _inputset(shape=(40,)))
    assert circuit.statistics["lookups_by_precision"] == {8: 1}


def test_input_outside_inputset_range_clear_message():
    circuit = fheml.compile(lambda x: x // 2, _inputset())
    for mode in ("disable", "simulate"):
        with pytest.raises(InputRangeError, match=r"argument 'x'.*\[0, 9\].*\[0, 7\].*inputset"):
            circuit.run(np.array([0, 9, 1]), fhe=mode)
    circuit.keygen()
    with pytest.raises(InputRangeError):
        circuit.client.encrypt(np.array([-1, 0, 0]))


def test_lookup_covers_worst_case_not_only_inputset():
    # x - y only seen in [-1, 1] on this inputset, but x in [1, 6] and y in [0, 7] allow
    # [-7, 6]: the table covers that, so an in-range call is exact (issue 8, item 1).
    inputset = [(np.array([a]), np.array([a + d])) for a in range(1, 7) for d in (-1, 0, 1)]
    circuit = fheml.compile(lambda x, y: (x - y) ** 2, inputset)
    assert int(circuit.run(np.array([3]), np.array([4]))[0]) == 1
    for mode in ("disable", "simulate"):
        assert int(circuit.run(np.array([1]), np.array([7]), fhe=mode)[0]) == 36


def test_lookup_range_error_names_the_lookup_input_range():
    # Issue 8, item 2: the message gives the lookup's input range, not its output bounds.
    from fheml.compiler.program import ClearBackend, run_clear

    inputset = [(np.array([a]), np.array([a + d])) for a in range(1, 7) for d in (-3, 0, 3)
                if 0 <= a + d <= 7]
    circuit = fheml.compile(lambda x, y: ((x - y) ** 2) // 2, inputset)
    with pytest.raises(InputRangeError, match=r"reached -19, outside the range \[-6, 6\]"):
        # bypasses the argument check to reach the lookup with an out-of-range value
        run_clear(circuit.program, [np.array([[1]]), np.array([[20]])], ClearBackend())


def test_wrong_number_of_arguments():
    circuit = fheml.compile(lambda x, y: x + y, [(a, a) for a in _inputset()])
    with pytest.raises(TypeError, match=r"takes 2 argument\(s\) \(x, y\), got 1"):
        circuit.run(np.zeros(3, int))


def test_wrong_shape():
    circuit = fheml.compile(lambda x: x + 1, _inputset())
    with pytest.raises(ValueError, match=r"shape \(4,\).*compiled for shape \(3,\)"):
        circuit.run(np.zeros(4, int))
    with pytest.raises(ValueError, match="batch"):
        fheml.compile(lambda x, y: x + y, [(a, a) for a in _inputset()]).run(
            np.zeros(3, int), np.zeros((2, 3), int))


def test_float_encrypted_argument_rejected():
    circuit = fheml.compile(lambda x: x + 1, _inputset())
    with pytest.raises(TypeError, match="integers"):
        circuit.run(np.array([0.5, 1, 2]))


def test_bad_parameters_dict():
    with pytest.raises(ValueError, match="missing"):
        fheml.compiler({"x": "encrypted"})(lambda x, y: x + y)
    with pytest.raises(ValueError, match="'encrypted' or 'clear'"):
        fheml.compiler({"x": "secret"})(lambda x: x)


def test_inputset_problems():
    with pytest.raises(ValueError, match="empty"):
        fheml.compile(lambda x: x + 1, [])
    with pytest.raises(ValueError, match="different shapes"):
        fheml.compile(lambda x: x + 1, [np.zeros(2, int), np.zeros(3, int)])
    with pytest.raises(TypeError, match="integers"):
        fheml.compile(lambda x: x + 1, [np.zeros(2), np.ones(2)])


def test_output_without_encrypted_input():
    with pytest.raises(TracingError, match="does not depend on any encrypted input"):
        fheml.compile(lambda x, w: w + 1, [(a, a) for a in _inputset()],
                      parameters={"x": "encrypted", "w": "clear"})


def test_clear_argument_inside_lookup_rejected():
    with pytest.raises(TracingError, match="clear runtime argument"):
        fheml.compile(lambda x, w: x // w, [(a, a + 1) for a in _inputset()],
                      parameters={"x": "encrypted", "w": "clear"})


def test_check_reports_without_compiling():
    report = fheml.check(lambda x: x.sum() // 7, _inputset(shape=(40,)))
    assert not report.ok and "9-bit" in report.error
    assert "floor_divide" in report.format()
    report = fheml.check(lambda x: (x * 3) // 7 + x, _inputset())
    assert report.ok
    assert report.max_bit_width == 4  # output (x * 3) // 7 + x in [0, 10]; the lookup reads x
    assert report.lookups[0]["bits"] == 3


def test_clear_argument_outside_its_compiled_range():
    """A clear runtime argument beyond its inputset range would make an encrypted run
    silently wrong (bounds and noise were computed for that range): every mode refuses it,
    and so does a server that receives the arguments as bytes."""
    import fheml
    from fheml.compiler import InputRangeError, SerializationError

    @fheml.compiler({"x": "encrypted", "w": "clear"})
    def f(x, w):
        return x @ w

    rng = np.random.default_rng(0)
    circuit = f.compile([(rng.integers(0, 4, 3), rng.integers(-1, 2, (3, 1))) for _ in range(20)])
    x, ok, bad = np.array([3, 3, 3]), np.array([[1], [-1], [1]]), np.array([[9], [9], [9]])
    assert np.array_equal(circuit.encrypt_run_decrypt(x, ok), x @ ok)
    for run in (circuit.run, circuit.simulate, circuit.encrypt_run_decrypt):
        with pytest.raises(InputRangeError, match="clear argument 'w'"):
            run(x, bad)
    # the server checks too (the client may be someone else's code); from bytes, every
    # error a peer causes is the boundary's SerializationError
    args = circuit.client.encrypt(x, ok)
    args.values[1] = bad[None]
    with pytest.raises(SerializationError, match="clear argument 'w'"):
        circuit.server.run(args.to_bytes(), circuit.client.evaluation_keys)
    with pytest.raises(InputRangeError, match="clear argument 'w'"):
        circuit.server.run(args, circuit.client.evaluation_keys)


def _docs_example():
    @fheml.compiler({"x": "encrypted", "w": "clear"})
    def f(x, w):
        return np.round(np.tanh((x @ w) / 8) * 7).astype(np.int64)

    np.random.seed(3)
    inputset = [(np.random.randint(0, 8, 4), np.random.randint(-2, 3, (4, 2)))
                for _ in range(100)]
    x, w = np.array([7] * 4), np.array([[2, -2]] * 4)
    assert f(x, w).tolist() == [7, -7]
    return f.compile(inputset), x, w


def test_docs_example_exact_at_range_corner():
    # Issue 8, item 1: every argument in range, inputset of 100 random rows (seed 3); the
    # table used to cover only the inputset's range: [5, -5] encrypted, errors in the clear.
    circuit, x, w = _docs_example()
    assert circuit.run(x, w).tolist() == [7, -7]
    assert circuit.simulate(x, w).tolist() == [7, -7]
    assert circuit.program.lookups[0].attrs["tables"].shape[1] >= 113  # covers [-56, 56]


@pytest.mark.slow
def test_docs_example_exact_at_range_corner_encrypted():
    from .conftest import encrypted_run

    circuit, x, w = _docs_example()
    assert encrypted_run(circuit, x, w).tolist() == [7, -7]


def test_refuses_lookup_whose_worst_case_range_is_too_wide():
    # x + 4 * y is seen in [63, 252] on this inputset but can reach [0, 315] for x, y in
    # [0, 63]: refuse, naming the node, both ranges and the fix, rather than build a table
    # that is wrong on in-range inputs.
    inputset = [(np.array([a]), np.array([63 - a])) for a in range(64)]
    with pytest.raises(TracingError, match=r"(?s)lookup computing .*seen in \[63, 252\].*"
                                           r"\[0, 315\].*silently wrong.*round_bit_pattern"):
        fheml.compile(lambda x, y: np.round(np.tanh((x + 4 * y) / 64) * 4).astype(np.int64),
                      inputset)
