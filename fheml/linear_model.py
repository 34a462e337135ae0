"""Linear models on encrypted data.

Each class wraps the scikit-learn estimator of the same name (without ``FHE``): ``fit``
trains it in the clear, then the model is quantized (per-feature inputs of ``n_bits``
bits, weights of ``n_bits`` bits, symmetric per output) into the integer program
``q_x @ q_W + q_b``, which is all that runs encrypted.  It has no table lookup, so the
circuit needs no bootstrapping.  Everything non-linear (inverse link functions, sigmoid,
softmax, argmax) runs on the client in the clear after decryption.

Quantization accuracy: with the default ``n_bits=8`` the accumulator of a model with
``F`` features is about ``16 + log2(F)`` bits (at most 30 bits, sign included, can be
decrypted) and predictions stay within a point of the float model on standard data.
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.linear_model import (
    ElasticNet,
    GammaRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    SGDRegressor,
    TweedieRegressor,
)
from sklearn.metrics import d2_tweedie_score
from sklearn.svm import LinearSVC, LinearSVR
from sklearn.utils._available_if import available_if
from sklearn.utils.extmath import softmax
from sklearn.utils.validation import check_is_fitted

from fheml.base import BaseFHEEstimator
from fheml.quantization import QuantizedLinear

__all__ = [
    "FHEElasticNet",
    "FHEGammaRegressor",
    "FHELasso",
    "FHELinearRegression",
    "FHELinearSVC",
    "FHELinearSVR",
    "FHELogisticRegression",
    "FHEPoissonRegressor",
    "FHERidge",
    "FHESGDClassifier",
    "FHESGDRegressor",
    "FHETweedieRegressor",
]


# ------------------------------------------------------------------- numerics ------------

def _weights_and_bias(model):
    """Float ``(W, b)`` of shape (n_features, n_outputs) and (n_outputs,) of a linear model."""
    coef = np.asarray(model.coef_, dtype=np.float64)
    weights = coef[:, None] if coef.ndim == 1 else coef.T
    bias = np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64).ravel(),
                           (weights.shape[1],)).copy()
    return weights, bias


def _sigmoid(z):
    # exp of a non-positive argument only: no overflow warning for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _binary_proba(decision):
    p = _sigmoid(decision)
    return np.column_stack([1.0 - p, p])


def _ovr_proba(decision):
    """One-vs-rest probabilities: sigmoid of each score, normalized (as scikit-learn)."""
    p = _sigmoid(decision)
    return p / p.sum(axis=1, keepdims=True)


def _modified_huber_proba(decision, n_classes):
    """Probabilities of SGDClassifier(loss="modified_huber"), as scikit-learn computes them."""
    if n_classes == 2:
        p = (np.clip(decision, -1, 1) + 1.0) / 2.0
        return np.column_stack([1.0 - p, p])
    prob = (np.clip(decision, -1, 1) + 1.0) / 2.0
    total = prob.sum(axis=1)
    all_zero = total == 0
    prob[all_zero, :] = 1.0
    total[all_zero] = n_classes
    return prob / total[:, None]


# ---------------------------------------------------------------- base classes -----------

class _FHELinearModel(BaseFHEEstimator):
    """Quantized ``x @ W + b``: the part shared by linear regressors and classifiers."""

    _fhe_params_doc = """\
n_bits : int or dict, default=8
    Bits of the quantized inputs and weights; ``{"inputs": a, "weights": b}`` sets them
    apart.  The integer accumulator needs about ``a + b + log2(n_features)`` bits and
    must fit in 30 (``fit`` raises a ``ValueError`` naming the width otherwise).
p_error : float, default=None
    Failure probability of a decryption (``None``: ``2**-40``).
global_p_error : float, default=None
    Failure probability of the whole circuit.
