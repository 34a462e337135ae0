"""The deployed server checks a request against the circuit and its limits before it expands
the request's seeded masks (issue 7): a lying dimension is a mismatch, not gigabytes."""

import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from fheml._core.serialization import LimitExceededError, pack, unpack
from fheml.compiler import ServerLimits
from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer, ModelMismatchError
from fheml.linear_model import FHELogisticRegression


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    X, y = load_breast_cancer(return_X_y=True)
    path = tmp_path_factory.mktemp("model")
    FHEModelDev(path, FHELogisticRegression(n_bits=4).fit(X, y)).save()
    client = FHEModelClient(path)
    server = FHEModelServer(path)
    keys = server.load_evaluation_keys(client.get_serialized_evaluation_keys())
    return X, client, server, keys, path


def _with_inner(request, edit):
    """The request with its inner circuit arguments edited (envelope resealed)."""
    header, (payload,) = unpack(request, "model-input")
    inner_header, arrays = unpack(payload.tobytes(), "circuit-args")
    edit(inner_header, arrays)
    inner = np.frombuffer(pack("circuit-args", inner_header, arrays), np.uint8)
    return pack("model-input", header, [inner])


@pytest.mark.parametrize("packing", [False, True], ids=["lwe", "packed"])
def test_lying_dimension_is_refused_before_expansion(deployed, monkeypatch, packing):
    X, client, server, keys, _ = deployed
    monkeypatch.setattr(client.client, "uses_packing", lambda rows: packing)
    request = client.quantize_encrypt_serialize(X[:2])
    if packing:  # the GLWE polynomial size
        lie = _with_inner(request, lambda h, a: h["packed"].__setitem__("polynomial_size",
                                                                         2 ** 17))
    else:
        lie = _with_inner(request, lambda h, a: h["items"][0].__setitem__("dimension", 2 ** 17))
    tracemalloc.start()
    try:
        with pytest.raises(ModelMismatchError, match="layout" if packing else "dimension"):
            server.run(lie, keys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the honest expansion of this lie: 2 rows x 30 features x 2^17 words = 63 MB
    assert peak < 4 << 20


def test_server_limits_apply_to_deployed_requests(deployed):
    X, client, server, keys, path = deployed
    request = client.quantize_encrypt_serialize(X[:3])
    assert client.deserialize_decrypt_dequantize(server.run(request, keys)).shape[0] == 3
    limited = FHEModelServer(path)
    limited.server.limits = ServerLimits(max_batch_rows=2)
    with pytest.raises(LimitExceededError, match="max_batch_rows"):
        limited.run(request, keys)
