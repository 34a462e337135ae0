"""Saved models: the developer writes two artifacts, a client and a server exchange bytes.

``FHEModelDev(path, model).save()`` writes, in the directory ``path``:

- ``server.fheml``: the compiled circuit (program, lookup tables, parameters).  No
  secret, no source line of the user's code.
- ``client.fheml``: the client specification (parameters, input ranges), the input
  quantizers and the post-processing (dequantization, link, classes).  No weights.

Both use the engine's format (:mod:`fheml._core.serialization`: JSON header + raw
little-endian arrays, SHA-256 checked, no pickle), so any fheml of the same artifact
version reads them on any machine and Python version.  Both carry the *model id* (the
SHA-256 of the server's circuit): a client's requests name it and the server refuses
requests made for another model.

On the client, ``FHEModelClient(path, key_dir)`` generates (or reloads) the keys, encrypts
and decrypts; on the server ``FHEModelServer(path).run(request, evaluation_keys)``
evaluates.  Every load checks the format and artifact versions, the parameters, the key
id and the sizes, and the error names what does not match.
"""

import hashlib
import os
import pathlib

import numpy as np

from fheml._core.serialization import MismatchError, SerializationError, pack, unpack
from fheml.deployment.families import family_for, family_named

__all__ = ["ARTIFACT_VERSION", "FHEModelClient", "FHEModelDev", "FHEModelServer",
           "ModelMismatchError"]

ARTIFACT_VERSION = 1
SERVER_FILE = "server.fheml"
CLIENT_FILE = "client.fheml"
SECRET_KEYS_FILE = "secret_keys.fheml"
EVALUATION_KEYS_FILE = "evaluation_keys.fheml"


class ModelMismatchError(ValueError):
    """Well-formed data that does not belong to this model or these keys.

    For example a request encrypted for another model, evaluation keys made for other
    parameters, ciphertexts under other keys than the evaluation keys, wrong shapes.
    """


# ------------------------------------------------------------------ artifacts ----------

def _fheml_version():
    import fheml

    return fheml.__version__


def _server_spec_without_sources(spec):
    """The server spec bytes with every node's user source line removed."""
    from fheml.compiler import ServerSpec
    from fheml.compiler.program import Program

    header, arrays = spec.program.to_json()
    for node in header["nodes"]:
        node["where"] = ""
    program = Program.from_json(header, arrays)
    return ServerSpec(spec.params, program, spec.inputs, spec.outputs,
                      spec.multiple_outputs, spec.packed).to_bytes()


def _as_u8(data):
    return np.frombuffer(data, dtype=np.uint8)


def _check_artifact_header(header, kind, path):
    version = header.get("artifact_version")
    if version != ARTIFACT_VERSION:
        raise SerializationError(
            f"{path}: artifact version {version!r} is not supported (this fheml "
            f"{_fheml_version()} reads version {ARTIFACT_VERSION}); save the model again with "
            "this fheml")
    for key in ("model_id", "model", "family"):
        if not isinstance(header.get(key), str):
            raise SerializationError(f"{path}: {kind} has no valid {key!r}")


