"""Encrypted evaluation of tree ensembles: unary input bits, a few small lookups per tree.

The shared machinery of :mod:`fheml.tree` and :mod:`fheml.ensemble` (see docs/trees.md).

Inputs.  Each feature ``f`` has public cut points ``edges[f]`` computed from the training
data alone (midpoints of its distinct values, or ``2**n_bits - 1`` quantiles when there are
more).  Its bin index is ``q_f = #{j : x_f > edges[f][j]}`` and the client encrypts the unary
("thermometer") bits ``[q_f > j]`` for *every* level ``j`` of every feature: the client
artifact holds the edges, never the thresholds of the model.

Nodes.  A split of feature ``f`` at threshold ``t`` goes right iff ``x_f > t``; ``t`` is mapped
to the nearest edge ``edges[f][j]`` and the test becomes the encrypted bit ``[q_f > j]``: no
lookup.  Going right is the literal ``b``, going left ``1 - b``.

Lookups.  Each tree's output is the value of its root plus a sum of lookups (see
:func:`plan_lookups`): an *edge* lookup reads the sum of the ``L`` literals on the path to
a node, which is ``L`` iff the node is reached (``L + 1`` values); a *block* lookup covers a
connected set ``S`` of ``m`` internal nodes rooted at a node ``u`` of depth ``k``: with ``s``
the sum of the ``k`` literals on the path to ``u`` and ``b_0 .. b_{m-1}`` the bits of the
nodes of ``S``, the integer ``s * 2**m + sum_i b_i 2**i`` (``(k + 1) 2**m`` values) tells
whether ``u`` is reached and, if so, where the walk leaves ``S``.  The tables hold value
differences between nodes (0 where nothing is reached), internal nodes get the values
that leave the fewest non-zero differences, and a dynamic program picks the fewest
lookups of a precision ``B`` (3 to 8 bits).  Ensemble sums are linear.
"""

from dataclasses import dataclass

import numpy as np

from fheml.compiler.circuit import Circuit, finalize
from fheml.compiler.lowering import MAX_LOOKUP_BITS
from fheml.compiler.program import PNode, Program

__all__ = ["ThermometerQuantizer", "Tree", "TreeCircuitPlan", "quantize_ensemble", "topological"]

MIN_LOOKUP_BITS = 3
# Blind rotations the trees' parameters are chosen among: the classic one only.  A
# multi-bit key (grouping factor 2) is 1.5x larger: on breast_cancer it made the ensembles'
# evaluation keys 31-43 MB, 0.53-0.56x Concrete ML's (the target is 0.5x), for lookups
# about twice as fast that the trees' latency does not need (0.015-0.026x the peer's
# against 0.022-0.03x classic; benchmarks/bench_trees.py, docs/trees.md).
GROUPING_FACTORS = (1,)


# ------------------------------------------------------------------ trees ----------------

