"""Uniform affine quantization and the quantized linear layer.

A value ``x`` is represented by the integer ``q = clip(round(x / scale) + zero_point)``
and read back as ``(q - zero_point) * scale``. The encrypted circuit only ever sees the
integers; scales and zero points stay on the client.

:class:`QuantizedLinear` turns a float affine map ``x @ W + b`` into the integer program
``q_x @ q_W + q_b`` (the only thing that runs encrypted) and an exact affine map from the
integer accumulator back to floats, with every zero-point correction folded into ``q_b``.
"""

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from fheml._warnings import user_stacklevel

__all__ = [
    "MAX_ACCUMULATOR_BITS",
    "FHEMLClipWarning",
    "QuantizedLinear",
    "UniformQuantizer",
    "signed_bit_width",
]

# Bits (sign included) a circuit without lookups can decrypt exactly: the engine's
# no-bootstrap precision limit.
MAX_ACCUMULATOR_BITS = 30


class FHEMLClipWarning(UserWarning):
    """Values outside the calibration range were clipped before quantization.

    The quantizer maps the range seen at calibration (``fit``) onto its integers; a value
    beyond it by more than half a quantization step is clipped to the nearest end of the
    range, which loses accuracy.  Calibrate on data that covers the values you predict
    on, or silence it with ``warnings.filterwarnings("ignore", category=FHEMLClipWarning)``.
    """


def signed_bit_width(lo, hi):
    """Bits of the smallest two's-complement integer type holding every value of [lo, hi]."""
    lo, hi = int(lo), int(hi)
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _integer_range(n_bits, is_signed, is_symmetric):
    if is_signed:
        # Symmetric signed quantization uses the narrow range so that -q is representable.
        qmin = -(1 << (n_bits - 1)) + (1 if is_symmetric else 0)
        return qmin, (1 << (n_bits - 1)) - 1
    return 0, (1 << n_bits) - 1


