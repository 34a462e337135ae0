"""Packed linear circuits: packed == LWE == clear integer results, layouts at their limits,
byte formats, path choice and the noise of the packed product against its model."""
import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_classification, make_regression

import fheml
from fheml import linear_model
from fheml._core.glwe import decrypt_glwe
from fheml._core import LweCiphertext
from fheml._core.keys import encode
from fheml.compiler import EncryptedArgs, EncryptedResult
from fheml.compiler.packed import (
    FirstLayerPlan,
    affine_map,
    digit_bias,
    plan_packing,
    weight_digits,
)

from tests.compiler.conftest import use_cached_keys

rng = np.random.default_rng(140)


def _linear(W, b):
    def f(x):
        return x @ W + b
    return f


def _inputset(F, hi=255, rows=30):
    return np.concatenate([rng.integers(0, hi + 1, (rows, F)), [np.zeros(F, int)],
                           [np.full(F, hi)]])


def _both_paths(circuit, X):
    """(packed, LWE) decrypted results of one batch."""
    client, server = circuit.client, circuit.server
    out = []
    for packing in (True, False):
        args = client.encrypt(X, packing=packing)
        assert (args.rows is not None) == packing
        out.append(client.decrypt(server.run(args, client.evaluation_keys)))
    return out


def test_affine_map_reads_weights_and_refuses_other_programs():
    W, b = rng.integers(-5, 6, (4, 3)), np.array([1, -2, 3])
    c = fheml.compile(_linear(W, b), rng.integers(0, 8, (20, 4)))
    got_w, got_b = affine_map(c.program)
    lo = c.client.spec.inputs[0]["lo"]
    np.testing.assert_array_equal(got_w, W)
    np.testing.assert_array_equal(got_b, b + lo * W.sum(axis=0))
    two = fheml.compile(lambda x: (x.reshape(2, 2) @ W[:2, :2], x.sum() * 3 - 1),
                        rng.integers(0, 8, (20, 4)))
    assert two.client.spec.packed is not None  # several outputs, reshaped input
    assert affine_map(fheml.compile(lambda x: x * x, rng.integers(0, 8, (20, 4))).program)[0] \
        is None
    x0, y0 = rng.integers(0, 4, 3), rng.integers(0, 4, 3)
    mixed = fheml.compile(lambda x, y: x @ y, [(x0, y0)],
                          parameters={"x": "encrypted", "y": "clear"})
    assert mixed.client.spec.packed is None
    with pytest.raises(ValueError, match="no packed path"):
        use_cached_keys(mixed).client.encrypt(x0, y0, packing=True)


@pytest.mark.parametrize("F,O,rows", [(1, 1, 3), (5, 2, 40), (30, 1, 200), (64, 3, 33),
                                      (257, 2, 9)])
def test_packed_equals_lwe_equals_clear_on_random_weights(F, O, rows):
    W = rng.integers(-127, 128, (F, O))
    b = rng.integers(-500, 500, O)
    c = use_cached_keys(fheml.compile(_linear(W, b), _inputset(F)))
    X = rng.integers(0, 256, (rows, F))
    packed, lwe = _both_paths(c, X)
    np.testing.assert_array_equal(packed, X @ W + b)
    np.testing.assert_array_equal(lwe, X @ W + b)
    np.testing.assert_array_equal(packed, c.run(X))
    one = c.client.decrypt(c.server.run(c.client.encrypt(X[0], packing=True),
                                        c.client.evaluation_keys))
    np.testing.assert_array_equal(one, X[0] @ W + b)  # one row, unbatched


def test_multiple_outputs_and_shapes_through_bytes():
    W = rng.integers(-9, 10, (6, 2))

    def f(x):
        return x.reshape(3, 2) @ W[:2], (x * 2).sum() - 7

    c = use_cached_keys(fheml.compile(f, rng.integers(0, 16, (20, 6))))
    X = rng.integers(0, 16, (50, 6))
    args = EncryptedArgs.from_bytes(c.client.encrypt(X, packing=True).to_bytes())
    assert args.rows == 50
    result = EncryptedResult.from_bytes(c.server.run(args, c.client.evaluation_keys).to_bytes())
    got = c.client.decrypt(result)
    want = c.run(X)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[0].shape == (50, 3, 2) and got[1].shape == (50,)


