"""Client of the HTTP inference service (standard library only)."""

import http.client
import json
import urllib.parse

from fheml.deployment.fhe_client_server import FHEModelClient

__all__ = ["HTTPClient", "ServiceHTTPError"]

KEY_ID_HEADER = "fheml-key-id"


class ServiceHTTPError(RuntimeError):
    """The service answered with an error.

    Attributes
    ----------
    status : int
        HTTP status (4xx: the request was refused, 5xx: a server fault).
    code : str
        The service's error code (``malformed``, ``too_large``, ``mismatch``, ...).
    detail : str
    """

    def __init__(self, status, code, detail):
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class HTTPClient:
    """Encrypted predictions from an ``fheml serve`` service.

    Parameters
    ----------
    url : str
        Base URL of the service, e.g. ``"http://127.0.0.1:8000"``.
    client : FHEModelClient or str or path-like
        The model's client (or the directory of its client artifact).
    key_dir : str or path-like, optional
        Where the keys are kept when ``client`` is a directory.
    timeout : float, default=600
        Seconds to wait for any one answer.

    Examples
    --------
    >>> http = HTTPClient("http://127.0.0.1:8000", "deploy/", key_dir="keys/")  # doctest: +SKIP
    >>> http.predict(X)                                     # encrypted; doctest: +SKIP
    """

    def __init__(self, url, client, key_dir=None, timeout=600.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        self._parsed = parsed
        self.timeout = timeout
        self.client = client if isinstance(client, FHEModelClient) else \
            FHEModelClient(client, key_dir=key_dir)
        self.key_id = None

    def _request(self, method, path, body=None, headers=None):
        p = self._parsed
        cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = cls(p.hostname, p.port, timeout=self.timeout)
        try:
            headers = dict(headers or {})
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
            conn.request(method, p.path.rstrip("/") + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            try:
                err = json.loads(data)
                code, detail = err["error"], err["detail"]
            except (ValueError, KeyError, TypeError):
                code, detail = "http_error", data[:200].decode("utf-8", "replace")
            raise ServiceHTTPError(response.status, code, detail)
        return response, data

    def health(self):
        """``{"status": "ok"}`` when the service answers."""
        return json.loads(self._request("GET", "/health")[1])

    def model_info(self):
        """The service's model metadata and limits (``GET /model``)."""
        return json.loads(self._request("GET", "/model")[1])

    def upload_keys(self):
        """Send the evaluation keys (once); returns and remembers the key id."""
        _, data = self._request("POST", "/keys", self.client.get_serialized_evaluation_keys())
        self.key_id = json.loads(data)["key_id"]
        return self.key_id

    def delete_keys(self):
        """Ask the service to forget the uploaded keys."""
        if self.key_id is not None:
            self._request("DELETE", f"/keys/{urllib.parse.quote(self.key_id)}")
            self.key_id = None

    def run(self, request_bytes):
        """Post one encrypted request; returns the encrypted answer (bytes)."""
        if self.key_id is None:
            self.upload_keys()
        return self._request("POST", "/predict", request_bytes,
                             {KEY_ID_HEADER: self.key_id})[1]

    def predict(self, *X, method=None):
        """Quantize and encrypt ``X``, have the service evaluate it, decrypt the answer.

        Returns what the model's ``method`` returns (see
        :meth:`FHEModelClient.deserialize_decrypt_dequantize`).
        """
        answer = self.run(self.client.quantize_encrypt_serialize(*X))
        return self.client.deserialize_decrypt_dequantize(answer, method=method)
