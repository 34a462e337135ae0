"""Trees and ensembles through the deployment artifacts (client encodes unary bits, the
server regenerates only the columns its trees read)."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer, ModelMismatchError
from fheml.ensemble import FHEGradientBoostingClassifier, FHEHistGradientBoostingRegressor
from fheml.tree import FHEDecisionTreeClassifier, FHEDecisionTreeRegressor


def _deploy(model, X, tmp_path):
    FHEModelDev(tmp_path, model).save()
    client, server = FHEModelClient(tmp_path), FHEModelServer(tmp_path)
    keys = server.load_evaluation_keys(client.get_serialized_evaluation_keys())
    return client, server, keys, server.run(client.quantize_encrypt_serialize(X), keys)


def _check_methods(model, client, answer, X):
    for method in client.client_model.methods:
        # Lookups at p_error 2^-40: the decrypted sums are the clear ones, exactly.
        np.testing.assert_array_equal(client.deserialize_decrypt_dequantize(answer, method),
                                      getattr(model, method)(X, fhe="disable"))


def test_decision_tree_classifier(tmp_path):
    X, y = load_iris(return_X_y=True)
    model = FHEDecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    client, server, keys, answer = _deploy(model, X[::10], tmp_path)
    _check_methods(model, client, answer, X[::10])
    assert client.client_model.default_method == "predict_proba"
    assert np.mean(client.deserialize_decrypt_dequantize(answer, "predict") == y[::10]) > 0.9
    # The client artifact has the bins, not the tree: no threshold the tree chose is needed
    # to encode, and the server alone knows which encrypted bits the trees read.
    client_bytes = (tmp_path / "client.fheml").read_bytes()
    used = np.asarray(model.circuit_plan_.used_columns, dtype="<i8").tobytes()
    assert used in (tmp_path / "server.fheml").read_bytes() and used not in client_bytes
    # A request with another number of input bits is a mismatch, refused before expansion.
    bad = FHEDecisionTreeClassifier(max_depth=3).fit(X[:, :3], y)
    FHEModelDev(tmp_path / "other", bad).save()
    with pytest.raises(ModelMismatchError):
        server.run(FHEModelClient(tmp_path / "other").quantize_encrypt_serialize(X[:2, :3]), keys)


def test_gradient_boosting_binary_with_decision_function(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FHEGradientBoostingClassifier(n_estimators=5, max_depth=2,
                                              random_state=0).fit(X, y)
    client, _, _, answer = _deploy(model, X[:12], tmp_path)
    assert "decision_function" in client.client_model.methods
    _check_methods(model, client, answer, X[:12])


def test_decision_tree_regressor(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    model = FHEDecisionTreeRegressor(max_depth=3).fit(X, y)
    client, _, _, answer = _deploy(model, X[:8], tmp_path)
    assert client.client_model.link == "identity"
    _check_methods(model, client, answer, X[:8])


@pytest.mark.slow
def test_poisson_regressor_log_link_on_the_client(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    model = FHEHistGradientBoostingRegressor(loss="poisson", max_iter=5, max_depth=2).fit(X, y)
    client, _, _, answer = _deploy(model, X[:8], tmp_path)
    assert client.client_model.link == "log"
    _check_methods(model, client, answer, X[:8])
