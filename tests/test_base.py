"""What every FHE estimator shares (exercised through FHELogisticRegression / FHERidge)."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from fheml.base import _split_n_bits, resolve_fhe_mode
from fheml.linear_model import FHELogisticRegression, FHERidge
from fheml.quantization import FHEMLClipWarning


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def fitted(cancer):
    X, y = cancer
    return FHELogisticRegression().fit(X[:400], y[:400])


def test_resolve_fhe_mode():
    assert resolve_fhe_mode(None, False) == "disable"
    assert resolve_fhe_mode(None, True) == "execute"
    for mode in ("disable", "simulate", "execute"):
        assert resolve_fhe_mode(mode, False) == mode
    assert resolve_fhe_mode("execute", True) == "execute"
    with pytest.raises(ValueError, match="fhe must be one of"):
        resolve_fhe_mode("encrypted", False)
    with pytest.raises(ValueError, match="only one of them"):
        resolve_fhe_mode("simulate", True)


def test_split_n_bits():
    assert _split_n_bits(8) == (8, 8)
    assert _split_n_bits({"inputs": 6, "weights": 10}) == (6, 10)
    with pytest.raises(ValueError, match='"inputs" and "weights"'):
        _split_n_bits({"inputs": 6})
    with pytest.raises(ValueError, match="integer >= 2"):
        _split_n_bits({"inputs": 1, "weights": 8})


def test_n_bits_dict_is_used(cancer):
    X, y = cancer
    model = FHELogisticRegression(n_bits={"inputs": 5, "weights": 9}).fit(X, y)
    assert model.input_quantizer_.qmax_ == 31
    assert np.abs(model.quantized_layer_.q_weights).max() == 255


@pytest.mark.filterwarnings("ignore::fheml.quantization.FHEMLClipWarning")
def test_modes_agree_and_keys_are_reused(fitted, cancer):
    X, _ = cancer
    assert fitted.fhe_circuit is None
    clear = fitted.predict(X[400:])
    circuit = fitted.compile(X[:400])
    assert circuit is fitted.fhe_circuit
    assert circuit.parameters is not None and circuit.max_bit_width <= 30
    np.testing.assert_array_equal(fitted.predict(X[400:], fhe="disable"), clear)
    np.testing.assert_array_equal(fitted.predict(X[400:], fhe="simulate"), clear)
    encrypted = fitted.predict(X[400:], execute_in_fhe=True)
    keys = circuit.client.secret_keys
    assert keys is not None
    np.testing.assert_array_equal(fitted.predict(X[400:], fhe="execute"), encrypted)
    assert circuit.client.secret_keys is keys  # generated once, reused
    assert np.mean(encrypted == clear) >= 0.995


def test_encrypted_predict_is_one_batch(cancer, monkeypatch):
    X, y = cancer
    model = FHELogisticRegression().fit(X, y)
    circuit = model.compile(X)
    calls = []
    run = circuit.server.run

    def counting_run(args, keys, **kwargs):
        # rows of a packed call, else the batch axis of the one LWE argument
        calls.append(args.rows if args.rows is not None else args.values[0].shape[0])
        return run(args, keys, **kwargs)

    monkeypatch.setattr(circuit.server, "run", counting_run)
    model.predict(X[:120], fhe="execute")
    assert calls == [120]


def test_lazy_compile_on_first_encrypted_predict(cancer):
    X, y = cancer
    model = FHELogisticRegression().fit(X, y)
    out = model.decision_function(X[:20], fhe="execute")
    assert model.fhe_circuit is not None
    np.testing.assert_allclose(out, model.decision_function(X[:20]), rtol=0, atol=1e-9)


def test_refit_drops_the_circuit(cancer):
    X, y = cancer
    model = FHELogisticRegression().fit(X, y)
    model.compile(X)
    model.fit(X[:300], y[:300])
    assert model.fhe_circuit is None


def test_pickle_round_trip_without_keys(cancer):
    X, y = cancer
    model = FHELogisticRegression().fit(X, y)
    expected = model.predict(X[:50], fhe="execute")  # compiles and generates keys
    secret = model.fhe_circuit.client.secret_keys.to_bytes()
    blob = pickle.dumps(model)
    assert secret[-256:] not in blob
    assert model.fhe_circuit is not None  # pickling does not touch the live model
    loaded = pickle.loads(blob)
    assert loaded.fhe_circuit is None
    np.testing.assert_array_equal(loaded.predict(X[:50]), model.predict(X[:50]))
    np.testing.assert_array_equal(loaded.predict(X[:50], fhe="execute"), expected)


def test_quantize_input_and_dequantize_output(fitted, cancer):
    X, _ = cancer
    q = fitted.quantize_input(X[:10])
    assert q.dtype == np.int64 and q.min() >= 0 and q.max() <= 255
    acc = fitted.quantized_layer_.accumulate(q)
    np.testing.assert_allclose(fitted.dequantize_output(acc)[:, 0],
                               fitted.decision_function(X[:10]))


def test_fit_benchmark_returns_independent_float_model(cancer):
    X, y = cancer
    fhe_model, float_model = FHELogisticRegression(C=0.5).fit_benchmark(X, y)
    assert isinstance(float_model, LogisticRegression) and float_model.C == 0.5
    assert float_model is not fhe_model.sklearn_model_
    np.testing.assert_array_equal(float_model.coef_, fhe_model.coef_)
    assert np.mean(fhe_model.predict(X) == float_model.predict(X)) >= 0.98


def test_from_sklearn_model(cancer):
    X, y = cancer
    sk = LogisticRegression(C=0.3).fit(X, y)
    model = FHELogisticRegression.from_sklearn_model(sk, X, n_bits=7, p_error=2**-30)
    assert (model.C, model.n_bits, model.p_error) == (0.3, 7, 2**-30)
    fitted = FHELogisticRegression(C=0.3, n_bits=7).fit(X, y)
    np.testing.assert_allclose(model.decision_function(X), fitted.decision_function(X))
    np.testing.assert_array_equal(model.predict(X[:30], fhe="execute"), model.predict(X[:30]))
    with pytest.raises(TypeError, match="expects a fitted LogisticRegression"):
        FHELogisticRegression.from_sklearn_model(Ridge().fit(X, y), X)
    with pytest.raises(Exception, match="not fitted"):
        FHELogisticRegression.from_sklearn_model(LogisticRegression(), X)
    with pytest.raises(ValueError, match="features"):
        FHELogisticRegression.from_sklearn_model(sk, X[:, :5])


def test_bad_inputs_are_rejected(fitted, cancer):
    X, _ = cancer
    for bad in (np.nan, np.inf):
        Xb = X[:3].copy()
        Xb[1, 2] = bad
        for fhe in ("disable", "execute"):
            with pytest.raises(ValueError, match="NaN|infinity"):
                fitted.predict(Xb, fhe=fhe)
    with pytest.raises(ValueError, match="expecting 30 features"):
        fitted.predict(X[:3, :10], fhe="execute")
    with pytest.raises(ValueError, match="fhe must be one of"):
        fitted.predict(X[:3], fhe="yes")


def test_out_of_range_inputs_are_clipped_with_a_warning(cancer):
    X, y = cancer
    fitted = FHELogisticRegression().fit(X[:400], y[:400])
    far = X[:5] * 100
    with pytest.warns(FHEMLClipWarning, match="outside the range seen at calibration"):
        clipped = fitted.decision_function(far)
    lo, hi = fitted.input_quantizer_.data_min_, fitted.input_quantizer_.data_max_
    with warnings.catch_warnings():
        warnings.simplefilter("error", FHEMLClipWarning)
        np.testing.assert_allclose(clipped, fitted.decision_function(np.clip(far, lo, hi)))


def test_too_many_bits_is_a_clear_error(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match=r"needs \d+ bits .*lower n_bits"):
        FHELogisticRegression(n_bits=16).fit(X, y)


def test_zero_weight_rows_do_not_widen_the_calibration():
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    X_out = np.vstack([X, 100 * np.ones((1, 3))])
    y_out = np.append(y, 0.0)
    weights = np.append(np.ones(60), 0.0)
    a = FHERidge().fit(X_out, y_out, sample_weight=weights)
    b = FHERidge().fit(X, y)
    np.testing.assert_allclose(a.input_quantizer_.data_max_, b.input_quantizer_.data_max_)
