"""What every FHE estimator shares: parameters, quantization, compilation and run modes.

An FHE estimator wraps a scikit-learn estimator (``sklearn_model_``, the float model,
fitted in the clear).  ``fit`` also calibrates an input quantizer on the training data and
builds the integer program of the quantized predict; ``compile`` turns that program into a
:class:`fheml.Circuit`; ``predict(X, fhe=...)`` runs it three ways:

- ``"disable"``: the integer program in the clear (what the encrypted run must reproduce);
- ``"simulate"``: in the clear, lookups failing with their modelled probability;
- ``"execute"``: encrypted: the client quantizes and encrypts every row in one batch, the
  server runs the circuit once over the batch, the client decrypts and dequantizes.

Subclasses provide the estimator-specific numerics through four hooks:
``_build_quantized_model(model, X)``, ``_integer_function()``,
``_compile_inputset(q_X)`` and ``_integer_forward(q_X)`` / ``_dequantize(acc)``.
"""

import copy
import inspect
import re
import textwrap
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted, validate_data

from fheml._config import get_config
from fheml._warnings import warn_once_per_site
from fheml.quantization import FHEMLClipWarning, UniformQuantizer

__all__ = ["FHE_MODES", "BaseFHEEstimator", "fhe_parameter_constraints", "resolve_fhe_mode"]

FHE_MODES = ("disable", "simulate", "execute")

# Rows of the inputset handed to the compiler besides the worst-case rows.
_COMPILE_SAMPLE_ROWS = 100

_FHE_PARAMETER_CONSTRAINTS = {
    "n_bits": [Interval(Integral, 2, None, closed="left"), dict],
    "p_error": [Interval(Real, 0, 1, closed="neither"), None],
    "global_p_error": [Interval(Real, 0, 1, closed="neither"), None],
    # 0 threads is refused at fit and compile, not at the first encrypted run
    "n_jobs": [Interval(Integral, 1, None, closed="left"),
               Interval(Integral, None, -1, closed="right"), None],
    "calibration": [StrOptions({"minmax", "quantile"})],
}

# Quantiles of the "quantile" calibration, and the outlier test at fit: a feature whose
# full range is more than _OUTLIER_RATIO times the range of its central quantiles.
_CALIBRATION_QUANTILES = (0.005, 0.995)
_OUTLIER_RATIO = 4.0

_FHE_PARAMS_DOC = """\
n_bits : int or dict, default=8
    Bits of the quantized inputs and weights; ``{"inputs": a, "weights": b}`` sets them
    apart.
p_error : float, default=None
    Failure probability of each lookup / decryption (``None``: ``2**-40``).
global_p_error : float, default=None
    Failure probability of the whole circuit; with ``p_error`` the stricter applies.
n_jobs : int, default=None
    Threads of the encrypted run; also passed to the scikit-learn fit when the wrapped
    estimator has ``n_jobs``.
calibration : {"minmax", "quantile"}, default="minmax"
    Input ranges of the quantizer: the min and max of each feature of the training data,
    or its 0.5% and 99.5% quantiles, so that a few outlying rows cannot stretch the range
    (and waste the quantization bits) of a feature; values beyond are clipped.  ``fit``
    warns when a few rows dominate a feature's range."""


def fhe_parameter_constraints(sklearn_class):
    """``_parameter_constraints`` of an FHE estimator wrapping ``sklearn_class``."""
    return {**sklearn_class._parameter_constraints, **_FHE_PARAMETER_CONSTRAINTS}


# -- parameters derived from the wrapped class ----------------------------------------------

def _wrapped_parameters(sklearn_class, exclude):
    """``inspect.Parameter``s of ``sklearn_class.__init__`` in the installed scikit-learn.

    A ``**kwargs`` catch-all is not a parameter: when the class forwards it to its base's
    ``__init__`` (XGBoost's classes do), the base's parameters follow, as in its
    ``get_params``.
    """
    params, seen = [], {"self"}
    for klass in sklearn_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        init = getattr(klass.__init__, "deprecated_original", klass.__init__)
        forwards = False
        for name, p in inspect.signature(init).parameters.items():
            if p.kind == p.VAR_KEYWORD:
                forwards = True
            elif name not in seen and name not in exclude and p.kind != p.VAR_POSITIONAL:
                seen.add(name)
                # a base's parameters come after the subclass's keyword-only ones
                params.append(p if klass is sklearn_class else p.replace(kind=p.KEYWORD_ONLY))
        if not forwards:
            break
    return params


