"""What each model family puts into the artifacts, and how client and server use it.

Every server artifact holds the compiled circuit.  What differs between families is the
clear work around it:

- on the client (the client artifact): the input encoding (quantizers) and the
  post-processing of the decrypted integers (dequantization, link functions, argmax,
  classes), never the model's weights or thresholds;
- on the server (the server artifact, optionally): a step between the request bytes and
  the circuit, e.g. trees selecting the encrypted input bits they read.

A family is an object (subclass :class:`Family`) with::

    name                              short identifier stored in the artifacts
    handles(model) -> bool            whether this family saves ``model``
    circuit(model)                    its compiled circuit (default: ``fhe_circuit``, or
                                      ``compile()`` for a fitted estimator)
    export(model) -> (state, arrays)  client side: JSON-able dict, dict name -> array
    client_model(state, arrays)       -> a ClientModel
    export_server(model)              server side, default ``({}, {})``
    server_model(state, arrays)       -> a ServerModel, default: the request is the
                                         circuit's arguments

A :class:`ClientModel` has ``methods`` and ``default_method`` (what
``deserialize_decrypt_dequantize`` returns), ``encode(*X)`` (the circuit's integer
arguments, batch axis first) and ``postprocess(method, outputs)``; it may override
``encrypt(client, *X)`` / ``decrypt(client, data)`` to use another request format.  A
:class:`ServerModel` has ``run(server, data, keys, n_jobs, verbose=None)``.  Arrays hold numbers only
(``<f8``, ``<i8``, ``<u8``, ``<i4``, ``<u4``, ``|u1``); everything is validated on load.

New families (trees, MLPs) call :func:`register_family` with an instance.
"""

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["CircuitFamily", "ClientModel", "Family", "LinearFamily", "MLPFamily", "ServerModel",
           "TreeFamily", "family_for", "family_named", "register_family"]

_FAMILIES = []


def register_family(family):
    """Add a family (checked before the built-in ones, so a subclass can be specialised)."""
    _FAMILIES.insert(0, family)
    return family


def family_for(model):
    """The registered family that saves ``model``.

    Raises
    ------
    TypeError
        If no family handles it.
    """
    for family in _FAMILIES:
        if family.handles(model):
            return family
    raise TypeError(f"{type(model).__name__} cannot be deployed: expected a fitted fheml "
                    "estimator or an fheml.Circuit")


def family_named(name):
    """The registered family called ``name`` (for loading an artifact)."""
    for family in _FAMILIES:
        if family.name == name:
            return family
    known = ", ".join(sorted(f.name for f in _FAMILIES))
    raise ValueError(f"the artifact was saved for the model family {name!r}, which this fheml "
                     f"does not know (known: {known}); upgrade fheml")


# ------------------------------------------------------------------ the protocol --------

