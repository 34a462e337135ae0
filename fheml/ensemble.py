"""Tree ensembles on encrypted data: random forests and gradient boosting.

Each class wraps the estimator of the same name (without ``FHE``): scikit-learn's
``RandomForest*``, ``GradientBoosting*`` and ``HistGradientBoosting*``, and, when the
optional packages are installed (``pip install fheml[xgboost]`` / ``fheml[lightgbm]``),
``XGB*`` and ``LGBM*``.  Every tree is evaluated as in :mod:`fheml.tree` (a few small
lookups per tree) and the sum over trees is linear; averaging, sigmoid and softmax run
on the client after decryption.  See docs/trees.md for the method and the lookup count.
"""

import importlib
import json

import numpy as np
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from fheml._tree_circuit import topological
from fheml.tree import (
    _FHETreeClassifier,
    _FHETreeRegressor,
    class_fractions,
    probability_outputs,
    sklearn_tree,
)

__all__ = [
    "FHEGradientBoostingClassifier",
    "FHEGradientBoostingRegressor",
    "FHEHistGradientBoostingClassifier",
    "FHEHistGradientBoostingRegressor",
    "FHERandomForestClassifier",
    "FHERandomForestRegressor",
]


# ------------------------------------------------------------------- numerics ------------

def _forest_classifier_trees(model):
    n = len(model.estimators_)
    return [sklearn_tree(e.tree_, probability_outputs(class_fractions(e.tree_)) / n)
            for e in model.estimators_]


def _forest_regressor_trees(model):
    n = len(model.estimators_)
    return [sklearn_tree(e.tree_, e.tree_.value[:, :, 0] / n) for e in model.estimators_]


def _gradient_boosting_trees(model):
    """Stage trees of GradientBoosting*, each writing its (shrunk) values to its class."""
    stages = model.estimators_
    n_out = stages.shape[1]
    trees = []
    for stage in stages:
        for k, estimator in enumerate(stage):
            values = np.zeros((estimator.tree_.node_count, n_out))
            values[:, k] = model.learning_rate * estimator.tree_.value[:, 0, 0]
            trees.append(sklearn_tree(estimator.tree_, values))
    return trees


def _hist_gradient_boosting_trees(model):
    """Predictor trees of HistGradientBoosting* (values already shrunk)."""
    n_out = len(model._predictors[0])
    trees = []
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if np.any(nodes["is_categorical"]):
                raise NotImplementedError("categorical splits are not supported under "
                                          "encryption; one-hot encode those features")
            leaf = nodes["is_leaf"].astype(bool)
            values = np.zeros((len(nodes), n_out))
            values[:, k] = nodes["value"]
            trees.append(topological(
                np.where(leaf, -1, nodes["feature_idx"]), nodes["num_threshold"],
                np.where(leaf, -1, nodes["left"].astype(np.int64)),
                np.where(leaf, -1, nodes["right"].astype(np.int64)),
                values, ~nodes["missing_go_to_left"].astype(bool)))
    return trees


def _nested_tree(root, n_out, k, split, threshold, children, leaf_value, missing_right):
    """Tree from a nested dict format (XGBoost / LightGBM dumps).

    ``split(node)`` -> feature index or None for a leaf; ``threshold(node)`` -> t with
    "right iff x > t"; ``children(node)`` -> (left, right); ``leaf_value(node)``;
    ``missing_right(node)`` -> whether a missing value goes right.
    """
    feature, thresholds, left, right, values, missing = [], [], [], [], [], []
    stack = [(root, -1, False)]
    while stack:
        node, parent, is_right = stack.pop()
        index = len(feature)
        if parent >= 0:
            (right if is_right else left)[parent] = index
        f = split(node)
        value = np.zeros(n_out)
        feature.append(-1 if f is None else f)
        thresholds.append(0.0 if f is None else threshold(node))
        missing.append(f is not None and missing_right(node))
        left.append(-1)
        right.append(-1)
        if f is None:
            value[k] = leaf_value(node)
        else:
            lo, hi = children(node)
            stack.append((hi, index, True))
            stack.append((lo, index, False))
        values.append(value)
    return topological(np.asarray(feature), np.asarray(thresholds), np.asarray(left),
                       np.asarray(right), np.asarray(values), np.asarray(missing))


