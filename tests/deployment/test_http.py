"""The HTTP service as a real separate process over loopback, with real client processes."""

import http.client
import json
import os
import pathlib
import selectors
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import fheml  # noqa: E402
from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer  # noqa: E402
from fheml.deployment.http_client import HTTPClient, ServiceHTTPError  # noqa: E402
from fheml.linear_model import FHELogisticRegression  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::fheml.quantization.FHEMLClipWarning")
ENV = dict(os.environ, PYTHONPATH=str(REPO))
MiB = 1 << 20


def _start_service(model_dir, *options, timeout=60):
    """Start ``python -m fheml serve`` on a free loopback port; return (process, url)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fheml", "serve", str(model_dir), "--host", "127.0.0.1",
         "--port", "0", "--log-level", "warning", *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, cwd=REPO, text=True)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = proc.stdout.readline()
            if "http://" in line:
                return proc, line.strip().split()[-1]
            if not line:
                break
    proc.kill()
    raise RuntimeError(f"the service did not start: {proc.stdout.read()}")


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


def _raw(url, method, path, body=None, headers=None):
    """(status, JSON or bytes) of one request, without the client class."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.getheader("content-type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A saved logistic regression, served by a separate process with small limits."""
    root = tmp_path_factory.mktemp("http")
    X, y = load_breast_cancer(return_X_y=True)
    model = FHELogisticRegression(solver="newton-cholesky").fit(X[:400], y[:400])
    FHEModelDev(root / "model", model).save()
    small = FHELogisticRegression(n_bits=4, solver="newton-cholesky").fit(X[:400, :5], y[:400])
    FHEModelDev(root / "other", small).save()
    proc, url = _start_service(root / "model", "--max-request-mib", "1", "--max-key-mib", "1",
                               "--max-keys", "3")
    try:
        yield root, url, model, X[400:]
    finally:
        _stop(proc)


def test_two_concurrent_client_processes_with_bad_requests_interleaved(service):
    root, url, model, X = service
    procs = []
    for k, rows in enumerate((X[:100], X[100:150])):
        np.save(root / f"x{k}.npy", rows, allow_pickle=False)
        procs.append(subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).with_name("http_client_process.py")),
             url, str(root / "model"), str(root / f"keys{k}"), str(root / f"x{k}.npy"),
             str(root / f"out{k}.npy"), "4"], env=ENV, cwd=REPO))
    # Bad requests while both clients run: each gets its 4xx, nothing else is disturbed.
    bad_client = HTTPClient(url, root / "model")
    key_id = bad_client.upload_keys()
    truncated = bad_client.client.quantize_encrypt_serialize(X[:5])[:-3]
    deadline = time.monotonic() + 120
    bad = 0
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        for path, body, headers, status, code in [
                ("/predict", b"garbage" * 10, {"fheml-key-id": key_id}, 400, "malformed"),
                ("/predict", truncated, {"fheml-key-id": key_id}, 400, "malformed"),
                ("/predict", truncated, {"fheml-key-id": "made-up"}, 404, "unknown_key_id"),
                ("/keys", b"\0" * 100, {}, 400, "malformed")]:
            got_status, got = _raw(url, "POST", path, body, headers)
            assert (got_status, got["error"]) == (status, code)
            bad += 1
    for p in procs:
        assert p.wait(timeout=max(1, deadline - time.monotonic())) == 0
    assert bad >= 2
    # Each client got the answers for its own rows: those of the in-process model.
    np.testing.assert_array_equal(np.load(root / "out0.npy"), model.predict_proba(X[:100]))
    np.testing.assert_array_equal(np.load(root / "out1.npy"), model.predict_proba(X[100:150]))


def test_same_answer_as_in_process_execution(service):
    root, url, model, X = service
    http = HTTPClient(url, root / "model")
    request = http.client.quantize_encrypt_serialize(X[:20])
    over_http = http.run(request)
    in_process = FHEModelServer(root / "model").run(
        request, http.client.get_serialized_evaluation_keys())
    for answer in (over_http, in_process):
        np.testing.assert_array_equal(http.client.deserialize_decrypt(answer),
                                      model.quantized_layer_.accumulate(model.quantize_input(X[:20])))
    np.testing.assert_array_equal(http.predict(X[:20], method="predict"), model.predict(X[:20]))
    http.delete_keys()


def _error(call):
    with pytest.raises(ServiceHTTPError) as info:
        call()
    return info.value


def test_every_bad_request_gets_a_clear_4xx_and_the_service_keeps_serving(service):
    root, url, model, X = service
    good = HTTPClient(url, root / "model")
    key_id = good.upload_keys()
    request = good.client.quantize_encrypt_serialize(X[:3])
    expected = model.predict_proba(X[:3])

    def still_serving():
        np.testing.assert_array_equal(
            good.client.deserialize_decrypt_dequantize(good.run(request)), expected)

    other_model = FHEModelClient(root / "other")
    other_keys = FHEModelClient(root / "model")  # same model, its own keys
    cases = [
        # (method, path, body, headers, status, code, words of the detail)
        ("POST", "/predict", b"junk", {"fheml-key-id": key_id}, 400, "malformed", "too short"),
        ("POST", "/predict", request[:-7], {"fheml-key-id": key_id}, 400, "malformed",
         "corrupted or truncated"),
        ("POST", "/predict", request[:40] + b"x" + request[41:], {"fheml-key-id": key_id}, 400,
         "malformed", ""),
        ("POST", "/predict", b"\0" * (2 * MiB), {"fheml-key-id": key_id}, 413, "too_large",
         "limit"),
        ("POST", "/predict", request, {}, 400, "missing_key_id", "POST /keys"),
        ("POST", "/predict", request, {"fheml-key-id": "A" * 43}, 404, "unknown_key_id",
         "upload the evaluation keys again"),
        ("POST", "/predict", other_model.quantize_encrypt_serialize(X[:2, :5]),
         {"fheml-key-id": key_id}, 422, "mismatch", "made for model"),
        ("POST", "/predict", other_keys.quantize_encrypt_serialize(X[:2]),
         {"fheml-key-id": key_id}, 422, "mismatch", "encrypted under other keys"),
        ("POST", "/keys", other_model.get_serialized_evaluation_keys(), {}, 422, "mismatch",
         "other cryptographic parameters"),
        ("POST", "/keys", request, {}, 400, "malformed", "expected a serialized evaluation-keys"),
        ("POST", "/keys", b"\0" * (2 * MiB), {}, 413, "too_large", "limit"),
        ("DELETE", "/keys/never-issued", None, {}, 404, "unknown_key_id", ""),
        ("GET", "/predict", None, {}, 405, "method_not_allowed", ""),
        ("GET", "/admin", None, {}, 404, "not_found", ""),
    ]
    for method, path, body, headers, status, code, words in cases:
        got_status, got = _raw(url, method, path, body, headers)
        assert (got_status, got["error"]) == (status, code), (path, got)
        assert words in got["detail"]
        still_serving()
    # A broken HTTP request is refused by the server's HTTP parser itself.
    assert _raw(url, "POST", "/keys", b"x" * 10, {"Content-Length": "ten"})[0] == 400
    still_serving()
    # A deleted key id is gone for good.
    good.delete_keys()
    assert _error(lambda: HTTPClient(url, good.client)._request(
        "POST", "/predict", request, {"fheml-key-id": key_id})).status == 404


def test_key_store_is_bounded_and_evicts_the_least_recently_used(service):
    root, url, _, X = service
    clients = [HTTPClient(url, root / "model") for _ in range(4)]
    for c in clients[:3]:
        c.upload_keys()
    clients[0].predict(X[:1])  # the first becomes the most recently used
    evicted_before = clients[0].model_info()["keys_evicted"]
    clients[3].upload_keys()   # over max_keys=3: the least recently used (the second) goes
    assert clients[0].model_info()["keys_evicted"] >= evicted_before + 1
    err = _error(lambda: clients[1].run(clients[1].client.quantize_encrypt_serialize(X[:1])))
    assert (err.status, err.code) == (404, "unknown_key_id")
    clients[0].predict(X[:1])
    clients[3].predict(X[:1])


def test_health_metadata_and_client_artifact(service):
    root, url, _, _ = service
    http = HTTPClient(url, root / "model")
    assert http.health() == {"status": "ok"}
    info = http.model_info()
    assert info["model"] == "FHELogisticRegression" and info["model_id"] == http.client.model_id
    assert info["limits"]["max_request_bytes"] == MiB and info["limits"]["max_keys"] == 3
    assert info["inputs"] == [{"name": "x", "shape": [30], "encrypted": True}]
    status, data = _raw(url, "GET", "/client")
    assert status == 200 and data == (root / "model" / "client.fheml").read_bytes()


def test_a_long_batch_does_not_stall_other_clients(tmp_path):
    @fheml.compiler({"x": "encrypted"})
    def f(x):
        return fheml.univariate(lambda v: (v * 3 + 1) % 4)(x)

    FHEModelDev(tmp_path, f.compile(np.arange(4))).save()
    proc, url = _start_service(tmp_path, "--max-key-mib", "64")
    try:
        http = HTTPClient(url, tmp_path)
        http.upload_keys()
        x = np.arange(240) % 4
        result = {}
        worker = threading.Thread(target=lambda: result.update(y=http.predict(x)))
        worker.start()
        latencies = []
        time.sleep(0.3)
        while worker.is_alive() and len(latencies) < 200:
            t0 = time.perf_counter()
            assert _raw(url, "GET", "/health")[0] == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
        worker.join(timeout=120)
        assert len(latencies) >= 3, "the batch finished too fast to observe"
        assert max(latencies) < 1.0
        np.testing.assert_array_equal(result["y"], (x * 3 + 1) % 4)
    finally:
        _stop(proc)