n_jobs : int, default=None
    Threads of the encrypted run; also passed to the scikit-learn fit when the wrapped
    estimator has ``n_jobs``."""

    def _build_quantized_model(self, model, X):
        weights, bias = _weights_and_bias(model)
        self.quantized_layer_ = QuantizedLinear(weights, bias, self.input_quantizer_,
                                                weight_n_bits=self.n_bits_weights_)
        self.coef_ = model.coef_
        self.intercept_ = model.intercept_
        for name in ("classes_", "n_iter_"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def _integer_function(self):
        q_weights = self.quantized_layer_.q_weights
        q_bias = self.quantized_layer_.q_bias

        def linear(x):
            return x @ q_weights + q_bias

        return linear

    def _compile_inputset(self, q_sample):
        extremes = self.quantized_layer_.extreme_inputs()
        return extremes if q_sample is None else np.concatenate([extremes, q_sample])

    def _integer_forward(self, q_X):
        return self.quantized_layer_.accumulate(q_X)

    def _dequantize(self, q_y):
        return self.quantized_layer_.dequantize(np.asarray(q_y))

    def _linear_predictor(self, X, execute_in_fhe, fhe):
        """``X @ coef_ + intercept_`` through the quantized program, raveled like sklearn."""
        check_is_fitted(self)
        scores = self._predict_float(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        return scores[:, 0] if np.ndim(self.coef_) == 1 else scores


class _FHELinearRegressor(RegressorMixin, _FHELinearModel):
    """Regressor whose prediction is the linear predictor itself."""

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Predict with the quantized model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Values outside the calibration range are clipped (with a warning).
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None
            ``"disable"``: the integer program in the clear; ``"simulate"``: in the clear
            through the compiled circuit; ``"execute"``: encrypted, all rows in one batch.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self._linear_predictor(X, execute_in_fhe, fhe)


class _FHEGLMRegressor(RegressorMixin, _FHELinearModel):
    """Generalized linear model: inverse link applied on the client after decryption."""

    def _uses_log_link(self):
        return True

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Predict the expected target with the quantized model.

        The linear predictor is computed by the (encrypted) circuit; the inverse link
        (``exp`` for the log link) is applied in the clear after decryption.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        eta = self._linear_predictor(X, execute_in_fhe, fhe)
        return np.exp(eta) if self._uses_log_link() else eta

    def _power(self):
        raise NotImplementedError

    def score(self, X, y, sample_weight=None):
        """D² (fraction of Tweedie deviance explained), as the scikit-learn model scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
        """
        return float(d2_tweedie_score(y, self.predict(X), sample_weight=sample_weight,
                                      power=self._power()))


class _FHELinearClassifier(ClassifierMixin, _FHELinearModel):
    """Classifier predicting from the sign (binary) or argmax (multiclass) of the scores."""

    def decision_function(self, X, *, fhe=None, execute_in_fhe=False):
        """Scores of the quantized model (decrypted when run encrypted).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        check_is_fitted(self)
        scores = self._predict_float(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X, *, fhe=None, execute_in_fhe=False):
        """Class labels: sign / argmax of the scores, computed on the client.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


# --------------------------------------------------------------- regressors ---------------

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    sklearn_model_ : {sk}
        The fitted float model.
    coef_, intercept_ : ndarray
        Its float coefficients.{classes}
    input_quantizer_ : fheml.quantization.UniformQuantizer
        Per-feature input quantizer calibrated on the training data; inputs outside its
        range are clipped with a ``FHEMLClipWarning``.
    quantized_layer_ : fheml.quantization.QuantizedLinear
        The integer weights, bias and the dequantization of the accumulator.
    fhe_circuit : fheml.Circuit or None
        Set by ``compile`` (or the first encrypted predict); not pickled.
    n_features_in_ : int
    feature_names_in_ : ndarray of str"""


def _doc(sk_class, summary, example, classifier=False):
    classes = ("\n    classes_ : ndarray of shape (n_classes,)\n        Class labels."
               if classifier else "")
    return (f"""{summary}

    Wraps :class:`{sk_class.__module__.rsplit('._', 1)[0]}.{sk_class.__name__}`; all its
    parameters (those of the installed scikit-learn) are accepted with the same meaning and
    defaults, plus the FHE parameters ``n_bits``, ``p_error``, ``global_p_error``.

    {{parameters}}
{_ATTRIBUTES_DOC.format(sk=sk_class.__name__, classes=classes)}

    Examples
    --------
{example}
    """)