def _write_atomic(path, data, mode=0o644):
    """Write ``data`` to ``path`` through a temporary file (readers never see half a file)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path, what):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path} (save the model with FHEModelDev first)")
    return path.read_bytes()


class FHEModelDev:
    """Save a fitted (compiled) model as a client and a server artifact.

    Parameters
    ----------
    path : str or path-like
        Directory to write ``server.fheml`` and ``client.fheml`` into (created if needed).
    model : fheml estimator or fheml.Circuit
        A fitted fheml estimator (compiled on save if it is not yet) or a compiled circuit.

    Examples
    --------
    >>> FHEModelDev("deploy/", model).save()                         # doctest: +SKIP
    """

    def __init__(self, path, model):
        self.path = pathlib.Path(path)
        self.model = model

    def _circuit(self):
        from fheml.compiler import Circuit

        if isinstance(self.model, Circuit):
            return self.model
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self.model)
        return self.model.fhe_circuit or self.model.compile()

    def save(self, overwrite=False):
        """Write both artifacts.

        Parameters
        ----------
        overwrite : bool, default=False
            Replace artifacts already in ``path`` (otherwise a ``FileExistsError``).

        Returns
        -------
        str
            The model id written in both artifacts.
        """
        family = family_for(self.model)
        circuit = self._circuit()
        self.path.mkdir(parents=True, exist_ok=True)
        targets = [self.path / SERVER_FILE, self.path / CLIENT_FILE]
        existing = [str(t) for t in targets if t.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); pass "
                                  "overwrite=True to replace")
        spec_bytes = _server_spec_without_sources(circuit.server.spec)
        model_id = hashlib.sha256(spec_bytes).hexdigest()
        common = {"artifact_version": ARTIFACT_VERSION, "fheml_version": _fheml_version(),
                  "model_id": model_id, "model": type(self.model).__name__,
                  "family": family.name}
        server = pack("model-server", common, [_as_u8(spec_bytes)])
        state, arrays = family.export(self.model)
        names = sorted(arrays)
        client = pack("model-client", {**common, "state": state, "array_names": names},
                      [_as_u8(circuit.client.spec.to_bytes())] + [arrays[n] for n in names])
        _write_atomic(targets[0], server)
        _write_atomic(targets[1], client)
        return model_id


def _artifact_path(path, name):
    path = pathlib.Path(path)
    return path / name if path.is_dir() else path


def load_server_artifact(path):
    """``(header, ServerSpec)`` of a server artifact file or directory (validated)."""
    from fheml.compiler import ServerSpec

    path = _artifact_path(path, SERVER_FILE)
    header, arrays = unpack(_read(path, "server artifact"), "model-server")
    _check_artifact_header(header, "server artifact", path)
    if len(arrays) != 1 or arrays[0].dtype != np.uint8:
        raise SerializationError(f"{path}: expected one embedded server spec")
    spec_bytes = arrays[0].tobytes()
    if hashlib.sha256(spec_bytes).hexdigest() != header["model_id"]:
        raise SerializationError(f"{path}: the circuit does not match the model id")
    return header, ServerSpec.from_bytes(spec_bytes)


def load_client_artifact(path):
    """``(header, ClientSpec, client model)`` of a client artifact file or directory."""
    from fheml.compiler import ClientSpec

    path = _artifact_path(path, CLIENT_FILE)
    header, arrays = unpack(_read(path, "client artifact"), "model-client")
    _check_artifact_header(header, "client artifact", path)
    names = header.get("array_names")
    if not isinstance(names, list) or len(arrays) != len(names) + 1 \
            or arrays[0].dtype != np.uint8:
        raise SerializationError(f"{path}: array list does not match the header")
    spec = ClientSpec.from_bytes(arrays[0].tobytes())
    family = family_named(header["family"])
    try:
        model = family.client_model(header["state"], dict(zip(names, arrays[1:])))
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"{path}: invalid {header['family']} client state ({exc})") \
            from None
    return header, spec, model


# -------------------------------------------------------------- request envelope -------

def _pack_envelope(kind, model_id, inner):
    return pack(kind, {"model_id": model_id}, [_as_u8(inner)])


def _unpack_envelope(data, kind, model_id):
    header, arrays = unpack(data, kind)
    got = header.get("model_id")
    if len(arrays) != 1 or arrays[0].dtype != np.uint8 or not isinstance(got, str):
        raise SerializationError(f"{kind}: expected a model id and one payload")
    if got != model_id:
        raise ModelMismatchError(f"this {kind} was made for model {got[:16]}..., not for "
                                 f"this model {model_id[:16]}...; use the matching client "
                                 "artifact")
    return arrays[0].tobytes()


# ------------------------------------------------------------------------ client -------

def _check_key_params(params, expected, what):
    if params != expected:
        diff = [k for k, v in expected.to_dict().items() if params.to_dict().get(k) != v]
        raise ModelMismatchError(f"{what} were made for other cryptographic parameters than "
                                 f"this model (differing: {', '.join(diff)})")


class FHEModelClient:
    """The client side of a saved model: keys, quantize + encrypt, decrypt + post-process.

    Parameters
    ----------
    path : str or path-like
        Directory holding ``client.fheml`` (or the file itself).
    key_dir : str or path-like, optional
        Where the keys are kept: the secret key is written owner-only (mode 0600) and
        reloaded by later clients of the same model.  ``None``: keys live in memory only.

    Attributes
    ----------
    model_id : str
    client_model : object
        The family's client-side model (see :mod:`fheml.deployment.families`).
    """

    def __init__(self, path, key_dir=None):
        from fheml.compiler import Client

        self.header, spec, self.client_model = load_client_artifact(path)
        self.model_id = self.header["model_id"]
        self.client = Client(spec)
        self.key_dir = None if key_dir is None else pathlib.Path(key_dir)
        self._evaluation_key_bytes = None

    @property
    def parameters(self):
        """The circuit's :class:`~fheml._core.ParameterSet`."""
        return self.client.spec.params

    def _load_keys(self):
        from fheml._core import EvaluationKeys, SecretKeys

        secret_path = self.key_dir / SECRET_KEYS_FILE
        eval_path = self.key_dir / EVALUATION_KEYS_FILE
        if not (secret_path.is_file() and eval_path.is_file()):
            return False
        mode = secret_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{secret_path} is readable by other users (mode "
                                  f"{oct(mode)}); chmod 600 it or generate new keys")
        secret = SecretKeys.from_bytes(secret_path.read_bytes())
        _check_key_params(secret.params, self.parameters, f"the keys in {self.key_dir}")
        eval_bytes = eval_path.read_bytes()
        evaluation = EvaluationKeys.from_bytes(eval_bytes, expected_params=self.parameters)
        if evaluation.key_id != secret.key_id:
            raise ModelMismatchError(f"the evaluation keys in {self.key_dir} do not belong to "
                                     "its secret key (key ids differ); generate new keys")
        self.client.secret_keys, self.client.evaluation_keys = secret, evaluation
        self._evaluation_key_bytes = eval_bytes
        return True

    def generate_private_and_evaluation_keys(self, force=False):
        """Generate the keys, or reload those in ``key_dir`` made for this model.

        Parameters
        ----------
        force : bool, default=False
            Generate new keys even if some exist (they replace those in ``key_dir``).
        """
        if not force and self.client.secret_keys is not None:
            return
        if not force and self.key_dir is not None and self._load_keys():
            return
        evaluation = self.client.keygen(force=True)
        self._evaluation_key_bytes = evaluation.to_bytes()
        if self.key_dir is not None:
            self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_atomic(self.key_dir / SECRET_KEYS_FILE, self.client.secret_keys.to_bytes(),
                          mode=0o600)
            _write_atomic(self.key_dir / EVALUATION_KEYS_FILE, self._evaluation_key_bytes)

    def get_serialized_evaluation_keys(self):
        """The evaluation keys to send to the server (no secret; keys made if needed).

        Returns
        -------
        bytes
        """
        self.generate_private_and_evaluation_keys()
        return self._evaluation_key_bytes

    def quantize_encrypt_serialize(self, *X):
        """Encode (quantize) and encrypt a batch; the request bytes for the server.

        Parameters
        ----------
        *X : array-like
            For an estimator, ``X`` of shape (n_samples, n_features); for a bare circuit,
            its integer arguments.

        Returns
        -------
        bytes
        """
        self.generate_private_and_evaluation_keys()
        encrypted = self.client.encrypt(*self.client_model.encode(*X))
        return _pack_envelope("model-input", self.model_id, encrypted.to_bytes())

    def deserialize_decrypt(self, data):
        """Decrypt the server's answer to the circuit's integer outputs."""
        if self.client.secret_keys is None and not (self.key_dir is not None
                                                     and self._load_keys()):
            raise RuntimeError("no keys: the answer can only be decrypted with the keys "
                               "that encrypted the request (keep them in a key_dir)")
        result = _unpack_envelope(data, "model-output", self.model_id)
        try:
            return self.client.decrypt(result)
        except ValueError as exc:
            if isinstance(exc, SerializationError):
                raise
            raise ModelMismatchError(f"cannot decrypt this answer: {exc}") from None

    def deserialize_decrypt_dequantize(self, data, method=None):
        """Decrypt the server's answer and post-process it like the model would.

        Parameters
        ----------
        data : bytes
            What :meth:`FHEModelServer.run` returned.
        method : str, optional
            ``"predict_proba"``, ``"predict"`` or ``"decision_function"`` (those the model
            has); default: ``predict_proba`` for classifiers that have it, ``predict``
            otherwise (``"run"``, the integers, for a bare circuit).

        Returns
        -------
        numpy.ndarray
            What the model's method returns for the rows of the request.
        """
        model = self.client_model
        method = model.default_method if method is None else method
        if method not in model.methods:
            raise ValueError(f"method must be one of {', '.join(model.methods)} for this "
                             f"{self.header['model']}, got {method!r}")
        return model.postprocess(method, self.deserialize_decrypt(data))


