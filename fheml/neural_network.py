"""Multi-layer perceptrons on encrypted data, trained quantization-aware in numpy.

An encrypted prediction costs one table lookup per hidden neuron and nothing else, so the
network is trained for exactly the integer program that runs encrypted:

- inputs are quantized per feature to ``n_bits`` bits, weights per neuron to ``n_w_bits``
  (symmetric), hidden activations to ``n_a_bits`` (unsigned);
- each hidden neuron's integer accumulator ``q_in @ q_W`` is rounded to its top
  ``n_accum_bits`` bits (:func:`fheml.round_bit_pattern`) over its *worst-case* range
  (whatever the quantized input), so the lookup reading it is narrow and can never see a
  value outside its table; one lookup then applies bias, activation and requantization;
- the output layer's integer scores are decrypted; softmax / argmax / sigmoid run on the
  client.

Training (:func:`_train`) is Adam on the loss of that quantized network with
straight-through gradients through every rounding, the lookup rounding included, with the
encrypted rounding noise injected (a value near a rounding tie may round either way when
encrypted); the loop follows scikit-learn's ``MLPClassifier`` (mini-batches, ``tol``,
``n_iter_no_change``, ``early_stopping``, ``verbose``, ``warm_start``).
:meth:`FHEMLPClassifier.from_sklearn_model` quantizes a fitted float network instead
(post-training quantization) and says how much accuracy that cost.
"""

import copy
import time
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import erfcinv, expit, softmax
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from fheml.base import BaseFHEEstimator, fhe_parameter_constraints
from fheml.compiler.tracing import round_bit_pattern
from fheml.quantization import UniformQuantizer

__all__ = ["FHEMLPClassifier", "FHEMLPRegressor"]

def _rounding_noise(p_error, global_p_error, lookups):
    """Standard deviation of the encrypted rounding before a lookup, in units of the
    rounding step (a box of the lookup): the parameters are selected so that the noise
    exceeds half a box with probability ``p_error`` (they meet it within a fraction of a
    bit), e.g. 0.070 at ``2**-40`` and 0.049 at ``2**-80``.  Injected during training
    (see :meth:`_QATNetwork.forward`) so that the network learns the margins the
    encrypted rounding needs."""
    p = 2.0 ** -40 if p_error is None else p_error
    if global_p_error is not None:
        p = min(p, -np.expm1(np.log1p(-global_p_error) / max(1, lookups)))
    return 0.5 / (np.sqrt(2.0) * erfcinv(p))


# Training injects at least the rounding noise of lookups at this failure probability,
# however quiet the selected parameters: a network trained for noisier roundings than it
# meets keeps its margins.  Measured (simulated, test splits, 3 seeds): at p_error
# 2**-200 (N=4096), trained at its own noise (0.030 of a step), breast_cancer rows
# differing from the clear model were 0.6-0.8 %, as at 2**-80 (0.6-0.8 % in the same
# 6-draw runs); trained at the noise of 2**-80 (0.049), 0.5 % (0.72 of 143 rows, 20
# draws), and at 2**-500 0.47 of 143 rows, digits 1.5 of 450 (5.9 at 2**-80).
_TRAINING_NOISE_P_ERROR = 2.0 ** -80


def _training_noise(p_error, global_p_error, lookups):
    """Rounding noise injected in training (see :data:`_TRAINING_NOISE_P_ERROR`)."""
    return max(_rounding_noise(p_error, global_p_error, lookups),
               _rounding_noise(_TRAINING_NOISE_P_ERROR, None, lookups))

# Quantile of a ReLU / identity layer's outputs that sets its activation range (the rest
# saturates): the maximum alone would spend the few activation levels on outliers.
_ACTIVATION_QUANTILE = 0.995
_RANGE_MOMENTUM = 0.9

# Rows of the training data kept (quantized) to compile with: lookups are bounded on them.
_CALIBRATION_ROWS = 1000


# ------------------------------------------------------------------ activations --------

def _relu(z):
    return np.maximum(z, 0.0)


def _logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def _identity(z):
    return z


# name -> (function, derivative from (z, f(z)), fixed output range or None)
_ACTIVATIONS = {
    "relu": (_relu, lambda z, y: (z > 0).astype(np.float64), None),
    "tanh": (np.tanh, lambda z, y: 1.0 - y * y, (-1.0, 1.0)),
    "logistic": (_logistic, lambda z, y: y * (1.0 - y), (0.0, 1.0)),
    "identity": (_identity, lambda z, y: np.ones_like(z), None),
}


def _round_half_up(x):
    return np.floor(x + 0.5)


def _quantize_activation(y, lo, scale, top):
    """Activation integers: the same expression in training, in the clear program and in
    the lookup tables, so that the three agree bit for bit."""
    return np.clip(np.floor((y - lo) / scale + 0.5), 0, top)


def _weight_quantization(folded, q_max):
    """Symmetric per-neuron quantization: ``folded ≈ q * scale`` with ``|q| <= q_max``."""
    scale = np.abs(folded).max(axis=0) / q_max
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(_round_half_up(folded / scale), -q_max, q_max), scale


def _rounding_lsbs(q_weights, input_max, n_accum_bits):
    """Per neuron: the fewest low bits to round away so that the rounded accumulator over
    its worst-case range (inputs in ``[0, input_max]``) takes at most
    ``2**n_accum_bits`` values, and the multiple of ``2**lsbs`` the range starts at.

    The count follows :func:`fheml.round_bit_pattern`'s lookup index: values from the
    aligned start ``lo`` up to ``hi``, rounded half up, the carry included.
    """
    lo = input_max * np.minimum(q_weights, 0).sum(axis=0)
    hi = input_max * np.maximum(q_weights, 0).sum(axis=0)
    lsbs = np.full(lo.shape, -1, dtype=np.int64)
    for k in range(64):
        step = 2.0 ** k
        start = np.floor(lo / step) * step
        count = np.floor((hi - start + (step / 2 if k else 0)) / step) + 1
        lsbs = np.where((lsbs < 0) & (count <= 2 ** n_accum_bits), k, lsbs)
        if (lsbs >= 0).all():
            break
    starts = np.floor(lo / 2.0 ** lsbs) * 2.0 ** lsbs
    return lsbs, starts


