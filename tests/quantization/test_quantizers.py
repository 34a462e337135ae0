import warnings

import numpy as np
import pytest

from fheml.quantization import (
    MAX_ACCUMULATOR_BITS,
    FHEMLClipWarning,
    QuantizedLinear,
    UniformQuantizer,
    signed_bit_width,
)


@pytest.mark.parametrize("n_bits", [2, 4, 8, 12])
@pytest.mark.parametrize("is_signed", [False, True])
@pytest.mark.parametrize("is_symmetric", [False, True])
@pytest.mark.parametrize("per_feature", [False, True])
def test_round_trip_error_within_half_step(n_bits, is_signed, is_symmetric, per_feature):
    rng = np.random.default_rng(n_bits)
    X = rng.normal(loc=[0.0, 3.0, -50.0], scale=[1.0, 0.01, 20.0], size=(300, 3))
    if is_symmetric and not is_signed:
        X = np.abs(X)  # unsigned symmetric quantizers represent [0, max]
    q = UniformQuantizer(n_bits, is_signed=is_signed, is_symmetric=is_symmetric,
                         per_feature=per_feature).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        codes = q.quant(X)
    assert codes.dtype == np.int64
    assert codes.min() >= q.qmin_ and codes.max() <= q.qmax_
    if is_signed:
        assert q.qmin_ < 0 < q.qmax_ and q.qmax_ == 2 ** (n_bits - 1) - 1
    else:
        assert q.qmin_ == 0 and q.qmax_ == 2**n_bits - 1
    if is_symmetric:
        assert np.all(q.zero_point_ == 0)
    error = np.abs(q.dequant(codes) - X)
    assert np.all(error <= q.scale_ / 2 + 1e-9 * np.abs(X).max())


def test_asymmetric_uses_every_code():
    X = np.linspace(-1.0, 2.0, 1000)[:, None]
    q = UniformQuantizer(4).fit(X)
    assert set(q.quant(X).ravel()) == set(range(16))


def test_clipping_warns_and_clips():
    q = UniformQuantizer(8, per_feature=True).fit(np.array([[0.0, 10.0], [1.0, 20.0]]))
    with pytest.warns(FHEMLClipWarning, match=r"1 of 4 values in feature\(s\) 1"):
        codes = q.quant(np.array([[0.5, 15.0], [1.0, 40.0]]))
    assert codes[1, 1] == q.qmax_
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        q.quant(np.array([[0.0, 10.0]]))
        q.quant(np.array([[5.0, 99.0]]), warn=False)


@pytest.mark.parametrize("is_signed", [False, True])
def test_calibration_data_never_warns(is_signed):
    """Edge values whose code rounds one past the range (integer zero point) are not
    reported as outside the calibration range."""
    X = np.array([[0.0, 1.0], [2.0, -1.0]])  # feature 1: 1.0 / scale lands on .5
    q = UniformQuantizer(8, is_signed=is_signed, per_feature=True).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        codes = q.quant(X)
    assert np.all(np.abs(q.dequant(codes) - X) <= q.scale_ / 2 + 1e-12)