def _xgboost_trees(model, n_out):
    """Trees of an XGBoost model; tree ``i`` adds to output ``i % n_out``.

    XGBoost goes left iff ``float32(x) < t``: right iff ``x > nextafter(t, -inf)``; a
    missing value (NaN) to the node's ``missing`` child.
    """
    if model.missing is not None and not np.isnan(model.missing):
        raise NotImplementedError(f"missing={model.missing!r} (a number standing for missing "
                                  "values) is not supported under encryption; use NaN")
    booster = model.get_booster()
    names = booster.feature_names
    index = {name: i for i, name in enumerate(names)} if names else None

    def split(node):
        if "leaf" in node:
            return None
        name = node["split"]
        return index[name] if index is not None else int(name.lstrip("f"))

    def threshold(node):
        t = np.float32(node["split_condition"])
        return float(np.nextafter(t, np.float32(-np.inf)))

    def children(node):
        by_id = {c["nodeid"]: c for c in node["children"]}
        return by_id[node["yes"]], by_id[node["no"]]

    dumps = booster.get_dump(dump_format="json")
    return [_nested_tree(json.loads(d), n_out, i % n_out, split, threshold, children,
                         lambda node: node["leaf"], lambda node: node["missing"] == node["no"])
            for i, d in enumerate(dumps)]


def _lightgbm_trees(model, n_out):
    """Trees of a LightGBM model (numerical ``<=`` splits; tree ``i`` -> output ``i % n_out``).

    A missing value (NaN) goes the default way where the split saw missing values
    (``missing_type`` "NaN"), else it is read as 0 ("None").
    """
    def split(node):
        if "leaf_value" in node:
            return None
        if node.get("decision_type", "<=") != "<=":
            raise NotImplementedError("categorical splits are not supported under encryption")
        if node.get("missing_type", "None") not in ("None", "NaN"):
            raise NotImplementedError("zero_as_missing is not supported under encryption "
                                      "(zeros would leave their bin)")
        return int(node["split_feature"])

    def missing_right(node):
        if node.get("missing_type", "None") == "NaN":
            return not node["default_left"]
        return 0.0 > float(node["threshold"])

    info = model.booster_.dump_model()["tree_info"]
    return [_nested_tree(t["tree_structure"], n_out, i % n_out, split,
                         lambda node: float(node["threshold"]),
                         lambda node: (node["left_child"], node["right_child"]),
                         lambda node: node["leaf_value"], missing_right)
            for i, t in enumerate(info)]


def _raw_2d(raw, n_samples):
    return np.asarray(raw, dtype=np.float64).reshape(n_samples, -1)


# ---------------------------------------------------------------- estimators ------------