def _tie_offsets(q_weights, lsbs):
    """Per neuron, an offset added to the accumulator before its rounding that changes no
    rounded value but keeps every value away from the rounding ties.

    Encrypted, a value exactly half-way between two multiples of ``2**lsbs`` rounds
    either way (the noise decides).  A neuron's accumulator only takes multiples of the
    power of two ``p`` dividing all its weights (times ``2**(top - lsbs)`` once its
    weights are lifted to the layer's widest rounding, ``top``): ties are then frequent
    (one value in ``2**lsbs / p``).  Adding ``p / 2`` puts every value half a grid step
    from the boundaries, and rounds each value as before (ties were rounded upward).
    Without room for it (``p == 1`` and no lift) the offset is 0.

    Returns
    -------
    ndarray of float
        The offsets, in units of the (unlifted) accumulator.
    """
    g = np.gcd.reduce(np.abs(q_weights).astype(np.int64), axis=0)
    p = (g & -g).astype(np.float64)  # largest power of two dividing the weights (0: none)
    lift = 2.0 ** (lsbs.max() - lsbs)
    room = (p > 0) & (p < 2.0 ** lsbs) & (p * lift >= 2)
    return np.where(room, p / 2, 0.0)


# ------------------------------------------------------------------ the network --------

class _QATNetwork:
    """Float parameters of the network and its quantized forward pass (with gradients).

    Parameters
    ----------
    coefs, intercepts : list of ndarray
        Float weights, as in scikit-learn's MLP (``coefs[i]`` of shape (fan_in, fan_out)).
    activation : str
    input_quantizer : UniformQuantizer
        Fitted per-feature quantizer of the inputs.
    n_w_bits, n_a_bits, n_accum_bits : int
    ranges : list of (float, float) or None
        Activation range of every hidden layer (calibrated during training when None).

    Attributes
    ----------
    rounding_noise : float
        Noise of the encrypted rounding in training mode, in rounding steps (set from
        the estimator's ``p_error``, see :func:`_training_noise`).
    """

    def __init__(self, coefs, intercepts, activation, input_quantizer, n_w_bits, n_a_bits,
                 n_accum_bits, ranges=None):
        self.coefs = coefs
        self.intercepts = intercepts
        self.activation = activation
        self.input_quantizer = input_quantizer
        self.w_max = 2 ** (n_w_bits - 1) - 1
        self.a_max = 2 ** n_a_bits - 1
        self.n_accum_bits = n_accum_bits
        fixed = _ACTIVATIONS[activation][2]
        self.ranges = list(ranges) if ranges is not None else [fixed] * (len(coefs) - 1)
        self.rounding_noise = _rounding_noise(None, None, 1)

    def _input_affine(self):
        """``x = scale * q + offset`` for the quantized inputs."""
        q = self.input_quantizer
        n = self.coefs[0].shape[0]
        scale = np.broadcast_to(q.scale_, (n,)).astype(np.float64)
        return scale, -np.broadcast_to(q.zero_point_, (n,)) * scale, q.qmax_

    def _activation_affine(self, layer):
        lo, hi = self.ranges[layer]
        scale = (hi - lo) / self.a_max if hi > lo else 1.0
        return scale, lo

    def _update_ranges(self, layer, y):
        if _ACTIVATIONS[self.activation][2] is not None:
            return
        hi = float(np.quantile(y, _ACTIVATION_QUANTILE))
        lo = 0.0 if self.activation == "relu" else float(np.quantile(y, 1 - _ACTIVATION_QUANTILE))
        hi = max(hi, lo + 1e-6)
        if self.ranges[layer] is None:
            self.ranges[layer] = (lo, hi)
        else:
            old_lo, old_hi = self.ranges[layer]
            m = _RANGE_MOMENTUM
            self.ranges[layer] = (m * old_lo + (1 - m) * lo, m * old_hi + (1 - m) * hi)

    def _quantize_layer(self, i, in_scale, in_offset):
        """Layer ``i`` on integer inputs ``q_in`` (``x = in_scale * q_in + in_offset``):
        ``(q_weights, weight_scale, constant)`` with the layer computing
        ``weight_scale * (q_in @ q_weights) + constant``."""
        w, b = self.coefs[i], self.intercepts[i]
        folded = (in_scale.reshape(-1, 1) if np.ndim(in_scale) else in_scale) * w
        q, scale = _weight_quantization(folded, self.w_max)
        constant = b + (in_offset @ w if np.ndim(in_offset) else in_offset * w.sum(axis=0))
        return q, scale, constant

    def layers(self):
        """Quantization of every layer: ``(q_weights, weight_scale, constant, input_max)``
        (see :meth:`_quantize_layer`; integer inputs in ``[0, input_max]``)."""
        in_scale, in_offset, input_max = self._input_affine()
        out = []
        for i in range(len(self.coefs)):
            out.append((*self._quantize_layer(i, in_scale, in_offset), input_max))
            if i < len(self.coefs) - 1:
                (in_scale, in_offset), input_max = self._activation_affine(i), self.a_max
        return out

    def forward(self, q_x, rng=None, calibrate=False):
        """Output scores of the quantized network; with ``rng``, training mode (rounding
        noise injected) returning the cache for :meth:`backward`.

        ``calibrate`` updates the activation ranges from this batch first.
        """
        fn, _, _ = _ACTIVATIONS[self.activation]
        in_scale, in_offset, input_max = self._input_affine()
        q_in = np.asarray(q_x, dtype=np.float64)
        cache = []
        n_layers = len(self.coefs)
        for i in range(n_layers):
            q, scale, constant = self._quantize_layer(i, in_scale, in_offset)
            x_in = in_scale * q_in + in_offset
            # weights as the quantized layer applies them to the dequantized inputs
            effective = q * scale / (in_scale.reshape(-1, 1) if np.ndim(in_scale) else in_scale)
            acc = q_in @ q
            if i == n_layers - 1:
                cache.append((x_in, effective, None))
                return scale * acc + constant, cache
            lsbs, _ = _rounding_lsbs(q, input_max, self.n_accum_bits)
            step = 2.0 ** lsbs
            # the offsets of the integer program, and the half unit (of the lifted
            # accumulator) the encrypted rounding adds: same clear rounding, and the
            # noise below moves the values that the encrypted rounding may move
            lift = 2.0 ** (lsbs.max() - lsbs)
            acc = acc + _tie_offsets(q, lsbs) + (0.5 / lift if lsbs.max() else 0.0)
            if rng is not None:
                acc = acc + rng.normal(0.0, self.rounding_noise, acc.shape) * step
            z = scale * (_round_half_up(acc / step) * step) + constant
            y = fn(z)
            if calibrate or self.ranges[i] is None:
                self._update_ranges(i, y)
            a_scale, a_lo = self._activation_affine(i)
            q_in = _quantize_activation(y, a_lo, a_scale, self.a_max)
            inside = (y >= a_lo - a_scale / 2) & (y <= a_lo + a_scale * (self.a_max + 0.5))
            cache.append((x_in, effective, (z, y, inside)))
            in_scale, in_offset, input_max = a_scale, a_lo, self.a_max
        raise AssertionError("unreachable")

    def backward(self, delta, cache):
        """Gradients of the loss for every (coef, intercept), straight through roundings.

        ``delta`` is the gradient of the (already averaged) loss with respect to the output
        scores.
        """
        _, derivative, _ = _ACTIVATIONS[self.activation]
        grads = [None] * len(self.coefs)
        for i in range(len(self.coefs) - 1, -1, -1):
            x_in, effective, hidden = cache[i]
            if hidden is not None:
                z, y, inside = hidden
                delta = delta * derivative(z, y) * inside
            grads[i] = (x_in.T @ delta, delta.sum(axis=0))
            if i:
                delta = delta @ effective.T
        return grads


