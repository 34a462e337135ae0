"""What each estimator family puts into the client artifact, and how the client uses it.

The server artifact is the same for every family (the compiled circuit).  The client
artifact holds what runs in the clear on the client: the input encoding (quantizers) and
the post-processing of the decrypted integers (dequantization, link functions, argmax,
classes).  It never holds the model's weights or thresholds.

A family is an object with three members (see :class:`LinearFamily`)::

    name                          short identifier stored in the artifact
    handles(model) -> bool        whether this family saves ``model``
    export(model) -> (state, arrays)
        ``state``: JSON-able dict, ``arrays``: dict of name -> numeric numpy array
    client_model(state, arrays) -> ClientModel

and a client model has::

    methods                       names accepted by ``postprocess`` (e.g. "predict")
    default_method                what ``deserialize_decrypt_dequantize`` returns by default
    encode(X) -> tuple            the circuit's arguments (integer arrays, batch axis first)
    postprocess(method, outputs)  the method's result from the decrypted circuit outputs

New families (trees, MLPs) call :func:`register_family` at import of their deployment hook.
"""

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["CircuitFamily", "LinearFamily", "family_for", "family_named", "register_family"]

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


def _check_features(X, n_features):
    X = check_array(X, dtype=[np.float64, np.float32])
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but the model expects {n_features}")
    return X


# ------------------------------------------------------------------- linear models ------

class LinearClientModel:
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


class LinearFamily:
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


# ------------------------------------------------------------------ bare circuits -------

class CircuitClientModel:
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


class CircuitFamily:
    """A compiled :class:`fheml.Circuit` (from :func:`fheml.compile`), no estimator around."""

    name = "circuit"

    def handles(self, model):
        from fheml.compiler import Circuit

        return isinstance(model, Circuit)

    def export(self, model):
        return {"n_inputs": len(model.client.spec.inputs)}, {}

    def client_model(self, state, arrays):
        return CircuitClientModel(int(state["n_inputs"]))


register_family(CircuitFamily())
register_family(LinearFamily())