def test_layout_fills_the_polynomial_exactly():
    F = 32  # N = 2048 holds 64 rows with no padding
    W = rng.integers(-127, 128, (F, 2))
    c = use_cached_keys(fheml.compile(_linear(W, 3), _inputset(F)))
    plan = c.client.spec.packed
    assert plan.params.polynomial_size == 2048 and plan.slots * plan.chunk_size == 2048
    assert c.statistics["packing"]["rows_per_ciphertext"] == 64
    X = rng.integers(0, 256, (2 * plan.slots + 1, F))
    X[:plan.slots] = 255  # a full ciphertext at the largest values
    packed, lwe = _both_paths(c, X)
    np.testing.assert_array_equal(packed, X @ W + 3)
    np.testing.assert_array_equal(lwe, packed)


def test_more_features_than_coefficients():
    F, O = 3000, 2
    W = rng.integers(-3, 4, (F, O))
    c = fheml.compile(_linear(W, -4), rng.integers(0, 4, (10, F)))
    spec = c.client.spec.inputs[0]
    plan = plan_packing(c.program, c.p_error, spec["hi"] - spec["lo"], polynomial_size=2048)
    assert plan.chunks == 2 and plan.chunk_size == 1500 and plan.slots == 1
    from fheml._core.glwe import GlweSecretKey
    key = GlweSecretKey.generate(1, 2048, plan.params.noise_std)
    X = rng.integers(0, 4, (3, F))
    lo = c.client.spec.inputs[0]["lo"]
    ct = plan.encrypt(key, X - lo)
    assert ct.shape == (3, 2)
    m = plan.decrypt(key, plan.evaluate(ct, 3), 3)
    mod = 1 << c.program.precision
    lo_out = c.client.spec.outputs[0]["lo"]
    np.testing.assert_array_equal(lo_out + np.mod(m - lo_out, mod), X @ W - 4)


def test_largest_accumulator():
    F = 512
    W = np.where(rng.random((F, 2)) < 0.5, -4095, 4095)
    inputset = np.stack([np.zeros(F, int), np.full(F, 255), np.where(W[:, 0] > 0, 255, 0),
                         np.where(W[:, 0] < 0, 255, 0)])
    c = use_cached_keys(fheml.compile(_linear(W, 0), inputset))
    assert c.max_bit_width >= 29 and c.client.spec.packed is not None
    X = np.concatenate([inputset, rng.integers(0, 256, (20, F))])
    packed, lwe = _both_paths(c, X)
    np.testing.assert_array_equal(packed, X @ W)
    np.testing.assert_array_equal(lwe, X @ W)


def test_path_choice_by_cost():
    small = use_cached_keys(fheml.compile(_linear(np.array([[3], [-2]]), 0), _inputset(2)))
    assert small.client.uses_packing(100)
    assert small.client.encrypt(rng.integers(0, 256, (0, 2))).rows is None
    W = rng.integers(-127, 128, (30, 1))
    c = use_cached_keys(fheml.compile(_linear(W, 0), _inputset(30)))
    assert c.client.uses_packing(4) and c.client.uses_packing(100)
    # one row of one wide feature: three weight digits, whose GLWE results are larger than
    # the one LWE ciphertext
    wide = use_cached_keys(fheml.compile(_linear(np.array([[4095]]), 0), _inputset(1)))
    assert wide.client.spec.packed.digits > 1
    assert not wide.client.uses_packing(1) and wide.client.encrypt([7]).rows is None
    assert wide.client.uses_packing(100)
    assert c.client.encrypt(rng.integers(0, 256, (100, 30))).rows == 100
    upload, result = c.client.spec.packed.sizes(100)
    assert upload / 100 <= 1024
    # a small batch sends only its own coefficients
    one = c.client.encrypt(rng.integers(0, 256, (3, 30)), packing=True)
    assert one.values[0].coefficients == (0, 90, 1) and len(one.to_bytes()) < 1024
    assert len(c.client.encrypt(rng.integers(0, 256, (100, 30))).to_bytes()) / 100 <= 1024


