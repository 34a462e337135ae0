"""The scikit-learn habits users bring, on the shared estimator base (issue 8, items 4-8).

Shown on FHELogisticRegression / FHELinearRegression: the behaviour lives in
fheml/base.py and the compiler, so every FHE estimator has it.
"""

import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fheml
from fheml.linear_model import FHELinearRegression, FHELogisticRegression
from fheml.quantization import FHEMLClipWarning


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _encrypted(model):
    """Whether the model ran encrypted: its circuit's client holds keys."""
    circuit = model.fhe_circuit
    return circuit is not None and circuit.client.secret_keys is not None


# -- item 7: encrypted mode through meta-estimators -------------------------------------------

def test_config_context_runs_pipeline_score_and_decision_function_encrypted(cancer):
    X, y = cancer
    pipe = make_pipeline(StandardScaler(), FHELogisticRegression(n_bits=6)).fit(X, y)
    model = pipe[-1]
    clear_score, clear_scores = pipe.score(X[:30], y[:30]), pipe.decision_function(X[:30])
    assert not _encrypted(model)
    with fheml.config_context(fhe="execute"):
        assert pipe.score(X[:30], y[:30]) == clear_score
        np.testing.assert_array_equal(pipe.decision_function(X[:30]), clear_scores)
    assert _encrypted(model)
    assert fheml.get_config()["fhe"] is None


def test_config_context_through_grid_search_and_one_vs_rest(cancer):
    X, y = cancer
    search = GridSearchCV(FHELogisticRegression(n_bits=5), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    ovr = OneVsRestClassifier(FHELogisticRegression(n_bits=5)).fit(X, y)
    expected = search.predict(X[:10]), ovr.predict(X[:10])
    with fheml.config_context(fhe="execute"):
        np.testing.assert_array_equal(search.predict(X[:10]), expected[0])
        np.testing.assert_array_equal(ovr.predict(X[:10]), expected[1])
    assert _encrypted(search.best_estimator_)
    assert all(_encrypted(est) for est in ovr.estimators_)


def test_explicit_fhe_argument_wins_over_the_context(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=5).fit(X, y)
    with fheml.config_context(fhe="execute"):
        model.predict(X[:5], fhe="disable")
    assert not _encrypted(model)


# -- item 8: API sharp edges ------------------------------------------------------------------

def test_mode_arguments_are_keyword_only(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=5).fit(X, y)
    for method in (model.predict, model.predict_proba, model.decision_function):
        with pytest.raises(TypeError):
            method(X[:2], "disable")


def test_from_sklearn_model_refuses_contradicting_parameters_and_missing_x(cancer):
    X, y = cancer
    sk = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match=r"C=5 \(the model has 1.0\)"):
        FHELogisticRegression.from_sklearn_model(sk, X, C=5)
    with pytest.raises(ValueError, match="needs X"):
        FHELogisticRegression.from_sklearn_model(sk, None)
    with pytest.raises(TypeError, match="unknown parameter"):
        FHELogisticRegression.from_sklearn_model(sk, X, colour="red")
    model = FHELogisticRegression.from_sklearn_model(sk, X, C=1.0, p_error=1e-9)
    assert model.C == 1.0 and model.p_error == 1e-9


def test_compile_takes_p_error_global_p_error_and_verbose(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=5).fit(X, y)
    circuit = model.compile(X, p_error=2.0 ** -20, verbose=False)
    assert circuit.statistics["p_error"] == 2.0 ** -20 and circuit.verbose is False
    circuit = model.compile(X, global_p_error=1e-6)
    assert circuit.statistics["p_error"] <= 1e-6


def test_n_jobs_is_validated_at_fit_and_compile(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="n_jobs"):
        FHELogisticRegression(n_jobs=0).fit(X, y)
    model = FHELogisticRegression(n_bits=5).fit(X, y)
    model.set_params(n_jobs=0)
    with pytest.raises(ValueError, match="n_jobs"):
        model.compile(X)


