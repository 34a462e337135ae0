"""Decision trees on encrypted data.

Each class wraps the scikit-learn estimator of the same name (without ``FHE``): ``fit``
trains it in the clear; the client then encrypts unary bits of its binned input and the
server evaluates every tree with a few small lookups, one per path ("edge") or group of
nodes ("block") whose leaves differ (see docs/trees.md and :mod:`fheml._tree_circuit`).  The input binning comes from the training
data alone, so the client artifact does not reveal the tree.

The machinery shared with :mod:`fheml.ensemble` lives in the private base classes below:
a subclass says how to read its fitted model as a list of trees (``_trees``), how the
float model computes its raw outputs (``_raw_float``, used to recover the constant the
trees are added to), and how raw outputs become predictions (``_raw_kind``).
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils._available_if import available_if
from sklearn.utils.extmath import softmax
from sklearn.utils.validation import check_is_fitted

from fheml._tree_circuit import (
    GROUPING_FACTORS,
    MIN_LOOKUP_BITS,
    ThermometerQuantizer,
    TreeCircuitPlan,
    check_unary,
    encrypt_unary,
    extract_unary,
    quantize_ensemble,
    topological,
)
from fheml.base import BaseFHEEstimator, resolve_fhe_mode
from fheml.compiler.lowering import MAX_LOOKUP_BITS

__all__ = ["FHEDecisionTreeClassifier", "FHEDecisionTreeRegressor"]

# Bits of the leaf values when ``n_bits`` is an int (it then sets the input bins only):
# sums of many bootstrap outputs must still decrypt with the cheapest parameters.
DEFAULT_LEAF_BITS = 6

# Rows used to recover the constant (initial prediction) the trees' values are added to.
_BIAS_ROWS = 32


# ------------------------------------------------------------------- numerics ------------

def sklearn_tree(tree_, values):
    """:class:`~fheml._tree_circuit.Tree` of a fitted scikit-learn ``tree_`` with the
    given per-node values (n_nodes, n_outputs)."""
    go_left = getattr(tree_, "missing_go_to_left", None)  # scikit-learn >= 1.3
    return topological(tree_.feature, tree_.threshold, tree_.children_left,
                       tree_.children_right, values,
                       None if go_left is None else ~np.asarray(go_left, dtype=bool))


def class_fractions(tree_):
    """Per-node class probabilities of a classification tree (rows sum to 1)."""
    value = tree_.value[:, 0, :].astype(np.float64)
    total = value.sum(axis=1, keepdims=True)
    return value / np.where(total > 0, total, 1.0)


def probability_outputs(fractions):
    """Binary: only P(class 1) is computed (P(class 0) = 1 - it); else every class."""
    return fractions[:, 1:2] if fractions.shape[1] == 2 else fractions


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _plan(trees, values, columns, n_levels, p_error, global_p_error):
    """Lookups for the lookup width with the lowest cost: lookups per sample times the
    measured time of one lookup (the selector's model) with the parameters the compiler
    selects for them (output grouping included).  Widths from the narrowest the deepest leaf allows (edges of ``L`` literals
    need ``L + 1`` values) to two bits more (fewer, larger blocks)."""
    depth = max((int(t.depths().max(initial=0)) for t in trees), default=0)
    narrowest = max(MIN_LOOKUP_BITS, int(np.ceil(np.log2(depth + 1))))
    if narrowest > MAX_LOOKUP_BITS:
        raise ValueError(f"a tree of depth {depth} needs lookups wider than "
                         f"{MAX_LOOKUP_BITS} bits; limit max_depth")
    from fheml._core import select_parameters

    # a per-lookup failure probability at least the compiler's: the floor below is a bound
    loosest = next((p for p in (p_error, global_p_error) if p is not None), 2.0 ** -40)
    best = None
    for bits in range(narrowest, min(narrowest + 2, MAX_LOOKUP_BITS) + 1):
        plan = TreeCircuitPlan(trees, values, columns, bits)
        if plan.n_lookups == 0:
            return plan
        floor = plan.n_lookups * select_parameters(
            bits, loosest, grouping_factors=GROUPING_FACTORS).time_estimate
        if best is not None and floor >= best[0]:
            continue  # even the cheapest set for these lookups costs more
        try:
            circuit = plan.compile(n_levels, p_error, global_p_error)[0]
        except ValueError:
            continue
        cost = plan.n_lookups * circuit.parameters.time_estimate
        if best is None or cost < best[0]:
            best = (cost, plan)
    if best is None:  # nothing decrypts: let compile() say why
        return TreeCircuitPlan(trees, values, columns, narrowest)
    return best[1]


# ---------------------------------------------------------------- base classes -----------

_TREE_FHE_PARAMS_DOC = """\
n_bits : int or dict, default=8
    An int sets the input bins: each feature is cut at up to ``2**n_bits - 1`` points
    taken from the training data (every midpoint between distinct values when there are
    fewer), and the client encrypts one bit per cut point.  Leaf values then get
    ``DEFAULT_LEAF_BITS`` (6) bits; ``{"inputs": a, "weights": b}`` sets both.
p_error : float, default=None
    Failure probability of each lookup / decryption (``None``: ``2**-40``).
global_p_error : float, default=None
    Failure probability of the whole circuit; with ``p_error`` the stricter applies.
n_jobs : int, default=None
    Threads of the encryption and of the encrypted run; also passed to the wrapped
    estimator's fit when it has ``n_jobs``."""

_ATTRIBUTES_DOC = """Attributes
    ----------
    sklearn_model_ : estimator
        The fitted float model.
    input_quantizer_ : fheml._tree_circuit.ThermometerQuantizer
        Cut points of each feature (from the training data only: the client artifact).
    circuit_plan_ : fheml._tree_circuit.TreeCircuitPlan
        The lookups (edges and blocks of each tree and output), their tables and linear forms.
    leaf_step_, leaf_offset_, bias_
        Raw output = ``bias_ + leaf_step_ * (leaf_offset_ + decrypted sum)``.
    n_output_groups_ : int or None
        Encrypted outputs per model output (partial sums, added on the client), set by
        ``compile``.
    input_word_bits_ : int or None
        Bits per encrypted input bit on the wire (the fewest that keep the cheapest
        parameters, the rounding noise charged), set by ``compile``.
    fhe_circuit : fheml.Circuit or None
        Set by ``compile`` (or the first encrypted predict); not pickled.
    n_features_in_ : int
    feature_names_in_ : ndarray of str"""

class _FHETreeModel(BaseFHEEstimator):
    """Sum of trees on unary-encoded encrypted inputs (see the module docstring).

    Subclasses implement ``_trees(model)`` (list of Tree), ``_raw_float(model, X)`` (float
    raw outputs, (n_samples, n_outputs)) and may give ``_input_edges(model)``.
    """

    _fhe_params_doc = _TREE_FHE_PARAMS_DOC
    # Thresholds come from the trees themselves: no calibration range to choose.
    _fhe_params = {k: v for k, v in BaseFHEEstimator._fhe_params.items() if k != "calibration"}
    # The wrapped model fits and predicts on float32 values (scikit-learn's trees).
    _float32_inputs = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and "{attributes}" in cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("{attributes}", _ATTRIBUTES_DOC, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # missing values are routed as the wrapped model routes them, where it can
        tags.input_tags.allow_nan = self._make_sklearn_model().__sklearn_tags__() \
            .input_tags.allow_nan
        return tags

    def _start_fit(self):
        super()._start_fit()
        # An int n_bits sets the input bins only; leaf values get DEFAULT_LEAF_BITS.
        if not isinstance(self.n_bits, dict):
            self._n_bits_fitted = (self._n_bits_fitted[0], DEFAULT_LEAF_BITS)

    def _input_edges(self, model):
        """Cut points of the model's own binning (None: bins from the data)."""
        return None

    def _set_quantized(self, model, X):
        self.sklearn_model_ = model
        missing = model.__sklearn_tags__().input_tags.allow_nan
        quantizer = ThermometerQuantizer(self.n_bits_inputs_, self._float32_inputs,
                                         missing).fit(X)
        edges = self._input_edges(model)
        if edges is not None:
            quantizer.edges_ = [np.asarray(e, dtype=np.float64) for e in edges]
            quantizer.offsets_ = np.concatenate([[0], np.cumsum([e.size for e in edges])])
        self.input_quantizer_ = quantizer
        self._fhe_circuit = None
        trees = self._trees(model)
        rows = X[:_BIAS_ROWS]
        in_trees = sum(t.value[t.leaf_index(rows)] for t in trees)
        self.bias_ = np.median(self._raw_float(model, rows) - in_trees, axis=0)
        self.leaf_step_, values = quantize_ensemble(trees, self.n_bits_weights_)
        columns = quantizer.columns(trees, X)
        self.circuit_plan_ = _plan(trees, values, columns, quantizer.n_levels, self.p_error,
                                   self.global_p_error)
        self.leaf_offset_ = self.circuit_plan_.offset
        self.n_output_groups_ = self.input_word_bits_ = None
        for name in ("classes_", "n_classes_", "n_outputs_", "n_estimators_", "n_iter_"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    # -- compilation and runs ----------------------------------------------------------------
    def compile(self, X=None):
        """Compile the quantized ensemble to an FHE circuit.

        Parameters
        ----------
        X : ignored
            Every value of the unary input bits is known (0 or 1); kept for API symmetry.

        Returns
        -------
        fheml.Circuit
            Also stored as ``fhe_circuit``; its ``statistics`` give the lookups per sample
            and their precision.
        """
        check_is_fitted(self)
        circuit, groups, word_bits = self.circuit_plan_.compile(
            self.input_quantizer_.n_levels, p_error=self.p_error, global_p_error=self.global_p_error,
            n_jobs=1 if self.n_jobs is None else self.n_jobs)
        self._fhe_circuit = circuit
        self.n_output_groups_ = groups
        self.input_word_bits_ = word_bits
        return circuit

    def encrypt_input(self, X):
        """Client side: quantize ``X`` and encrypt every unary bit, packed in seeded GLWE
        ciphertexts (one coefficient per bit, bodies rounded to ``input_word_bits_`` bits).

        Keys are generated on first use.  The result reveals nothing of the model: every
        level of every feature is encrypted.

        Returns
        -------
        fheml._core.GlweCiphertext of shape (n_samples, polynomials)
        """
        circuit = self.fhe_circuit if self.fhe_circuit is not None else self.compile()
        circuit.keygen()
        return self._encrypt_bits(circuit, self.input_quantizer_.encode(self.quantize_input(X)))

    def _encrypt_bits(self, circuit, bits):
        client = circuit.client
        return encrypt_unary(client.secret_keys, bits, client.spec.precision,
                             self.input_word_bits_)

    def run_encrypted(self, encrypted, evaluation_keys=None):
        """Server side: extract the bits the trees read and run the circuit.

        Parameters
        ----------
        encrypted : fheml._core.GlweCiphertext or bytes
            From :meth:`encrypt_input`.
        evaluation_keys : EvaluationKeys or bytes, default=the circuit client's

        Returns
        -------
        fheml.compiler.EncryptedResult

        Raises
        ------
        fheml._core.MismatchError
            If the ciphertext does not hold this model's bits per sample (or is for other
            parameters).
        """
        from fheml._core import GlweCiphertext
        from fheml.compiler import EncryptedArgs, ServerLimits

        circuit = self.fhe_circuit if self.fhe_circuit is not None else self.compile()
        if evaluation_keys is None:
            evaluation_keys = circuit.keygen()
        if isinstance(encrypted, (bytes, bytearray, memoryview)):
            # a sample's polynomials expand far beyond its few bytes per bit: the bound is
            # a server's default memory limit, not a multiple of the payload
            encrypted = GlweCiphertext.from_bytes(
                bytes(encrypted), max_words=ServerLimits().max_expanded_bytes // 8)
        n_levels = self.input_quantizer_.n_levels
        check_unary(encrypted, n_levels, circuit.parameters)
        selected = extract_unary(encrypted, self.circuit_plan_.used_columns, n_levels)
        return circuit.server.run(EncryptedArgs([selected], True), evaluation_keys,
                                  n_jobs=circuit.n_jobs)

    def decrypt_output(self, result):
        """Client side: decrypt and dequantize to the raw outputs, (n_samples, n_outputs)."""
        circuit = self.fhe_circuit
        return self._dequantize(self._sum_groups(circuit.client.decrypt(result)))

    def _sum_groups(self, out):
        plan = self.circuit_plan_
        out = np.asarray(out).reshape(out.shape[0], self.n_output_groups_, plan.n_outputs)
        return out.sum(axis=1) + self.leaf_offset_

    def _run_integer(self, q_X, fhe):
        """Quantized raw outputs (leaf sums, offset included) of bin indices ``q_X``."""
        plan = self.circuit_plan_
        bits = self.input_quantizer_.encode(q_X)
        if fhe == "disable" and self.fhe_circuit is None:
            return plan.evaluate(bits[:, plan.used_columns]) + self.leaf_offset_
        circuit = self.fhe_circuit if self.fhe_circuit is not None else self.compile()
        if fhe == "execute":
            # in chunks of rows so that memory stays within fheml's working_memory (the
            # ciphertexts each lookup reads are gathered: large ensembles take GBs a row)
            evaluation_keys = circuit.keygen()
            size = circuit.rows_per_chunk()
            out = [circuit.client.decrypt(self.run_encrypted(
                self._encrypt_bits(circuit, bits[start:start + size]), evaluation_keys))
                for start in range(0, bits.shape[0], size)]
            return self._sum_groups(np.concatenate(out))
        used = bits[:, plan.used_columns]
        out = circuit.run(used) if fhe == "disable" else circuit.simulate(used)
        return self._sum_groups(out)

    def _integer_forward(self, q_X):
        return self._run_integer(q_X, "disable")

    def _dequantize(self, q_y):
        return self.bias_ + self.leaf_step_ * np.asarray(q_y, dtype=np.float64)

    def _raw(self, X, execute_in_fhe, fhe):
        check_is_fitted(self)
        mode = resolve_fhe_mode(fhe, execute_in_fhe)
        return self._dequantize(self._run_integer(self.quantize_input(X), mode))


class _FHETreeRegressor(RegressorMixin, _FHETreeModel):
    """Raw outputs are the prediction (``_inverse_link`` for non-identity losses)."""

    def _inverse_link(self, raw):
        return raw

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Predict with the quantized model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None
            ``"disable"``: the integer program in the clear; ``"simulate"``: in the clear
            through the compiled circuit; ``"execute"``: encrypted, all rows in one batch.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        raw = self._inverse_link(self._raw(X, execute_in_fhe, fhe))
        return raw[:, 0] if raw.shape[1] == 1 else raw


def _has_decision_function(estimator):
    return hasattr(estimator._sklearn_estimator_class, "decision_function")


class _FHETreeClassifier(ClassifierMixin, _FHETreeModel):
    """``_raw_kind = "proba"``: raw outputs are probabilities (P(class 1) when binary);
    ``"logit"``: scores turned into probabilities by sigmoid / softmax on the client."""

    _raw_kind = "proba"

    def _set_quantized(self, model, X):
        if getattr(model, "n_outputs_", 1) > 1:
            raise ValueError(f"{type(self).__name__} does not support multi-output "
                             "classification (y with several columns)")
        super()._set_quantized(model, X)

    def _proba(self, raw):
        if self._raw_kind == "logit":
            if raw.shape[1] == 1:
                p = _sigmoid(raw[:, 0])
                return np.column_stack([1.0 - p, p])
            return softmax(raw, copy=False)
        if len(self.classes_) == 2:
            p = np.clip(raw[:, 0], 0.0, 1.0)
            return np.column_stack([1.0 - p, p])
        p = np.clip(raw, 0.0, None)
        total = p.sum(axis=1, keepdims=True)
        return p / np.where(total > 0, total, 1.0)

    @available_if(_has_decision_function)
    def decision_function(self, X, *, fhe=None, execute_in_fhe=False):
        """Raw scores of the quantized model (decrypted when run encrypted).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        raw = self._raw(X, execute_in_fhe, fhe)
        return raw[:, 0] if raw.shape[1] == 1 else raw

    def predict_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Class probabilities, computed on the client from the decrypted sums.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        return self._proba(self._raw(X, execute_in_fhe, fhe))

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Class labels: argmax of :meth:`predict_proba` (computed on the client).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        return self.classes_[np.argmax(proba, axis=1)]


# ----------------------------------------------------------------- estimators -----------

class FHEDecisionTreeClassifier(_FHETreeClassifier):
    """Decision tree classifier predicting on encrypted data.

    Wraps :class:`sklearn.tree.DecisionTreeClassifier`; all its parameters are accepted
    with the same meaning and defaults, plus ``n_bits`` (bits of the input bins and of
    the leaf probabilities), ``p_error``, ``global_p_error`` and ``n_jobs``.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from fheml.tree import FHEDecisionTreeClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = FHEDecisionTreeClassifier(max_depth=5, random_state=0).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")    # one encrypted batch
    """

    _sklearn_estimator_class = DecisionTreeClassifier

    def _trees(self, model):
        return [sklearn_tree(model.tree_, probability_outputs(class_fractions(model.tree_)))]

    def _raw_float(self, model, X):
        return probability_outputs(model.predict_proba(X))


class FHEDecisionTreeRegressor(_FHETreeRegressor):
    """Decision tree regressor predicting on encrypted data.

    Wraps :class:`sklearn.tree.DecisionTreeRegressor`; all its parameters are accepted
    with the same meaning and defaults, plus ``n_bits``, ``p_error``, ``global_p_error``
    and ``n_jobs``.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from fheml.tree import FHEDecisionTreeRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = FHEDecisionTreeRegressor(max_depth=5).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = DecisionTreeRegressor

    def _trees(self, model):
        return [sklearn_tree(model.tree_, model.tree_.value[:, :, 0])]

    def _raw_float(self, model, X):
        return model.predict(X).reshape(X.shape[0], -1)