def test_server_checks_packed_arguments():
    W = rng.integers(-127, 128, (30, 1))
    c = use_cached_keys(fheml.compile(_linear(W, 0), _inputset(30)))
    args = c.client.encrypt(rng.integers(0, 256, (100, 30)), packing=True)
    with pytest.raises(ValueError, match="groups"):
        c.server.run(EncryptedArgs(args.values, True, 1000), c.client.evaluation_keys)
    other = use_cached_keys(fheml.compile(lambda x: x[:20] @ W[:20, 0] + 1, _inputset(30)))
    with pytest.raises(ValueError):
        other.server.run(args, other.client.evaluation_keys)
    # specs round trip with the plan; the server re-reads the weights from its program
    server = fheml.compiler.Server.from_bytes(c.server.spec.to_bytes())
    np.testing.assert_array_equal(server.spec.packed.weights, c.server.spec.packed.weights)
    client = fheml.compiler.Client.from_bytes(c.client.spec.to_bytes())
    assert client.spec.packed.to_dict() == c.client.spec.packed.to_dict()
    assert client.spec.packed.weights is None


@pytest.mark.parametrize("digits", [(1, 0), (2, 3), (3, 2)])
def test_packed_noise_matches_model(digits):
    F, O = 30, 2
    W = rng.integers(-127, 128, (F, O))
    c = use_cached_keys(fheml.compile(_linear(W, 0), _inputset(F)))
    spec = c.client.spec.inputs[0]
    plan = plan_packing(c.program, c.p_error, spec["hi"] - spec["lo"], digits=digits)
    assert (plan.digits, plan.digit_base_log) == digits
    X = rng.integers(0, 256, (plan.slots * 40, F))
    X[:plan.slots] = 255 * (W[:, 0] > 0)  # the largest first output
    u = X - spec["lo"]
    key = c.client.packed_key()
    result = plan.evaluate(plan.encrypt(key, u), len(X))
    np.testing.assert_array_equal(plan.decrypt(key, result, len(X)),
                                  np.mod(u @ plan.weights + plan.bias,
                                         1 << c.program.precision))
    # every digit's phase against its exact value and the noise model at its own norm
    D, M = plan.digits, plan.params.precision + 1
    wd = weight_digits(plan.weights, D, plan.digit_base_log)
    bd = digit_bias(plan.bias, wd, plan.digit_base_log, plan.input_max)
    phase = decrypt_glwe(key, result).reshape(-1, O, D, plan.slots)
    phase = phase.transpose(0, 3, 1, 2).reshape(-1, O, D)[:len(X)]
    for j in range(D):
        exact = u @ wd[j] + bd[j]
        if j < D - 1:  # lower digits exactly in [0, 2^M)
            assert exact.min() >= 0 and exact.max() < 2**M
        err = (phase[:, :, j] - encode(np.mod(exact, 2**M), M - 1)).astype(np.int64) * 2.0**-64
        for o in range(O):
            model = plan.params.variance(np.linalg.norm(wd[j][:, o]))
            assert abs(np.mean(err[:, o] ** 2) / model - 1) < 0.2
    assert plan.params.log2_p_fail() <= np.log2(c.p_error)


def test_weight_digits_and_biases_recompose():
    W = np.concatenate([rng.integers(-3000, 3000, (40, 3)), [[-4096, 4095, 0]]])
    b = np.array([-70001, 5, 123456])
    for D, k in ((1, 0), (2, 3), (3, 2), (4, 1), (2, 8)):
        wd = weight_digits(W, D, k)
        bd = digit_bias(b, wd, k, 255)
        shifts = (1 << (k * np.arange(D)))
        np.testing.assert_array_equal(np.tensordot(shifts, wd, 1), W)
        np.testing.assert_array_equal(shifts @ bd, b)
        if D > 1:
            assert wd[:-1].min() >= -(1 << (k - 1)) and wd[:-1].max() < 1 << (k - 1)
            for j in range(D - 1):  # lower digits land in [0, U * sum|W_j| + 2^k)
                assert np.all(bd[j] + 255 * np.minimum(wd[j], 0).sum(axis=0) >= 0)
                assert np.all(bd[j] + 255 * np.maximum(wd[j], 0).sum(axis=0)
                              < 255 * np.abs(wd[j]).sum(axis=0) + (1 << k))