def test_empty_batch_into_a_circuit_returns_an_empty_result():
    linear = fheml.compile(lambda x: x @ np.array([[1], [2], [3]]), np.arange(12).reshape(4, 3))
    lookup = fheml.compile(lambda x: x // 2, np.arange(12).reshape(4, 3))
    for circuit, width in ((linear, 1), (lookup, 3)):
        for mode in ("disable", "simulate", "execute"):
            out = circuit.run(np.zeros((0, 3), int), fhe=mode)
            assert out.shape == (0, width)


def test_fitted_attributes_describe_the_fitted_model_after_set_params(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=8).fit(X, y)
    model.set_params(n_bits=3)
    assert model.n_bits_inputs_ == model.input_quantizer_.n_bits == 8
    assert model.n_bits_weights_ == 8
    model.fit(X, y)
    assert model.n_bits_inputs_ == model.n_bits_weights_ == 3


def test_deepcopy_keeps_the_compiled_circuit_pickle_does_not(cancer):
    X, y = cancer
    model = FHELinearRegression(n_bits=5).fit(X, y.astype(float))
    model.compile(X)
    copied = copy.deepcopy(model)
    assert copied.fhe_circuit is model.fhe_circuit
    assert copied.sklearn_model_ is not model.sklearn_model_
    np.testing.assert_array_equal(copied.predict(X[:5], fhe="execute"), model.predict(X[:5]))
    assert pickle.loads(pickle.dumps(model)).fhe_circuit is None


# -- item 6: clipping warnings that inform, not flood -----------------------------------------

def test_grid_search_warns_once_pointing_at_user_code(cancer):
    X, y = cancer
    X = X.copy()
    X[::7, 0] = 40.0 * (1 + np.arange(len(X[::7])) % 3)  # every fold clips feature 0
    search = GridSearchCV(FHELogisticRegression(n_bits=5), {"C": np.logspace(-2, 2, 4)}, cv=5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        search.fit(X, y)
    clips = [w for w in record if issubclass(w.category, FHEMLClipWarning)]
    assert len(clips) == 1, [str(w.message) for w in clips]
    assert clips[0].filename == __file__
    assert "were clipped" in str(clips[0].message) and "n_clipped_values_" in str(clips[0].message)


def test_clipping_counted_per_model(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=5).fit(X, y)
    with pytest.warns(FHEMLClipWarning, match=r"^3 of 90 input values"):
        model.predict(X[:3] * 1e3 * (np.arange(30) == 0) + X[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        model.predict(X[:2] * 1e3)  # this model already warned
    assert model.n_clipped_values_ == 3 + int(model.input_quantizer_.outside(X[:2] * 1e3).sum())


# -- item 5: calibration that one outlier cannot wreck ----------------------------------------

def test_outlier_row_warns_at_fit_and_quantile_calibration_recovers(cancer):
    X, y = cancer
    X_train, y_train = X[:400].copy(), y[:400]
    X_train[0] = 1e5
    with pytest.warns(FHEMLClipWarning, match=r"dominated by a few rows.*calibration=\"quantile\""):
        minmax = FHELogisticRegression().fit(X_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FHEMLClipWarning)  # clipping at predict is expected
        robust = FHELogisticRegression(calibration="quantile").fit(X_train, y_train)
        float_acc = minmax.sklearn_model_.score(X[400:], y[400:])
        acc_minmax = minmax.score(X[400:], y[400:])
        acc_robust = robust.score(X[400:], y[400:])
    assert acc_robust >= float_acc - 0.03 and acc_robust > acc_minmax + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        FHELogisticRegression().fit(X[:400], y[:400])  # no outlier: no warning


# -- item 4: bounded memory for big batches ---------------------------------------------------

def test_chunked_encrypted_run_gives_the_same_results(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits=6).fit(X, y)
    model.compile(X)
    circuit = model.fhe_circuit
    q = model.quantize_input(X[:50])
    whole = circuit.encrypt_run_decrypt(q, batch_size=50)
    np.testing.assert_array_equal(circuit.encrypt_run_decrypt(q, batch_size=7), whole)
    np.testing.assert_array_equal(whole, circuit.run(q))
    # chunks of whole packed ciphertexts (a row's share of them is far below an LWE row)
    plan = circuit.client.spec.packed
    assert 20 * circuit.bytes_per_row(packed=True) < circuit.bytes_per_row()
    group_mb = plan.slots * circuit.bytes_per_row(packed=True) / 2 ** 20
    with fheml.config_context(working_memory=3.5 * group_mb):
        assert circuit.rows_per_chunk() == 3 * plan.slots
        np.testing.assert_array_equal(model.predict(X[:500], fhe="execute"),
                                      model.predict(X[:500]))
    # a budget below one packed ciphertext of rows: one row at a time
    with fheml.config_context(working_memory=group_mb / 2):
        assert circuit.rows_per_chunk() == 1
        np.testing.assert_array_equal(model.predict(X[:3], fhe="execute"), model.predict(X[:3]))
    with pytest.raises(ValueError, match="batch_size"):
        circuit.encrypt_run_decrypt(q, batch_size=0)


def _peak_mb(rows, features, working_memory, n_bits=8):
    out = subprocess.run([sys.executable, "-m", "tests.peak_memory", str(rows), str(features),
                          str(working_memory), str(n_bits)], capture_output=True, text=True,
                         check=True)
    peak, same = out.stdout.split()
    assert same == "1"  # encrypted predictions equal the clear ones
    return float(peak)


def test_peak_memory_of_a_big_batch_follows_the_budget():
    # 3,000 rows x 30 features unchunked would need ~1.8 GB of ciphertexts
    assert _peak_mb(3000, 30, 64) < 200


@pytest.mark.slow
@pytest.mark.parametrize("rows, features, n_bits", [(10_000, 30, 8), (20, 20_000, 6)])
def test_peak_memory_of_big_batches(rows, features, n_bits):
    # issue 8: 6.0 GB and 11.5 GB before chunking
    assert _peak_mb(rows, features, 256, n_bits) < 600


def test_rare_binary_feature_is_not_an_outlier(cancer):
    X, y = cancer
    X = np.column_stack([X[:400], np.zeros(400)])
    X[3, -1] = 1.0  # one row of 400 has the flag
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        model = FHELogisticRegression(calibration="quantile").fit(X, y[:400])
    assert model.input_quantizer_.data_max_[-1] == 1.0