class UniformQuantizer(BaseEstimator):
    """Uniform affine quantizer calibrated on data.

    ``quant(x) = clip(round(x / scale_) + zero_point_, qmin_, qmax_)`` and
    ``dequant(q) = (q - zero_point_) * scale_``.

    Parameters
    ----------
    n_bits : int, default=8
        Bits of the integers produced.
    is_signed : bool, default=False
        Integers in ``[-2**(n_bits-1), 2**(n_bits-1))`` instead of ``[0, 2**n_bits)``.
    is_symmetric : bool, default=False
        Zero maps to the integer 0 (``zero_point_ == 0``) and the scale covers
        ``max(|x|)``; signed symmetric quantizers use the narrow range
        ``[-(2**(n_bits-1) - 1), 2**(n_bits-1) - 1]``.  Otherwise the calibration range
        ``[min(x), max(x)]`` is mapped onto all ``2**n_bits`` integers.
    per_feature : bool, default=False
        One scale and zero point per column (statistics over axis 0) instead of one for
        the whole tensor.

    Attributes
    ----------
    scale_ : ndarray of shape (n_features,) or ()
        Float step between consecutive integers.
    zero_point_ : ndarray of shape (n_features,) or (), dtype int64
        Integer representing 0.0 (outside ``[qmin_, qmax_]`` when the calibration range
        does not contain 0).
    qmin_, qmax_ : int
        Integer range.
    data_min_, data_max_ : ndarray
        Calibration range.

    Examples
    --------
    >>> import numpy as np
    >>> q = UniformQuantizer(n_bits=4).fit(np.array([[-1.0], [2.0]]))
    >>> q.quant(np.array([[-1.0], [0.5], [2.0]])).ravel()
    array([ 0,  7, 15])
    """

    _parameter_constraints = {
        "n_bits": [Interval(Integral, 1, 62, closed="both")],
        "is_signed": ["boolean"],
        "is_symmetric": ["boolean"],
        "per_feature": ["boolean"],
    }

    def __init__(self, n_bits=8, is_signed=False, is_symmetric=False, per_feature=False):
        self.n_bits = n_bits
        self.is_signed = is_signed
        self.is_symmetric = is_symmetric
        self.per_feature = per_feature

    def fit(self, X, y=None):
        """Calibrate scale and zero point on ``X`` (finite floats).

        Parameters
        ----------
        X : array-like
            Calibration data; with ``per_feature=True`` a 2-D array whose columns are
            quantized independently.
        y : None
            Ignored.

        Returns
        -------
        self : UniformQuantizer
        """
        self._validate_params()
        X = np.asarray(X, dtype=np.float64)
        if X.size == 0:
            raise ValueError("cannot calibrate a quantizer on an empty array")
        if not np.all(np.isfinite(X)):
            raise ValueError("calibration data contains NaN or infinity; clean it first")
        if self.is_signed and self.is_symmetric and self.n_bits < 2:
            raise ValueError("a signed symmetric quantizer needs n_bits >= 2")
        qmin, qmax = _integer_range(self.n_bits, self.is_signed, self.is_symmetric)
        if self.per_feature:
            if X.ndim != 2:
                raise ValueError(f"per_feature quantization needs a 2-D array, got {X.ndim}-D")
            lo, hi = X.min(axis=0), X.max(axis=0)
        else:
            lo, hi = np.asarray(X.min()), np.asarray(X.max())
        if self.is_symmetric:
            span = (np.maximum(-lo, hi) if self.is_signed else np.maximum(hi, 0.0)) / qmax
            zero_point = np.zeros_like(lo, dtype=np.int64)
        else:
            span = (hi - lo) / (qmax - qmin)
        # A constant (all-zero) column gets scale 1: every value maps to the zero point.
        scale = np.where(span > 0, span, 1.0)
        if not self.is_symmetric:
            # The zero point may lie outside [qmin, qmax] when the range excludes 0: it is
            # a clear constant, only the quantized values must fit the integer range.
            zero_point = np.round(qmin - lo / scale).astype(np.int64)
        self.scale_ = scale
        self.zero_point_ = zero_point
        self.qmin_, self.qmax_ = qmin, qmax
        self.data_min_, self.data_max_ = lo, hi
        return self

    def quant(self, X, *, warn=True):
        """Quantize ``X`` to integers, clipping values outside the calibration range.

        Parameters
        ----------
        X : array-like
        warn : bool, default=True
            Emit :class:`FHEMLClipWarning` when some values are clipped.

        Returns
        -------
        ndarray of int64, same shape as ``X``
        """
        check_is_fitted(self, "scale_")
        X = np.asarray(X, dtype=np.float64)
        q = np.round(X / self.scale_) + self.zero_point_
        outside = self.outside(X) if warn else None
        if warn and outside.any():
            where = ""
            if self.per_feature and X.ndim == 2:
                columns = np.flatnonzero(outside.any(axis=0))
                shown = ", ".join(str(int(c)) for c in columns[:10])
                where = f" in feature(s) {shown}{', ...' if len(columns) > 10 else ''}"
            warnings.warn(
                f"{int(outside.sum())} of {outside.size} values{where} are outside the "
                "range seen at calibration (fit) and were clipped to it, which loses "
                "accuracy; fit on data that covers the values you predict on",
                FHEMLClipWarning, stacklevel=user_stacklevel())
        return np.clip(q, self.qmin_, self.qmax_).astype(np.int64)

    def outside(self, X):
        """Which values of ``X`` are clipped by :meth:`quant`: beyond the calibration range
        by more than half a quantization step.

        Returns
        -------
        ndarray of bool, same shape as ``X``
        """
        check_is_fitted(self, "scale_")
        X = np.asarray(X, dtype=np.float64)
        # Warn on the float range, not on the codes: with an integer zero point a value at
        # the very edge of the calibration range may round one code past it (clipping it
        # back costs at most half a step, like any rounding).
        low = np.minimum(self.data_min_, (self.qmin_ - self.zero_point_) * self.scale_)
        high = np.maximum(self.data_max_, (self.qmax_ - self.zero_point_) * self.scale_)
        return (X < low - self.scale_ / 2) | (X > high + self.scale_ / 2)

    def dequant(self, q):
        """Floats represented by the integers ``q``: ``(q - zero_point_) * scale_``."""
        check_is_fitted(self, "scale_")
        return (np.asarray(q, dtype=np.float64) - self.zero_point_) * self.scale_