@dataclass
class Tree:
    """One binary decision tree as arrays (node 0 is the root).

    A node goes right iff ``x[feature] > threshold``, a missing value (NaN) iff
    ``missing_right``; leaves have ``left == right == -1``.

    Attributes
    ----------
    feature, left, right : ndarray of int64, shape (n_nodes,)
    threshold : ndarray of float64, shape (n_nodes,)
    value : ndarray of float64, shape (n_nodes, n_outputs)
        Contribution of each leaf to the model's raw outputs (rows of internal nodes are
        ignored).
    missing_right : ndarray of bool, shape (n_nodes,)
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_right: np.ndarray

    @property
    def is_leaf(self):
        return self.left < 0

    def leaf_index(self, X):
        """Leaf reached by each row of ``X`` (float), right iff ``x > threshold``, NaN
        as ``missing_right``."""
        node = np.zeros(X.shape[0], dtype=np.int64)
        active = ~self.is_leaf[node]
        while active.any():
            n = node[active]
            x = X[np.flatnonzero(active), self.feature[n]]
            go_right = np.where(np.isnan(x), self.missing_right[n], x > self.threshold[n])
            node[active] = np.where(go_right, self.right[n], self.left[n])
            active = ~self.is_leaf[node]
        return node

    def depths(self):
        depth = np.zeros(len(self.feature), dtype=np.int64)
        for u in range(len(self.feature)):  # parents precede children in every format used
            if self.left[u] >= 0:
                depth[self.left[u]] = depth[u] + 1
                depth[self.right[u]] = depth[u] + 1
        return depth


def topological(feature, threshold, left, right, value, missing_right=None):
    """A :class:`Tree` renumbered so that parents precede children (breadth first);
    missing values go left unless ``missing_right`` says otherwise."""
    order, position = [0], {0: 0}
    for u in order:
        if left[u] >= 0:
            for c in (left[u], right[u]):
                position[c] = len(order)
                order.append(c)
    order = np.asarray(order)
    remap = np.full(len(feature), -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    new_left = np.where(left[order] >= 0, remap[np.maximum(left[order], 0)], -1)
    new_right = np.where(right[order] >= 0, remap[np.maximum(right[order], 0)], -1)
    if missing_right is None:
        missing_right = np.zeros(len(feature), dtype=bool)
    return Tree(np.asarray(feature, dtype=np.int64)[order],
                np.asarray(threshold, dtype=np.float64)[order], new_left, new_right,
                np.asarray(value, dtype=np.float64)[order],
                np.asarray(missing_right, dtype=bool)[order] & (new_left >= 0))


# ---------------------------------------------------------------- inputs -----------------

class ThermometerQuantizer:
    """Per-feature bins from the data and the unary bits the client encrypts.

    Parameters
    ----------
    n_bits : int
        At most ``2**n_bits - 1`` cut points (levels) per feature.
    float32 : bool, default=False
        Read values as float32 first, as models that fit and predict in float32 do
        (scikit-learn's trees, XGBoost): their thresholds are then cut points exactly.
    missing : bool, default=False
        Missing values (NaN) are allowed: each feature has one more bit, ``[x_f is NaN]``
        (its unary bits are then all 0), after all the levels.

    Attributes
    ----------
    edges_ : list of ndarray
        Cut points of each feature (midpoints of consecutive distinct training values, or
        quantile midpoints when there are more than ``2**n_bits``).
    offsets_ : ndarray of int64, shape (n_features + 1,)
        Column of the first bit of each feature in the encoded vector.
    """

    def __init__(self, n_bits, float32=False, missing=False):
        self.n_bits = int(n_bits)
        self.float32 = bool(float32)
        self.missing = bool(missing)

    def _values(self, X):
        X = np.asarray(X, dtype=np.float32 if self.float32 else np.float64)
        return X.astype(np.float64)

    def fit(self, X):
        max_levels = (1 << self.n_bits) - 1
        self.edges_ = []
        for column in self._values(X).T:
            column = column[~np.isnan(column)]
            distinct = np.unique(column)
            if distinct.size - 1 <= max_levels:
                edges = (distinct[:-1] + distinct[1:]) / 2
            else:
                # HistGradientBoosting's rule: midpoint quantiles of the data
                percentiles = np.linspace(0, 100, max_levels + 2)[1:-1]
                edges = np.unique(np.percentile(column, percentiles, method="midpoint"))
            self.edges_.append(edges)
        self.offsets_ = np.concatenate([[0], np.cumsum([e.size for e in self.edges_])])
        return self

    @property
    def n_levels(self):
        """Total number of encoded bits per sample."""
        return int(self.offsets_[-1]) + (len(self.edges_) if self.missing else 0)

    def missing_column(self, f):
        """Column of the bit ``[x_f is NaN]`` (None without missing values)."""
        return int(self.offsets_[-1]) + f if self.missing else None

    def quant(self, X):
        """Bin index of every value: the number of cut points it exceeds (-1: NaN)."""
        X = self._values(X)
        q = np.stack([np.searchsorted(e, X[:, f], side="left")
                      for f, e in enumerate(self.edges_)], axis=1).astype(np.int64)
        if self.missing:
            q[np.isnan(X)] = -1
        return q

    def encode(self, q):
        """Unary bits ``[q_f > j]`` of bin indices (and ``[q_f == -1]`` with missing values),
        shape (n_samples, n_levels), uint8."""
        q = np.asarray(q, dtype=np.int64)
        bits = np.zeros((q.shape[0], self.n_levels), dtype=np.uint8)
        for f, edges in enumerate(self.edges_):
            levels = np.arange(edges.size)
            bits[:, self.offsets_[f]:self.offsets_[f + 1]] = q[:, f:f + 1] > levels
        if self.missing:
            bits[:, self.offsets_[-1]:] = q < 0
        return bits

    def columns(self, trees, X):
        """Per tree and node: the bit columns whose sum is the node's "go right" bit.

        A value goes right iff ``x[feature] > threshold``: on the training values the split
        separates the values ``<= threshold`` from the others, and the column is the cut
        point between the largest of the first and the smallest of the second, so the test
        is exact on every training value when each has its own bin (quantile bins: the
        nearest cut point).  A missing value's unary bits are 0, so the node also reads the
        feature's missing bit when missing values go right.  Empty for leaves; a feature
        without cut points (constant in ``X``) has no unary bit (its test is ``False``).
        """
        X = self._values(X)
        distinct = [np.unique(column[~np.isnan(column)]) for column in X.T]
        out = []
        for tree in trees:
            cols = []
            for f, t, right in zip(tree.feature, tree.threshold, tree.missing_right):
                missing = (self.missing_column(f),) if f >= 0 and right and self.missing \
                    else ()
                if f < 0 or self.edges_[f].size == 0:
                    cols.append(missing)
                    continue
                edges = self.edges_[f]
                if edges.size == distinct[f].size - 1:  # one bin per training value
                    j = int(np.searchsorted(distinct[f], t, side="right")) - 1
                else:
                    below = int(np.searchsorted(edges, t, side="left"))
                    near = [k for k in (below - 1, below) if 0 <= k < edges.size]
                    j = min(near, key=lambda k: abs(edges[k] - t))
                cols.append((int(self.offsets_[f] + np.clip(j, 0, edges.size - 1)),) + missing)
            out.append(cols)
        return out


# ------------------------------------------------------------- quantization --------------

def quantize_ensemble(trees, n_bits):
    """Integer leaf values on one common step.

    Parameters
    ----------
    trees : list of Tree
    n_bits : int
        The widest tree's leaf values span ``2**n_bits - 2`` steps (an even count, so
        that 0.5 of a probability stays exactly half-way).

    Returns
    -------
    step : float
    quantized : list of ndarray of int64 (n_nodes, n_outputs)
        ``rint(value / step)`` at the leaves, 0 at internal nodes.
    """
    spans = [np.ptp(t.value[t.is_leaf], axis=0).max() for t in trees]
    span = max(spans, default=0.0)
    levels = (1 << n_bits) - 2
    step = span / levels if span > 0 else 1.0
    quantized = []
    for t in trees:
        q = np.rint(t.value / step).astype(np.int64)
        q[~t.is_leaf] = 0
        quantized.append(q)
    return step, quantized


# ------------------------------------------------------------------- lookups -------------
#
# Telescoping.  Give every node u a value V(u), V(leaf) = its leaf value.  The walk from the
# root to the reached leaf crosses edges whose differences V(child) - V(parent) sum to
# V(leaf) - V(root); V(root) is a constant (added on the client), each non-zero difference
# must come from a lookup, and the internal values are free: they are chosen so that as
# few lookups as possible remain.  A lookup is either
#   - an *edge* u -> c: the sum of the literals on the path to c equals its length L iff c
#     is reached (L + 1 values), the table holds the difference there, 0 elsewhere; or
#   - a *block* S rooted at u (depth k, m nodes, (k + 1) 2**m values, see the module
#     docstring): one table entry per exit e of S, V(e) - V(parent of the block).
# A dynamic program over (node, value passed down) finds the fewest lookups.

_INF = 1 << 60


def _rooted_subsets(tree, u, budget):
    """Connected sets of internal nodes rooted at ``u`` with at most ``budget`` nodes."""
    if budget < 1:
        return []
    options = []
    for child in (tree.left[u], tree.right[u]):
        opts = [()]
        if not tree.is_leaf[child]:
            opts += _rooted_subsets(tree, child, budget - 1)
        options.append(opts)
    return [(u,) + a + b for a in options[0] for b in options[1] if 1 + len(a) + len(b) <= budget]


def _exits(tree, block):
    inside = set(block)
    return [c for v in block for c in (tree.left[v], tree.right[v]) if c not in inside]


def plan_lookups(tree, values, bits):
    """Fewest lookups of at most ``bits`` bits giving one output of ``tree``.

    Parameters
    ----------
    tree : Tree
    values : ndarray of int64 (n_nodes,)
        Quantized leaf values (internal rows ignored).
    bits : int

    Returns
    -------
    root_value : int
        ``V(root)``: the tree's output is it plus the lookups.
    lookups : list of tuple
        ``("edge", child, difference)`` or ``("block", block, {exit: difference})``.
    None when a leaf is too deep for ``bits``.
    """
    depth = tree.depths()
    size = 1 << bits
    n = len(tree.feature)
    below = [None] * n   # distinct leaf values under each node
    best = [None] * n    # node -> {value passed down (None: any other): (cost, choice)}
    cheapest = [0] * n   # node -> min over values of the cost; value reached
    chosen = [None] * n
    for u in reversed(range(n)):
        if tree.is_leaf[u]:
            below[u] = {int(values[u])}
            best[u] = {int(values[u]): (0, None), None: (_INF, None)}
            cheapest[u], chosen[u] = 0, int(values[u])
            continue
        children = (tree.left[u], tree.right[u])
        below[u] = below[children[0]] | below[children[1]]
        budget = max((m for m in range(bits + 1) if (depth[u] + 1) << m <= size), default=0)
        block = (_INF, None)
        for nodes in _rooted_subsets(tree, u, budget):
            inner = [e for e in _exits(tree, nodes) if not tree.is_leaf[e]]
            cost = 1 + sum(cheapest[e] for e in inner)
            if cost < block[0]:
                block = (cost, nodes)
        options = {}
        for v in sorted(below[u]) + [None]:
            cost, plan = 0, []
            for c in children:
                keep = best[c].get(v, best[c][None])[0]
                jump = 1 + cheapest[c] if depth[c] + 1 <= size else _INF
                cost += min(keep, jump)
                plan.append(keep <= jump)
            options[v] = (cost, ("edges", plan)) if cost <= block[0] else \
                (block[0], ("block", block[1]))
        best[u] = options
        cheapest[u], chosen[u] = min((c, v) for v, (c, _) in options.items() if v is not None)
        if cheapest[u] >= _INF:
            return None
    lookups = []
    stack = [(0, chosen[0])]
    while stack:
        u, v = stack.pop()
        if tree.is_leaf[u]:
            continue
        _, (kind, data) = best[u].get(v, best[u][None])
        if kind == "block":
            differences = {}
            for e in _exits(tree, data):
                differences[e] = chosen[e] - v
                stack.append((e, chosen[e]))
            lookups.append(("block", data, differences))
            continue
        for c, keep in zip((tree.left[u], tree.right[u]), data):
            if keep:
                stack.append((c, v))
            else:
                lookups.append(("edge", c, chosen[c] - v))
                stack.append((c, chosen[c]))
    return chosen[0], [lk for lk in lookups if lk[0] == "block"
                       and any(lk[2].values()) or lk[0] == "edge" and lk[2]]


def _path_literals(tree):
    """Per node: list of (parent, went_right) on the path from the root."""
    paths = [[] for _ in tree.feature]
    for u in range(len(tree.feature)):
        if tree.left[u] >= 0:
            paths[tree.left[u]] = paths[u] + [(u, False)]
            paths[tree.right[u]] = paths[u] + [(u, True)]
    return paths


# -------------------------------------------------------------------- plan ----------------

class TreeCircuitPlan:
    """The lookups of a quantized ensemble (see :func:`plan_lookups`).

    Parameters
    ----------
    trees : list of Tree
    values : list of ndarray of int64 (n_nodes, n_outputs)
        Quantized leaf values, from :func:`quantize_ensemble`.
    columns : list of list of tuple
        Per tree and node: the bit columns whose sum is its test (see
        :meth:`ThermometerQuantizer.columns`).
    bits : int
        Lookup precision the lookups are planned for.

    Attributes
    ----------
    offset : ndarray of int64 (n_outputs,)
        Sum of the trees' root values: an output is it plus the sum of the lookups.
    used_columns : ndarray of int64
        Encoded bits the server reads (sorted); the circuit input is these bits.
    cols, coefs : ndarray of int64, shape (n_lookups, n_terms)
        Lookup ``e`` reads ``sum_t coefs[e, t] * bits[cols[e, t]] + consts[e]``.
    consts : ndarray of int64 (n_lookups,)
    tables : ndarray of int64 (n_lookups, n_index)
    tree_of, output_of : ndarray of int64 (n_lookups,)
    ranges : ndarray of int64 (n_trees, n_outputs, 2)
        Smallest and largest contribution of each tree (reached leaf minus root value).
    """

    def __init__(self, trees, values, columns, bits):
        self.bits = bits
        self.n_trees = len(trees)
        self.n_outputs = values[0].shape[1] if values else 1
        rows, tree_of, output_of, tables = [], [], [], []
        self.ranges = np.zeros((len(trees), self.n_outputs, 2), dtype=np.int64)
        self.offset = np.zeros(self.n_outputs, dtype=np.int64)
        for t_index, (tree, q, cols) in enumerate(zip(trees, values, columns)):
            leaves = np.flatnonzero(tree.is_leaf)
            paths = _path_literals(tree)
            for o in range(self.n_outputs):
                planned = plan_lookups(tree, q[:, o], bits)
                if planned is None:
                    raise ValueError(f"a tree is too deep for {bits}-bit lookups")
                root_value, lookups = planned
                self.offset[o] += root_value
                self.ranges[t_index, o] = (q[leaves, o].min() - root_value,
                                           q[leaves, o].max() - root_value)
                for kind, data, difference in lookups:
                    if kind == "edge":
                        terms, const, table = self._edge(cols, paths, data, difference)
                    else:
                        terms, const, table = self._block(tree, cols, paths, data, difference)
                    rows.append((terms, const))
                    tables.append(table)
                    tree_of.append(t_index)
                    output_of.append(o)
        self.tree_of = np.asarray(tree_of, dtype=np.int64)
        self.output_of = np.asarray(output_of, dtype=np.int64)
        used = sorted({c for terms, _ in rows for c in terms})
        self.used_columns = np.asarray(used, dtype=np.int64)
        position = {c: i for i, c in enumerate(used)}
        width = max((len(terms) for terms, _ in rows), default=1)
        n = len(rows)
        self.cols = np.zeros((n, max(width, 1)), dtype=np.int64)
        self.coefs = np.zeros((n, max(width, 1)), dtype=np.int64)
        self.consts = np.zeros(n, dtype=np.int64)
        for e, (terms, const) in enumerate(rows):
            for t, (c, w) in enumerate(sorted(terms.items())):
                self.cols[e, t] = position[c]
                self.coefs[e, t] = w
            self.consts[e] = const
        n_index = max((len(t) for t in tables), default=1)
        self.tables = np.zeros((n, n_index), dtype=np.int64)
        for e, t in enumerate(tables):
            self.tables[e, :len(t)] = t

    @property
    def n_lookups(self):
        return len(self.consts)

    @staticmethod
    def _literals(cols, path, weight):
        """Linear form of ``weight`` times the sum of the literals of ``path`` (b going
        right, 1 - b going left; ``b`` the sum of the node's columns, 0 when none)."""
        terms, const = {}, 0
        for parent, went_right in path:
            if not went_right:
                const += weight
            for c in cols[parent]:
                terms[c] = terms.get(c, 0) + (weight if went_right else -weight)
        return terms, const

    def _edge(self, cols, paths, child, difference):
        """Sum of the literals of the path to ``child``: ``difference`` iff it is complete."""
        terms, const = self._literals(cols, paths[child], 1)
        table = np.zeros(len(paths[child]) + 1, dtype=np.int64)
        table[-1] = difference
        return {c: w for c, w in terms.items() if w}, const, table

    def _block(self, tree, cols, paths, block, differences):
        """Linear form and table of one block (see the module docstring)."""
        root = block[0]
        k, m = len(paths[root]), len(block)
        terms, const = self._literals(cols, paths[root], 1 << m)
        for i, node in enumerate(block):
            for c in cols[node]:
                terms[c] = terms.get(c, 0) + (1 << i)
        position = {node: i for i, node in enumerate(block)}
        table = np.zeros((k + 1) << m, dtype=np.int64)
        for bits in range(1 << m):
            node = root
            while node in position:
                node = tree.right[node] if (bits >> position[node]) & 1 else tree.left[node]
            table[(k << m) + bits] = differences[node]
        return {c: w for c, w in terms.items() if w}, const, table

    # -- clear evaluation (reference of the circuit) ----------------------------------------
    def lookup_inputs(self, bits_used):
        """Index of every lookup for rows of used bits, shape (n_samples, n_lookups)."""
        bits_used = np.asarray(bits_used, dtype=np.int64)
        return np.einsum("net,et->ne", bits_used[:, self.cols], self.coefs) + self.consts

    def evaluate(self, bits_used):
        """Per-tree-sum of lookups, shape (n_samples, n_outputs), in the clear."""
        index = self.lookup_inputs(bits_used)
        values = self.tables[np.arange(self.n_lookups), index] if index.size else \
            np.zeros(index.shape, dtype=np.int64)
        out = np.zeros((bits_used.shape[0], self.n_outputs), dtype=np.int64)
        np.add.at(out.T, self.output_of, values.T)
        return out

    # -- program ------------------------------------------------------------------------------
    def groups(self, n_groups):
        """Tree index -> output group, ``n_groups`` contiguous groups of balanced lookups."""
        per_tree = np.bincount(self.tree_of, minlength=self.n_trees)
        cumulative = np.cumsum(per_tree) - per_tree / 2
        total = max(1, per_tree.sum())
        return np.minimum((cumulative * n_groups / total).astype(np.int64), n_groups - 1)

    def program(self, n_groups):
        """The circuit: used bits -> lookups -> sums per (group, output)."""
        group = self.groups(n_groups)
        n, n_out = self.n_lookups, self.n_outputs
        prog = Program()
        add = _adder(prog)
        width = len(self.used_columns)
        x = add("enc_input", [], {"index": 0, "name": "bits"}, (width,), True, 1.0, (0, 1))
        gathered = add("enc_getitem", [x], {"index": (self.cols,)}, self.cols.shape, True, 1.0,
                       (0, 1))
        coefs = add("const", [], {"value": self.coefs}, self.coefs.shape, False)
        norm = float(np.sqrt((self.coefs.astype(np.float64) ** 2).sum(axis=1)).max(initial=1))
        lo = int(np.minimum(self.coefs, 0).sum(axis=1).min(initial=0))
        hi = int(np.maximum(self.coefs, 0).sum(axis=1).max(initial=0))
        scaled = add("enc_mul_clear", [gathered, coefs], {}, self.cols.shape, True,
                     float(np.abs(self.coefs).max(initial=1)), (lo, hi))
        summed = add("enc_sum", [scaled], {"axis": (1,), "keepdims": False}, (n,), True, norm,
                     (lo, hi))
        consts = add("const", [], {"value": self.consts}, (n,), False)
        index_hi = self.tables.shape[1] - 1
        index = add("enc_add_clear", [summed, consts], {"neg_enc": False, "neg_clear": False},
                    (n,), True, norm, (0, index_hi))
        tables, table_index = np.unique(self.tables, axis=0, return_inverse=True)
        table_index = table_index.reshape(-1).astype(np.int64) if tables.shape[0] > 1 else None
        looked = add("tlu", [index], {"lo": 0, "shift": 0, "tables": tables,
                                      "table_index": table_index},
                     (n,), True, 1.0, (int(self.tables.min(initial=0)),
                                       int(self.tables.max(initial=0))))
        column = group[self.tree_of] * n_out + self.output_of
        routing = np.zeros((n, n_groups * n_out), dtype=np.int64)
        routing[np.arange(n), column] = 1
        route = add("const", [], {"value": routing}, routing.shape, False)
        lo_out = hi_out = 0
        for g in range(n_groups):
            in_group = self.ranges[group == g]
            lo_out = min(lo_out, int(in_group[..., 0].sum(axis=0).min(initial=0)))
            hi_out = max(hi_out, int(in_group[..., 1].sum(axis=0).max(initial=0)))
        out_norm = float(np.sqrt(routing.sum(axis=0).max(initial=1)))
        out = add("enc_matmul", [looked, route], {"enc_left": True}, (n_groups * n_out,), True,
                  out_norm, (lo_out, hi_out))
        prog.input_nodes = [x]
        prog.output_nodes = [out]
        return prog

    def compile(self, n_levels, p_error=None, global_p_error=None, n_jobs=1):
        """The cheapest circuit over output groupings (more groups: less output noise),
        with the input words rounded to the fewest bits that keep its parameters; among
        equally cheap ones, the fewest bytes on the wire per sample.

        Cheapest: the selector's measured time per lookup
        (:attr:`~fheml._core.ParameterSet.time_estimate`).

        Parameters
        ----------
        n_levels : int
            Bits the client encrypts per sample.
        p_error, global_p_error : float or None
        n_jobs : int

        Returns
        -------
        circuit : Circuit
            ``circuit.program.input_variance`` is the rounding noise of the input words.
        n_groups : int
        word_bits : int
            Bits per input word on the wire (see :func:`encrypt_unary`).
        """
        from fheml._core import select_parameters

        if self.n_lookups == 0:
            raise ValueError("every leaf of every tree holds the same value: the model is "
                             "constant and there is nothing to compute under encryption")
        best = None
        counts = sorted({1, 2, 4, 8, 16, 32, self.n_trees} & set(range(1, self.n_trees + 1)))
        for n_groups in counts:
            program = self.program(n_groups)
            spec = [{"name": "bits", "encrypted": True, "shape": [len(self.used_columns)],
                     "lo": 0, "hi": 1}]
            try:
                params, per_lookup = finalize(program, spec, p_error, global_p_error,
                                              GROUPING_FACTORS)
            except ValueError:
                continue
            word_bits = _fewest_word_bits(program, params, per_lookup)
            output_bytes = n_groups * self.n_outputs * (params.big_lwe_dimension + 1) * 8
            wire = word_bits * n_levels / 8 + output_bytes
            key = (params.time_estimate, wire, n_groups)
            if best is None or key < best[0]:
                best = (key, program, params, per_lookup, spec, word_bits)
            # The cheapest set for these lookups (bootstrap outputs of norm 1 read at the
            # lookup width, outputs unconstrained) cannot be beaten by more groups, only
            # the wire bytes can, while fewer input bits save more than an output costs.
            # (The lookup width alone is no test: finalize may keep it and pay for the
            # output noise with a second bootstrap level instead.)
            cheapest = select_parameters(params.precision, per_lookup, 1.0,
                                         grouping_factors=GROUPING_FACTORS).time_estimate
            if params.time_estimate <= cheapest and \
                    (best[-1] - INPUT_WORD_BITS[0]) * n_levels / 8 < output_bytes / n_groups:
                break
        if best is None:
            raise ValueError("no parameters decrypt the ensemble's outputs; lower n_bits")
        _, program, params, per_lookup, spec, word_bits = best
        program.input_variance = rounding_variance(word_bits)
        out = program.nodes[program.output_nodes[0]]
        outputs = [{"shape": list(out.shape), "lo": int(out.safe_bounds[0])}]
        circuit = Circuit(None, program, params, per_lookup, spec, outputs, n_jobs)
        return circuit, out.shape[0] // self.n_outputs, word_bits


def _fewest_word_bits(program, params, per_lookup):
    """Fewest bits per input word whose rounding noise, charged to every lookup and to the
    inputs' own precision, keeps each within ``per_lookup`` with ``params``."""
    from fheml._core.parameters import log2_p_fail
    from fheml.compiler.circuit import lookup_p_fail

    inputs = [program.nodes[k].precision for k in program.input_nodes]
    for word_bits in INPUT_WORD_BITS:
        program.input_variance = rounding_variance(word_bits)
        fresh = params.big_noise_std ** 2 + program.input_variance
        if all(lookup_p_fail(program, n, params) <= per_lookup for n in program.lookups) and \
                all(log2_p_fail(fresh, p) <= np.log2(per_lookup) for p in inputs):
            return word_bits
    return INPUT_WORD_BITS[-1]


# --------------------------------------------------------------- client bits ---------------

# Bits per encrypted input word tried (bit-packed on the wire; 64: exact words).
INPUT_WORD_BITS = (10, 12, 14, 16, 20, 24, 32, 64)


def rounding_variance(word_bits):
    """Error variance of a torus word rounded to its top ``word_bits`` bits (uniform)."""
    return 0.0 if word_bits >= 64 else 2.0 ** (-2 * word_bits) / 12


def unary_layout(n_levels, polynomial_size):
    """``(polynomials, coefficients)`` per sample: the fewest polynomials of ``N``
    coefficients holding ``n_levels`` bits, each filled to the same count."""
    polys = max(1, -(-n_levels // polynomial_size))
    return polys, max(1, -(-n_levels // polys))


def encrypt_unary(secret_keys, bits, precision, word_bits):
    """Client side: the unary bits of every sample packed in seeded GLWE ciphertexts.

    Parameters
    ----------
    secret_keys : fheml._core.SecretKeys
        The circuit's keys: the GLWE key under which sample extraction gives LWE
        ciphertexts under the bootstrapping input key.
    bits : ndarray of uint8 (n_samples, n_levels)
    precision : int
        Encoding precision of the circuit's input.
    word_bits : int
        Bodies travel rounded to their top bits (bit-packed).

    Returns
    -------
    fheml._core.GlweCiphertext of shape (n_samples, polynomials)
        Bit ``j`` of a sample is coefficient ``j % count`` of its polynomial
        ``j // count`` (see :func:`unary_layout`); the masks are a seed.
    """
    from fheml._core import encode
    from fheml._core.glwe import encrypt_glwe

    key = secret_keys.glwe_secret_key()
    rows, n_levels = bits.shape
    polys, count = unary_layout(n_levels, key.polynomial_size)
    plain = np.zeros((rows, polys * count), dtype=np.uint64)
    plain[:, :n_levels] = encode(np.asarray(bits, dtype=np.int64), precision)
    return encrypt_glwe(key, plain.reshape(rows, polys, count), word_bits=word_bits)


def check_unary(ct, n_levels, params):
    """Raise :class:`~fheml._core.serialization.MismatchError` unless ``ct`` holds
    ``n_levels`` bits per sample encrypted for ``params`` (see :func:`encrypt_unary`)."""
    from fheml._core.glwe import GlweCiphertext
    from fheml._core.serialization import MismatchError

    if not isinstance(ct, GlweCiphertext):
        raise TypeError(f"expected the GlweCiphertext made by encrypt_input, got "
                        f"{type(ct).__name__}")
    k, N = params.glwe_dimension, params.polynomial_size
    if (ct.glwe_dimension, ct.polynomial_size) != (k, N):
        raise MismatchError(f"the encrypted input is for GLWE (k={ct.glwe_dimension}, "
                            f"N={ct.polynomial_size}); this model's keys have (k={k}, N={N})")
    polys, count = unary_layout(n_levels, N)
    start, stop, step = ct.coefficients
    if len(ct.shape) != 2 or ct.shape[1] != polys or (start, stop, step) != (0, count, 1):
        got = ct.shape[1] * (stop - start) // step if len(ct.shape) == 2 else None
        raise MismatchError(f"the encrypted input has {got} bits per sample in "
                            f"{ct.shape[1:]} polynomials; this model encodes {n_levels} "
                            f"bits ({polys} polynomials of {count})")


def extract_unary(ct, columns, n_levels, max_words=1 << 23):
    """Server side: LWE ciphertexts of the bits ``columns`` of every sample.

    Only the used coefficients are extracted (masks regenerated from the seed), a few
    rows at a time so that the work arrays stay below ``max_words`` words.

    Returns
    -------
    fheml._core.LweCiphertext of shape (n_samples, len(columns))
    """
    from fheml._core import LweCiphertext
    from fheml._core.glwe import GlweCiphertext, sample_extract

    rows = ct.shape[0]
    k, N = ct.glwe_dimension, ct.polynomial_size
    _, count = unary_layout(n_levels, N)
    poly, coef = np.divmod(np.asarray(columns, dtype=np.int64), count)
    out = np.empty((rows, poly.size, k * N + 1), dtype=np.uint64)
    step = max(1, max_words // max(1, poly.size * k * N))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        masks = ct.masks[r0:r1]
        for p in np.unique(poly):
            where = np.flatnonzero(poly == p)
            part = GlweCiphertext(np.ascontiguousarray(ct.bodies[r0:r1, p]), ct.key_id,
                                  masks=np.ascontiguousarray(masks[:, p]))
            out[r0:r1, where] = sample_extract(part, coef[where]).data
    return LweCiphertext(out, ct.key_id)


def _adder(prog):
    def add(op, inputs, attrs, shape, encrypted, nu=0.0, bounds=None):
        node = PNode(op, inputs, attrs, shape, encrypted, nu, where="tree ensemble")
        if bounds is not None:
            node.bounds = node.safe_bounds = (int(bounds[0]), int(bounds[1]))
        prog.nodes.append(node)
        return len(prog.nodes) - 1
    return add