class FHERandomForestClassifier(_FHETreeClassifier):
    """Random forest classifier predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.RandomForestClassifier` (same parameters and defaults)
    plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``.  The encrypted circuit
    sums the trees' class probabilities; the client divides and takes the argmax.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from fheml.ensemble import FHERandomForestClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = FHERandomForestClassifier(n_estimators=20, max_depth=4).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = RandomForestClassifier

    def _trees(self, model):
        return _forest_classifier_trees(model)

    def _raw_float(self, model, X):
        return probability_outputs(model.predict_proba(X))


class FHERandomForestRegressor(_FHETreeRegressor):
    """Random forest regressor predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.RandomForestRegressor` (same parameters and defaults)
    plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from fheml.ensemble import FHERandomForestRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = FHERandomForestRegressor(n_estimators=20, max_depth=4).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = RandomForestRegressor

    def _trees(self, model):
        return _forest_regressor_trees(model)

    def _raw_float(self, model, X):
        return _raw_2d(model.predict(X), X.shape[0])


class FHEGradientBoostingClassifier(_FHETreeClassifier):
    """Gradient boosting classifier predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.GradientBoostingClassifier` (same parameters and
    defaults) plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``.  The circuit
    sums the shrunk tree values; the initial score, sigmoid / softmax and argmax are
    applied on the client.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from fheml.ensemble import FHEGradientBoostingClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = FHEGradientBoostingClassifier(n_estimators=20, max_depth=3).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = GradientBoostingClassifier
    _raw_kind = "logit"

    def _trees(self, model):
        return _gradient_boosting_trees(model)

    def _raw_float(self, model, X):
        return _raw_2d(model.decision_function(X), X.shape[0])


class FHEGradientBoostingRegressor(_FHETreeRegressor):
    """Gradient boosting regressor predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.GradientBoostingRegressor` (same parameters and
    defaults) plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from fheml.ensemble import FHEGradientBoostingRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = FHEGradientBoostingRegressor(n_estimators=20, max_depth=3).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = GradientBoostingRegressor

    def _trees(self, model):
        return _gradient_boosting_trees(model)

    def _raw_float(self, model, X):
        return _raw_2d(model.predict(X), X.shape[0])


class _HistGradientBoostingMixin:
    """The input bins are the model's own (the splits are exact); values already shrunk."""

    _float32_inputs = False

    def _input_edges(self, model):
        return model._bin_mapper.bin_thresholds_

    def _trees(self, model):
        return _hist_gradient_boosting_trees(model)

    def _raw_float(self, model, X):
        return _raw_2d(model._raw_predict(X), X.shape[0])


class FHEHistGradientBoostingClassifier(_HistGradientBoostingMixin, _FHETreeClassifier):
    """Histogram gradient boosting classifier predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.HistGradientBoostingClassifier` (same parameters and
    defaults) plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``.  The input
    is binned with the model's own bins, so every split is exact.  Missing values and
    categorical features are not supported under encryption (a clear error is raised).

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from fheml.ensemble import FHEHistGradientBoostingClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = FHEHistGradientBoostingClassifier(max_iter=20, max_depth=3).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = HistGradientBoostingClassifier
    _raw_kind = "logit"


class FHEHistGradientBoostingRegressor(_HistGradientBoostingMixin, _FHETreeRegressor):
    """Histogram gradient boosting regressor predicting on encrypted data.

    Wraps :class:`sklearn.ensemble.HistGradientBoostingRegressor` (same parameters and
    defaults) plus ``n_bits``, ``p_error``, ``global_p_error`` and ``n_jobs``; the inverse
    link of the loss (``exp`` for Poisson / Gamma) is applied on the client.

    {parameters}

    {attributes}


    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from fheml.ensemble import FHEHistGradientBoostingRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = FHEHistGradientBoostingRegressor(max_iter=20, max_depth=3).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

    _sklearn_estimator_class = HistGradientBoostingRegressor

    def _inverse_link(self, raw):
        return self.sklearn_model_._loss.link.inverse(raw)


# ------------------------------------------------------------ optional packages -----------

_IDENTITY_OBJECTIVES = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror",
                        "reg:quantileerror", "regression", "regression_l1", "huber", "fair",
                        "quantile")


def _check_identity_objective(objective):
    if objective is not None and not callable(objective) and \
            str(objective) not in _IDENTITY_OBJECTIVES:
        raise NotImplementedError(f"objective {objective!r} is not supported under encryption "
                                  f"(supported: {', '.join(_IDENTITY_OBJECTIVES)})")