def _estimator_signature(cls):
    """``__init__`` signature of an FHE estimator: the wrapped class's parameters (names,
    defaults and kinds of the installed scikit-learn), then the FHE ones, keyword-only."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    overrides = cls._sklearn_default_overrides
    params += [p.replace(default=overrides[p.name]) if p.name in overrides else p
               for p in _wrapped_parameters(cls._sklearn_estimator_class,
                                            cls._sklearn_params_exclude)]
    taken = {p.name for p in params}
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in cls._fhe_params.items() if name not in taken]
    return inspect.Signature(params)


def _make_init(signature):
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        # scikit-learn's contract: __init__ stores its arguments, nothing more.
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


_SECTION = re.compile(r"^(\s*)Parameters\n\s*-{3,}\n(.*?)(?=^\s*[A-Z][A-Za-z ]+\n\s*-{3,}\n|\Z)",
                      re.S | re.M)


def _numpydoc_entries(doc):
    """``{name: text}`` of the entries of a numpydoc Parameters section (dedented)."""
    match = _SECTION.search(doc or "")
    if match is None:
        return {}
    body = textwrap.dedent(match.group(2))
    entries, name = {}, None
    for line in body.splitlines():
        if line and not line[0].isspace():
            name = line.split(" :")[0].split(",")[0].strip()
            entries[name] = [line]
        elif name is not None:
            entries[name].append(line)
    return {k: "\n".join(v).rstrip() for k, v in entries.items()}


def _parameters_doc(cls):
    """The Parameters section of an FHE estimator: the wrapped class's entries (from its
    installed docstring), then the FHE ones, in signature order."""
    wrapped = _numpydoc_entries(cls._sklearn_estimator_class.__doc__)
    # the subclass documents the FHE parameters it changes; the base documents the others
    fhe = {**_numpydoc_entries("Parameters\n----------\n" + _FHE_PARAMS_DOC),
           **_numpydoc_entries("Parameters\n----------\n" + cls._fhe_params_doc)}
    sk_name = cls._sklearn_estimator_class.__name__
    lines = []
    for name, param in list(_estimator_signature(cls).parameters.items())[1:]:
        entry = fhe.get(name) if name in cls._fhe_params or \
            name in cls._sklearn_default_overrides else None
        entry = entry or wrapped.get(name) or (
            f"{name} : default={param.default!r}\n    See ``{sk_name}``.")
        lines.append(entry)
    return textwrap.indent("Parameters\n----------\n" + "\n".join(lines), "    ")


def _set_parameters(cls):
    """Give ``cls`` its ``__init__``, ``_parameter_constraints`` and the Parameters section
    of its docstring, from the wrapped scikit-learn class in the installed version."""
    signature = _estimator_signature(cls)
    cls.__init__ = _make_init(signature)
    cls.__init__.__qualname__ = f"{cls.__qualname__}.__init__"
    names = list(signature.parameters)[1:]
    wrapped = getattr(cls._sklearn_estimator_class, "_parameter_constraints", {})
    constraints = {**wrapped, **{k: v for k, v in cls._fhe_parameter_constraints.items()
                                 if k in cls._fhe_params}}
    cls._parameter_constraints = {k: constraints[k] for k in names if k in constraints}
    if cls.__doc__ and "{parameters}" in cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{parameters}", _parameters_doc(cls).strip(), 1)


def resolve_fhe_mode(fhe, execute_in_fhe):
    """The run mode from the ``fhe`` and ``execute_in_fhe`` arguments of ``predict``.

    ``fhe=None`` means ``"execute"`` if ``execute_in_fhe``, else the mode of
    ``fheml.config_context(fhe=...)`` if set, else ``"disable"``.
    """
    if fhe is None:
        if execute_in_fhe:
            return "execute"
        return get_config()["fhe"] or "disable"
    if fhe not in FHE_MODES:
        raise ValueError(f"fhe must be one of {', '.join(map(repr, FHE_MODES))} (or None), "
                         f"got {fhe!r}")
    if execute_in_fhe and fhe != "execute":
        raise ValueError(f"execute_in_fhe=True asks for fhe='execute' but fhe={fhe!r} was "
                         "given; pass only one of them")
    return fhe


def _split_n_bits(n_bits):
    """``(input_bits, weight_bits)`` from an int or a dict ``{"inputs": .., "weights": ..}``."""
    if isinstance(n_bits, dict):
        unknown = set(n_bits) - {"inputs", "weights"}
        if unknown or len(n_bits) != 2:
            raise ValueError('n_bits as a dict must have exactly the keys "inputs" and '
                             f'"weights", got {sorted(n_bits)}')
        bits = (n_bits["inputs"], n_bits["weights"])
    else:
        bits = (n_bits, n_bits)
    for name, b in zip(("inputs", "weights"), bits):
        if isinstance(b, bool) or not isinstance(b, Integral) or b < 2:
            raise ValueError(f"n_bits for the {name} must be an integer >= 2, got {b!r}")
    return int(bits[0]), int(bits[1])


def _finite(estimator):
    """``ensure_all_finite`` of the input checks: NaN passes where the estimator's tags
    allow it (models that route missing values), infinity never."""
    return "allow-nan" if get_tags(estimator).input_tags.allow_nan else True


class BaseFHEEstimator(BaseEstimator):
    """Base of the FHE estimators (not meant to be instantiated directly).

    A subclass sets ``_sklearn_estimator_class`` and writes no ``__init__``: its parameters
    are those of the wrapped scikit-learn class *in the installed version* (same names,
    defaults and order, less ``_sklearn_params_exclude``; a default listed in
    ``_sklearn_default_overrides`` is replaced, documented by the subclass), then its FHE
    parameters ``_fhe_params`` (name -> default, keyword-only, constrained by
    ``_fhe_parameter_constraints``).  ``__init__``, its signature,
    ``_parameter_constraints`` and the Parameters section of the docstring (where the
    class docstring holds ``{parameters}``) are generated when the class is defined.

    Parameters
    ----------
    **sklearn parameters
        Every parameter of the wrapped scikit-learn class, same names and defaults.
    n_bits : int or dict, default=8
        Bits of the quantized inputs and weights; a dict ``{"inputs": a, "weights": b}``
        sets them apart.
    p_error : float, default=None
        Failure probability of each lookup / decryption (``None``: ``2**-40``).
    global_p_error : float, default=None
        Failure probability of the whole circuit; with ``p_error`` the stricter applies.
    n_jobs : int, default=None
        Threads for the encrypted run (and for the scikit-learn fit when the wrapped
        estimator has an ``n_jobs`` parameter).
    calibration : {"minmax", "quantile"}, default="minmax"
        Input ranges from the min and max of each feature, or from its 0.5% and 99.5%
        quantiles (robust to a few outlying rows).

    Attributes
    ----------
    sklearn_model_ : estimator
        The fitted float scikit-learn model.
    input_quantizer_ : UniformQuantizer
        Per-feature input quantizer calibrated on the training data.
    n_bits_inputs_, n_bits_weights_ : int
        Bits of the fitted model's inputs and weights (``n_bits`` at the last fit).
    n_clipped_values_ : int
        Input values clipped to the calibration range since the last fit.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string feature names.
    fhe_circuit : fheml.Circuit or None
        The compiled circuit (``None`` before :meth:`compile` or the first encrypted run).
    """

    _sklearn_estimator_class = None
    # Wrapped parameters an FHE estimator does not expose (documented by the subclass).
    _sklearn_params_exclude = ()
    # Wrapped parameters whose default the FHE estimator changes (name -> default; the
    # subclass documents them in ``_fhe_params_doc`` with the reason).
    _sklearn_default_overrides = {}
    # FHE parameters and their defaults, after the wrapped ones; their constraints and docs.
    _fhe_params = {"n_bits": 8, "p_error": None, "global_p_error": None, "n_jobs": None,
                   "calibration": "minmax"}
    _fhe_parameter_constraints = _FHE_PARAMETER_CONSTRAINTS
    _fhe_params_doc = _FHE_PARAMS_DOC

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_sklearn_estimator_class" in cls.__dict__ and "__init__" not in cls.__dict__:
            _set_parameters(cls)

    # -- scikit-learn plumbing ---------------------------------------------------------------
    @classmethod
    def _sklearn_param_names(cls):
        """Parameters handed to the wrapped scikit-learn class."""
        return [p.name for p in _wrapped_parameters(cls._sklearn_estimator_class,
                                                    cls._sklearn_params_exclude)]

    def _make_sklearn_model(self):
        return self._sklearn_estimator_class(
            **{name: getattr(self, name) for name in self._sklearn_param_names()})

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self._make_sklearn_model().__sklearn_tags__()
        tags.target_tags = copy.deepcopy(inner.target_tags)
        if inner.classifier_tags is not None and tags.classifier_tags is not None:
            tags.classifier_tags = copy.deepcopy(inner.classifier_tags)
        if inner.regressor_tags is not None and tags.regressor_tags is not None:
            tags.regressor_tags = copy.deepcopy(inner.regressor_tags)
        tags.input_tags = copy.deepcopy(inner.input_tags)
        tags.input_tags.sparse = False  # quantization needs dense arrays
        tags.array_api_support = False
        return tags

    def __getstate__(self):
        # The circuit (and the secret keys inside its client) never goes into a pickle: a
        # reloaded model compiles again, with new keys, on its first encrypted predict.
        state = dict(super().__getstate__())
        state["_fhe_circuit"] = None
        return state

    def __deepcopy__(self, memo):
        # A deep copy (not a pickle) keeps the compiled circuit, shared with its keys: a
        # circuit does not change once compiled, and its keys are gigabytes.
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for name, value in vars(self).items():
            setattr(copied, name, value if name == "_fhe_circuit" else copy.deepcopy(value, memo))
        return copied

    @property
    def fhe_circuit(self):
        """The compiled :class:`fheml.Circuit`, or ``None`` before compilation."""
        return getattr(self, "_fhe_circuit", None)

    @property
    def n_bits_inputs_(self):
        """Bits of the quantized inputs of the fitted model (``n_bits`` at the last fit: a
        later ``set_params`` takes effect at the next fit)."""
        return self._fitted_n_bits()[0]

    @property
    def n_bits_weights_(self):
        """Bits of the quantized weights of the fitted model (see :attr:`n_bits_inputs_`)."""
        return self._fitted_n_bits()[1]

    def _fitted_n_bits(self):
        return self.__dict__.get("_n_bits_fitted") or _split_n_bits(self.n_bits)

    def _start_fit(self):
        """Reset what describes the previous fit: bit widths and clipping events."""
        self._n_bits_fitted = _split_n_bits(self.n_bits)
        self._clip_events = {}


    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit the float scikit-learn model, then calibrate and quantize.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; also the calibration data of the input quantizer.  Values
            met later outside its per-feature range are clipped (with a
            :class:`~fheml.quantization.FHEMLClipWarning`).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        self._validate_params()
        self._start_fit()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True,
                             ensure_all_finite=_finite(self))
        model = self._make_sklearn_model()
        if sample_weight is None:
            model.fit(X, y)
        else:
            model.fit(X, y, sample_weight=sample_weight)
        calibration = X
        if sample_weight is not None:
            # Samples of weight 0 are not part of the training data: they must not widen
            # the calibration range (weights then stay equivalent to repeating samples).
            positive = np.asarray(sample_weight) > 0
            if np.ndim(positive) == 1 and positive.shape[0] == X.shape[0] and positive.any():
                calibration = X[positive]
        self._set_quantized(model, calibration)
        return self

    def fit_benchmark(self, X, y, sample_weight=None):
        """Fit, and return this model with the float scikit-learn model to compare to.

        Returns
        -------
        fhe_model : object
            ``self``, fitted.
        sklearn_model : estimator
            The float scikit-learn model with the same parameters fitted on the same data
            (an independent copy of ``sklearn_model_``).
        """
        self.fit(X, y, sample_weight=sample_weight)
        return self, copy.deepcopy(self.sklearn_model_)

    @classmethod
    def from_sklearn_model(cls, model, X, n_bits=8, **fhe_params):
        """FHE model from an already fitted scikit-learn model.

        Parameters
        ----------
        model : estimator
            A fitted instance of the wrapped scikit-learn class; it is copied.
        X : array-like of shape (n_samples, n_features)
            Calibration data of the input quantizer (typically the training data).
        n_bits : int or dict, default=8
        **fhe_params
            FHE parameters (``p_error``, ``global_p_error``, ``n_jobs``, ...).  Parameters
            of the scikit-learn model come from ``model``; one given here must equal the
            model's.

        Returns
        -------
        object
            A fitted FHE estimator whose parameters are those of ``model``.
        """
        estimator, X = cls._estimator_for_sklearn_model(model, X, {**fhe_params,
                                                                   "n_bits": n_bits})
        estimator._start_fit()
        estimator._set_quantized(copy.deepcopy(model), X)
        return estimator

    @classmethod
    def _estimator_for_sklearn_model(cls, model, X, fhe_params):
        """``(estimator, X)``: an unfitted FHE estimator with the parameters of the fitted
        scikit-learn ``model`` plus ``fhe_params``, and ``X`` validated against it.  Shared
        by every family's ``from_sklearn_model``."""
        if not isinstance(model, cls._sklearn_estimator_class):
            raise TypeError(f"{cls.__name__}.from_sklearn_model expects a fitted "
                            f"{cls._sklearn_estimator_class.__name__}, got "
                            f"{type(model).__name__}")
        check_is_fitted(model)
        if X is None:
            raise ValueError(f"{cls.__name__}.from_sklearn_model needs X, data like the "
                             "model's training set: it calibrates the input quantizer")
        names = set(cls._get_param_names())
        params = {k: v for k, v in model.get_params(deep=False).items() if k in names}
        unknown = sorted(set(fhe_params) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}.from_sklearn_model got unknown parameter(s) "
                            f"{unknown}; FHE parameters are {sorted(cls._fhe_params)}")
        contradicting = {k: v for k, v in fhe_params.items()
                         if k in params and k not in cls._fhe_params and v != params[k]}
        if contradicting:
            shown = ", ".join(f"{k}={v!r} (the model has {params[k]!r})"
                              for k, v in contradicting.items())
            raise ValueError(f"{shown}: the parameters of the scikit-learn model are those "
                             "it was fitted with; set them on the model and refit it, or pass "
                             "only FHE parameters here")
        params.update(fhe_params)
        estimator = cls(**params)
        estimator._validate_params()
        X = validate_data(estimator, X, dtype=[np.float64, np.float32],
                          ensure_all_finite=_finite(estimator))
        if X.shape[1] != model.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on "
                             f"{model.n_features_in_}; calibrate on data like its training set")
        return estimator, X

    def _set_quantized(self, model, X):
        self.sklearn_model_ = model
        self.input_quantizer_ = UniformQuantizer(
            n_bits=self.n_bits_inputs_, per_feature=True).fit(self._calibration_data(X))
        self._fhe_circuit = None
        self._build_quantized_model(model, X)

    def _calibration_data(self, X):
        """The training data the input ranges come from (see the ``calibration`` parameter),
        warning when a few rows dominate a feature's range."""
        low, high = np.quantile(X, _CALIBRATION_QUANTILES, axis=0)
        central = high - low
        full = X.max(axis=0) - X.min(axis=0)
        # A feature constant on its central quantiles (a rare binary flag) keeps its range:
        # its few other values are the signal, not outliers.
        spread = central > 0
        dominated = np.flatnonzero(spread & (full > _OUTLIER_RATIO * central))
        # (an estimator whose _fhe_params leave calibration out calibrates on min and max)
        if getattr(self, "calibration", "minmax") == "quantile":
            return np.where(spread, np.clip(X, low, high), X)
        if dominated.size:
            shown = ", ".join(str(int(c)) for c in dominated[:10])
            warn_once_per_site(
                f"the range of feature(s) {shown}{', ...' if dominated.size > 10 else ''} is "
                f"dominated by a few rows (more than {_OUTLIER_RATIO:g} times the range of "
                "its 0.5%-99.5% quantiles): quantization then spends its bits on the "
                "outliers and loses accuracy on the other rows. Remove the outliers, scale "
                "robustly (sklearn.preprocessing.RobustScaler + clipping) or use "
                'calibration="quantile".', FHEMLClipWarning, "outliers")
        return X

    # -- quantization ------------------------------------------------------------------------
    def quantize_input(self, X):
        """Validate ``X`` and quantize it with the calibrated input quantizer.

        Values outside the calibration range are clipped with a
        :class:`~fheml.quantization.FHEMLClipWarning`.

        Returns
        -------
        ndarray of int64 of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                          ensure_all_finite=_finite(self))
        outside = getattr(self.input_quantizer_, "outside", None)
        if outside is None:  # a quantizer that never clips (e.g. the trees' thresholds)
            return self.input_quantizer_.quant(X)
        self._warn_clipping(outside(X))
        return self.input_quantizer_.quant(X, warn=False)

    def _warn_clipping(self, outside):
        """One :class:`FHEMLClipWarning` per fitted model and line of user code, with the
        counts of the first batch clipped; every clipped value is counted in
        ``n_clipped_values_``."""
        count = int(outside.sum())
        events = self.__dict__.setdefault("_clip_events", {})
        events["clipped"] = events.get("clipped", 0) + count
        if not count or events.get("warned"):
            return
        columns = np.flatnonzero(outside.any(axis=0))
        shown = ", ".join(str(int(c)) for c in columns[:10])
        events["warned"] = warn_once_per_site(
            f"{count} of {outside.size} input values (feature(s) {shown}"
            f"{', ...' if len(columns) > 10 else ''}) are outside the range seen at calibration "
            f"(fit) of this {type(self).__name__} and were clipped to it, which loses accuracy; "
            "fit on data that covers the values you predict on. Warned once per fitted "
            "model and line of code: later clipping is counted in n_clipped_values_.",
            FHEMLClipWarning, "clip")

    @property
    def n_clipped_values_(self):
        """Input values clipped to the calibration range since the model was fitted."""
        check_is_fitted(self)
        return self.__dict__.get("_clip_events", {}).get("clipped", 0)

    def dequantize_output(self, q_y):
        """Float outputs of the model from the integer outputs of the circuit."""
        check_is_fitted(self)
        return self._dequantize(q_y)

    # -- compilation and runs ----------------------------------------------------------------
    def compile(self, X=None, *, p_error=None, global_p_error=None, verbose=None):
        """Compile the quantized model to an FHE circuit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), default=None
            Representative inputs (a sample of them goes into the inputset).  The
            inputset always also holds the quantized inputs that drive every output to
            its extremes, so any (clipped) input runs correctly whatever ``X`` is.
        p_error, global_p_error : float, optional
            Failure probabilities of this circuit (default: the estimator's parameters).
        verbose : bool, optional
            Log the compiled graph and report the progress of key generation and
            encrypted runs (see :func:`fheml.set_config`).

        Returns
        -------
        fheml.Circuit
            Also stored as ``fhe_circuit``.  Keys are generated on the first encrypted
            predict (or by ``fhe_circuit.keygen()``) and reused by every later one.
        """
        check_is_fitted(self)
        self._validate_params()
        q_sample = None
        if X is not None:
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                              ensure_all_finite=_finite(self))
            q_sample = self.input_quantizer_.quant(X[:_COMPILE_SAMPLE_ROWS], warn=False)
        import fheml.compiler

        self._fhe_circuit = fheml.compiler.compile(
            self._integer_function(), self._compile_inputset(q_sample),
            p_error=self.p_error if p_error is None else p_error,
            global_p_error=self.global_p_error if global_p_error is None else global_p_error,
            n_jobs=1 if self.n_jobs is None else self.n_jobs, verbose=verbose)
        return self._fhe_circuit

    def _run_integer(self, q_X, fhe):
        """Integer outputs of the quantized model on quantized inputs, in mode ``fhe``."""
        circuit = self.fhe_circuit
        if fhe == "disable" and circuit is None:
            return self._integer_forward(q_X)
        if circuit is None:
            circuit = self.compile()
        if fhe == "disable":
            return circuit.run(q_X)
        if fhe == "simulate":
            return circuit.simulate(q_X)
        # Encrypted, run and decrypted in chunks of rows that fit in fheml's working_memory.
        return circuit.encrypt_run_decrypt(q_X)

    def _predict_float(self, X, execute_in_fhe=False, fhe=None):
        """Dequantized outputs of the integer program, shape (n_samples, n_outputs)."""
        mode = resolve_fhe_mode(fhe, execute_in_fhe)
        q_X = self.quantize_input(X)
        return self._dequantize(self._run_integer(q_X, mode))

    # -- hooks -------------------------------------------------------------------------------
    def _build_quantized_model(self, model, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _integer_function(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _compile_inputset(self, q_sample):  # pragma: no cover - abstract
        raise NotImplementedError

    def _integer_forward(self, q_X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _dequantize(self, q_y):  # pragma: no cover - abstract
        raise NotImplementedError
