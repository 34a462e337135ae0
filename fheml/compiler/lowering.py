"""From the traced graph to a program: float fusion, lookups and linear operations.

Every graph node that must exist as an encrypted value is *materialized*:

- integer linear operations (``+ -`` and ``*`` / ``@`` with clear integers, sums and shape
  operations) become linear operations on ciphertexts;
- anything else is a function of encrypted values computed by a lookup.  Walking back from
  such a node through every non-linear or floating-point operation collects a *subgraph*
  whose leaves are materialized encrypted integers; the subgraph is evaluated on every
  possible leaf value (from the leaf's bounds on the inputset) to build the table.  One
  leaf gives one lookup (reading only the top bits when the leaf passes through
  :func:`fheml.round_bit_pattern`); several leaves are packed into one integer first.
- products, comparisons, maximum and minimum of two encrypted integers use cheaper
  decompositions through their difference (and sum).

Lowering runs the program in the clear on the inputset as it is built, so that each new
node knows its bounds (and each lookup its table domain).
"""

import numpy as np

from fheml.compiler.graph import (
    TracingError,
    align,
    batch_axes,
    batched_matmul,
    evaluate_op,
    range_bits,
)
from fheml.compiler.program import ClearBackend, PNode, Program, run_linear, run_lookup_clear

__all__ = ["MAX_LOOKUP_BITS", "evaluate_graph", "lower"]

MAX_LOOKUP_BITS = 8
"""Widest lookup input the engine supports."""

_ELEMENTWISE = frozenset({"ufunc", "astype", "round", "clip", "where", "lut", "univariate",
                          "round_bit_pattern"})
_LINEAR_STRUCTURAL = frozenset({"sum", "reshape", "transpose", "getitem", "concatenate",
                                "stack", "broadcast_to"})
_COMPARISONS = {
    "less": np.less, "less_equal": np.less_equal, "greater": np.greater,
    "greater_equal": np.greater_equal, "equal": np.equal, "not_equal": np.not_equal,
}


def evaluate_graph(graph, inputs):
    """Evaluate every node of ``graph`` on batched inputs; store bounds on the nodes.

    Parameters
    ----------
    graph : Graph
    inputs : list of numpy.ndarray
        One array ``(n, *shape)`` per argument.

    Returns
    -------
    list of numpy.ndarray
        Batched value of each node.
    """
    values = []
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            if node.op == "const":
                v = np.asarray(node.attrs["value"])[None]
            elif node.op == "input":
                v = np.asarray(inputs[node.attrs["index"]])
            else:
                args = [values[i] for i in node.inputs]
                v = np.asarray(evaluate_op(node.op, node.attrs, args,
                                           [graph.nodes[i].shape for i in node.inputs],
                                           node.shape))
            values.append(v)
            if v.size:
                if node.kind == "float":
                    finite = v[np.isfinite(v)]
                    node.bounds = ((float(finite.min()), float(finite.max()))
                                   if finite.size else (float("nan"), float("nan")))
                else:
                    node.bounds = (int(v.min()), int(v.max()))
    return values


def worst_case_error(where, label, observed, worst, bits, rounded=0):
    """The lookup's input fits on the inputset but not over the compiled input ranges."""
    hint = (f"fheml.round_bit_pattern(x, lsbs_to_remove={rounded + bits - MAX_LOOKUP_BITS}) on "
            "its input")
    return TracingError(
        f"the lookup computing {label} at {where} reads a value seen in [{observed[0]}, "
        f"{observed[1]}] on the inputset, but inputs inside the compiled ranges (the encrypted "
        f"inputs' ranges and the clear arguments' ranges) can drive it anywhere in "
        f"[{worst[0]}, {worst[1]}]: {bits} bits, more than the {MAX_LOOKUP_BITS} bits a lookup "
        "can read, so an encrypted run on such inputs would be silently wrong. Use "
        f"{hint}, lower the bit width of the values feeding it, or compile with "
        "narrower input ranges (clip or rescale the inputs before encrypting)")


def too_wide_error(where, label, bits, rounded=0):
    hint = (f"use fheml.round_bit_pattern(x, lsbs_to_remove={bits - MAX_LOOKUP_BITS}) on its "
            "input, " if not rounded else
            f"raise lsbs_to_remove of its round_bit_pattern to {rounded + bits - MAX_LOOKUP_BITS}, ")
    return TracingError(
        f"the lookup computing {label} at {where} needs a {bits}-bit input, more than the "
        f"{MAX_LOOKUP_BITS} bits the engine supports; {hint}or lower the bit width of the "
        "values feeding it (fewer quantization bits, a smaller inputset range)"
    )