class QuantizedLinear:
    """Integer form of the affine map ``y = x @ weights + bias``.

    The input is quantized by a fitted per-tensor or per-feature ``input_quantizer``
    (``x ≈ (q_x - z) * s``).  The input scales are folded into the weights, which are
    then quantized symmetrically per output column with ``weight_n_bits`` bits
    (``s * W ≈ q_W * s_W``), so that::

        y ≈ s_W * (q_x @ q_W + q_b) + offset

    where ``q_b ≈ (b - (z * s) @ W) / s_W`` is a clear integer (the zero-point correction
    and the bias) and ``offset`` what ``q_b * s_W`` leaves of that constant, added back in
    the clear so that dequantization is exact.  ``q_b`` is clipped so that it widens the
    accumulator by at most one bit (a feature far from 0 has a large zero-point
    correction; that part then moves into ``offset``).  The encrypted circuit is
    therefore only ``q_x @ q_W + q_b``.

    Accumulator width: ``q_x @ q_W`` spans at most ``qmax_x * sum_j |q_W[j]|``, about
    ``n_bits(input) + weight_n_bits - 1 + log2(n_features)`` bits plus the sign, and
    ``q_b`` adds at most one bit (8-bit inputs and weights, 30 features: 20 bits); it must
    fit in :data:`MAX_ACCUMULATOR_BITS` bits (the precision a circuit without lookups can
    decrypt).

    Parameters
    ----------
    weights : array-like of shape (n_features, n_outputs)
    bias : array-like of shape (n_outputs,)
    input_quantizer : UniformQuantizer
        Fitted, unsigned (``is_signed=False``) quantizer of the inputs.
    weight_n_bits : int, default=8
        Bits of the signed symmetric weight integers.

    Attributes
    ----------
    q_weights : ndarray of int64, shape (n_features, n_outputs)
    q_bias : ndarray of int64, shape (n_outputs,)
    output_scale : ndarray of shape (n_outputs,)
    output_offset : ndarray of shape (n_outputs,)
    accumulator_bounds : tuple of ndarray
        Lowest and highest accumulator reachable by any (clipped) input, per output.
    accumulator_bits : int
        Signed bit width of the accumulator over all reachable inputs.

    Raises
    ------
    ValueError
        If the accumulator needs more than :data:`MAX_ACCUMULATOR_BITS` bits.
    """

    def __init__(self, weights, bias, input_quantizer, weight_n_bits=8):
        check_is_fitted(input_quantizer, "scale_")
        if input_quantizer.is_signed:
            raise ValueError("QuantizedLinear expects an unsigned input quantizer")
        weights = np.asarray(weights, dtype=np.float64)
        bias = np.asarray(bias, dtype=np.float64)
        if weights.ndim != 2 or bias.shape != weights.shape[1:]:
            raise ValueError(f"weights must be (n_features, n_outputs) and bias (n_outputs,), "
                             f"got {weights.shape} and {bias.shape}")
        if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(bias))):
            raise ValueError("the model has non-finite coefficients; check its fit")
        n_features = weights.shape[0]
        s_in = np.broadcast_to(input_quantizer.scale_, (n_features,))
        z_in = np.broadcast_to(input_quantizer.zero_point_, (n_features,))

        folded = s_in[:, None] * weights
        wq = UniformQuantizer(n_bits=weight_n_bits, is_signed=True, is_symmetric=True,
                              per_feature=True).fit(folded)
        self.q_weights = wq.quant(folded, warn=False)
        self.output_scale = np.asarray(wq.scale_, dtype=np.float64)
        self.input_max = int(input_quantizer.qmax_)
        self.weight_n_bits = weight_n_bits

        # x @ W + b = (q_x - z) @ (s W) + b ≈ s_W * (q_x @ q_W) - (z s) @ W + b.
        constant = bias - (z_in * s_in) @ weights
        qmax = self.input_max
        low = qmax * np.where(self.q_weights < 0, self.q_weights, 0).sum(axis=0)
        high = qmax * np.where(self.q_weights > 0, self.q_weights, 0).sum(axis=0)
        # The constant goes into the circuit as far as it widens the accumulator by at most
        # one bit; the rest (large zero-point corrections of features far from 0, large
        # intercepts) is added in the clear after decryption, so it costs no precision.
        bits = signed_bit_width(min(low.min(), 0), max(high.max(), 0)) + 1
        room_lo, room_hi = -(1 << (bits - 1)) - low, (1 << (bits - 1)) - 1 - high
        self.q_bias = np.clip(np.round(constant / self.output_scale), room_lo,
                              room_hi).astype(np.int64)
        self.output_offset = constant - self.q_bias * self.output_scale

        lo, hi = low + self.q_bias, high + self.q_bias
        self.accumulator_bounds = (lo, hi)
        self.accumulator_bits = signed_bit_width(min(lo.min(), 0), max(hi.max(), 0))
        if self.accumulator_bits > MAX_ACCUMULATOR_BITS:
            in_bits = int(input_quantizer.n_bits)
            raise ValueError(
                f"the integer accumulator of this linear model needs {self.accumulator_bits} "
                f"bits (inputs {in_bits} bits, weights {weight_n_bits} bits, {n_features} "
                f"features), more than the {MAX_ACCUMULATOR_BITS} bits an encrypted linear "
                f"circuit can decrypt; lower n_bits (about "
                f"{self.accumulator_bits - MAX_ACCUMULATOR_BITS} bits fewer in total)")

    def extreme_inputs(self):
        """Quantized inputs reaching the accumulator bounds of every output.

        Rows of 0 and ``qmax`` chosen by the sign of each weight column, plus the all-0
        and all-``qmax`` rows: an inputset on which a compiler sees the full range of
        every input and every output.
        """
        qmax = self.input_max
        high = np.where(self.q_weights.T > 0, qmax, 0)
        low = np.where(self.q_weights.T < 0, qmax, 0)
        n = self.q_weights.shape[0]
        edges = np.stack([np.zeros(n, dtype=np.int64), np.full(n, qmax, dtype=np.int64)])
        return np.concatenate([edges, high, low]).astype(np.int64)

    def accumulate(self, q_x):
        """The integer program, in the clear: ``q_x @ q_W + q_b`` (int64)."""
        return np.asarray(q_x, dtype=np.int64) @ self.q_weights + self.q_bias

    def dequantize(self, accumulator):
        """Floats ``accumulator * output_scale + output_offset``."""
        return np.asarray(accumulator, dtype=np.float64) * self.output_scale + self.output_offset