@pytest.mark.parametrize("digits", [(2, 3), (3, 2), (4, 1), (2, 7)])
def test_digits_exact_at_every_digit_extreme(digits):
    F, O = 40, 2
    W = rng.integers(-2000, 2000, (F, O))
    c = use_cached_keys(fheml.compile(_linear(W, -12345), _inputset(F)))
    spec = c.client.spec.inputs[0]
    plan = plan_packing(c.program, c.p_error, spec["hi"] - spec["lo"], digits=digits)
    wd = weight_digits(plan.weights, *digits)
    extremes = [255 * (wd[j][:, o] > s) for j in range(digits[0]) for o in range(O)
                for s in (0, -1)]
    X = np.concatenate([extremes, 255 - np.array(extremes), rng.integers(0, 256, (50, F))])
    key = c.client.packed_key()
    u = X - spec["lo"]
    got = plan.decrypt(key, plan.evaluate(plan.encrypt(key, u), len(X)), len(X))
    np.testing.assert_array_equal(got, np.mod(X @ W - 12345, 1 << c.program.precision))
    assert plan.params.precision + 1 < c.program.precision  # fewer bits decrypted per digit


def test_300_features_upload_under_1kb():
    X, y = make_classification(1500, 300, n_informative=40, random_state=0)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = _quiet_fit(linear_model.FHELogisticRegression, X, y)
    circuit = use_cached_keys(model.compile(X))
    plan = circuit.client.spec.packed
    assert plan.digits > 1 and plan.params.input_bits < 32
    q = model.quantize_input(X[:100])
    args = circuit.client.encrypt(q)
    assert args.rows == 100 and len(args.to_bytes()) / 100 <= 1024
    result = circuit.server.run(args.to_bytes(), circuit.client.evaluation_keys)
    np.testing.assert_array_equal(circuit.client.decrypt(result.to_bytes()), circuit.run(q))


