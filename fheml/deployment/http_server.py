"""HTTP inference service for a saved model (``fheml serve MODEL_DIR``).

An ASGI application (Starlette, served by uvicorn; ``pip install fheml[serve]``) around
:class:`~fheml.deployment.FHEModelServer`.  A client uploads its evaluation keys once and
gets a key id, then posts encrypted batches naming that id.  All bodies are the bytes of
:mod:`fheml.deployment` (``application/octet-stream``); every error is a JSON object
``{"error": code, "detail": message}`` with a 4xx status (5xx only for a server fault).

Endpoints
---------
``GET /health``
    ``{"status": "ok"}``.
``GET /model``
    Model metadata: name, family, model id, versions, parameters, input and output
    shapes, evaluation key size, and the service limits.
``GET /client``
    The client artifact (``client.fheml``) when the model directory has it (404 otherwise).
``POST /keys``
    Body: evaluation keys.  201 ``{"key_id": ..., "bytes": ...}``.  The key id is a fresh
    random 256-bit token, unrelated to anything the client sent, so one client's id never
    reaches another client's keys.
``DELETE /keys/{key_id}``
    204; the keys are forgotten.
``POST /predict``
    Header ``fheml-key-id``, body: an encrypted request.  200 with the encrypted answer.

Errors: 400 ``malformed`` (not a valid fheml object: garbage, truncated, corrupted, wrong
kind or version) and ``missing_key_id``; 404 ``unknown_key_id`` (never uploaded, deleted
or evicted: upload again) and ``not_found``; 405 ``method_not_allowed``; 413 ``too_large``
(body above the limit); 422 ``mismatch`` (valid data that does not fit this model or
these keys: other model, other parameters, other keys, wrong shapes); 500 ``internal``.

Key store: at most ``max_keys`` key sets and ``max_key_store_bytes`` bytes (memory of the
loaded keys); adding a key set evicts the least recently used ones until both bounds hold.
A key set larger than the whole store is refused with 413.

The encrypted evaluation and the loading of keys (which expands them) run in worker
threads, at most ``max_concurrent_runs`` at a time, so the event loop keeps answering
other clients during a long batch.
"""

import collections
import secrets
import time

from fheml._core.serialization import LimitExceededError, MismatchError, SerializationError
from fheml.deployment.fhe_client_server import CLIENT_FILE, FHEModelServer, ModelMismatchError

__all__ = ["ServiceLimits", "create_app", "serve"]

KEY_ID_HEADER = "fheml-key-id"
_MiB = 1 << 20


class ServiceLimits:
    """Bounds of the HTTP service.

    Parameters
    ----------
    max_request_bytes : int, default=64 MiB
        Largest encrypted request body.
    max_key_bytes : int, default=2 GiB
        Largest evaluation key upload.
    max_keys : int, default=16
        Key sets kept at once.
    max_key_store_bytes : int, default=8 GiB
        Memory of the key sets kept at once (as loaded, i.e. expanded).
    max_concurrent_runs : int, default=2
        Requests evaluated (or key sets loaded) at the same time; others wait.
    """

    def __init__(self, max_request_bytes=64 * _MiB, max_key_bytes=2048 * _MiB, max_keys=16,
                 max_key_store_bytes=8192 * _MiB, max_concurrent_runs=2):
        for name, value in locals().items():
            if name != "self" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.max_request_bytes = max_request_bytes
        self.max_key_bytes = max_key_bytes
        self.max_keys = max_keys
        self.max_key_store_bytes = max_key_store_bytes
        self.max_concurrent_runs = max_concurrent_runs

    def to_dict(self):
        return dict(vars(self))


class ServiceError(Exception):
    """An error answered as ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status, code, detail):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class KeyStore:
    """Loaded evaluation keys by random id, bounded in count and bytes (LRU eviction)."""

    def __init__(self, max_keys, max_bytes):
        self.max_keys, self.max_bytes = max_keys, max_bytes
        self._entries = collections.OrderedDict()  # id -> (keys, nbytes)
        self.nbytes = 0
        self.evicted = 0

    def __len__(self):
        return len(self._entries)

    def add(self, keys, nbytes):
        if nbytes > self.max_bytes:
            raise ServiceError(413, "too_large", f"these evaluation keys take {nbytes} bytes "
                               f"loaded, more than the key store holds ({self.max_bytes})")
        while self._entries and (len(self._entries) >= self.max_keys
                                 or self.nbytes + nbytes > self.max_bytes):
            _, (_, size) = self._entries.popitem(last=False)
            self.nbytes -= size
            self.evicted += 1
        key_id = secrets.token_urlsafe(32)
        self._entries[key_id] = (keys, nbytes)
        self.nbytes += nbytes
        return key_id

    def get(self, key_id):
        entry = self._entries.get(key_id)
        if entry is None:
            raise ServiceError(404, "unknown_key_id", "unknown key id (never uploaded, deleted "
                               "or evicted from the bounded key store): upload the "
                               "evaluation keys again with POST /keys")
        self._entries.move_to_end(key_id)
        return entry[0]

    def remove(self, key_id):
        self.get(key_id)
        _, size = self._entries.pop(key_id)
        self.nbytes -= size


async def _read_body(request, limit):
    """The request body, refusing (413) anything above ``limit`` bytes.

    An oversized body is read on and discarded (up to 16 times the limit) before the
    answer, so that a client sending it in one go gets the 413 instead of a broken pipe;
    memory stays bounded by ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ServiceError(400, "malformed", "invalid Content-Length header")
    too_large = ServiceError(413, "too_large", f"request body larger than the limit of "
                             f"{limit} bytes of this endpoint")
    if declared is not None and int(declared) > 16 * limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 16 * limit:
            break
    if size > limit:
        raise too_large
    return b"".join(chunks)


