"""The FHE MLPs: scikit-learn compliance, quantization-aware training, encrypted runs."""

import inspect
import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fheml.neural_network import (
    FHEMLPClassifier,
    FHEMLPRegressor,
    _QATNetwork,
    _rounding_lsbs,
    _rounding_noise,
    _tie_offsets,
    _training_noise,
)
from tests.compiler.conftest import use_cached_keys

# The defaults are the quantization-aware training settings (see the docstring).
QAT = {"random_state": 0}

# ------------------------------------------------------------- scikit-learn checks ---------

EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "stochastic mini-batch training: a weight of 2 and a repeated row do not give the "
        "same batches (scikit-learn's MLPs, solver adam, behave the same)",
}


def _small(cls):
    # quantization-aware settings (see the class docstring): the check of regressors asks
    # for R² > 0.5 on a noisy set, which training stopped by the noisy loss misses
    return cls(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=1e-2,
               n_iter_no_change=100, random_state=0)


@parametrize_with_checks([_small(FHEMLPClassifier), _small(FHEMLPRegressor)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_parameters_are_the_wrapped_ones_less_the_solver_specific():
    for cls, sk in ((FHEMLPClassifier, MLPClassifier), (FHEMLPRegressor, MLPRegressor)):
        ours = dict(inspect.signature(cls).parameters)
        theirs = dict(inspect.signature(sk).parameters)
        excluded = {"solver", "learning_rate", "power_t", "momentum", "nesterovs_momentum",
                    "max_fun"}
        # documented changes for quantization-aware training (see the class docstring)
        changed = {"learning_rate_init": 3e-3, "max_iter": 400, "n_iter_no_change": 1000}
        for name, p in theirs.items():
            if name in excluded:
                assert name not in ours
            elif name in changed:
                assert ours[name].default == changed[name] != p.default, name
                assert f"{name} : int, default={changed[name]}" in cls.__doc__ or \
                    f"{name} : float, default={changed[name]}" in cls.__doc__
            else:
                assert ours[name].default == p.default, name
        assert {"n_bits", "n_w_bits", "n_a_bits", "n_accum_bits", "alpha_l1"} <= set(ours)
        for name in excluded:
            assert f"``{name}``" in cls.__doc__
    assert FHEMLPRegressor().n_accum_bits == 5 and FHEMLPClassifier().n_accum_bits == 4
    assert "n_accum_bits : int, default=5" in FHEMLPRegressor.__doc__


# ----------------------------------------------------------------------- data ------------

def _split(loader):
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


@pytest.fixture(scope="module")
def cancer():
    return _split(load_breast_cancer)


@pytest.fixture(scope="module")
def cancer_model(cancer):
    X_train, _, y_train, _ = cancer
    return FHEMLPClassifier((30, 20), **QAT).fit(X_train, y_train)


# ---------------------------------------------------------------- acceptance -------------

@pytest.mark.parametrize("loader, hidden, extra", [
    (load_iris, (30, 20), {"batch_size": 32}),
    (load_breast_cancer, (30, 20), {}),
    (load_digits, (64, 32), {}),
], ids=["iris", "breast_cancer", "digits"])
def test_accuracy_within_two_points_of_float(loader, hidden, extra):
    X_train, X_test, y_train, y_test = _split(loader)
    float_accuracy = MLPClassifier(hidden, random_state=0).fit(X_train, y_train).score(
        X_test, y_test)
    model = FHEMLPClassifier(hidden, **QAT, **extra).fit(X_train, y_train)  # defaults
    assert model.score(X_test, y_test) >= float_accuracy - 0.02
    model.compile(X_train)  # the default configuration compiles
    # Every hidden neuron is one lookup of at most n_accum_bits bits: checked on the bounds
    # of the integer program, whatever the input (no compilation needed here).
    for layer in model.quantized_.hidden:
        lo = layer["input_max"] * np.minimum(layer["weights"], 0).sum(axis=0) + layer["bias"]
        hi = layer["input_max"] * np.maximum(layer["weights"], 0).sum(axis=0) + layer["bias"]
        assert lo.min() >= 0
        assert ((hi + (1 << layer["lsbs"] - 1)) >> layer["lsbs"]).max() < 2 ** model.n_accum_bits


def test_regression_within_0_02_r2_of_float():
    X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
    y = (y - y.mean()) / y.std()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    float_r2 = MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=500, random_state=0).fit(
        X_train, y_train).score(X_test, y_test)
    # the regressor's defaults: finer activations and lookups than the classifier's
    model = FHEMLPRegressor(hidden_layer_sizes=(32, 16), **QAT).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= float_r2 - 0.02
    assert model.compile(X_train).statistics["lookup_precision"] == 5


# ------------------------------------------------------------ integer program ------------

def test_integer_program_is_the_trained_network(cancer_model, cancer):
    """The clear program reproduces the quantized forward pass the training optimised."""
    _, X_test, _, _ = cancer
    q = cancer_model.quantize_input(X_test)
    network = _QATNetwork(cancer_model.coefs_, cancer_model.intercepts_, "relu",
                          cancer_model.input_quantizer_, cancer_model.n_w_bits,
                          cancer_model.n_a_bits, cancer_model.n_accum_bits,
                          cancer_model._ranges_)
    trained, _ = network.forward(q)
    program = cancer_model.dequantize_output(cancer_model.quantized_.program(q))
    np.testing.assert_allclose(program, trained, rtol=1e-12, atol=1e-9)


def test_tie_offsets_keep_the_rounding_and_leave_the_ties():
    rng = np.random.default_rng(0)
    q = rng.integers(-3, 4, (12, 40)) * 2 ** rng.integers(0, 4, 40)  # shared powers of two
    lsbs, _ = _rounding_lsbs(q, 7, 4)
    offsets = _tie_offsets(q, lsbs)
    x = rng.integers(0, 8, (2000, 12))
    acc = x @ q
    step = 2.0 ** lsbs
    np.testing.assert_array_equal(np.floor((acc + offsets) / step + 0.5),
                                  np.floor(acc / step + 0.5))
    # with room (an offset), no value is closer than the offset to a rounding boundary
    distance = np.abs((acc + offsets + step / 2) % step)
    distance = np.minimum(distance, step - distance)
    room = offsets > 0
    assert room.any() and (distance[:, room] >= offsets[room]).all()
    tie = (acc % step == step / 2) & (lsbs > 0)
    assert tie[:, room].any()  # these ties were on a boundary before the offsets


def test_one_narrow_lookup_per_hidden_neuron(cancer_model, cancer):
    X_train, X_test, _, _ = cancer
    circuit = cancer_model.compile(X_train)
    stats = circuit.statistics
    assert stats["lookups"] == 30 + 20
    assert set(stats["lookups_by_precision"]) <= {1, 2, 3, 4}
    assert stats["lookup_precision"] <= cancer_model.n_accum_bits
    assert stats["levels"] == 2
    # the clear circuit is the integer program
    q = cancer_model.quantize_input(X_test)
    np.testing.assert_array_equal(circuit.run(q), cancer_model.quantized_.program(q))
    # simulation draws the encrypted rounding flips: a few rows near the decision
    # boundary may change (measured 1-3 % on this split), most do not
    clear = cancer_model.predict(X_test)
    assert np.mean(cancer_model.predict(X_test, fhe="simulate") == clear) >= 0.95


def test_encrypted_batch_matches_the_clear_program(cancer_model, cancer):
    X_train, X_test, _, _ = cancer
    use_cached_keys(cancer_model.compile(X_train))
    rows = X_test[:6]
    encrypted = cancer_model.predict(rows, fhe="execute")  # one batch, one server call
    # A value near a rounding tie may round the other way encrypted (the training injects
    # that noise); predictions agree on >= 99 % of rows in the slow test below.
    assert np.mean(encrypted == cancer_model.predict(rows)) >= 5 / 6
    proba = cancer_model.predict_proba(rows[:2], fhe="execute")
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("loader, hidden, rows, extra", [
    (load_iris, (30, 20), 38, {"batch_size": 32}),
    (load_breast_cancer, (30, 20), 143, {}),
    (load_digits, (64, 32), 100, {}),
], ids=["iris", "breast_cancer", "digits"])
def test_encrypted_equals_clear_on_99_percent(loader, hidden, rows, extra):
    X_train, X_test, y_train, _ = _split(loader)
    model = FHEMLPClassifier(hidden, **QAT, **extra).fit(X_train, y_train)
    model.compile(X_train)
    encrypted = model.predict(X_test[:rows], fhe="execute")
    assert np.mean(encrypted == model.predict(X_test[:rows])) >= 0.99


# --------------------------------------------------------------- scikit-learn use --------

def test_pipeline_gridsearch_pickle(cancer):
    X_train, X_test, y_train, _ = cancer
    pipe = make_pipeline(StandardScaler(), FHEMLPClassifier((8,), max_iter=50, **QAT))
    search = GridSearchCV(pipe, {"fhemlpclassifier__n_a_bits": [2, 3]}, cv=2).fit(
        X_train, y_train)
    best = search.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(again.predict(X_test), best.predict(X_test))
    np.testing.assert_array_equal(again.predict_proba(X_test), best.predict_proba(X_test))


def test_pickle_drops_the_circuit(cancer_model):
    cancer_model.compile()
    again = pickle.loads(pickle.dumps(cancer_model))
    assert again.fhe_circuit is None and cancer_model.fhe_circuit is not None


def test_multiclass_multilabel_and_regression_outputs(cancer):
    X, _, _, _ = cancer
    rng = np.random.default_rng(0)
    y3 = rng.integers(0, 3, len(X))
    model = FHEMLPClassifier((6,), max_iter=5, random_state=0).fit(X, y3)
    assert model.predict_proba(X[:4]).shape == (4, 3)
    labels = rng.integers(0, 2, (len(X), 2))
    model = FHEMLPClassifier((6,), max_iter=5, random_state=0).fit(X, labels)
    assert model.predict(X[:4]).shape == (4, 2)
    targets = rng.normal(size=(len(X), 2))
    model = FHEMLPRegressor(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(X, targets)
    assert model.predict(X[:4]).shape == (4, 2)
    if "loss" in FHEMLPRegressor().get_params():  # scikit-learn >= 1.7
        counts = rng.poisson(2.0, len(X))
        model = FHEMLPRegressor(loss="poisson", hidden_layer_sizes=(6,), max_iter=5,
                                random_state=0).fit(X, counts)
        assert (model.predict(X[:4]) > 0).all()


# ------------------------------------------------------------------ training loop --------

def test_verbose_early_stopping_and_warm_start(cancer, capsys):
    X, _, y, _ = cancer
    model = FHEMLPClassifier((8,), max_iter=15, verbose=True, early_stopping=True,
                             n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Validation score: " in out
    assert len(model.validation_scores_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)
    first = [c.copy() for c in model.coefs_]
    model.set_params(warm_start=True, verbose=False, early_stopping=False, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    # continued from the previous weights (a fresh start would be far from them)
    assert max(np.abs(a - b).max() for a, b in zip(first, model.coefs_)) < 0.1


def test_quantile_calibration_narrows_the_input_ranges(cancer):
    X, _, y, _ = cancer
    ranges = {}
    for calibration in ("minmax", "quantile"):
        model = FHEMLPClassifier((4,), max_iter=2, calibration=calibration,
                                 random_state=0).fit(X, y)
        ranges[calibration] = model.input_quantizer_.scale_
    assert (ranges["quantile"] <= ranges["minmax"]).all()
    assert (ranges["quantile"] < ranges["minmax"]).any()


def test_max_iter_warns_like_scikit_learn(cancer):
    X, _, y, _ = cancer
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        FHEMLPClassifier((4,), max_iter=3, n_iter_no_change=2, random_state=0).fit(X, y)
    # n_iter_no_change >= max_iter (the default) asks for max_iter epochs: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert FHEMLPClassifier((4,), max_iter=2, random_state=0).fit(X, y).n_iter_ == 2


# -------------------------------------------------------- post-training quantization -----

def test_from_sklearn_model_warns_with_the_accuracy_lost(cancer):
    X_train, X_test, y_train, y_test = cancer
    float_model = MLPClassifier((30, 20), random_state=0, max_iter=300).fit(X_train, y_train)
    with pytest.warns(UserWarning, match=r"lost \d+\.\d points of accuracy"):
        model = FHEMLPClassifier.from_sklearn_model(float_model, X_train, y_train, n_w_bits=2,
                                                    n_a_bits=2, n_accum_bits=2)
    assert model.hidden_layer_sizes == (30, 20) and model.n_accum_bits == 2
    # with fine quantization, little is lost: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fine = FHEMLPClassifier.from_sklearn_model(float_model, X_train, n_w_bits=6,
                                                   n_a_bits=6, n_accum_bits=8)
    assert fine.score(X_test, y_test) >= float_model.score(X_test, y_test) - 0.02
    with pytest.raises(TypeError, match="expects a fitted MLPClassifier"):
        FHEMLPClassifier.from_sklearn_model(MLPRegressor(), X_train)


# ---------------------------------------------------------------------- errors ----------

def test_uncompilable_configuration_names_the_layer_and_the_parameter(cancer):
    X, _, y, _ = cancer
    model = FHEMLPClassifier((64,), max_iter=3, n_w_bits=8, n_a_bits=8, random_state=0,
                             p_error=2.0 ** -80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    with pytest.raises(ValueError, match=r"output layer \(64 inputs -> 1 scores\).*n_w_bits"):
        model.compile()


def test_training_noise_is_at_least_that_of_2_to_the_minus_80():
    """Quiet lookups (the classifier's p_error=2**-500) are trained at the rounding noise of
    2**-80 lookups: a network trained at its own lower noise keeps smaller margins."""
    floor = _rounding_noise(2.0 ** -80, None, 50)
    assert _training_noise(2.0 ** -500, None, 50) == floor
    assert _training_noise(None, None, 50) == _rounding_noise(None, None, 50) > floor
    assert _training_noise(2.0 ** -80, 2.0 ** -200, 50) == floor
    assert FHEMLPClassifier().p_error == 2.0 ** -500
    assert FHEMLPRegressor().p_error is None


def test_quiet_default_lookups_use_the_larger_polynomial(cancer_model, cancer):
    """The classifier's default buys N=4096 lookups (the modulus switch of N=2048 alone is
    0.033 of a rounding step, more than the 0.019 of 2**-500)."""
    X_train = cancer[0]
    params = cancer_model.compile(X_train).parameters
    assert params.polynomial_size >= 4096
    assert params.log2_p_fail() <= -500 + 1e-9
