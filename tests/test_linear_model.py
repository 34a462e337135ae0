"""The FHE linear models: scikit-learn compliance, acceptance accuracy, encrypted runs."""

import copy
import inspect
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris, load_wine, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fheml import linear_model
from fheml.linear_model import (
    FHEElasticNet,
    FHEGammaRegressor,
    FHELasso,
    FHELinearRegression,
    FHELinearSVC,
    FHELinearSVR,
    FHELogisticRegression,
    FHEPoissonRegressor,
    FHERidge,
    FHESGDClassifier,
    FHESGDRegressor,
    FHETweedieRegressor,
)

ALL_CLASSES = [getattr(linear_model, name) for name in linear_model.__all__]
CLASSIFIERS = [FHELogisticRegression, FHELinearSVC, FHESGDClassifier]
REGRESSORS = [FHELinearRegression, FHERidge, FHELasso, FHEElasticNet, FHELinearSVR,
              FHESGDRegressor]
GLMS = [FHEPoissonRegressor, FHEGammaRegressor, FHETweedieRegressor]
FHE_PARAMS = {"n_bits": 8, "p_error": None, "global_p_error": None, "n_jobs": None,
              "calibration": "minmax"}

# ------------------------------------------------------------- scikit-learn checks ---------

# Only checks scikit-learn itself marks as expected failures for the wrapped estimator
# (sklearn.utils._test_common.instance_generator.PER_ESTIMATOR_XFAIL_CHECKS): the float
# model fails them, so the FHE model built from it cannot pass them either.
_SAMPLE_WEIGHT = ("the wrapped scikit-learn estimator fails it too: its solver does not make "
                  "sample_weight equivalent to removing/repeating samples")
EXPECTED_FAILED_CHECKS = {
    "FHELinearSVC": {"check_sample_weight_equivalence_on_dense_data": _SAMPLE_WEIGHT},
    "FHELinearSVR": {"check_sample_weight_equivalence_on_dense_data": _SAMPLE_WEIGHT},
    "FHESGDClassifier": {"check_sample_weight_equivalence_on_dense_data": _SAMPLE_WEIGHT},
    "FHESGDRegressor": {"check_sample_weight_equivalence_on_dense_data": _SAMPLE_WEIGHT},
    "FHERidge": {"check_non_transformer_estimators_n_iter":
                 "the wrapped Ridge leaves n_iter_ = None for its default solver "
                 "(scikit-learn marks the same check as an expected failure for Ridge)"},
}


@parametrize_with_checks([cls() for cls in ALL_CLASSES],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(
                             type(est).__name__, {}))
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_sklearn_parameter_passes_through(cls):
    """Same names and defaults as the wrapped class, plus the FHE parameters."""
    sk_params = inspect.signature(cls._sklearn_estimator_class.__init__).parameters
    ours = inspect.signature(cls.__init__).parameters
    expected = {n: p.default for n, p in sk_params.items() if n != "self"}
    expected.update(FHE_PARAMS)
    assert {n: p.default for n, p in ours.items() if n != "self"} == expected
    # set_params reaches the float model; clone keeps the values.
    name = next(n for n in sk_params if n != "self")
    est = cls().set_params(**{name: 0.123, "n_bits": 6})
    assert getattr(est._make_sklearn_model(), name) == 0.123
    assert clone(est).get_params() == est.get_params()
    assert clone(est).get_params() == est.get_params()


# ------------------------------------------------------------------ acceptance -----------

def _cv_predictions(model, X, y, cv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cross_val_predict(model, X, y, cv=cv)


@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris, load_wine],
                         ids=["breast_cancer", "iris", "wine"])
@pytest.mark.parametrize("cls", [FHELogisticRegression, FHELinearSVC],
                         ids=lambda c: c.__name__)
