"""One mechanism gives every FHE estimator the parameters of the class it wraps, as the
installed scikit-learn defines them (issue 13): simulated here with wrapped classes whose
signatures differ the way scikit-learn versions do."""

import inspect
import pydoc

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError, StrOptions

from fheml.base import BaseFHEEstimator
from fheml.linear_model import FHELogisticRegression, _FHELinearRegressor


def _wrapped_class(version):
    """A scikit-learn-style linear regressor whose parameters depend on ``version``."""
    class Wrapped(RegressorMixin, BaseEstimator):
        """Least squares.

        Parameters
        ----------
        solver : {"a", "b"}, default="a"
            Which solver.
        shrink : float, default=0.0
            Shrinkage of the coefficients.

        Attributes
        ----------
        coef_ : ndarray
        """

        _parameter_constraints = {"solver": [StrOptions({"a", "b"})], "shrink": [float]}

        if version == "old":
            def __init__(self, solver="a", *, shrink=0.0):
                self.solver = solver
                self.shrink = shrink
        else:  # a later version adds a keyword and changes a default
            _parameter_constraints = {**_parameter_constraints, "tol": [float]}

            def __init__(self, solver="b", *, shrink=0.0, tol=1e-3):
                self.solver = solver
                self.shrink = shrink
                self.tol = tol

        def fit(self, X, y):
            X, y = np.asarray(X, float), np.asarray(y, float)
            A = np.column_stack([X, np.ones(len(X))])
            sol = np.linalg.lstsq(A, y, rcond=None)[0] / (1.0 + self.shrink)
            self.coef_, self.intercept_ = sol[:-1], sol[-1]
            self.n_features_in_ = X.shape[1]
            return self

    return Wrapped


def _fhe_class(version, **attributes):
    return type(f"FHEWrapped_{version}", (_FHELinearRegressor,),
                {"__doc__": "FHE least squares.\n\n    {parameters}\n    ",
                 "_sklearn_estimator_class": _wrapped_class(version), **attributes})


@pytest.mark.parametrize("version, expected", [
    ("old", {"solver": "a", "shrink": 0.0}),
    ("new", {"solver": "b", "shrink": 0.0, "tol": 1e-3}),
])
def test_parameters_follow_the_wrapped_class(version, expected):
    cls = _fhe_class(version)
    fhe = {"n_bits": 8, "p_error": None, "global_p_error": None, "n_jobs": None,
           "calibration": "minmax"}
    assert cls().get_params() == {**expected, **fhe}
    sig = inspect.signature(cls)
    assert list(sig.parameters) == [*expected, *fhe]
    assert sig.parameters["solver"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY for n in fhe)
    # Positional use as the wrapped class allows it; FHE parameters are keyword-only.
    assert cls("a").solver == "a"
    with pytest.raises(TypeError):
        cls("a", 0.5)
    with pytest.raises(TypeError, match="unexpected keyword|got an unexpected"):
        cls(not_a_parameter=1)
    # Constraints: the wrapped class's, then the FHE ones.
    assert set(cls._parameter_constraints) == set(expected) | set(fhe)
    with pytest.raises(InvalidParameterError, match="solver"):
        cls(solver="c").fit(np.eye(3), np.arange(3.0))
    with pytest.raises(InvalidParameterError, match="n_bits"):
        cls(n_bits=1).fit(np.eye(3), np.arange(3.0))


@pytest.mark.filterwarnings("ignore::fheml.quantization.FHEMLClipWarning")
def test_fit_passes_the_wrapped_parameters_and_clone_keeps_them():
    cls = _fhe_class("new")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1
    model = cls(shrink=1.0, tol=1e-5, n_bits=6).fit(X, y)
    assert model.sklearn_model_.shrink == 1.0 and model.sklearn_model_.tol == 1e-5
    assert clone(model).get_params() == model.get_params()
    search = GridSearchCV(cls(), {"shrink": [0.0, 1.0], "n_bits": [6, 8]}, cv=2).fit(X, y)
    assert search.best_params_ == {"shrink": 0.0, "n_bits": 8}


def test_docstring_lists_the_real_parameters():
    cls = _fhe_class("new")
    doc = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for text in ("solver : {\"a\", \"b\"}, default=\"a\"", "Shrinkage of the coefficients",
                 "tol : default=0.001", "n_bits : int or dict, default=8", "{parameters}"):
        assert (text in doc) == (text != "{parameters}"), text
    # The real estimators: help() shows the installed scikit-learn's parameters.
    doc = pydoc.render_doc(FHELogisticRegression, renderer=pydoc.plaintext)
    for name in inspect.signature(LogisticRegression).parameters:
        assert f"{name} :" in doc
    assert "Inverse of regularization strength" in doc


def test_family_parameters_and_exclusions():
    """A family can replace the FHE parameters and leave out wrapped ones."""
    cls = _fhe_class("new", _sklearn_params_exclude=("tol",),
                     _fhe_params={"n_bits": 5, "p_error": None, "global_p_error": None,
                                  "n_jobs": None},
                     _fhe_params_doc="n_bits : int, default=5\n    Bits.\n")
    assert cls().get_params()["n_bits"] == 5
    assert "tol" not in cls().get_params() and "tol" not in cls._parameter_constraints
    assert cls._sklearn_param_names() == ["solver", "shrink"]
    assert "n_bits : int, default=5" in cls.__doc__


def test_explicit_init_is_left_alone():
    class Custom(BaseFHEEstimator):
        _sklearn_estimator_class = LogisticRegression

        def __init__(self, C=2.0):
            self.C = C

    assert Custom().get_params() == {"C": 2.0}