class _QuantizedMLP:
    """The integer program of a trained network: what runs encrypted.

    Hidden layer ``l``: ``acc = q_in @ W + B`` (integers), rounded to a multiple of
    ``2**lsbs`` (one lookup reads its top bits), then per neuron ``q_out = clip(floor(
    (f(m * (r + back) + c) - lo) / s + 1/2), 0, a_max)``.  Neurons whose worst-case range
    is narrower than the layer's widest get their weights multiplied by a power of two so
    that one ``lsbs`` suits all; ``B`` moves every neuron's worst-case range to start at 0,
    so all of them share the same ``2**n_accum_bits`` table entries.  Output layer:
    ``scores = q_in @ W_out`` (decrypted), dequantized as ``scale * scores + constant``.
    """

    def __init__(self, network):
        fn_name = network.activation
        self.activation = fn_name
        self.hidden = []
        layers = network.layers()
        for i, (q, scale, constant, input_max) in enumerate(layers[:-1]):
            lsbs, starts = _rounding_lsbs(q, input_max, network.n_accum_bits)
            top = int(lsbs.max())
            lift = 2.0 ** (top - lsbs)
            a_scale, a_lo = network._activation_affine(i)
            self.hidden.append({
                "weights": (q * lift).astype(np.int64),
                "bias": ((_tie_offsets(q, lsbs) - starts) * lift).astype(np.int64),
                "lsbs": top,
                "back": starts * lift,
                "multiplier": scale / lift,
                "constant": constant,
                "act_lo": a_lo, "act_scale": a_scale, "act_max": network.a_max,
                "input_max": input_max,
            })
        q, scale, constant, input_max = layers[-1]
        self.out_weights = q.astype(np.int64)
        self.out_scale = scale
        self.out_constant = constant
        self.out_input_max = input_max

    @property
    def lookups_per_sample(self):
        return sum(layer["weights"].shape[1] for layer in self.hidden)

    def program(self, x):
        """The integer program, on numpy arrays or on the compiler's traced values."""
        fn = _ACTIVATIONS[self.activation][0]
        for layer in self.hidden:
            acc = x @ layer["weights"] + layer["bias"]
            rounded = round_bit_pattern(acc, layer["lsbs"])
            z = (rounded.astype(np.float64) + layer["back"]) * layer["multiplier"] \
                + layer["constant"]
            x = _quantize_activation(fn(z), layer["act_lo"], layer["act_scale"],
                                     layer["act_max"]).astype(np.int64)
        return x @ self.out_weights

    def dequantize(self, scores):
        return np.asarray(scores, dtype=np.float64) * self.out_scale + self.out_constant

    def extreme_inputs(self, input_max):
        """Quantized input rows reaching every first-layer accumulator's bounds."""
        if self.hidden:
            w = self.hidden[0]["weights"]
        else:
            w = self.out_weights
        high = np.where(w.T > 0, input_max, 0)
        low = np.where(w.T < 0, input_max, 0)
        n = w.shape[0]
        edges = np.array([np.zeros(n), np.full(n, input_max)])
        return np.concatenate([edges, high, low]).astype(np.int64)


# ------------------------------------------------------------------- training --------