def test_constant_feature_and_bad_calibration():
    q = UniformQuantizer(8, per_feature=True).fit(np.array([[1.0, 0.0], [2.0, 0.0]]))
    assert q.scale_[1] == 1.0
    assert np.all(q.dequant(q.quant(np.array([[1.5, 0.0]])))[:, 1] == 0.0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        UniformQuantizer().fit(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="empty"):
        UniformQuantizer().fit(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="2-D"):
        UniformQuantizer(per_feature=True).fit(np.zeros(3))


def test_signed_bit_width():
    assert signed_bit_width(0, 0) == 1
    assert signed_bit_width(-1, 0) == 1
    assert signed_bit_width(0, 1) == 2
    assert signed_bit_width(-128, 127) == 8
    assert signed_bit_width(-129, 0) == 9


def _layer(X, W, b, n_bits=8, weight_n_bits=8):
    qx = UniformQuantizer(n_bits, per_feature=True).fit(X)
    return qx, QuantizedLinear(W, b, qx, weight_n_bits=weight_n_bits)


def test_quantized_linear_dequantization_is_exact():
    """acc * s_W + offset is exactly (q_x s) @ W_hat - (z s) @ W + b: quantized weights act on
    the codes, the zero-point correction keeps the float weights (its error would otherwise
    grow with the distance of the features from 0)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * [1, 10, 0.1, 5, 1, 100] + [0, 50, 0, -3, 1, 1000]
    W, b = rng.normal(size=(6, 3)), rng.normal(size=3)
    qx, layer = _layer(X, W, b)
    q = qx.quant(X)
    acc = layer.accumulate(q)
    assert acc.dtype == np.int64
    s, z = qx.scale_, qx.zero_point_
    w_hat = layer.q_weights * layer.output_scale / s[:, None]
    expected = (q * s) @ w_hat - (z * s) @ W + b
    np.testing.assert_allclose(layer.dequantize(acc), expected, rtol=1e-9, atol=1e-6)
    # And close to the float model: errors of half a step on inputs and weights.
    y = X @ W + b
    assert np.max(np.abs(layer.dequantize(acc) - y)) < 0.02 * np.ptp(y)


def test_accumulator_bounds_hold_and_are_reached():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, size=(100, 30))
    W, b = rng.normal(size=(30, 2)), np.array([0.3, -7.0])
    qx, layer = _layer(X, W, b)
    lo, hi = layer.accumulator_bounds
    extreme = layer.accumulate(layer.extreme_inputs())
    np.testing.assert_array_equal(extreme.min(axis=0), lo)
    np.testing.assert_array_equal(extreme.max(axis=0), hi)
    random = layer.accumulate(rng.integers(0, qx.qmax_ + 1, size=(1000, 30)))
    assert np.all(random >= lo) and np.all(random <= hi)
    # 8-bit inputs, 8-bit weights, 30 features: 8 + 7 + 5 magnitude bits, sign, bias bit.
    assert layer.accumulator_bits <= 8 + 7 + 5 + 2


def test_large_constant_moves_to_the_clear_offset():
    """Features far from 0 give large zero-point corrections; they must not widen the
    encrypted accumulator (they are added after decryption)."""
    rng = np.random.default_rng(2)
    X = 1e6 + rng.uniform(0, 1, size=(100, 4))
    W, b = rng.normal(size=(4, 1)), np.array([1e5])
    qx, layer = _layer(X, W, b)
    assert layer.accumulator_bits <= 8 + 7 + 2 + 2
    y = layer.dequantize(layer.accumulate(qx.quant(X)))
    assert np.max(np.abs(y - (X @ W + b))) < 0.02 * np.abs(W).sum()


def test_too_wide_accumulator_names_the_bit_width():
    X = np.random.default_rng(3).normal(size=(50, 64))
    W = np.ones((64, 1))
    with pytest.raises(ValueError, match=rf"needs \d+ bits .* more than the "
                                         rf"{MAX_ACCUMULATOR_BITS} bits.*lower n_bits"):
        _layer(X, W, np.zeros(1), n_bits=16, weight_n_bits=16)


def test_quantized_linear_rejects_bad_arguments():
    X = np.zeros((3, 2)) + [[0], [1], [2]]
    qx = UniformQuantizer(8, per_feature=True).fit(X)
    with pytest.raises(ValueError, match="weights must be"):
        QuantizedLinear(np.ones(2), np.zeros(1), qx)
    with pytest.raises(ValueError, match="non-finite"):
        QuantizedLinear(np.array([[np.inf], [0.0]]), np.zeros(1), qx)
    signed = UniformQuantizer(8, is_signed=True).fit(X)
    with pytest.raises(ValueError, match="unsigned"):
        QuantizedLinear(np.ones((2, 1)), np.zeros(1), signed)