# ------------------------------------------------------------------------ server -------

class FHEModelServer:
    """The server side of a saved model: runs encrypted requests with a client's keys.

    Parameters
    ----------
    path : str or path-like
        Directory holding ``server.fheml`` (or the file itself).
    n_jobs : int, default=1
        Threads for the lookups of one request (-1: all cores).

    Attributes
    ----------
    model_id : str
    metadata : dict
        Model name, family, versions, parameters and input/output shapes (no secret).
    """

    def __init__(self, path, n_jobs=1):
        from fheml.compiler import Server

        self.header, spec = load_server_artifact(path)
        self.model_id = self.header["model_id"]
        self.server = Server(spec)
        self.n_jobs = n_jobs

    @property
    def parameters(self):
        """The circuit's :class:`~fheml._core.ParameterSet`."""
        return self.server.spec.params

    @property
    def metadata(self):
        spec = self.server.spec
        params = spec.params
        return {
            "model": self.header["model"], "family": self.header["family"],
            "model_id": self.model_id, "artifact_version": ARTIFACT_VERSION,
            "saved_with_fheml": self.header.get("fheml_version"),
            "fheml_version": _fheml_version(),
            "parameters": params.to_dict(), "precision": spec.program.precision,
            "inputs": [{"name": s["name"], "shape": s["shape"], "encrypted": s["encrypted"]}
                       for s in spec.inputs],
            "outputs": [{"shape": s["shape"]} for s in spec.outputs],
            "lookups_per_sample": sum(int(np.prod(n.shape, dtype=np.int64))
                                      for n in spec.program.lookups),
            "evaluation_key_bytes": params.seeded_bsk_bytes + params.seeded_ksk_bytes
            if params.has_bootstrap else 0,
        }

    def load_evaluation_keys(self, data):
        """Evaluation keys from a client's bytes, checked against this model's parameters.

        Returns
        -------
        fheml._core.EvaluationKeys
            Reusable for many :meth:`run` calls (loading expands the keys, which costs).
        """
        from fheml._core import EvaluationKeys

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected evaluation key bytes, got {type(data).__name__}")
        try:
            return EvaluationKeys.from_bytes(data, expected_params=self.parameters)
        except MismatchError as exc:
            # Only on this error path: read the header again to name what differs.
            _check_key_params(_params_of_keys(data), self.parameters, "these evaluation keys")
            raise ModelMismatchError(f"evaluation keys: {exc}") from None

    def run(self, serialized_encrypted_input, evaluation_keys):
        """Evaluate the circuit on one encrypted request.

        Parameters
        ----------
        serialized_encrypted_input : bytes
            From :meth:`FHEModelClient.quantize_encrypt_serialize`.
        evaluation_keys : bytes or fheml._core.EvaluationKeys
            The client's evaluation keys (bytes, or loaded by :meth:`load_evaluation_keys`).

        Returns
        -------
        bytes
            The encrypted answer for :meth:`FHEModelClient.deserialize_decrypt_dequantize`.

        Raises
        ------
        fheml._core.SerializationError
            Bytes that are not a valid request or key set (malformed, truncated, corrupted).
        ModelMismatchError
            A valid request that does not fit this model or these keys.
        """
        from fheml._core import EvaluationKeys
        from fheml.compiler import EncryptedArgs

        if not isinstance(evaluation_keys, EvaluationKeys):
            evaluation_keys = self.load_evaluation_keys(evaluation_keys)
        inner = _unpack_envelope(serialized_encrypted_input, "model-input", self.model_id)
        try:
            # checked against the circuit and the server's limits before any expansion
            args = EncryptedArgs.from_bytes(inner, spec=self.server.spec,
                                            key_id=evaluation_keys.key_id,
                                            limits=self.server.limits)
            result = self.server.run(args, evaluation_keys, n_jobs=self.n_jobs)
        except MismatchError as exc:
            raise ModelMismatchError(str(exc)) from None
        except SerializationError:
            raise
        except (TypeError, ValueError) as exc:
            raise ModelMismatchError(str(exc)) from None
        return _pack_envelope("model-output", self.model_id, result.to_bytes())


def _params_of_keys(data):
    """The ParameterSet named by serialized evaluation keys."""
    from fheml._core.keys import params_from_header

    header, _ = unpack(data, "evaluation-keys")
    return params_from_header(header, "evaluation-keys")