def _glorot(rng, fan_in, fan_out, activation):
    factor = 2.0 if activation == "logistic" else 6.0
    bound = np.sqrt(factor / (fan_in + fan_out))
    return (rng.uniform(-bound, bound, (fan_in, fan_out)),
            rng.uniform(-bound, bound, fan_out))


class _Adam:
    """scikit-learn's Adam: the same update and bias correction."""

    def __init__(self, params, learning_rate, beta_1, beta_2, epsilon):
        self.lr, self.b1, self.b2, self.eps = learning_rate, beta_1, beta_2, epsilon
        self.t = 0
        self.ms = [np.zeros_like(p) for p in params]
        self.vs = [np.zeros_like(p) for p in params]

    def step(self, params, grads):
        self.t += 1
        lr = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for p, g, m, v in zip(params, grads, self.ms, self.vs):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= lr * m / (np.sqrt(v) + self.eps)


def _output_delta(loss, scores, target, weights):
    """Gradient of the summed loss with respect to the raw scores, and the loss."""
    if loss == "softmax":
        p = softmax(scores, axis=1)
        value = -np.sum(target * np.log(np.clip(p, 1e-12, None)), axis=1)
        delta = p - target
    elif loss == "logistic":
        p = expit(scores)
        value = -np.sum(target * np.log(np.clip(p, 1e-12, None))
                        + (1 - target) * np.log(np.clip(1 - p, 1e-12, None)), axis=1)
        delta = p - target
    elif loss == "poisson":
        mu = np.exp(np.clip(scores, None, 50))
        value = np.sum(mu - target * scores, axis=1)
        delta = mu - target
    else:  # squared error, as scikit-learn: half the mean squared error
        delta = scores - target
        value = 0.5 * np.sum(delta * delta, axis=1)
    return delta * weights[:, None], value * weights


def _train(estimator, network, q_x, target, sample_weight, loss, score_fn, rng):
    """scikit-learn's stochastic MLP loop on the quantized network; sets the estimator's
    ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``, ``n_iter_`` and ``t_``."""
    est = estimator
    n = q_x.shape[0]
    if sample_weight is None:
        sample_weight = np.ones(n)
    if est.early_stopping:
        single_label = loss == "softmax" or (loss == "logistic" and target.shape[1] == 1)
        stratify = target if single_label else None
        idx_train, idx_val = train_test_split(
            np.arange(n), test_size=est.validation_fraction, random_state=rng.randint(2**31),
            stratify=stratify)
        if len(idx_val) < 2:
            raise ValueError(f"the validation set is too small ({len(idx_val)} rows): raise "
                             "validation_fraction or fit on more data")
        val = (q_x[idx_val], idx_val)
        q_x, target, sample_weight = q_x[idx_train], target[idx_train], sample_weight[idx_train]
        n = q_x.shape[0]
    batch = min(200, n) if est.batch_size == "auto" else int(np.clip(est.batch_size, 1, n))
    params = network.coefs + network.intercepts
    hidden_coefs = network.coefs[:-1]
    optimizer = _Adam(params, est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    noise_rng = np.random.default_rng(rng.randint(2**31))
    best, no_improvement = None, 0
    est.loss_curve_ = []
    est.validation_scores_ = [] if est.early_stopping else None
    est.best_validation_score_ = -np.inf if est.early_stopping else None
    est.best_loss_ = np.inf if not est.early_stopping else None
    est.t_ = 0
    start = time.perf_counter()
    for epoch in range(est.max_iter):
        order = rng.permutation(n) if est.shuffle else np.arange(n)
        total = 0.0
        for begin in range(0, n, batch):
            rows = order[begin:begin + batch]
            scores, cache = network.forward(q_x[rows], noise_rng, calibrate=True)
            w = sample_weight[rows]
            w_sum = max(w.sum(), 1e-12)
            delta, values = _output_delta(loss, scores, target[rows], w)
            grads = network.backward(delta / w_sum, cache)
            penalty = (0.5 * est.alpha * sum(np.sum(c * c) for c in network.coefs)
                       / len(rows)
                       + est.alpha_l1 * sum(np.abs(c).sum() for c in hidden_coefs))
            total += (values.sum() / w_sum + penalty) * len(rows)
            optimizer.step(params, [g[0] + est.alpha * c / len(rows)
                                    + (est.alpha_l1 * np.sign(c) if i < len(hidden_coefs)
                                       else 0.0)
                                    for i, (g, c) in enumerate(zip(grads, network.coefs))]
                           + [g[1] for g in grads])
        est.t_ += n
        est.loss_ = total / n
        est.loss_curve_.append(est.loss_)
        est.n_iter_ = epoch + 1
        if est.verbose:
            print(f"Iteration {epoch + 1}, loss = {est.loss_:.8f} "
                  f"({time.perf_counter() - start:.1f} s)")
        if est.early_stopping:
            score = score_fn(network.forward(val[0])[0], val[1])
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                best = ([c.copy() for c in network.coefs], [b.copy() for b in network.intercepts],
                        list(network.ranges))
        else:
            improved = est.loss_ <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, est.loss_)
        no_improvement = 0 if improved else no_improvement + 1
        if no_improvement > est.n_iter_no_change:
            if est.verbose:
                what = "Validation score" if est.early_stopping else "Training loss"
                print(f"{what} did not improve more than tol={est.tol:f} for "
                      f"{est.n_iter_no_change} consecutive epochs. Stopping.")
            break
    else:
        # n_iter_no_change >= max_iter (the default) asks for max_iter epochs: no warning
        if est.n_iter_no_change < est.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)
    if best is not None:
        for dst, src in zip(network.coefs + network.intercepts, best[0] + best[1]):
            dst[...] = src
        network.ranges = best[2]


# ------------------------------------------------------------------ estimators --------