class ClientModel:
    """Client side of a family: encode, encrypt, decrypt, post-process (see module doc)."""

    methods = ()
    default_method = None

    def encode(self, *X):  # pragma: no cover - abstract
        raise NotImplementedError

    def postprocess(self, method, outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def encrypt(self, client, *X):
        """Request bytes for the server: the encrypted circuit arguments."""
        return client.encrypt(*self.encode(*X)).to_bytes()

    def decrypt(self, client, data):
        """The circuit's integer outputs from the server's answer bytes."""
        return client.decrypt(data)


class ServerModel:
    """Server side of a family: turns a request into the circuit's run."""

    def run(self, server, data, keys, n_jobs, verbose=None):
        """Run ``server`` (a :class:`fheml.compiler.Server`) on request bytes ``data``."""
        return server.run(data, keys, n_jobs=n_jobs, verbose=verbose)


class Family:
    """Base of the families (see the module docstring)."""

    name = None

    def handles(self, model):  # pragma: no cover - abstract
        raise NotImplementedError

    def export(self, model):  # pragma: no cover - abstract
        raise NotImplementedError

    def client_model(self, state, arrays):  # pragma: no cover - abstract
        raise NotImplementedError

    def circuit(self, model):
        """The compiled circuit of a fitted ``model`` (compiled now if it is not yet)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(model)
        return model.fhe_circuit or model.compile()

    def export_server(self, model):
        return {}, {}

    def server_model(self, state, arrays):
        if state or arrays:
            raise ValueError(f"unexpected server state for the {self.name} family")
        return ServerModel()


# ------------------------------------------------------------------ shared pieces -------

def _labels_to_state(labels):
    """JSON form of an array of class labels (numbers, booleans or strings)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "biuf":
        return {"dtype": labels.dtype.str, "values": labels.tolist()}
    if all(isinstance(v, str) for v in labels.tolist()):
        return {"dtype": "object" if labels.dtype.kind == "O" else "str",
                "values": labels.tolist()}
    raise TypeError("class labels must be numbers or strings to be saved")


def _labels_from_state(state):
    dtype = state["dtype"]
    values = state["values"]
    if not isinstance(values, list):
        raise ValueError("class labels must be a list")
    if dtype == "object":
        return np.array(values, dtype=object)
    if dtype == "str":
        return np.array(values, dtype=str)
    if np.dtype(dtype).kind not in "biuf":
        raise ValueError(f"class labels of dtype {dtype!r} are not supported")
    return np.array(values, dtype=np.dtype(dtype))


def _quantizer_export(quantizer):
    state = {"n_bits": int(quantizer.n_bits), "qmin": int(quantizer.qmin_),
             "qmax": int(quantizer.qmax_)}
    arrays = {"input_scale": np.asarray(quantizer.scale_, dtype=np.float64),
              "input_zero_point": np.asarray(quantizer.zero_point_, dtype=np.int64),
              "input_data_min": np.asarray(quantizer.data_min_, dtype=np.float64),
              "input_data_max": np.asarray(quantizer.data_max_, dtype=np.float64)}
    return state, arrays


def _quantizer_load(state, arrays, n_features):
    from fheml.quantization import UniformQuantizer

    quantizer = UniformQuantizer(n_bits=int(state["n_bits"]), per_feature=True)
    for name in ("scale", "zero_point", "data_min", "data_max"):
        value = arrays[f"input_{name}"]
        if value.shape != (n_features,):
            raise ValueError(f"input {name} has shape {value.shape}, expected ({n_features},)")
        setattr(quantizer, f"{name}_", value)
    if not np.all(np.isfinite(quantizer.scale_)) or np.any(quantizer.scale_ <= 0):
        raise ValueError("input scales must be finite and positive")
    quantizer.qmin_, quantizer.qmax_ = int(state["qmin"]), int(state["qmax"])
    return quantizer


def _check_features(X, n_features, allow_nan=False):
    X = check_array(X, dtype=[np.float64, np.float32],
                    ensure_all_finite="allow-nan" if allow_nan else True)
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but the model expects {n_features}")
    return X


# ------------------------------------------------------------------- linear models ------

class LinearClientModel(ClientModel):
    """Client side of a linear model: input quantizer, dequantization, post-processing.

    Reproduces the estimator's ``decision_function`` / ``predict`` / ``predict_proba`` from
    the decrypted integer scores with the same functions the estimator uses.
    """

    def __init__(self, quantizer, output_scale, output_offset, *, n_features, ravel, link,
                 proba, classes):
        self.quantizer = quantizer
        self.output_scale = output_scale
        self.output_offset = output_offset
        self.n_features = n_features
        self.ravel = ravel
        self.link = link
        self.proba = proba
        self.classes = classes
        if classes is None:
            self.methods = ("predict",)
        else:
            self.methods = ("decision_function", "predict") + (
                ("predict_proba",) if proba is not None else ())
        self.default_method = "predict_proba" if "predict_proba" in self.methods else "predict"

    def encode(self, X):
        return (self.quantizer.quant(_check_features(X, self.n_features)),)

    def postprocess(self, method, outputs):
        from fheml.linear_model import _binary_proba, _modified_huber_proba, _ovr_proba

        scores = np.asarray(outputs, dtype=np.float64) * self.output_scale + self.output_offset
        if self.ravel:
            scores = scores[:, 0]
        if self.classes is None:
            return np.exp(scores) if self.link == "log" else scores
        if method == "decision_function":
            return scores
        if method == "predict":
            index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
            return self.classes[index]
        if self.proba == "modified_huber":
            return _modified_huber_proba(scores, len(self.classes))
        if scores.ndim == 1:
            return _binary_proba(scores)
        if self.proba == "softmax":
            from sklearn.utils.extmath import softmax

            return softmax(scores, copy=False)
        return _ovr_proba(scores)


def _linear_proba(model):
    """Which probability function the classifier's ``predict_proba`` uses (or None)."""
    from fheml.linear_model import FHELogisticRegression, FHESGDClassifier

    if isinstance(model, FHELogisticRegression):
        return "softmax"
    if isinstance(model, FHESGDClassifier) and model.loss in ("log_loss", "modified_huber"):
        return "ovr" if model.loss == "log_loss" else "modified_huber"
    return None


class LinearFamily(Family):
    """The twelve linear models of :mod:`fheml.linear_model`."""

    name = "linear"

    def handles(self, model):
        from fheml.linear_model import _FHELinearModel

        return isinstance(model, _FHELinearModel)

    def export(self, model):
        from fheml.linear_model import _FHEGLMRegressor

        state, arrays = _quantizer_export(model.input_quantizer_)
        layer = model.quantized_layer_
        arrays["output_scale"] = np.asarray(layer.output_scale, dtype=np.float64)
        arrays["output_offset"] = np.asarray(layer.output_offset, dtype=np.float64)
        classifier = hasattr(model, "classes_")
        state.update(
            n_features=int(model.n_features_in_),
            ravel=bool(len(model.classes_) == 2 if classifier else np.ndim(model.coef_) == 1),
            link="log" if isinstance(model, _FHEGLMRegressor) and model._uses_log_link()
            else "identity",
            proba=_linear_proba(model) if classifier else None,
            classes=_labels_to_state(model.classes_) if classifier else None)
        return state, arrays

    def client_model(self, state, arrays):
        n_features = int(state["n_features"])
        n_outputs = arrays["output_scale"].shape
        if arrays["output_offset"].shape != n_outputs or len(n_outputs) != 1:
            raise ValueError("output scale and offset must be vectors of the same length")
        if state["link"] not in ("identity", "log"):
            raise ValueError(f"unknown link {state['link']!r}")
        if state["proba"] not in (None, "softmax", "ovr", "modified_huber"):
            raise ValueError(f"unknown probability function {state['proba']!r}")
        classes = None if state["classes"] is None else _labels_from_state(state["classes"])
        return LinearClientModel(
            _quantizer_load(state, arrays, n_features), arrays["output_scale"],
            arrays["output_offset"], n_features=n_features, ravel=bool(state["ravel"]),
            link=state["link"], proba=state["proba"], classes=classes)


# ------------------------------------------------------------ trees and ensembles -------

class TreeClientModel(ClientModel):
    """Client side of a tree model: bins, unary bits packed in seeded GLWE ciphertexts,
    leaf sums decoded.

    The post-processing calls the estimators' own functions (``_sum_groups``,
    ``_dequantize``, ``_proba``) on the saved attributes, so it is theirs exactly.
    """

    def __init__(self, quantizer, n_features, attrs, *, classifier, link, decision,
                 word_bits):
        self.quantizer = quantizer
        self.word_bits = word_bits
        self.n_features = n_features
        self.attrs = attrs  # what the estimator's post-processing functions read
        self.classifier = classifier
        self.link = link
        if classifier:
            self.methods = ("predict_proba", "predict") + (
                ("decision_function",) if decision else ())
            self.default_method = "predict_proba"
        else:
            self.methods, self.default_method = ("predict",), "predict"

    def encode(self, X):
        X = _check_features(X, self.n_features, allow_nan=self.quantizer.missing)
        return (self.quantizer.encode(self.quantizer.quant(X)),)

    def encrypt(self, client, X):
        from fheml._tree_circuit import encrypt_unary

        (bits,) = self.encode(X)
        return encrypt_unary(client.secret_keys, bits, client.spec.precision,
                             self.word_bits).to_bytes()

    def postprocess(self, method, outputs):
        from fheml.tree import _FHETreeClassifier, _FHETreeModel

        raw = _FHETreeModel._dequantize(self.attrs, _FHETreeModel._sum_groups(
            self.attrs, np.asarray(outputs)))
        if not self.classifier:
            raw = np.exp(raw) if self.link == "log" else raw
            return raw[:, 0] if raw.shape[1] == 1 else raw
        if method == "decision_function":
            return raw[:, 0] if raw.shape[1] == 1 else raw
        proba = _FHETreeClassifier._proba(self.attrs, raw)
        if method == "predict":
            return self.attrs.classes_[np.argmax(proba, axis=1)]
        return proba


class TreeServerModel(ServerModel):
    """Server side of a tree model: extracts the bits the trees read only."""

    def __init__(self, used_columns, n_levels):
        self.used_columns = used_columns
        self.n_levels = n_levels

    def run(self, server, data, keys, n_jobs, verbose=None):
        from fheml._core import GlweCiphertext
        from fheml._core.serialization import MismatchError
        from fheml._tree_circuit import check_unary, extract_unary
        from fheml.compiler import EncryptedArgs

        limit = server.limits.max_expanded_bytes
        encrypted = GlweCiphertext.from_bytes(
            data, max_words=1 << 62 if limit is None else max(1, limit // 8))
        if encrypted.key_id != keys.key_id:
            raise MismatchError("ciphertext was encrypted under other keys than expected")
        check_unary(encrypted, self.n_levels, server.spec.params)
        rows = encrypted.shape[0]
        server.limits.check_rows(rows)
        server.limits.check_expanded_bytes(
            rows * self.used_columns.size * (server.spec.params.big_lwe_dimension + 1) * 8)
        selected = extract_unary(encrypted, self.used_columns, self.n_levels)
        return server.run(EncryptedArgs([selected], True), keys, n_jobs=n_jobs,
                          verbose=verbose)


def _tree_link(model):
    """``"identity"`` or ``"log"``: the regressor's inverse link, read off the model."""
    probe = np.array([[-1.0], [0.0], [0.5], [2.0]])
    value = np.asarray(model._inverse_link(probe), dtype=np.float64)
    if np.allclose(value, probe):
        return "identity"
    if np.allclose(value, np.exp(probe)):
        return "log"
    raise TypeError(f"{type(model).__name__} with this loss cannot be deployed yet (its "
                    "inverse link is neither the identity nor exp)")


class TreeFamily(Family):
    """Decision trees, random forests and gradient boosting (:mod:`fheml.tree`,
    :mod:`fheml.ensemble`)."""

    name = "trees"

    def handles(self, model):
        try:
            from fheml.tree import _FHETreeModel
        except ImportError:  # pragma: no cover - an fheml without trees
            return False
        return isinstance(model, _FHETreeModel)

    def circuit(self, model):
        circuit = super().circuit(model)
        if model.n_output_groups_ is None:  # set by the estimator's own compile
            circuit = model.compile()
        return circuit

    def export(self, model):
        from fheml.tree import _FHETreeClassifier, _has_decision_function

        quantizer = model.input_quantizer_
        classifier = isinstance(model, _FHETreeClassifier)
        state = {"n_features": int(model.n_features_in_), "float32": quantizer.float32,
                 "missing": quantizer.missing,
                 "n_bits": quantizer.n_bits, "n_output_groups": int(model.n_output_groups_),
                 "word_bits": int(model.input_word_bits_),
                 "n_outputs": int(model.circuit_plan_.n_outputs), "classifier": classifier,
                 "raw_kind": model._raw_kind if classifier else None,
                 "decision": bool(classifier and _has_decision_function(model)),
                 "link": None if classifier else _tree_link(model),
                 "classes": _labels_to_state(model.classes_) if classifier else None}
        arrays = {"edges": np.concatenate([np.asarray(e, dtype=np.float64)
                                           for e in quantizer.edges_] or [np.zeros(0)]),
                  "offsets": np.asarray(quantizer.offsets_, dtype=np.int64),
                  "bias": np.asarray(model.bias_, dtype=np.float64),
                  "leaf_step": np.asarray(model.leaf_step_, dtype=np.float64),
                  "leaf_offset": np.asarray(model.leaf_offset_, dtype=np.int64)}
        return state, arrays

    def client_model(self, state, arrays):
        import types

        from fheml._tree_circuit import ThermometerQuantizer

        n_features = int(state["n_features"])
        offsets, edges = arrays["offsets"], arrays["edges"]
        if offsets.shape != (n_features + 1,) or offsets[0] != 0 \
                or np.any(np.diff(offsets) < 0) or offsets[-1] != edges.size:
            raise ValueError("bin offsets do not match the edges")
        quantizer = ThermometerQuantizer(int(state["n_bits"]), bool(state["float32"]),
                                         bool(state["missing"]))
        quantizer.edges_ = [edges[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        quantizer.offsets_ = offsets
        n_outputs = int(state["n_outputs"])
        classifier = bool(state["classifier"])
        if state["raw_kind"] not in ((None,) if not classifier else ("proba", "logit")):
            raise ValueError(f"unknown raw output kind {state['raw_kind']!r}")
        if state["link"] not in ((None,) if classifier else ("identity", "log")):
            raise ValueError(f"unknown link {state['link']!r}")
        attrs = types.SimpleNamespace(
            circuit_plan_=types.SimpleNamespace(n_outputs=n_outputs),
            n_output_groups_=int(state["n_output_groups"]), bias_=arrays["bias"],
            leaf_step_=arrays["leaf_step"], leaf_offset_=arrays["leaf_offset"],
            _raw_kind=state["raw_kind"],
            classes_=_labels_from_state(state["classes"]) if classifier else None)
        word_bits = state["word_bits"]
        if isinstance(word_bits, bool) or word_bits not in range(1, 65):
            raise ValueError(f"bits per input word must be 1 to 64, got {word_bits!r}")
        return TreeClientModel(quantizer, n_features, attrs, classifier=classifier,
                               link=state["link"], decision=bool(state["decision"]),
                               word_bits=int(word_bits))

    def export_server(self, model):
        return ({"n_levels": int(model.input_quantizer_.n_levels)},
                {"used_columns": np.asarray(model.circuit_plan_.used_columns, dtype=np.int64)})

    def server_model(self, state, arrays):
        n_levels = int(state["n_levels"])
        used = arrays["used_columns"]
        if used.ndim != 1 or (used.size and (used.min() < 0 or used.max() >= n_levels)):
            raise ValueError("used columns out of range")
        return TreeServerModel(used, n_levels)


# ----------------------------------------------------------------- neural networks ------

class MLPClientModel(ClientModel):
    """Client side of an MLP: input quantizer, dequantization of the output scores and the
    same post-processing as :mod:`fheml.neural_network` (softmax / sigmoid / argmax / exp).
    """

    def __init__(self, quantizer, output_scale, output_offset, *, n_features, kind, classes,
                 ravel):
        self.quantizer = quantizer
        self.output_scale = output_scale
        self.output_offset = output_offset
        self.n_features = n_features
        self.kind = kind
        self.classes = classes
        self.ravel = ravel
        self.methods = ("predict", "predict_proba") if classes is not None else ("predict",)
        self.default_method = self.methods[-1]

    def encode(self, X):
        return (self.quantizer.quant(_check_features(X, self.n_features)),)

    def postprocess(self, method, outputs):
        from scipy.special import expit, softmax

        scores = np.asarray(outputs, dtype=np.float64) * self.output_scale + self.output_offset
        if self.classes is None:
            scores = np.exp(scores) if self.kind == "poisson" else scores
            return scores[:, 0] if self.ravel else scores
        if method == "predict_proba":
            if self.kind == "multiclass":
                return softmax(scores, axis=1)
            p = expit(scores)
            return np.hstack([1 - p, p]) if self.kind == "binary" else p
        if self.kind == "multiclass":
            return self.classes[scores.argmax(axis=1)]
        if self.kind == "binary":
            return self.classes[(scores[:, 0] > 0).astype(np.intp)]
        return (scores > 0).astype(np.int64)  # multilabel indicator


class MLPFamily(Family):
    """:class:`~fheml.neural_network.FHEMLPClassifier` and ``FHEMLPRegressor``."""

    name = "mlp"

    def handles(self, model):
        from fheml.neural_network import _FHEMLPBase

        return isinstance(model, _FHEMLPBase)

    def export(self, model):
        state, arrays = _quantizer_export(model.input_quantizer_)
        arrays["output_scale"] = np.asarray(model.quantized_.out_scale, dtype=np.float64)
        arrays["output_offset"] = np.asarray(model.quantized_.out_constant, dtype=np.float64)
        classifier = hasattr(model, "classes_")
        state.update(
            n_features=int(model.n_features_in_),
            kind=model._binarizer_.y_type_.split("-")[0] if classifier else model._loss_name(),
            classes=_labels_to_state(model.classes_) if classifier else None,
            ravel=False if classifier else bool(model._y_1d_))
        return state, arrays

    def client_model(self, state, arrays):
        n_outputs = arrays["output_scale"].shape
        if arrays["output_offset"].shape != n_outputs or len(n_outputs) != 1:
            raise ValueError("output scale and offset must be vectors of the same length")
        if state["kind"] not in ("binary", "multiclass", "multilabel", "squared_error",
                                 "poisson"):
            raise ValueError(f"unknown output kind {state['kind']!r}")
        classes = None if state["classes"] is None else _labels_from_state(state["classes"])
        n_features = int(state["n_features"])
        return MLPClientModel(_quantizer_load(state, arrays, n_features), arrays["output_scale"],
                              arrays["output_offset"], n_features=n_features,
                              kind=state["kind"], classes=classes, ravel=bool(state["ravel"]))


# ------------------------------------------------------------------ bare circuits -------

class CircuitClientModel(ClientModel):
    """Client side of a bare :class:`fheml.Circuit`: integers in, integers out."""

    methods = ("run",)
    default_method = "run"

    def __init__(self, n_inputs):
        self.n_inputs = n_inputs

    def encode(self, *args):
        if len(args) != self.n_inputs:
            raise TypeError(f"the circuit takes {self.n_inputs} argument(s), got {len(args)}")
        return args

    def postprocess(self, method, outputs):
        return outputs


class CircuitFamily(Family):
    """A compiled :class:`fheml.Circuit` (from :func:`fheml.compile`), no estimator around."""

    name = "circuit"

    def handles(self, model):
        from fheml.compiler import Circuit

        return isinstance(model, Circuit)

    def circuit(self, model):
        return model

    def export(self, model):
        return {"n_inputs": len(model.client.spec.inputs)}, {}

    def client_model(self, state, arrays):
        return CircuitClientModel(int(state["n_inputs"]))


register_family(CircuitFamily())
register_family(LinearFamily())
register_family(TreeFamily())
register_family(MLPFamily())