class FHELinearRegression(_FHELinearRegressor):
    __doc__ = _doc(LinearRegression,
                   "Ordinary least squares predicting on encrypted data.", """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHELinearRegression
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    >>> model = FHELinearRegression().fit(X, y)
    >>> y_enc = model.predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = LinearRegression



class FHERidge(_FHELinearRegressor):
    __doc__ = _doc(Ridge, "Ridge regression predicting on encrypted data.", """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHERidge
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> y_enc = FHERidge(alpha=0.5).fit(X, y).predict(X[:10], execute_in_fhe=True)""")

    _sklearn_estimator_class = Ridge



class FHELasso(_FHELinearRegressor):
    __doc__ = _doc(Lasso, "Lasso (L1) regression predicting on encrypted data.",
                   """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHELasso
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> y_enc = FHELasso(alpha=0.1).fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = Lasso



class FHEElasticNet(_FHELinearRegressor):
    __doc__ = _doc(ElasticNet,
                   "Elastic-net regression predicting on encrypted data.", """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHEElasticNet
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> y_enc = FHEElasticNet(alpha=0.1).fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = ElasticNet



class FHELinearSVR(_FHELinearRegressor):
    __doc__ = _doc(LinearSVR,
                   "Linear support vector regression predicting on encrypted data.", """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHELinearSVR
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> y_enc = FHELinearSVR(C=10.0).fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = LinearSVR



class FHESGDRegressor(_FHELinearRegressor):
    __doc__ = _doc(SGDRegressor,
                   "Linear regression fitted by SGD, predicting on encrypted data.", """\
    >>> from sklearn.datasets import make_regression
    >>> from fheml.linear_model import FHESGDRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> y_enc = FHESGDRegressor(random_state=0).fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = SGDRegressor



class FHEPoissonRegressor(_FHEGLMRegressor):
    __doc__ = _doc(PoissonRegressor,
                   "Poisson regression (log link) predicting on encrypted data; ``exp`` of "
                   "the decrypted linear predictor is taken on the client.", """\
    >>> import numpy as np
    >>> from fheml.linear_model import FHEPoissonRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = rng.poisson(np.exp(X @ [0.3, -0.2, 0.1, 0.0]))
    >>> y_enc = FHEPoissonRegressor().fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = PoissonRegressor


    def _power(self):
        return 1.0


class FHEGammaRegressor(_FHEGLMRegressor):
    __doc__ = _doc(GammaRegressor,
                   "Gamma regression (log link) predicting on encrypted data; ``exp`` of "
                   "the decrypted linear predictor is taken on the client.", """\
    >>> import numpy as np
    >>> from fheml.linear_model import FHEGammaRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = rng.gamma(2.0, np.exp(X @ [0.3, -0.2, 0.1, 0.0]))
    >>> y_enc = FHEGammaRegressor().fit(X, y).predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = GammaRegressor


    def _power(self):
        return 2.0


class FHETweedieRegressor(_FHEGLMRegressor):
    __doc__ = _doc(TweedieRegressor,
                   "Tweedie regression predicting on encrypted data; the inverse link "
                   "(``exp`` for the log link) is applied on the client.", """\
    >>> import numpy as np
    >>> from fheml.linear_model import FHETweedieRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = rng.poisson(np.exp(X @ [0.3, -0.2, 0.1, 0.0]))
    >>> model = FHETweedieRegressor(power=1.5, link="log").fit(X, y)
    >>> y_enc = model.predict(X[:10], fhe="execute")""")

    _sklearn_estimator_class = TweedieRegressor


    def _uses_log_link(self):
        # scikit-learn's rule: "auto" is the identity link for power <= 0, log otherwise.
        return self.link == "log" or (self.link == "auto" and self.power > 0)

    def _power(self):
        return float(self.power)


# ---------------------------------------------------------------- classifiers -------------

class FHELogisticRegression(_FHELinearClassifier):
    __doc__ = _doc(LogisticRegression,
                   "Logistic regression (binary and multinomial) predicting on encrypted "
                   "data; sigmoid / softmax / argmax run on the client after decryption.",
                   """\
    >>> from sklearn.datasets import load_breast_cancer
    >>> from fheml.linear_model import FHELogisticRegression
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = FHELogisticRegression(max_iter=5000).fit(X, y)
    >>> y_enc = model.predict(X[:100], execute_in_fhe=True)   # one encrypted batch
    >>> proba = model.predict_proba(X[:5], fhe="execute")""", classifier=True)

    _sklearn_estimator_class = LogisticRegression


    def predict_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Class probabilities: sigmoid (binary) or softmax (multiclass) of the decrypted
        scores, computed on the client.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
            Same as ``fhe="execute"``.
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        return _binary_proba(scores) if scores.ndim == 1 else softmax(scores, copy=False)

    def predict_log_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X, execute_in_fhe=execute_in_fhe, fhe=fhe))


class FHELinearSVC(_FHELinearClassifier):
    __doc__ = _doc(LinearSVC,
                   "Linear support vector classifier predicting on encrypted data.", """\
    >>> from sklearn.datasets import load_iris
    >>> from fheml.linear_model import FHELinearSVC
    >>> X, y = load_iris(return_X_y=True)
    >>> y_enc = FHELinearSVC().fit(X, y).predict(X[:20], fhe="execute")""", classifier=True)

    _sklearn_estimator_class = LinearSVC



def _sgd_has_proba(estimator):
    if estimator.loss not in ("log_loss", "modified_huber"):
        raise AttributeError(f"probability estimates are not available for "
                             f"loss={estimator.loss!r} (use 'log_loss' or 'modified_huber')")
    return True


class FHESGDClassifier(_FHELinearClassifier):
    __doc__ = _doc(SGDClassifier,
                   "Linear classifier fitted by SGD, predicting on encrypted data.", """\
    >>> from sklearn.datasets import load_iris
    >>> from fheml.linear_model import FHESGDClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = FHESGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    >>> proba = model.predict_proba(X[:20], fhe="execute")""", classifier=True)

    _sklearn_estimator_class = SGDClassifier


    @available_if(_sgd_has_proba)
    def predict_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Class probabilities (``loss="log_loss"`` or ``"modified_huber"``), computed on
        the client from the decrypted scores exactly as scikit-learn does.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        execute_in_fhe : bool, default=False
        fhe : {"disable", "simulate", "execute"}, default=None

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X, execute_in_fhe=execute_in_fhe, fhe=fhe)
        if self.loss == "modified_huber":
            return _modified_huber_proba(scores, len(self.classes_))
        return _binary_proba(scores) if scores.ndim == 1 else _ovr_proba(scores)

    @available_if(_sgd_has_proba)
    def predict_log_proba(self, X, *, fhe=None, execute_in_fhe=False):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X, execute_in_fhe=execute_in_fhe, fhe=fhe))