_MLP_FHE_PARAMS = {"n_bits": 6, "n_w_bits": 3, "n_a_bits": 3, "n_accum_bits": 4,
                   "alpha_l1": 1e-3, "p_error": 2.0 ** -500, "global_p_error": None,
                   "n_jobs": None,
                   "calibration": "minmax"}
# Regression needs finer steps than classification (measured on friedman1: the
# classifier's bits lose up to 0.03 R², these are within 0.02 of the float MLPRegressor).
# A regression output moves little when a rounding flips: the usual p_error (5-bit
# lookups below 2**-40 need twice the polynomial size).
_MLP_REGRESSOR_FHE_PARAMS = {**_MLP_FHE_PARAMS, "n_w_bits": 4, "n_a_bits": 4,
                             "n_accum_bits": 5, "p_error": None}

# scikit-learn's defaults that quantization-aware training changes (documented below):
# its loss is noisier than float training's (roundings move), so scikit-learn's
# learning_rate_init=1e-3, max_iter=200 and n_iter_no_change=10 stop it early, several
# points short of float accuracy on the acceptance sets.
_MLP_DEFAULT_OVERRIDES = {"learning_rate_init": 3e-3, "max_iter": 400,
                          "n_iter_no_change": 1000}

_MLP_FHE_CONSTRAINTS = {
    **fhe_parameter_constraints(MLPClassifier),
    "n_bits": [Interval(Integral, 2, 16, closed="both")],
    "n_w_bits": [Interval(Integral, 2, 8, closed="both")],
    "n_a_bits": [Interval(Integral, 1, 8, closed="both")],
    "n_accum_bits": [Interval(Integral, 1, 8, closed="both")],
    "alpha_l1": [Interval(Real, 0, None, closed="left")],
}

def _p_error_doc(default):
    doc = """p_error : float or None, default={}
    Failure probability of each lookup / decryption (``None``: ``2**-40``).  It also sets
    the noise of the encrypted rounding before each lookup (approximate near a tie), and
    so how many predictions differ from the clear model's: ``2**-80`` moves 0.7x as many
    roundings as ``2**-40``; below about ``2**-150`` the polynomial size doubles (2.2-2.7x
    the time per 4-bit lookup) and the noise halves.  Training injects the noise of the
    selected lookups, at least that of ``2**-80``."""
    if default is None:
        return doc.format("None")
    return doc.format("2**-500") + """  The classifier's default
    buys the quieter lookups: on the test splits of breast_cancer and digits, 0.3 % of
    predictions differ from the clear model's against 1.1-1.3 % at ``2**-80``, for 2.7x the
    time per lookup (``p_error=2**-80`` for speed)."""


def _mlp_params_doc(fhe_params):
    """Docs of the FHE parameters and of the scikit-learn defaults changed, with the
    defaults of ``fhe_params``."""
    d = {**fhe_params, **_MLP_DEFAULT_OVERRIDES}
    return f"""\
learning_rate_init : float, default={d["learning_rate_init"]}
    Initial step of Adam.  Not scikit-learn's 1e-3: quantization-aware training moves
    slowly at that step and stops short of float accuracy.
max_iter : int, default={d["max_iter"]}
    Maximum number of epochs (scikit-learn: 200; quantization-aware training needs more).
n_iter_no_change : int, default={d["n_iter_no_change"]}
    Epochs without improvement by ``tol`` before stopping.  Not scikit-learn's 10: the loss
    of the quantized network is noisy (roundings move), so a short patience stops it
    early.  At or above ``max_iter`` training runs ``max_iter`` epochs, without a
    ``ConvergenceWarning``; with ``early_stopping=True`` the best validation weights are
    kept whatever the patience.
n_bits : int, default={d["n_bits"]}
    Bits of the quantized inputs (per feature, on the training range).  They only widen
    the first layer's accumulators, whose top bits the lookups read: no cost.
n_w_bits : int, default={d["n_w_bits"]}
    Bits of the weights (symmetric, per neuron): 3 bits is ``-3..3``.
n_a_bits : int, default={d["n_a_bits"]}
    Bits of the hidden activations.
n_accum_bits : int, default={d["n_accum_bits"]}
    Bits of each lookup's input: the top bits of a neuron's accumulator over its
    worst-case range.  At ``p_error=2**-40`` a lookup of 1 to 5 bits costs 3 to 10 ms on
    one core; 6 bits cost 5x more.
alpha_l1 : float, default={d["alpha_l1"]}
    L1 penalty on the hidden layers' weights during training (added to the per-sample
    loss).  It narrows each neuron's worst-case accumulator range, so the lookup's
    rounding step is finer: the encrypted rounding, approximate near a tie, then moves an
    activation less (3-5x fewer predictions differing from the clear model on digits) and
    accuracy is usually better too.  0 disables it.
{_p_error_doc(d["p_error"])}
global_p_error : float, default=None
    Failure probability of the whole circuit; with ``p_error`` the stricter applies.
n_jobs : int, default=None
    Threads of the encrypted run."""


_MLP_ATTRIBUTES_DOC = """
    Attributes
    ----------
    coefs_, intercepts_ : list of ndarray
        Float (shadow) weights of the quantization-aware training, as in scikit-learn.
    quantized_ : object
        The integer network; ``quantized_.program`` is what runs encrypted.
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_
        As in scikit-learn's MLP (losses of the quantized network).
    n_iter_, t_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn's MLP.
    input_quantizer_ : UniformQuantizer
        Per-feature input quantizer calibrated on the training data.
    sklearn_model_ : estimator
        Only after :meth:`from_sklearn_model`: the float model quantized.
    n_features_in_ : int
    fhe_circuit : fheml.Circuit or None
        The compiled circuit (``None`` before :meth:`compile` or the first encrypted run).
"""