class _Lowering:
    def __init__(self, graph, inputs):
        self.graph = graph
        self.gvals = evaluate_graph(graph, inputs)
        self.inputs = inputs
        self.prog = Program()
        self.pvals = []
        self.gmap = {}
        self.backend = ClearBackend()
        self.ivals = []
        self._native = {}
        self.users = [0] * len(graph.nodes)
        for node in graph.nodes:
            for i in set(node.inputs):
                self.users[i] += 1
        for i in graph.output_ids:
            self.users[i] += 1
        self.root = []
        for g in graph.nodes:
            self.root.append(self._root(g))

    def _root(self, g):
        """The one encrypted node an elementwise computation depends on (``g.id`` itself
        when there is none or several): everything from that node to ``g`` fits in one
        lookup read at the root's precision, however it is spelled (``x * x``, ``x ** 2``,
        a float polynomial).  ``None`` for a float depending on several: it is not a
        value a lookup can read."""
        if not g.encrypted or g.clear_input or g.op not in _ELEMENTWISE:
            return g.id
        roots = {self.root[i] for i in g.inputs if self.enc(i)}
        if len(roots) == 1 and None not in roots:
            return roots.pop()
        return None if g.kind == "float" else g.id

    # -- classification ------------------------------------------------------------------
    def enc(self, i):
        return self.graph.nodes[i].encrypted

    def native(self, g):
        """Integer linear operation with encrypted operands (no lookup needed)."""
        if g.id not in self._native:
            self._native[g.id] = self._is_native(g)
        return self._native[g.id]

    def _is_native(self, g):
        if g.kind != "int" or not g.encrypted:
            return False
        if g.op == "ufunc" and g.attrs["name"] in ("add", "subtract", "multiply", "negative"):
            # x -> lookup -> (+ - * constant): fold the affine step into the same lookup
            # (no extra linear node; keeps a round_bit_pattern readable as top bits).
            enc = [i for i in g.inputs if self.enc(i)]
            if len(enc) == 1 and self.users[enc[0]] == 1 and not any(
                    self.graph.nodes[i].clear_input for i in g.inputs) and self.needs_table(
                    self.graph.nodes[enc[0]]):
                return False
        ins = [self.graph.nodes[i] for i in g.inputs]
        ints = all(n.kind in ("int", "bool") for n in ins)
        if g.op == "ufunc":
            name = g.attrs["name"]
            if name in ("add", "subtract"):
                return ints
            if name in ("negative", "positive"):
                return True
            if name == "multiply":
                return ints and sum(n.encrypted for n in ins) == 1
            return False
        if g.op == "matmul":
            return ints and sum(n.encrypted for n in ins) == 1
        if g.op in _LINEAR_STRUCTURAL:
            return ints
        if g.op == "astype":
            return ins[0].kind in ("int", "bool")
        return False

    def special(self, g):
        """Two-encrypted-operand op with a dedicated lowering."""
        if g.op == "where":
            clear_branches = not any(self.enc(i) for i in g.inputs[1:])
            if self.where_as_product(g) and (clear_branches or self.root[g.id] == g.id):
                return True  # linear without lookup, or narrower than the packed lookup
        if self.root[g.id] not in (None, g.id):
            return False  # one lookup on the common root is cheaper
        if g.op != "ufunc" or g.kind == "float" or len(g.inputs) != 2:
            return False
        ins = [self.graph.nodes[i] for i in g.inputs]
        if not all(n.encrypted and n.kind in ("int", "bool") for n in ins):
            return False
        return g.attrs["name"] in _COMPARISONS or g.attrs["name"] in (
            "multiply", "maximum", "minimum")

    def needs_table(self, g):
        return g.encrypted and g.op != "input" and not self.native(g) and not self.special(g)

    def subgraph(self, g):
        """Nodes computed inside the lookup ending at ``g`` and its encrypted leaves."""
        inside, leaves, stack = set(), [], [g.id]
        root = self.root[g.id]
        if root not in (None, g.id):
            # one encrypted root: walk through everything back to it
            while stack:
                k = stack.pop()
                if k not in inside:
                    inside.add(k)
                    stack.extend(i for i in self.graph.nodes[k].inputs
                                 if self.enc(i) and i != root)
            return sorted(inside), [root]
        while stack:
            k = stack.pop()
            if k in inside:
                continue
            inside.add(k)
            for i in self.graph.nodes[k].inputs:
                gi = self.graph.nodes[i]
                if not gi.encrypted:
                    if gi.clear_input:
                        raise TracingError(
                            f"{self.graph.nodes[k].label} at {self.graph.nodes[k].where()} "
                            "mixes a clear runtime argument into a lookup; lookups can only "
                            "use constants (make that argument a constant or encrypted)")
                elif self.needs_table(gi):
                    stack.append(i)
                elif i not in leaves:
                    leaves.append(i)
        return sorted(inside), leaves

    # -- program building ----------------------------------------------------------------
    def emit(self, op, inputs, attrs, shape, encrypted=True, nu=0.0, where=""):
        node = PNode(op, inputs, attrs, shape, encrypted, nu, where)
        args = [self.pvals[i] for i in inputs]
        if op in ("enc_input", "clear_input"):
            value = np.asarray(self.inputs[attrs["index"]])
            value = value.astype(np.int64)[..., None] if encrypted else value
        elif op == "tlu":
            value = run_lookup_clear(node, args[0][..., 0], self.backend)[..., None]
        else:
            with np.errstate(all="ignore"):
                value = run_linear(node, args, [self.prog.nodes[i] for i in inputs],
                                   self.backend)
        if encrypted and value.size:
            node.bounds = (int(value[..., 0].min()), int(value[..., 0].max()))
        self.prog.nodes.append(node)
        self.pvals.append(value)
        self.ivals.append(self.interval(node, inputs) if encrypted else None)
        if encrypted and node.bounds is not None:
            lo, hi = self.ivals[-1]
            node.safe_bounds = (min(node.bounds[0], int(lo.min())),
                                max(node.bounds[1], int(hi.max())))
        return len(self.prog.nodes) - 1

    def interval(self, node, inputs):
        """Worst-case bounds ``(lo, hi)`` (arrays ``(1, *shape)``) of an encrypted node for
        any input in the compiled input range: the range its decryption must cover."""
        op = node.op
        iv = [self.ivals[i] for i in inputs]
        if op == "enc_input":
            col = np.asarray(self.inputs[node.attrs["index"]])
            return (np.full((1,) + node.shape, col.min(), dtype=np.int64),
                    np.full((1,) + node.shape, col.max(), dtype=np.int64))
        if op == "tlu":
            t = node.attrs["tables"]
            return (np.full((1,) + node.shape, t.min()), np.full((1,) + node.shape, t.max()))
        nds = [len(self.prog.nodes[i].shape) for i in inputs]
        nd = len(node.shape)

        def clear_range(k):
            v = np.asarray(self.pvals[k]).astype(np.float64)
            return v.min(axis=0, keepdims=True), v.max(axis=0, keepdims=True)

        def al(a, n):
            return align(a, n, nd)

        if op in ("enc_add", "enc_sub"):
            (al_, ah), (bl, bh) = [(al(lo, n), al(hi, n)) for (lo, hi), n in zip(iv, nds)]
            return (al_ + bl, ah + bh) if op == "enc_add" else (al_ - bh, ah - bl)
        if op == "enc_neg":
            return -iv[0][1], -iv[0][0]
        if op == "enc_add_clear":
            lo, hi = al(iv[0][0], nds[0]), al(iv[0][1], nds[0])
            if node.attrs["neg_enc"]:
                lo, hi = -hi, -lo
            cl, ch = (al(x, nds[1]) for x in clear_range(inputs[1]))
            if node.attrs["neg_clear"]:
                cl, ch = -ch, -cl
            return np.floor(lo + cl), np.ceil(hi + ch)
        if op == "enc_mul_clear":
            lo, hi = al(iv[0][0], nds[0]), al(iv[0][1], nds[0])
            cl, ch = (al(x, nds[1]) for x in clear_range(inputs[1]))
            prods = [lo * cl, lo * ch, hi * cl, hi * ch]
            return np.minimum.reduce(prods), np.maximum.reduce(prods)
        if op == "enc_matmul":
            enc_left = node.attrs["enc_left"]
            e, c = (0, 1) if enc_left else (1, 0)
            xl, xh = (a.astype(np.float64) for a in iv[e])
            cl, ch = clear_range(inputs[c])
            xm, xr = (xl + xh) / 2, (xh - xl) / 2
            cm, cr = (cl + ch) / 2, (ch - cl) / 2

            def mm(x, y):
                return (batched_matmul(x, nds[0], y, nds[1]) if enc_left
                        else batched_matmul(y, nds[0], x, nds[1]))

            center = mm(xm, cm)
            radius = mm(np.abs(xm), cr) + mm(xr, np.abs(cm)) + mm(xr, cr)
            return np.floor(center - radius), np.ceil(center + radius)
        if op == "enc_sum":
            axes = batch_axes(node.attrs["axis"], nds[0])
            return (np.sum(iv[0][0], axis=axes, keepdims=node.attrs["keepdims"]),
                    np.sum(iv[0][1], axis=axes, keepdims=node.attrs["keepdims"]))
        if op == "enc_trivial":
            return clear_range(inputs[0])
        # Shape operations: apply them to both bounds.
        arg_nodes = [self.prog.nodes[i] for i in inputs]
        lo = run_linear(node, [a[0][..., None] for a in iv], arg_nodes, self.backend)[..., 0]
        hi = run_linear(node, [a[1][..., None] for a in iv], arg_nodes, self.backend)[..., 0]
        return lo, hi

    def clear(self, i):
        """Program node of a clear graph node (folded to a constant when it can be)."""
        if i in self.gmap:
            return self.gmap[i]
        g = self.graph.nodes[i]
        if not g.clear_input:
            k = self.emit("const", [], {"value": self.gvals[i][0]}, g.shape, False)
        elif g.op == "input":
            k = self.emit("clear_input", [], {"index": g.attrs["index"], "name": g.attrs["name"]},
                          g.shape, False)
        else:
            if g.op == "univariate":
                raise TracingError(f"univariate at {g.where()} applies to a clear runtime "
                                   "argument; compute it before calling the circuit")
            k = self.emit(g.op, [self.clear(j) for j in g.inputs], g.attrs, g.shape, False,
                          where=g.where())
        self.gmap[i] = k
        return k

    def node_of(self, i):
        return self.gmap[i] if self.enc(i) else self.clear(i)

    def pnode(self, k):
        return self.prog.nodes[k]

    def bounds(self, k):
        return self.prog.nodes[k].bounds

    def lookup_domain(self, k, shift, where, label):
        """Range ``(lo, hi)`` a lookup on node ``k`` must cover: the worst case over the
        compiled input ranges (interval arithmetic), not only the values of the inputset.

        Raises when that range needs more than :data:`MAX_LOOKUP_BITS` index bits (after
        ``shift`` bits read away): a table built on the inputset range alone would be
        silently wrong on in-range inputs that the inputset did not reach.
        """
        observed, worst = self.bounds(k), self.pnode(k).safe_bounds
        bits = _index_bits(*worst, shift)
        if bits > MAX_LOOKUP_BITS:
            seen = _index_bits(*observed, shift)
            if seen > MAX_LOOKUP_BITS:
                raise too_wide_error(where, label, seen + shift, shift)
            raise worst_case_error(where, label, observed, worst, bits + shift, shift)
        return worst

    def unary_lookup(self, k, fn, shape, where):
        """Lookup of ``fn`` (a vectorised integer function) on program node ``k``."""
        lo, hi = self.lookup_domain(k, 0, where, getattr(fn, "__name__", "a function"))
        domain = np.arange(lo, hi + 1, dtype=np.int64)
        table = np.asarray(fn(domain)).astype(np.int64)[None, :]
        return self.emit("tlu", [k], {"lo": lo, "shift": 0, "tables": table,
                                      "table_index": None}, shape, nu=1.0, where=where)

    # -- lowering of each kind of node --------------------------------------------------
    def lower(self, g):
        if g.op == "input":
            k = self.emit("enc_input", [], {"index": g.attrs["index"], "name": g.attrs["name"],
                                            "lo": 0}, g.shape, nu=1.0, where=g.where())
        elif self.native(g):
            k = self.lower_native(g)
        elif self.special(g):
            k = self.lower_special(g)
        else:
            k = self.lower_table(g)
        self.gmap[g.id] = k

    def lower_native(self, g):
        w = g.where()
        ins = g.inputs
        if g.op == "astype" or (g.op == "ufunc" and g.attrs["name"] == "positive"):
            return self.gmap[ins[0]]
        if g.op == "ufunc":
            name = g.attrs["name"]
            if name == "negative":
                k = self.gmap[ins[0]]
                return self.emit("enc_neg", [k], {}, g.shape, nu=self.pnode(k).nu, where=w)
            if name in ("add", "subtract") and self.enc(ins[0]) and self.enc(ins[1]):
                a, b = self.gmap[ins[0]], self.gmap[ins[1]]
                nu = float(np.hypot(self.pnode(a).nu, self.pnode(b).nu))
                op = "enc_add" if name == "add" else "enc_sub"
                return self.emit(op, [a, b], {}, g.shape, nu=nu, where=w)
            e_pos = 0 if self.enc(ins[0]) else 1
            e, c = self.gmap[ins[e_pos]], self.clear(ins[1 - e_pos])
            if name in ("add", "subtract"):
                attrs = {"neg_enc": name == "subtract" and e_pos == 1,
                         "neg_clear": name == "subtract" and e_pos == 0}
                return self.emit("enc_add_clear", [e, c], attrs, g.shape, nu=self.pnode(e).nu,
                                 where=w)
            # multiply
            factor = float(np.abs(self.pvals[c]).max(initial=0))
            return self.emit("enc_mul_clear", [e, c], {}, g.shape,
                             nu=self.pnode(e).nu * factor, where=w)
        if g.op == "matmul":
            enc_left = self.enc(ins[0])
            e = self.gmap[ins[0] if enc_left else ins[1]]
            c = self.clear(ins[1] if enc_left else ins[0])
            cv = self.pvals[c].astype(np.float64)
            c_nd = cv.ndim - 1
            axis = (-2 if c_nd >= 2 else -1) if enc_left else -1
            # Norm of the elementwise envelope over the inputset: runtime clear arguments are
            # checked to stay inside it, so the noise bound holds for all of them.
            env = np.abs(cv).max(axis=0, keepdims=True) if cv.size else cv
            norm = float(np.sqrt((env ** 2).sum(axis=axis)).max(initial=0)) if cv.size else 0.0
            inputs = [e, c] if enc_left else [c, e]
            return self.emit("enc_matmul", inputs, {"enc_left": enc_left}, g.shape,
                             nu=self.pnode(e).nu * norm, where=w)
        if g.op in ("concatenate", "stack"):
            parts = []
            for i in ins:
                if self.enc(i):
                    parts.append(self.gmap[i])
                else:
                    c = self.clear(i)
                    parts.append(self.emit("enc_trivial", [c], {}, self.graph.nodes[i].shape))
            nu = max(self.pnode(p).nu for p in parts)
            return self.emit("enc_" + g.op, parts, {"axis": g.attrs["axis"]}, g.shape, nu=nu,
                             where=w)
        e = self.gmap[ins[0]]
        nu = self.pnode(e).nu
        if g.op == "sum":
            in_size = int(np.prod(self.graph.nodes[ins[0]].shape, dtype=np.int64))
            out_size = max(1, int(np.prod(g.shape, dtype=np.int64)))
            nu *= float(np.sqrt(max(1, in_size // out_size)))
        return self.emit("enc_" + g.op, [e], g.attrs, g.shape, nu=nu, where=w)

    def lower_special(self, g):
        if g.op == "where":
            return self.lower_where(g)
        w = g.where()
        name = g.attrs["name"]
        a, b = self.gmap[g.inputs[0]], self.gmap[g.inputs[1]]
        if name == "multiply":
            nd = len(g.shape)
            va = self.pvals[a][..., 0].reshape(self.pvals[a].shape[:1] + (1,) * (
                nd - len(self.pnode(a).shape)) + self.pnode(a).shape)
            vb = self.pvals[b][..., 0].reshape(self.pvals[b].shape[:1] + (1,) * (
                nd - len(self.pnode(b).shape)) + self.pnode(b).shape)
            s, d = va + vb, va - vb
            square_bits = max(range_bits(s.min(), s.max()), range_bits(d.min(), d.max()))
            packed_bits = range_bits(*self.bounds(a)) + range_bits(*self.bounds(b))
            if square_bits >= packed_bits:
                return self.lower_table(g)

            def quarter_square(v):
                return (v * v) // 4

            ks = self.emit("enc_add", [a, b], {}, g.shape, nu=np.sqrt(2.0), where=w)
            kd = self.emit("enc_sub", [a, b], {}, g.shape, nu=np.sqrt(2.0), where=w)
            rs = self.unary_lookup(ks, quarter_square, g.shape, w)
            rd = self.unary_lookup(kd, quarter_square, g.shape, w)
            return self.emit("enc_sub", [rs, rd], {}, g.shape, nu=np.sqrt(2.0), where=w)
        nu = float(np.hypot(self.pnode(a).nu, self.pnode(b).nu))
        kd = self.emit("enc_sub", [a, b], {}, g.shape, nu=nu, where=w)
        if name in _COMPARISONS:
            cmp = _COMPARISONS[name]
            return self.unary_lookup(kd, lambda v: cmp(v, 0).astype(np.int64), g.shape, w)
        relu = self.unary_lookup(kd, lambda v: np.maximum(v, 0), g.shape, w)
        if name == "maximum":   # max(a, b) = b + relu(a - b)
            return self.emit("enc_add", [b, relu], {}, g.shape, nu=np.hypot(
                self.pnode(b).nu, 1.0), where=w)
        return self.emit("enc_sub", [a, relu], {}, g.shape,  # min(a, b) = a - relu(a - b)
                         nu=np.hypot(self.pnode(a).nu, 1.0), where=w)

    def evaluate_subgraph(self, inside, substitutions, count):
        """Values of the subgraph nodes with leaves replaced by ``substitutions``."""
        vals = dict(substitutions)
        with np.errstate(all="ignore"):
            for k in inside:
                if k in vals:
                    continue
                node = self.graph.nodes[k]
                args = []
                for i in node.inputs:
                    if i in vals:
                        args.append(vals[i])
                    else:  # constant
                        args.append(self.gvals[i])
                vals[k] = np.asarray(evaluate_op(node.op, node.attrs, args,
                                                 [self.graph.nodes[i].shape for i in node.inputs],
                                                 node.shape))
        return vals

    def lower_table(self, g):
        w = g.where()
        if g.kind == "float":
            raise TracingError(
                f"the value computed by {g.label} at {w} is a float, but encrypted values "
                "must be integers where they are combined linearly or returned; end the float "
                "computation with .astype(np.int64) (after np.round if needed)")
        inside, leaves = self.subgraph(g)
        for k in inside:
            node = self.graph.nodes[k]
            if node.op == "matmul":
                raise TracingError(
                    f"matmul at {node.where()} multiplies two encrypted values or floats; only "
                    "products with clear integer matrices are supported")
            if node.op not in _ELEMENTWISE:
                raise TracingError(
                    f"{node.label} at {node.where()} acts on a float (or non-linear) encrypted "
                    "value and cannot be fused into a lookup; apply it to integers (convert "
                    "with .astype(np.int64) before it)")
        if not leaves:
            raise TracingError(f"{g.label} at {w} does not depend on an encrypted integer")
        if len(leaves) == 1:
            return self.single_leaf_lookup(g, inside, leaves[0])
        return self.packed_lookup(g, inside, leaves)

    def single_leaf_lookup(self, g, inside, leaf):
        w = g.where()
        k_leaf = self.gmap[leaf]
        leaf_shape = self.graph.nodes[leaf].shape
        # Reading only the top bits: the leaf must reach the subgraph only through one
        # round_bit_pattern.
        users = [k for k in inside if leaf in self.graph.nodes[k].inputs]
        shift, sub_node = 0, leaf
        if len(users) == 1 and self.graph.nodes[users[0]].op == "round_bit_pattern":
            shift = self.graph.nodes[users[0]].attrs["lsbs"]
            sub_node = users[0]
        lo, hi = self.lookup_domain(k_leaf, shift, w, g.label)
        if shift:
            lo = (lo >> shift) << shift
            half = 1 << (shift - 1)
            n_idx = ((hi - lo + half) >> shift) + 1
        else:
            n_idx = hi - lo + 1
        if n_idx > (1 << MAX_LOOKUP_BITS):
            raise too_wide_error(w, g.label, range_bits(0, n_idx - 1), shift)
        domain = lo + (np.arange(n_idx, dtype=np.int64) << shift)
        leaf_vals = np.broadcast_to(domain.reshape((n_idx,) + (1,) * len(leaf_shape)),
                                    (n_idx,) + leaf_shape)
        vals = self.evaluate_subgraph(inside, {sub_node: leaf_vals}, n_idx)
        out = np.broadcast_to(vals[g.id], (n_idx,) + g.shape)
        tables, table_index = _dedupe_tables(out)
        if leaf_shape != g.shape:
            k_leaf = self.emit("enc_broadcast_to", [k_leaf], {"shape": list(g.shape)}, g.shape,
                               nu=self.pnode(k_leaf).nu, where=w)
        return self.emit("tlu", [k_leaf], {"lo": int(lo), "shift": int(shift), "tables": tables,
                                           "table_index": table_index}, g.shape, nu=1.0,
                         where=w)

    def pack(self, keys, label, w):
        """Pack encrypted program nodes into one integer ``sum((x_i - lo_i) << o_i)`` over
        their worst-case ranges (see :meth:`lookup_domain`).

        Returns
        -------
        packed : int
            Program node of the packed value.
        digits : list of ndarray
            Value of each node at every packed index ``0 .. 2**bits - 1``.
        """
        widths, los, offsets = [], [], []
        total = 0
        for k in keys:
            lo, hi = self.pnode(k).safe_bounds
            widths.append((int(hi) - int(lo)).bit_length())
            los.append(int(lo))
            offsets.append(total)
            total += widths[-1]
        if total > MAX_LOOKUP_BITS:
            detail = " + ".join(f"{b}" for b in widths)
            ranges = ", ".join(f"[{self.pnode(k).safe_bounds[0]}, {self.pnode(k).safe_bounds[1]}]"
                               for k in keys)
            raise TracingError(
                f"{label} at {w} combines {len(keys)} encrypted values into one lookup of "
                f"{detail} = {total} bits, more than the {MAX_LOOKUP_BITS} bits the engine "
                f"supports (their worst-case ranges over the compiled input ranges: {ranges}); "
                "lower their bit widths (or use round_bit_pattern on them)")
        packed = None
        nu2 = 0.0
        for k, lo, off in zip(keys, los, offsets):
            shape = self.pnode(k).shape
            if off:
                c = self.emit("const", [], {"value": np.int64(1 << off)}, (), False)
                k = self.emit("enc_mul_clear", [k, c], {}, shape, nu=self.pnode(k).nu * (1 << off),
                              where=w)
            if lo:
                c = self.emit("const", [], {"value": np.int64(lo << off)}, (), False)
                k = self.emit("enc_add_clear", [k, c], {"neg_enc": False, "neg_clear": True},
                              shape, nu=self.pnode(k).nu, where=w)
            nu2 += self.pnode(k).nu ** 2
            if packed is None:
                packed = k
            else:
                shape = np.broadcast_shapes(self.pnode(packed).shape, shape)
                packed = self.emit("enc_add", [packed, k], {}, shape, nu=np.sqrt(nu2), where=w)
        idx = np.arange(1 << total, dtype=np.int64)
        digits = [lo + ((idx >> off) & ((1 << width) - 1))
                  for lo, off, width in zip(los, offsets, widths)]
        return packed, digits

    def packed_table(self, packed, out, shape, w):
        """Lookup on a packed node, ``out`` the result at every index ``(count, *shape)``."""
        tables, table_index = _dedupe_tables(np.broadcast_to(out, out.shape[:1] + shape))
        if self.pnode(packed).shape != shape:
            packed = self.emit("enc_broadcast_to", [packed], {"shape": list(shape)}, shape,
                               nu=self.pnode(packed).nu, where=w)
        return self.emit("tlu", [packed], {"lo": 0, "shift": 0, "tables": tables,
                                           "table_index": table_index}, shape, nu=1.0, where=w)

    def packed_lookup(self, g, inside, leaves):
        """One lookup on several encrypted leaves packed as sum((x_i - lo_i) << o_i)."""
        w = g.where()
        packed, digits = self.pack([self.gmap[leaf] for leaf in leaves], g.label, w)
        count = digits[0].shape[0]
        subs = {}
        for leaf, digit in zip(leaves, digits):
            shape = self.graph.nodes[leaf].shape
            subs[leaf] = np.broadcast_to(digit.reshape((count,) + (1,) * len(shape)),
                                         (count,) + shape)
        vals = self.evaluate_subgraph(inside, subs, count)
        return self.packed_table(packed, vals[g.id], g.shape, w)

    def where_as_product(self, g):
        """Whether ``np.where(cond, a, b)`` lowers as ``cond * (a - b) + b``: an encrypted
        boolean condition and integer branches, both clear (no lookup at all) or both
        encrypted (one lookup on ``cond`` and ``a - b``, narrower than on all three)."""
        cond, a, b = (self.graph.nodes[i] for i in g.inputs)
        if not (cond.encrypted and cond.kind == "bool" and a.kind != "float"
                and b.kind != "float" and g.kind != "float"):
            return False
        return (a.encrypted and b.encrypted) or not (a.encrypted or b.encrypted)

    def lower_where(self, g):
        w = g.where()
        kc = self.gmap[g.inputs[0]]
        a, b = g.inputs[1:]
        if not self.enc(a):
            ka, kb = self.clear(a), self.clear(b)
            shape = np.broadcast_shapes(self.pnode(ka).shape, self.pnode(kb).shape)
            kd = self.emit("ufunc", [ka, kb], {"name": "subtract"}, shape, False, where=w)
            shape = np.broadcast_shapes(self.pnode(kc).shape, shape)
            factor = float(np.abs(self.pvals[kd]).max(initial=0))
            prod = self.emit("enc_mul_clear", [kc, kd], {}, shape, nu=self.pnode(kc).nu * factor,
                             where=w)
            return self.emit("enc_add_clear", [prod, kb], {"neg_enc": False, "neg_clear": False},
                             g.shape, nu=self.pnode(prod).nu, where=w)
        ka, kb = self.gmap[a], self.gmap[b]
        shape = np.broadcast_shapes(self.pnode(ka).shape, self.pnode(kb).shape)
        nu = float(np.hypot(self.pnode(ka).nu, self.pnode(kb).nu))
        kd = self.emit("enc_sub", [ka, kb], {}, shape, nu=nu, where=w)
        packed, (c, d) = self.pack([kc, kd], "where", w)
        shape = np.broadcast_shapes(self.pnode(kc).shape, shape)
        prod = self.packed_table(packed, (c * d).reshape((-1,) + (1,) * len(shape)), shape, w)
        return self.emit("enc_add", [prod, kb], {}, g.shape,
                         nu=float(np.hypot(1.0, self.pnode(kb).nu)), where=w)

    # -- driver --------------------------------------------------------------------------
    def run(self):
        graph = self.graph
        need = set()
        for i in graph.output_ids:
            g = graph.nodes[i]
            if not g.encrypted:
                raise TracingError(f"the output computed at {g.where()} does not depend on any "
                                   "encrypted input; compute it in the clear instead")
            need.add(i)
        for g in reversed(graph.nodes):
            if g.id not in need or g.op == "input":
                continue
            if self.native(g) or self.special(g):
                need.update(i for i in g.inputs if self.enc(i))
            else:
                if g.kind == "float":
                    self.lower_table(g)  # raises the float error with the location
                need.update(self.subgraph(g)[1])
        for g in graph.nodes:
            if g.id in need:
                self.lower(g)
        prog = self.prog
        for i in graph.input_ids:
            g = graph.nodes[i]
            if g.encrypted and i not in self.gmap:
                self.lower(g)  # unused encrypted argument: still an input of the program
            prog.input_nodes.append(self.gmap[i] if g.encrypted else self.clear(i))
        prog.output_nodes = [self.gmap[i] for i in graph.output_ids]
        return prog


def _index_bits(lo, hi, shift=0):
    """Index bits of a table covering ``[lo, hi]`` read ``shift`` bits away (rounded)."""
    if shift:
        lo = (lo >> shift) << shift
        n_idx = ((hi - lo + (1 << (shift - 1))) >> shift) + 1
    else:
        n_idx = hi - lo + 1
    return max(1, (int(n_idx) - 1).bit_length())


def _dedupe_tables(out):
    """Per-position tables (count, *shape) -> unique tables (T, count) and their index."""
    count = out.shape[0]
    shape = out.shape[1:]
    flat = np.asarray(out).astype(np.int64).reshape(count, -1).T
    if flat.shape[0] == 0:
        return np.zeros((1, count), dtype=np.int64), None
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    if uniq.shape[0] == 1:
        return np.ascontiguousarray(uniq), None
    return np.ascontiguousarray(uniq), inverse.reshape(shape).astype(np.int64)


def lower(graph, inputs):
    """Lower a traced graph to a :class:`Program` using inputset values for bounds.

    Parameters
    ----------
    graph : Graph
    inputs : list of numpy.ndarray
        Inputset, one array ``(n, *shape)`` per argument.

    Returns
    -------
    Program
        With the clear values of the inputset available as ``program.inputset_values``.
    """
    lowering = _Lowering(graph, inputs)
    prog = lowering.run()
    return prog