def test_acceptance_classification(loader, cls):
    """Accuracy within 1 point of float (5-fold CV, every row predicted once), and the
    encrypted predictions equal the clear quantized ones on >= 99.5% of rows."""
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), cls(max_iter=5000))
    float_model = make_pipeline(StandardScaler(), cls._sklearn_estimator_class(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    acc_fhe = np.mean(_cv_predictions(model, X, y, cv) == y)
    acc_float = np.mean(_cv_predictions(float_model, X, y, cv) == y)
    assert acc_fhe >= acc_float - 0.01, (acc_fhe, acc_float)

    train = np.arange(len(y)) % 3 != 0
    model.fit(X[train], y[train])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # clipping of held-out rows
        clear = model.predict(X[~train], fhe="disable")
        encrypted = model.predict(X[~train], execute_in_fhe=True)
    assert np.mean(encrypted == clear) >= 0.995


@pytest.mark.parametrize("loader", [load_breast_cancer, load_wine], ids=["breast_cancer", "wine"])
def test_acceptance_raw_features(loader):
    """Without scaling too: per-feature input quantization copes with raw ranges."""
    X, y = loader(return_X_y=True)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    params = {"solver": "newton-cholesky", "max_iter": 1000}  # lbfgs crawls on raw features
    acc_fhe = np.mean(_cv_predictions(FHELogisticRegression(**params), X, y, cv) == y)
    acc_float = np.mean(_cv_predictions(LogisticRegression(**params), X, y, cv) == y)
    assert acc_fhe >= acc_float - 0.01, (acc_fhe, acc_float)


@pytest.mark.parametrize("cls", REGRESSORS, ids=lambda c: c.__name__)
def test_acceptance_regression(cls):
    X, y = make_regression(n_samples=600, n_features=20, n_informative=12, noise=10.0,
                           random_state=0)
    train, test = slice(0, 400), slice(400, None)
    params = {"C": 10.0, "max_iter": 10000} if cls is FHELinearSVR else {}
    model, float_model = cls(**params).fit_benchmark(X[train], y[train])
    r2_fhe, r2_float = model.score(X[test], y[test]), float_model.score(X[test], y[test])
    assert r2_fhe >= r2_float - 0.01, (r2_fhe, r2_float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        clear = model.predict(X[test])
        encrypted = model.predict(X[test], fhe="execute")
    # Regression outputs are dequantized integers: equal means bit-exact.
    assert np.mean(encrypted == clear) >= 0.995


# ------------------------------------------------------------------ behaviour ------------

def _small_data(cls, n_classes=3, n_samples=120, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    if cls in CLASSIFIERS:
        centers = rng.normal(scale=2.0, size=(n_classes, n_features))
        y = rng.integers(0, n_classes, n_samples)
        X += centers[y]
        return X, np.array(["a", "b", "c", "d"])[y]
    eta = X @ rng.normal(scale=0.3, size=n_features)
    if cls is FHEPoissonRegressor or cls is FHETweedieRegressor:
        return X, rng.poisson(np.exp(eta)).astype(float)
    if cls is FHEGammaRegressor:
        return X, rng.gamma(2.0, np.exp(eta) / 2.0)
    return X, eta + 0.1 * rng.normal(size=n_samples)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_three_modes_agree(cls):
    X, y = _small_data(cls)
    model = cls().fit(X[:80], y[:80])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        clear = model.predict(X[80:])
        simulated = model.predict(X[80:], fhe="simulate")
        encrypted = model.predict(X[80:], execute_in_fhe=True)
    np.testing.assert_array_equal(simulated, clear)
    np.testing.assert_array_equal(encrypted, clear)
    assert model.fhe_circuit.statistics["lookups"] == 0


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_classifier_outputs(cls, n_classes):
    X, y = _small_data(cls, n_classes=n_classes)
    params = {"loss": "log_loss", "random_state": 0} if cls is FHESGDClassifier else {}
    model = cls(**params).fit(X, y)
    float_model = model.sklearn_model_
    np.testing.assert_array_equal(model.classes_, float_model.classes_)
    decision = model.decision_function(X)
    assert decision.shape == float_model.decision_function(X).shape
    np.testing.assert_allclose(decision, float_model.decision_function(X), atol=0.05 * np.ptp(decision))
    assert np.mean(model.predict(X) == float_model.predict(X)) >= 0.97
    if hasattr(float_model, "predict_proba"):
        proba = model.predict_proba(X, fhe="execute")
        assert proba.shape == (len(X), n_classes)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_allclose(proba, float_model.predict_proba(X), atol=0.05)
        np.testing.assert_allclose(model.predict_log_proba(X), np.log(model.predict_proba(X)))
        np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)],
                                      model.predict(X, fhe="execute"))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("loss", ["log_loss", "modified_huber"])
def test_sgd_probabilities_are_sklearns_formula_on_decrypted_scores(loss, n_classes):
    X, y = _small_data(FHESGDClassifier, n_classes=n_classes)
    assert not hasattr(FHESGDClassifier().fit(X, y), "predict_proba")  # hinge loss
    model = FHESGDClassifier(loss=loss, random_state=0).fit(X, y)
    reference = copy.deepcopy(model.sklearn_model_)
    reference.decision_function = lambda X: model.decision_function(X, fhe="execute")
    np.testing.assert_allclose(model.predict_proba(X, fhe="execute"),
                               reference.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize("cls,params", [(FHEPoissonRegressor, {}), (FHEGammaRegressor, {}),
                                        (FHETweedieRegressor, {"power": 1.5}),
                                        (FHETweedieRegressor, {"power": 0.0}),
                                        (FHETweedieRegressor, {"power": 1.0, "link": "log"})],
                         ids=["poisson", "gamma", "tweedie-1.5", "tweedie-identity",
                              "tweedie-log"])
def test_glm_link_runs_on_the_client(cls, params):
    X, y = _small_data(cls if params.get("power", 1) else FHELinearRegression)
    model = cls(**params).fit(X, y)
    float_model = model.sklearn_model_
    eta = model.quantized_layer_.dequantize(model.quantize_input(X) @ model.quantized_layer_.q_weights
                                            + model.quantized_layer_.q_bias)[:, 0]
    log_link = cls is not FHETweedieRegressor or params.get("power", 0) > 0
    np.testing.assert_allclose(model.predict(X), np.exp(eta) if log_link else eta)
    np.testing.assert_allclose(model.predict(X, fhe="execute"), model.predict(X))
    np.testing.assert_allclose(model.predict(X), float_model.predict(X), rtol=0.05, atol=0.05)
    assert abs(model.score(X, y) - float_model.score(X, y)) < 0.02


def test_model_without_weights_still_runs_encrypted():
    X, y = _small_data(FHELasso)
    model = FHELasso(alpha=100.0).fit(X, y)
    assert not model.quantized_layer_.q_weights.any()
    np.testing.assert_allclose(model.predict(X, fhe="execute"), model.sklearn_model_.predict(X),
                               atol=1e-9)


def test_multi_output_regression():
    X, Y = make_regression(n_samples=200, n_features=5, n_targets=3, random_state=0)
    model = FHERidge().fit(X, Y)
    out = model.predict(X, fhe="execute")
    assert out.shape == (200, 3)
    assert r2_score(Y, out) > model.sklearn_model_.score(X, Y) - 0.01


def test_pipeline_forwards_execute_in_fhe():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), FHELogisticRegression()).fit(X[:400], y[:400])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        encrypted = pipe.predict(X[400:], execute_in_fhe=True)
        clear = pipe.predict(X[400:])
        proba = pipe.predict_proba(X[400:], fhe="execute")
    assert pipe[-1].fhe_circuit is not None  # the encrypted path really ran
    assert np.mean(encrypted == clear) >= 0.995
    np.testing.assert_allclose(proba, pipe.predict_proba(X[400:]), atol=1e-12)


def test_grid_search_over_n_bits_and_C():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), FHELogisticRegression())
    grid = {"fhelogisticregression__n_bits": [3, 8], "fhelogisticregression__C": [0.1, 1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        search = GridSearchCV(pipe, grid, cv=KFold(3, shuffle=True, random_state=0)).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["fhelogisticregression__n_bits"] == 8
    best = search.best_estimator_
    assert best[-1].n_bits == 8
    assert np.mean(best.predict(X[:100], execute_in_fhe=True) == best.predict(X[:100])) >= 0.995