class _BoostingPackageModel:
    """Boosting from an optional package, read through the entries of :data:`_PACKAGES`:
    ``_read_trees(model, n_outputs)``, ``_raw_scores(model, X)`` and ``_objective_attr``
    (the fitted objective a regressor checks).  Tree ``i`` adds to output
    ``i % n_outputs``; raw scores are margins (sigmoid / softmax on the client)."""

    def _trees(self, model):
        if isinstance(self, _FHETreeClassifier):
            n_classes = len(model.classes_)
            return type(self)._read_trees(model, 1 if n_classes == 2 else n_classes)
        _check_identity_objective(getattr(model, self._objective_attr))
        return type(self)._read_trees(model, 1)

    def _raw_float(self, model, X):
        return _raw_2d(type(self)._raw_scores(model, X), X.shape[0])


_PACKAGE_DOC = """{title} {kind} predicting on encrypted data (``pip install fheml[{package}]``).

    Wraps :class:`{package}.{wrapped}` (same parameters and defaults) plus ``n_bits``,
    ``p_error``, ``global_p_error`` and ``n_jobs``.{note}

    {{parameters}}

    {{attributes}}


    Examples
    --------
    >>> from sklearn.datasets import {dataset}
    >>> from fheml.ensemble import FHE{wrapped}
    >>> X, y = {dataset}(return_X_y=True)
    >>> model = FHE{wrapped}(n_estimators=20, max_depth=3).fit(X, y)
    >>> y_enc = model.predict(X[:20], fhe="execute")
    """

# package -> how its fitted models are read (see _BoostingPackageModel).
_PACKAGES = {
    "xgboost": {"title": "XGBoost", "prefix": "XGB", "read_trees": _xgboost_trees,
                "raw_scores": lambda model, X: model.predict(X, output_margin=True),
                "objective_attr": "objective", "attrs": {}},
    "lightgbm": {"title": "LightGBM", "prefix": "LGBM", "read_trees": _lightgbm_trees,
                 "raw_scores": lambda model, X: model.predict(X, raw_score=True),
                 "objective_attr": "objective_",
                 # LightGBM bins and predicts in float64; parameters it takes only
                 # through **kwargs (e.g. verbose) are not exposed
                 "attrs": {"_float32_inputs": False, "_sklearn_params_exclude": ("kwargs",)}},
}


def _package_estimators(package, module):
    """``FHE<prefix>Classifier`` and ``FHE<prefix>Regressor`` of an installed package."""
    entry = _PACKAGES[package]
    classes = {}
    for kind, base, dataset, note in (
            ("classifier", _FHETreeClassifier, "load_breast_cancer", ""),
            ("regressor", _FHETreeRegressor, "load_diabetes",
             "  Objectives with an identity link only.")):
        wrapped = f"{entry['prefix']}{kind.capitalize()}"
        namespace = {
            "__module__": __name__, "__qualname__": f"FHE{wrapped}",
            "__doc__": _PACKAGE_DOC.format(title=entry["title"], kind=kind, package=package,
                                           wrapped=wrapped, note=note, dataset=dataset),
            "_sklearn_estimator_class": getattr(module, wrapped),
            "_read_trees": staticmethod(entry["read_trees"]),
            "_raw_scores": staticmethod(entry["raw_scores"]),
            "_objective_attr": entry["objective_attr"], **entry["attrs"]}
        if base is _FHETreeClassifier:
            namespace["_raw_kind"] = "logit"
        classes[f"FHE{wrapped}"] = type(f"FHE{wrapped}", (_BoostingPackageModel, base),
                                        namespace)
    return classes


def _installed_package_estimators():
    """The classes of every optional package that imports (fheml[xgboost], fheml[lightgbm])."""
    classes = {}
    for package in _PACKAGES:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        classes.update(_package_estimators(package, module))
    return classes


_OPTIONAL_ESTIMATORS = _installed_package_estimators()
globals().update(_OPTIONAL_ESTIMATORS)
__all__ += sorted(_OPTIONAL_ESTIMATORS)