# Parameters of scikit-learn's MLPs that do not apply: training is always Adam on the
# quantized network, so the solver choice and the SGD / L-BFGS options have no effect.
_MLP_EXCLUDED = ("solver", "learning_rate", "power_t", "momentum", "nesterovs_momentum",
                 "max_fun")


class _FHEMLPBase(BaseFHEEstimator):
    """Shared by :class:`FHEMLPClassifier` and :class:`FHEMLPRegressor`."""

    _fhe_params = _MLP_FHE_PARAMS
    _fhe_parameter_constraints = _MLP_FHE_CONSTRAINTS
    _fhe_params_doc = _mlp_params_doc(_MLP_FHE_PARAMS)
    _sklearn_params_exclude = _MLP_EXCLUDED
    _sklearn_default_overrides = _MLP_DEFAULT_OVERRIDES

    @property
    def n_bits_weights_(self):
        """Bits of the quantized weights (``n_w_bits``)."""
        return self.n_w_bits

    # -- hooks of BaseFHEEstimator ----------------------------------------------------------
    def _integer_function(self):
        return self.quantized_.program

    def _compile_inputset(self, q_sample):
        rows = [self.quantized_.extreme_inputs(self.input_quantizer_.qmax_),
                self._calibration_q_]
        if q_sample is not None:
            rows.append(q_sample)
        return np.concatenate(rows).astype(np.int64)

    def _integer_forward(self, q_X):
        return self.quantized_.program(np.asarray(q_X, dtype=np.int64))

    def _dequantize(self, q_y):
        return self.quantized_.dequantize(q_y)

    # -- fitting -----------------------------------------------------------------------------
    @property
    def _sizes(self):
        sizes = self.hidden_layer_sizes
        return [int(sizes)] if isinstance(sizes, Integral) else [int(s) for s in sizes]

    def _fit(self, X, y, sample_weight, incremental_reset):
        self._validate_params()
        if any(s <= 0 for s in self._sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes}")
        X, target = self._validate_training_data(X, y, reset=incremental_reset)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
        rng = check_random_state(self.random_state)
        sizes = [X.shape[1], *self._sizes, target.shape[1]]
        reuse = (self.warm_start and hasattr(self, "coefs_")
                 and [c.shape[0] for c in self.coefs_] + [self.coefs_[-1].shape[1]] == sizes)
        if reuse:
            coefs = [c.copy() for c in self.coefs_]
            intercepts = [b.copy() for b in self.intercepts_]
            quantizer, ranges = self.input_quantizer_, self._ranges_
        else:
            pairs = [_glorot(rng, a, b, self.activation) for a, b in zip(sizes[:-1], sizes[1:])]
            coefs, intercepts = [p[0] for p in pairs], [p[1] for p in pairs]
            calibration = X if sample_weight is None else X[sample_weight > 0]
            quantizer = UniformQuantizer(n_bits=self.n_bits, per_feature=True).fit(
                self._calibration_data(calibration if len(calibration) else X))
            ranges = None
        network = _QATNetwork(coefs, intercepts, self.activation, quantizer, self.n_w_bits,
                              self.n_a_bits, self.n_accum_bits, ranges)
        q_x = quantizer.quant(X, warn=False)
        network.rounding_noise = _training_noise(self.p_error, self.global_p_error,
                                                 sum(self._sizes))
        _train(self, network, q_x, target, sample_weight, self._loss_name(),
               self._validation_score_fn(target), rng)
        self._set_network(network, q_x)
        return self

    def _set_network(self, network, q_x):
        self.input_quantizer_ = network.input_quantizer
        self._clip_events = {}  # clipping counted from this fit on (see _warn_clipping)
        self.coefs_, self.intercepts_ = network.coefs, network.intercepts
        self._ranges_ = list(network.ranges)
        self.n_layers_ = len(network.coefs) + 1
        self.n_outputs_ = network.coefs[-1].shape[1]
        self.out_activation_ = self._out_activation()
        self.quantized_ = _QuantizedMLP(network)
        rows = np.random.default_rng(0).permutation(len(q_x))[:_CALIBRATION_ROWS]
        self._calibration_q_ = np.asarray(q_x[np.sort(rows)], dtype=np.int64)
        self._fhe_circuit = None

    def fit(self, X, y, sample_weight=None):
        """Train the quantized network (quantization-aware, Adam) on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; also the calibration data of the input quantizer.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, incremental_reset=True)

    def fit_benchmark(self, X, y, sample_weight=None):
        """Fit, and return this model with a float scikit-learn MLP of the same parameters
        trained on the same data (solver Adam), to compare to.

        Returns
        -------
        fhe_model : object
        sklearn_model : estimator
        """
        self.fit(X, y, sample_weight=sample_weight)
        params = {k: getattr(self, k) for k in self._sklearn_estimator_class().get_params()
                  if hasattr(self, k)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            float_model = self._sklearn_estimator_class(**params).fit(X, y)
        return self, float_model

    @classmethod
    def from_sklearn_model(cls, model, X, y=None, **fhe_params):
        """FHE network from a fitted scikit-learn MLP by post-training quantization.

        The float weights are quantized as they are (no retraining); the activation ranges
        are calibrated on ``X``.  A :class:`UserWarning` says how much accuracy (R² for a
        regressor) quantization lost when it is more than a point: on ``(X, y)`` when ``y``
        is given, else as disagreement with the float model's predictions on ``X``.  Use
        :meth:`fit` (quantization-aware training) to recover it.

        Parameters
        ----------
        model : MLPClassifier or MLPRegressor
            Fitted; it is copied.
        X : array-like of shape (n_samples, n_features)
            Calibration data (typically the training data).
        y : array-like, default=None
            Targets of ``X``, to measure the accuracy lost.
        **fhe_params
            ``n_bits``, ``n_w_bits``, ``n_a_bits``, ``n_accum_bits``, ``p_error``,
            ``global_p_error``, ``n_jobs``.

        Returns
        -------
        object
            A fitted FHE estimator whose parameters are those of ``model``.
        """
        estimator, X = cls._estimator_for_sklearn_model(model, X, fhe_params)
        estimator._adopt_sklearn_targets(model)
        quantizer = UniformQuantizer(n_bits=estimator.n_bits, per_feature=True).fit(X)
        network = _QATNetwork([c.copy() for c in model.coefs_],
                              [b.copy() for b in model.intercepts_], estimator.activation,
                              quantizer, estimator.n_w_bits, estimator.n_a_bits,
                              estimator.n_accum_bits, _calibrated_ranges(model, X))
        estimator.sklearn_model_ = copy.deepcopy(model)
        q_x = quantizer.quant(X, warn=False)
        estimator._set_network(network, q_x)
        estimator._warn_ptq_loss(model, X, y)
        return estimator

    def _warn_ptq_loss(self, model, X, y):
        ours = self.predict(X)
        if y is not None:
            lost = model.score(X, y) - self.score(X, y)
            what = "R²" if isinstance(self, RegressorMixin) else "accuracy"
            where = "on the data given"
        elif isinstance(self, RegressorMixin):
            from sklearn.metrics import r2_score
            lost = 1.0 - r2_score(model.predict(X), ours)
            what, where = "R²", "relative to the float predictions"
        else:
            lost = float(np.mean(np.any(np.asarray(model.predict(X)).reshape(len(X), -1)
                                        != np.asarray(ours).reshape(len(X), -1), axis=1)))
            what, where = "accuracy", "(rows whose prediction changed)"
        if lost > 0.01:
            warnings.warn(
                f"post-training quantization lost {100 * lost:.1f} points of {what} {where} "
                f"(n_w_bits={self.n_w_bits}, n_a_bits={self.n_a_bits}, n_accum_bits="
                f"{self.n_accum_bits}); fit {type(self).__name__} on the data instead "
                "(quantization-aware training recovers it) or raise n_accum_bits",
                UserWarning, stacklevel=3)

    # -- compilation -------------------------------------------------------------------------
    def compile(self, X=None, *, p_error=None, global_p_error=None, verbose=None):
        """Compile the quantized network to an FHE circuit (one lookup per hidden neuron).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), default=None
            Representative inputs added to the inputset (besides the rows reaching every
            first-layer accumulator's bounds and a sample of the training data).
        p_error, global_p_error : float, optional
            Failure probabilities of this circuit (default: the estimator's parameters).
        verbose : bool, optional
            As for every FHE estimator's ``compile``.

        Returns
        -------
        fheml.Circuit
        """
        try:
            return super().compile(X, p_error=p_error, global_p_error=global_p_error,
                                   verbose=verbose)
        except ValueError as exc:
            if "norm2" in str(exc) and self.quantized_.hidden:
                norms = [np.sqrt((layer["weights"] ** 2).sum(axis=0)).max()
                         for layer in self.quantized_.hidden]
                worst = int(np.argmax(norms))
                raise ValueError(
                    f"hidden layer {worst + 1} ({self._sizes[worst]} neurons): the integer "
                    f"weights feeding its lookups have a 2-norm of {norms[worst]:.0f}, too "
                    f"noisy for any parameter set ({exc}); lower n_w_bits (or the size of "
                    f"the layer before it)") from None
            if "decrypt the outputs" not in str(exc):
                raise
            q = self.quantized_
            raise ValueError(
                f"the output layer ({q.out_weights.shape[0]} inputs -> "
                f"{q.out_weights.shape[1]} scores) cannot be decrypted exactly with these "
                f"parameters: its scores span too many bits for the noise of the lookups "
                f"before it ({exc}); lower n_w_bits or n_a_bits, or the size of the last "
                f"hidden layer (hidden_layer_sizes[-1]={self._sizes[-1]}), or raise "
                f"p_error (now {self.p_error if p_error is None else p_error!r})") from None


def _calibrated_ranges(model, X):
    """Activation range of every hidden layer of a float scikit-learn MLP on ``X``."""
    fn, _, fixed = _ACTIVATIONS[model.activation]
    ranges, a = [], X
    for w, b in zip(model.coefs_[:-1], model.intercepts_[:-1]):
        a = fn(a @ w + b)
        if fixed is not None:
            ranges.append(fixed)
            continue
        hi = float(np.quantile(a, _ACTIVATION_QUANTILE))
        lo = 0.0 if model.activation == "relu" else float(np.quantile(a, 1 - _ACTIVATION_QUANTILE))
        ranges.append((lo, max(hi, lo + 1e-6)))
    return ranges


class FHEMLPClassifier(ClassifierMixin, _FHEMLPBase):
    __doc__ = """Multi-layer perceptron classifier predicting on encrypted data.

    Wraps :class:`sklearn.neural_network.MLPClassifier`: its parameters (those of the
    installed scikit-learn) with the same meaning and defaults, except the solver-specific
    ones, since training is always Adam on the quantized network (``solver``,
    ``learning_rate``, ``power_t``, ``momentum``, ``nesterovs_momentum``, ``max_fun``);
    plus the FHE parameters.  Encrypted, a prediction costs one lookup of at most
    ``n_accum_bits`` bits per hidden neuron; the class scores are decrypted and softmax /
    sigmoid / argmax run on the client.

    Quantization-aware training converges more slowly than float training and its loss is
    noisier (roundings move), so three defaults differ from scikit-learn's:
    ``learning_rate_init=3e-3``, ``max_iter=400``, ``n_iter_no_change=1000`` (training
    runs ``max_iter`` epochs; see the parameters).

    {parameters}
""" + "{_MLP_ATTRIBUTES_DOC}" + """    classes_ : ndarray
        Class labels.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> from fheml.neural_network import FHEMLPClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> model = FHEMLPClassifier((30, 20), random_state=0).fit(X, y)
    >>> y_enc = model.predict(X[:10], fhe="execute")   # one encrypted batch
    """.replace("{_MLP_ATTRIBUTES_DOC}", _MLP_ATTRIBUTES_DOC.rstrip("\n") + "\n")

    _sklearn_estimator_class = MLPClassifier


    def _loss_name(self):
        return "logistic" if self._binarizer_.y_type_ != "multiclass" else "softmax"

    def _out_activation(self):
        return "softmax" if self._loss_name() == "softmax" else "logistic"

    def _validate_training_data(self, X, y, reset):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # as scikit-learn's MLPClassifier
        if reset or not hasattr(self, "_binarizer_"):
            self._binarizer_ = LabelBinarizer().fit(y)
            self.classes_ = self._binarizer_.classes_
        elif type_of_target(y) != self._binarizer_.y_type_ or not np.isin(
                np.unique(y), self.classes_).all():
            raise ValueError("warm_start can only continue with the same classes")
        return X, self._binarizer_.transform(y).astype(np.float64)

    def _adopt_sklearn_targets(self, model):
        self._binarizer_ = copy.deepcopy(model._label_binarizer)
        self.classes_ = self._binarizer_.classes_

    def _validation_score_fn(self, target):
        def accuracy(scores, rows):
            if scores.shape[1] == 1 or self._loss_name() == "logistic":
                return float(np.mean(np.all((scores > 0) == (target[rows] > 0.5), axis=1)))
            return float(np.mean(scores.argmax(axis=1) == target[rows].argmax(axis=1)))
        return accuracy

    def predict_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Class probabilities, computed on the client from the decrypted scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        fhe : {"disable", "simulate", "execute"}, default=None
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self._predict_float(X, fhe=fhe, execute_in_fhe=execute_in_fhe)
        if self._loss_name() == "softmax":
            return softmax(scores, axis=1)
        p = expit(scores)
        return np.hstack([1 - p, p]) if self._binarizer_.y_type_ == "binary" else p

    def predict_log_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X, fhe=fhe, execute_in_fhe=execute_in_fhe))

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Predicted classes (argmax / threshold on the client after decryption).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        fhe : {"disable", "simulate", "execute"}, default=None
        execute_in_fhe : bool, default=False

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes) for multilabel targets
        """
        return self._labels(self._predict_float(X, fhe=fhe, execute_in_fhe=execute_in_fhe))

    def _labels(self, scores):
        """Class labels from the dequantized scores (what the client does after decryption)."""
        if self._loss_name() == "softmax":
            indicator = np.zeros_like(scores, dtype=np.int64)
            indicator[np.arange(len(scores)), scores.argmax(axis=1)] = 1
        else:
            indicator = (scores > 0).astype(np.int64)
        return self._binarizer_.inverse_transform(indicator)


class FHEMLPRegressor(RegressorMixin, _FHEMLPBase):
    __doc__ = """Multi-layer perceptron regressor predicting on encrypted data.

    Wraps :class:`sklearn.neural_network.MLPRegressor`: its parameters (those of the
    installed scikit-learn) with the same meaning and defaults, except the solver-specific
    ones (``solver``, ``learning_rate``, ``power_t``, ``momentum``,
    ``nesterovs_momentum``, ``max_fun``: training is always Adam on the quantized network);
    plus the FHE parameters.  Encrypted, a prediction costs one lookup per hidden neuron;
    the outputs are decrypted and dequantized on the client (``exp`` of them for
    ``loss="poisson"``).

    Regression needs finer steps than classification: the defaults are 4-bit weights and
    activations and 5-bit lookups (about 2.3x the cost of the classifier's 4-bit ones).
    The training defaults differ from scikit-learn's as for :class:`FHEMLPClassifier`.

    {parameters}
""" + _MLP_ATTRIBUTES_DOC + """
    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from fheml.neural_network import FHEMLPRegressor
    >>> X, y = make_regression(n_samples=300, n_features=5, noise=1.0, random_state=0)
    >>> model = FHEMLPRegressor(hidden_layer_sizes=(16,), random_state=0).fit(X, y / 100)
    >>> y_enc = model.predict(X[:10], fhe="execute")
    """

    _sklearn_estimator_class = MLPRegressor
    _fhe_params = _MLP_REGRESSOR_FHE_PARAMS
    _fhe_params_doc = _mlp_params_doc(_MLP_REGRESSOR_FHE_PARAMS)


    def _loss_name(self):
        # MLPRegressor has ``loss`` from scikit-learn 1.7 on; before, squared error only.
        return "poisson" if getattr(self, "loss", None) == "poisson" else "squared_error"

    def _out_activation(self):
        return "exp" if self._loss_name() == "poisson" else "identity"

    def _validate_training_data(self, X, y, reset):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                             y_numeric=True, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # as scikit-learn's MLPRegressor
        if self._loss_name() == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' needs non-negative targets")
        self._y_1d_ = y.ndim == 1
        return X, np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    def _adopt_sklearn_targets(self, model):
        self._y_1d_ = model.n_outputs_ == 1

    def _validation_score_fn(self, target):
        from sklearn.metrics import r2_score

        def r2(scores, rows):
            pred = np.exp(scores) if self._loss_name() == "poisson" else scores
            return float(r2_score(target[rows], pred))
        return r2

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Predicted values (dequantized on the client after decryption).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        fhe : {"disable", "simulate", "execute"}, default=None
        execute_in_fhe : bool, default=False

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        scores = self._predict_float(X, fhe=fhe, execute_in_fhe=execute_in_fhe)
        if self._loss_name() == "poisson":
            scores = np.exp(scores)
        return scores.ravel() if self._y_1d_ else scores