def _quiet_fit(cls, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls().fit(X, y)


@pytest.mark.parametrize("cls", [getattr(linear_model, n) for n in linear_model.__all__],
                         ids=lambda c: c.__name__)
def test_every_linear_estimator_packed_equals_lwe_equals_clear(cls):
    if cls.__name__ in ("FHELogisticRegression", "FHELinearSVC", "FHESGDClassifier"):
        X, y = make_classification(120, 12, n_informative=6, n_classes=3, random_state=0)
    elif cls.__name__ in ("FHEPoissonRegressor", "FHEGammaRegressor", "FHETweedieRegressor"):
        X, y = make_regression(120, 12, random_state=0)
        y = np.exp((y - y.mean()) / y.std())
    else:
        X, y = make_regression(120, 12, n_targets=1, random_state=0)
    model = _quiet_fit(cls, X, y)
    circuit = use_cached_keys(model.compile(X))
    assert circuit.client.spec.packed is not None
    q = model.quantize_input(X[:60])
    packed, lwe = _both_paths(circuit, q)
    clear = circuit.run(q)
    np.testing.assert_array_equal(packed, clear)
    np.testing.assert_array_equal(lwe, clear)
    np.testing.assert_array_equal(clear.reshape(len(q), -1),
                                  model.quantized_layer_.accumulate(q).reshape(len(q), -1))


def test_breast_cancer_logistic_regression_sizes():
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = _quiet_fit(linear_model.FHELogisticRegression, X, y)
    circuit = use_cached_keys(model.compile(X))
    q = model.quantize_input(X[:100])
    args = circuit.client.encrypt(q)
    assert args.rows == 100 and len(args.to_bytes()) / 100 <= 1024
    result = circuit.server.run(args, circuit.client.evaluation_keys)
    np.testing.assert_array_equal(circuit.client.decrypt(result.to_bytes()), circuit.run(q))
    assert np.array_equal(model.predict(X[:100], fhe="execute"), model.predict(X[:100]))


def test_packed_key_survives_secret_key_serialization():
    W = rng.integers(-127, 128, (30, 1))
    c = fheml.compile(_linear(W, 0), _inputset(30))
    c.keygen()
    X = rng.integers(0, 256, (50, 30))
    result = c.server.run(c.client.encrypt(X, packing=True), c.client.evaluation_keys).to_bytes()
    from fheml._core import SecretKeys
    reloaded = fheml.compiler.Client.from_bytes(c.client.spec.to_bytes())
    reloaded.secret_keys = SecretKeys.from_bytes(c.client.secret_keys.to_bytes())
    np.testing.assert_array_equal(reloaded.decrypt(result), X @ W)
    key = c.client.packed_key()
    assert key.key_id == c.client.secret_keys.key_id
    assert 0.4 < key.key.mean() < 0.6
    other = fheml.compile(_linear(W, 0), _inputset(30))
    other.keygen()
    assert not np.array_equal(other.client.packed_key().key, key.key)


def test_server_checks_packed_bytes_against_spec_and_limits():
    from fheml._core import LimitExceededError, SerializationError
    from fheml.compiler.circuit import ServerLimits
    W = rng.integers(-127, 128, (30, 1))
    c = use_cached_keys(fheml.compile(_linear(W, 0), _inputset(30)))
    keys = c.client.evaluation_keys
    data = c.client.encrypt(rng.integers(0, 256, (100, 30)), packing=True).to_bytes()
    server = fheml.compiler.Server.from_bytes(c.server.spec.to_bytes())
    np.testing.assert_array_equal(c.client.decrypt(server.run(data, keys).to_bytes()),
                                  c.client.decrypt(c.server.run(EncryptedArgs.from_bytes(data),
                                                                keys)))
    limited = fheml.compiler.Server(server.spec, ServerLimits(max_batch_rows=10))
    with pytest.raises(LimitExceededError):
        limited.run(data, keys)
    other = use_cached_keys(fheml.compile(_linear(W[:20], 0), _inputset(20)))
    wrong = other.client.encrypt(rng.integers(0, 256, (100, 20)), packing=True).to_bytes()
    with pytest.raises(SerializationError, match="layout"):
        server.run(wrong, keys)
    lwe_only = use_cached_keys(fheml.compile(lambda x, y: x - y,
                                             [(r, r[::-1]) for r in _inputset(30)]))
    assert lwe_only.client.spec.packed is None
    with pytest.raises(SerializationError, match="no packed path"):
        lwe_only.server.run(data, lwe_only.client.evaluation_keys)


# ------------------------------------------------------------ packed first layer ---------

def _first_layer_circuit():
    F, H = 8, 3
    W = np.random.default_rng(3).integers(-1, 2, (F, H))

    def f(x):
        return np.maximum(x @ W + 2, 0) * 2 + (x.sum() - 3)  # lookups, then a linear mix

    inputset = np.concatenate([rng.integers(0, 2, (40, F)), [np.zeros(F, int),
                                                             np.ones(F, int)]])
    return use_cached_keys(fheml.compile(f, inputset))


def test_first_layer_packed_equals_lwe_equals_clear():
    c = _first_layer_circuit()
    plan = c.server.spec.packed
    assert isinstance(plan, FirstLayerPlan) and c.statistics["packing"]["first_layer"]
    assert [k for k, _ in plan.frontier] == [2, 6]  # x @ W + 2 and x.sum() - 3
    X = rng.integers(0, 2, (40, 8))
    X[:2] = [[0], [1]]
    packed, lwe = _both_paths(c, X)  # through bytes below
    np.testing.assert_array_equal(packed, c.run(X))
    np.testing.assert_array_equal(lwe, packed)
    args = c.client.encrypt(X, packing=True).to_bytes()
    assert len(args) < 40 * 8 * 8 + 1024  # whole words: the LWE path's seeded upload
    result = c.server.run(args, c.client.evaluation_keys.to_bytes())
    np.testing.assert_array_equal(c.client.decrypt(result.to_bytes()), c.run(X))
    one = c.client.decrypt(c.server.run(c.client.encrypt(X[3], packing=True),
                                        c.client.evaluation_keys))
    np.testing.assert_array_equal(one, c.run(X[3]))
    client = fheml.compiler.Client.from_bytes(c.client.spec.to_bytes())
    assert isinstance(client.spec.packed, FirstLayerPlan) and client.spec.packed.weights is None


def test_first_layer_values_exact_with_the_lwe_noise():
    c = _first_layer_circuit()
    plan, sk = c.server.spec.packed, c.client.secret_keys
    X = rng.integers(0, 2, (plan.slots * 8, 8))
    u = X - c.client.spec.inputs[0]["lo"]
    values = plan.evaluate(plan.encrypt(c.client.packed_key(), u), len(X))
    P, start = plan.input_precision, 0
    for k, shape in plan.frontier:
        size = int(np.prod(shape, dtype=np.int64))
        W = plan.weights[:, start:start + size]
        want = u @ W + plan.bias[start:start + size]
        ct = LweCiphertext(values[k].reshape(len(X), size, -1), sk.key_id)
        np.testing.assert_array_equal(sk.decrypt(ct, precision=P), np.mod(want, 2 ** (P + 1)))
        err = (sk.phase(ct) - encode(np.mod(want, 2 ** (P + 1)), P)).astype(np.int64) \
            * 2.0**-64
        model = np.linalg.norm(W, axis=0) ** 2 * c.parameters.big_noise_std ** 2
        np.testing.assert_allclose(np.mean(err ** 2, axis=0) / model, 1, atol=0.2)
        assert np.all(np.linalg.norm(W, axis=0) <= c.program.nodes[k].nu)
        start += size


def test_first_layer_only_for_linear_uses_of_the_input():
    table_first = fheml.compile(lambda x: (x * x).sum(), rng.integers(0, 4, (20, 4)))
    assert table_first.program.lookups and table_first.client.spec.packed is None
    two = fheml.compile(lambda x, y: np.maximum(x - y, 0),
                        [(r, r[::-1]) for r in rng.integers(0, 4, (20, 4))])
    assert two.client.spec.packed is None


def test_mlp_first_layer_is_packed_and_exact():
    from fheml.neural_network import FHEMLPClassifier
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FHEMLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    circuit = use_cached_keys(model.compile(X))
    plan = circuit.server.spec.packed
    assert isinstance(plan, FirstLayerPlan) and plan.weights.shape == (30, 8)
    # 30 features: cheaper packed from one row on (measured: 0.45 against 0.56 ms for
    # one row, 80 against 255 ms for 100)
    assert circuit.client.uses_packing(1) and circuit.client.uses_packing(100)
    assert circuit.client.encrypt(model.quantize_input(X[:3])).rows == 3
    q = model.quantize_input(X[:200]).reshape(200, -1)
    u = q - circuit.client.spec.inputs[0]["lo"]
    (k, shape), = plan.frontier
    values = plan.evaluate(plan.encrypt(circuit.client.packed_key(), u), 200)
    # the lookups read the accumulator's top bits: its error, not its low bits, is the
    # point; the LWE path's, nu^2 sigma^2
    sk, P = circuit.client.secret_keys, plan.input_precision
    want = encode(np.mod(u @ plan.weights + plan.bias, 2 ** (P + 1)), P)
    err = (sk.phase(LweCiphertext(values[k], sk.key_id)) - want).astype(np.int64) * 2.0**-64
    model = np.linalg.norm(plan.weights, axis=0) ** 2 * circuit.parameters.big_noise_std ** 2
    assert abs(np.mean(err ** 2 / model) - 1) < 0.1
    assert abs(np.mean(err / np.sqrt(model))) < 0.1



def _rounded_dot(w, lsbs):
    """``round_bit_pattern(x @ w, lsbs)`` read by a lookup, ``w`` powers of 16: a packed
    first layer (the dot product) in front of an encrypted rounding, compiled on every
    ``x`` in ``[0, 2^lsbs - 1]^F`` (``2^lsbs <= 16``: the digits of ``x @ w`` in base 16)."""
    hi = min(16, 1 << lsbs)
    inputset = np.stack(np.meshgrid(*[np.arange(hi)] * len(w)), axis=-1).reshape(-1, len(w))
    c = use_cached_keys(fheml.compile(
        lambda x: fheml.round_bit_pattern(x @ w, lsbs) >> lsbs, inputset))
    assert isinstance(c.server.spec.packed, FirstLayerPlan)
    return c


def _encrypted(circuit, X, packing, rows=10):
    """Encrypted results of ``X`` on one path, ``rows`` rows per call: the rows of one
    packed call share a GLWE mask, hence part of their keyswitch noise (a common offset
    of their lookup decisions: correlation 0.06 measured on the ties circuit below with a
    keyswitch keeping 12 bits of the mask words; each row's own noise is the LWE path's),
    so rates over rows are measured over small calls."""
    out = []
    for start in range(0, len(X), rows):
        args = circuit.client.encrypt(X[start:start + rows], packing=packing)
        assert (args.rows is not None) == packing
        out.append(circuit.client.decrypt(circuit.server.run(args,
                                                             circuit.client.evaluation_keys)))
    return np.concatenate(out)


def test_first_layer_path_choice_by_cost():
    # one row of two features: the LWE path (measured 0.08 against 0.21 ms); 100 rows
    # packed (2.3 against 0.5 ms)
    c = _rounded_dot(np.array([1, 4]), 2)
    assert not c.client.uses_packing(1) and c.client.encrypt([1, 2]).rows is None
    assert c.client.uses_packing(100)
    X = rng.integers(0, 4, (100, 2))
    args = c.client.encrypt(X)
    assert args.rows == 100
    far = (X[:, 0] == 0) | (X[:, 0] == 3)  # 1.5 units from a rounding boundary
    np.testing.assert_array_equal(
        c.client.decrypt(c.server.run(args, c.client.evaluation_keys))[far], c.run(X)[far])


def test_first_layer_rounding_ties_as_on_the_lwe_path():
    """The encrypted rounding adds half a unit so that a tie (rounded upward in the clear)
    sits half a unit inside its box instead of on the boundary: with 4-unit boxes about
    2.5 noise deviations, so a tie rounds upward almost always, on both paths (on the
    boundary, or half a unit off on one path only, it would go either way half the time
    or the other way)."""
    c = _rounded_dot(np.array([1, 4]), 2)
    X = np.stack([np.full(160, 2), np.arange(160) % 4], axis=1)   # x @ w = 4 k + 2: ties
    tie_up = X[:, 1] + 1
    np.testing.assert_array_equal(c.run(X), tie_up)
    for packing in (True, False):
        assert np.mean(_encrypted(c, X, packing) == tie_up) >= 0.85, packing


def test_first_layer_rounding_flips_as_on_the_lwe_path_and_in_simulation():
    """Near a rounding tie the noise moves a value across the boundary: the packed first
    layer flips as often as the LWE path and as the simulation models (the MLPs rely on
    it).  600 values per path, half a deviation below the tie: flip rates ~0.3, each
    within ~0.02 (one standard error; the simulation's over 6,000 draws); differences
    within 0.1."""
    c = _rounded_dot(np.array([1, 16, 256]), 8)
    (std,) = c._simulation_noise.values()  # in units of x @ w
    d = int(round(std / 2))
    X = np.stack([np.full(600, (128 - d) % 16), np.full(600, (128 - d) // 16),
                  np.arange(600) % 15], axis=1)   # x @ w = 256 k + 128 - d
    down = X[:, 2]
    np.testing.assert_array_equal(c.run(X), down)
    sim = np.mean([c.simulate(X, seed=seed) != down for seed in range(10)])
    expected = 0.5 * math.erfc((d - 0.5) / std / math.sqrt(2))
    assert abs(sim - expected) < 0.03
    packed, lwe = (np.mean(_encrypted(c, X, packing, rows=5) != down)
                   for packing in (True, False))
    assert abs(packed - lwe) < 0.1 and abs(packed - sim) < 0.1, (packed, lwe, sim, std)