def _loaded_nbytes(keys, raw):
    return max(len(raw), getattr(keys, "nbytes", 0))


def create_app(model_dir, limits=None, n_jobs=1):
    """The ASGI application serving the model saved in ``model_dir``.

    Parameters
    ----------
    model_dir : str or path-like
        Directory written by :meth:`FHEModelDev.save` (``server.fheml``, and
        ``client.fheml`` to offer it at ``GET /client``).
    limits : ServiceLimits, optional
    n_jobs : int, default=1
        Threads of one evaluation (-1: all cores).

    Returns
    -------
    starlette.applications.Starlette
    """
    import pathlib

    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = limits or ServiceLimits()
    server = FHEModelServer(model_dir, n_jobs=n_jobs)
    client_path = pathlib.Path(model_dir) / CLIENT_FILE
    store = KeyStore(limits.max_keys, limits.max_key_store_bytes)
    workers = anyio.CapacityLimiter(limits.max_concurrent_runs)
    stats = {"started": time.time(), "predictions": 0, "errors": 0}

    def error_response(status, code, detail):
        stats["errors"] += 1
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    async def in_worker(function, *args):
        """Run blocking work in a thread; map the deployment errors to HTTP errors."""
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=workers)
        except LimitExceededError as exc:
            raise ServiceError(413, "too_large", str(exc)) from None
        except (ModelMismatchError, MismatchError) as exc:
            raise ServiceError(422, "mismatch", str(exc)) from None
        except SerializationError as exc:
            raise ServiceError(400, "malformed", str(exc)) from None

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def model(request):
        meta = dict(server.metadata)
        meta["limits"] = limits.to_dict()
        meta["keys_stored"] = len(store)
        meta["keys_evicted"] = store.evicted
        return JSONResponse(meta)

    async def client_artifact(request):
        if not client_path.is_file():
            raise ServiceError(404, "not_found", "this service has no client artifact; get "
                               "client.fheml from the model's developer")
        return Response(client_path.read_bytes(), media_type="application/octet-stream")

    async def upload_keys(request):
        raw = await _read_body(request, limits.max_key_bytes)
        keys = await in_worker(server.load_evaluation_keys, raw)
        key_id = store.add(keys, _loaded_nbytes(keys, raw))
        return JSONResponse({"key_id": key_id, "bytes": len(raw)}, status_code=201)

    async def delete_keys(request):
        store.remove(request.path_params["key_id"])
        return Response(status_code=204)

    async def predict(request):
        key_id = request.headers.get(KEY_ID_HEADER)
        if not key_id:
            raise ServiceError(400, "missing_key_id", f"missing {KEY_ID_HEADER} header: "
                               "upload evaluation keys with POST /keys first")
        body = await _read_body(request, limits.max_request_bytes)
        keys = store.get(key_id)
        answer = await in_worker(server.run, body, keys)
        stats["predictions"] += 1
        return Response(answer, media_type="application/octet-stream")

    async def on_service_error(request, exc):
        return error_response(exc.status, exc.code, exc.detail)

    async def on_http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, exc.detail)

    async def on_internal_error(request, exc):
        return error_response(500, "internal", f"internal error ({type(exc).__name__})")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/model", model, methods=["GET"]),
        Route("/client", client_artifact, methods=["GET"]),
        Route("/keys", upload_keys, methods=["POST"]),
        Route("/keys/{key_id}", delete_keys, methods=["DELETE"]),
        Route("/predict", predict, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        ServiceError: on_service_error, HTTPException: on_http_error,
        Exception: on_internal_error})
    app.state.fheml_server = server
    app.state.key_store = store
    return app


def serve(model_dir, host="127.0.0.1", port=8000, limits=None, n_jobs=1, log_level="info",
          ready=None):
    """Serve ``model_dir`` over HTTP until interrupted (blocking).

    Parameters
    ----------
    model_dir : str or path-like
    host : str, default="127.0.0.1"
        Interface to listen on (``0.0.0.0`` for every interface: put TLS in front).
    port : int, default=8000
        0 picks a free port.
    limits : ServiceLimits, optional
    n_jobs : int, default=1
    log_level : str, default="info"
    ready : callable, optional
        Called with the bound ``(host, port)`` once the socket listens.
    """
    import socket

    import uvicorn

    app = create_app(model_dir, limits=limits, n_jobs=n_jobs)
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                else socket.AF_INET)
    if ready is not None:
        ready(*sock.getsockname()[:2])
    config = uvicorn.Config(app, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
