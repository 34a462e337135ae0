"""The lowered program: integer operations on encrypted tensors and table lookups.

A program is what the server runs.  Its nodes are either *clear* (constants, clear runtime
arguments and numpy operations on them) or *encrypted*: linear operations on ciphertexts
and lookups (``"tlu"``).  The same program runs three ways:

- clear (``"disable"``): an encrypted tensor is an ``int64`` array ``(b, *shape, 1)``
  holding the message itself (scale 1, no mask), so every linear operation goes through
  the code used on real ciphertexts;
- simulation: the same, and each lookup reads a neighbouring table entry with the
  probability its modelled noise gives at that input (see :func:`_noisy_indices`);
- encrypted: an encrypted tensor is the ``uint64`` data ``(b, *shape, dimension + 1)`` of a
  batch of LWE ciphertexts; all lookups of one level go to the engine in one call.
"""

import numpy as np

from fheml.compiler.graph import (
    UFUNCS,
    TracingError,
    align,
    batch_axes,
    batch_index,
    batched_matmul,
    broadcast_batch,
    evaluate_op,
    index_from_json,
    index_to_json,
)
from fheml._progress import progress

__all__ = ["InputRangeError", "PNode", "Program"]

ENCRYPTED_OPS = frozenset({
    "enc_input", "enc_add", "enc_sub", "enc_neg", "enc_add_clear", "enc_mul_clear",
    "enc_matmul", "enc_sum", "enc_reshape", "enc_transpose", "enc_getitem",
    "enc_concatenate", "enc_stack", "enc_broadcast_to", "enc_trivial", "tlu",
})
CLEAR_OPS = frozenset({
    "const", "clear_input", "ufunc", "matmul", "sum", "reshape", "transpose", "getitem",
    "concatenate", "stack", "broadcast_to", "astype", "round", "where", "clip", "lut",
    "round_bit_pattern",
})


class InputRangeError(ValueError):
    """A value is outside the range the circuit was compiled for."""


class PNode:
    """One node of a :class:`Program`.

    Attributes
    ----------
    op : str
    inputs : list of int
    attrs : dict
    shape : tuple of int
        Sample shape.
    encrypted : bool
    nu : float
        For encrypted nodes: bound on the 2-norm of the weights from unit-variance
        sources (fresh encryptions, lookup outputs) to this value.
    bounds : tuple of int or None
        Min and max over the inputset (encrypted nodes).
    precision : int or None
        Encoding precision P of an encrypted value: its message is taken modulo
        ``2**(P+1)``.  Values joined by linear operations share it; a lookup's output may
        have another precision than its input.
    where : str
        User source line of the graph node this node implements.
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "encrypted", "nu", "bounds", "where",
                 "stage", "safe_bounds", "precision")

    def __init__(self, op, inputs, attrs, shape, encrypted, nu=0.0, where=""):
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.shape = tuple(int(s) for s in shape)
        self.encrypted = bool(encrypted)
        self.nu = float(nu)
        self.bounds = None
        self.where = where
        self.stage = 0
        self.safe_bounds = None  # worst-case range over the compiled input range
        self.precision = None  # encoding precision of an encrypted value (set by finalize)


class Program:
    """Nodes in topological order, inputs and outputs (see the module docstring).

    Attributes
    ----------
    nodes : list of PNode
    input_nodes : list of int
        Program node of each circuit argument.
    output_nodes : list of int
    precision : int
        The widest encoding precision of the program's values (see ``PNode.precision``).
    input_variance : float
        Error variance the client's encryptions carry beyond the parameters' encryption
        noise (e.g. words rounded for the wire), charged to every lookup of fresh inputs.
    """

    def __init__(self):
        self.nodes = []
        self.input_nodes = []
        self.output_nodes = []
        self.precision = None
        self.input_variance = 0.0

    @property
    def lookups(self):
        return [n for n in self.nodes if n.op == "tlu"]

    def assign_stages(self):
        """Level of each node: the number of lookups on the longest path to it."""
        for n in self.nodes:
            base = max((self.nodes[i].stage for i in n.inputs), default=0)
            n.stage = base + (1 if n.op == "tlu" else 0)
        return max((n.stage for n in self.nodes), default=0)

    # -- serialization ----------------------------------------------------------------------
    def to_json(self, include_source=False):
        """Return ``(header, arrays)``: a JSON-able description and the arrays it refers to.

        Parameters
        ----------
        include_source : bool, default=False
            Keep the user's source line of each node (``where``: file, line and code) for
            error messages.  Off by default: a server artifact should not carry the
            compiling user's source.
        """
        arrays = []

        def enc_attr(key, value, op):
            if callable(value):
                raise TypeError(f"op {op!r} holds a Python function and cannot be serialized")
            if key == "index" and op in ("getitem", "enc_getitem"):
                return {"__index__": index_to_json(value)}
            if isinstance(value, np.ndarray):
                if value.dtype == bool:
                    arrays.append(value.astype(np.uint8))
                    return {"__array__": len(arrays) - 1, "bool": True}
                arrays.append(value)
                return {"__array__": len(arrays) - 1}
            if isinstance(value, (np.integer,)):
                return int(value)
            if isinstance(value, (np.floating,)):
                return float(value)
            if isinstance(value, (np.bool_,)):
                return bool(value)
            if isinstance(value, tuple):
                return [enc_attr(key, v, op) for v in value]
            return value

        nodes = []
        for n in self.nodes:
            nodes.append({
                "op": n.op, "inputs": n.inputs, "shape": list(n.shape), "encrypted": n.encrypted,
                "nu": n.nu, "where": n.where if include_source else "",
                "precision": n.precision,
                "bounds": None if n.bounds is None else [int(n.bounds[0]), int(n.bounds[1])],
                "attrs": {k: enc_attr(k, v, n.op) for k, v in n.attrs.items()},
            })
        header = {"nodes": nodes, "input_nodes": self.input_nodes,
                  "output_nodes": self.output_nodes, "precision": self.precision}
        return header, arrays

    @classmethod
    def from_json(cls, header, arrays):
        """Inverse of :meth:`to_json`, validating everything before anything runs.

        Every op must be known, every attribute of the expected type and range (ufunc
        names from the whitelist :data:`~fheml.compiler.graph.UFUNCS`), inputs must refer
        to earlier nodes of the right kind, and a shape dry run (on an empty batch, so
        nothing is allocated) checks that every node has the shape it declares.

        Raises
        ------
        ValueError
            Anything malformed (the caller turns it into SerializationError).
        """
        prog = cls()
        if not isinstance(header, dict) or not isinstance(header.get("nodes"), list):
            raise ValueError("program: no node list")

        def dec_attr(key, value):
            if isinstance(value, dict) and "__index__" in value:
                return index_from_json(value["__index__"])
            if isinstance(value, dict) and "__array__" in value:
                i = value["__array__"]
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(arrays):
                    raise ValueError("array reference out of range")
                a = arrays[i]
                return a.astype(bool) if value.get("bool") is True else a
            if isinstance(value, dict):
                raise ValueError(f"attribute {key!r}: unexpected object")
            return value

        total = 0
        for k, d in enumerate(header["nodes"]):
            if not isinstance(d, dict) or set(d) - _NODE_FIELDS or "op" not in d:
                raise ValueError(f"node {k}: bad description")
            op = d["op"]
            if not isinstance(op, str) or op not in _ATTRS:
                raise ValueError(f"node {k}: unknown op {op!r}")
            inputs, shape = d.get("inputs"), d.get("shape")
            if not isinstance(inputs, list) or any(
                    isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < k
                    for i in inputs):
                raise ValueError(f"node {k}: inputs must refer to earlier nodes")
            if not isinstance(shape, list) or len(shape) > 32 or any(
                    isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= _MAX_AXIS
                    for s in shape):
                raise ValueError(f"node {k}: bad shape")
            total += int(np.prod(shape, dtype=object))
            if total > MAX_PROGRAM_ELEMENTS:
                raise ValueError(f"program: more than {MAX_PROGRAM_ELEMENTS} values per sample")
            attrs = d.get("attrs")
            if not isinstance(attrs, dict):
                raise ValueError(f"node {k}: bad attributes")
            nu, where, bounds = d.get("nu"), d.get("where", ""), d.get("bounds")
            if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not 0 <= nu < 1e300:
                raise ValueError(f"node {k}: bad nu")
            if not isinstance(where, str) or not isinstance(d.get("encrypted"), bool):
                raise ValueError(f"node {k}: bad description")
            node = PNode(op, inputs, {key: dec_attr(key, v) for key, v in attrs.items()},
                         shape, d["encrypted"], nu, where)
            if bounds is not None:
                if not (isinstance(bounds, list) and len(bounds) == 2 and all(
                        isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
                    raise ValueError(f"node {k}: bad bounds")
                node.bounds = (bounds[0], bounds[1])
            precision = d.get("precision")
            if node.encrypted != (precision is not None) or (node.encrypted and not _is_int(
                    precision, 1, 62)):
                raise ValueError(f"node {k}: bad precision")
            node.precision = precision
            _check_node(k, node, prog.nodes)
            prog.nodes.append(node)
        n = len(prog.nodes)
        ins, outs = header.get("input_nodes"), header.get("output_nodes")
        for name, ids in (("input", ins), ("output", outs)):
            if not isinstance(ids, list) or any(
                    isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n for i in ids):
                raise ValueError(f"program: {name} nodes out of range")
        prog.input_nodes, prog.output_nodes = list(ins), list(outs)
        for pos, i in enumerate(prog.input_nodes):
            node = prog.nodes[i]
            if node.op not in ("enc_input", "clear_input") or node.attrs["index"] != pos:
                raise ValueError(f"program: input {pos} is not an input node")
        if not all(prog.nodes[i].encrypted for i in prog.output_nodes):
            raise ValueError("program: outputs must be encrypted")
        precision = header.get("precision")
        if isinstance(precision, bool) or not isinstance(precision, int) \
                or not 1 <= precision <= 62:
            raise ValueError("program: precision must be an integer in 1..62")
        if precision != max((n.precision for n in prog.nodes if n.encrypted), default=precision):
            raise ValueError("program: precision is not the widest of its values")
        prog.precision = precision
        _dry_run(prog)
        prog.assign_stages()
        return prog


# Most values any program holds per sample (sum over its nodes): bounds what loading a
# spec and running one sample can cost.
MAX_PROGRAM_ELEMENTS = 1 << 24
_MAX_AXIS = 1 << 31
_NODE_FIELDS = frozenset({"op", "inputs", "shape", "encrypted", "nu", "where", "bounds",
                          "attrs", "precision"})
_BIG = 1 << 62


def _is_int(v, lo=-_BIG, hi=_BIG):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) \
        and lo <= v <= hi


def _int_array(v):
    return isinstance(v, np.ndarray) and v.dtype.kind in "iu"


def _axis(v):
    return v is None or _is_int(v, -32, 32) or (
        isinstance(v, (list, tuple)) and len(v) <= 32 and all(_is_int(a, -32, 32) for a in v))


def _scalar_or_array(v):
    return isinstance(v, np.ndarray) or isinstance(v, (bool, int, float)) and (
        not isinstance(v, int) or isinstance(v, bool) or _is_int(v))


_ATTR_CHECKS = {
    "index": lambda v: _is_int(v, 0, 1 << 16),
    "name": lambda v: isinstance(v, str) and len(v) <= 256,
    "lo": _is_int,
    "value": _scalar_or_array,
    "axis": _axis,
    "keepdims": lambda v: isinstance(v, bool),
    "shape": lambda v: isinstance(v, (list, tuple)) and all(_is_int(s, 0, _MAX_AXIS) for s in v),
    "axes": lambda v: isinstance(v, (list, tuple)) and sorted(v) == list(range(len(v))),
    "dtype": lambda v: v in ("int64", "bool", "float64"),
    "decimals": lambda v: _is_int(v, -32, 32),
    "has_min": lambda v: isinstance(v, bool),
    "has_max": lambda v: isinstance(v, bool),
    "table": lambda v: _int_array(v) and v.ndim == 1 and v.size > 0,
    "lsbs": lambda v: _is_int(v, 0, 62),
    "neg_enc": lambda v: isinstance(v, bool),
    "neg_clear": lambda v: isinstance(v, bool),
    "enc_left": lambda v: isinstance(v, bool),
    "shift": lambda v: _is_int(v, 0, 62),
    "tables": lambda v: isinstance(v, np.ndarray) and v.dtype == np.int64 and v.ndim == 2
    and v.shape[0] > 0 and 0 < v.shape[1] <= 1 << 16,
    "table_index": lambda v: v is None or _int_array(v),
    "index_bits": lambda v: _is_int(v, 1, 16),
    "pin": lambda v: _is_int(v, 1, 16),
    "premul": lambda v: _is_int(v, 1, _BIG),
    "index_array": lambda v: isinstance(v, tuple),
}

# op -> (required attributes, number of inputs (None: one or more), input kinds).
# Input kinds: "c" clear, "e" encrypted, "*" all the same kind as the op.
_ATTRS = {
    "const": ({"value"}, 0, ""),
    "clear_input": ({"index", "name"}, 0, ""),
    "ufunc": ({"name"}, "ufunc", "c"),
    "matmul": (set(), 2, "c"),
    "sum": ({"axis", "keepdims"}, 1, "c"),
    "reshape": ({"shape"}, 1, "c"),
    "transpose": ({"axes"}, 1, "c"),
    "getitem": ({"index"}, 1, "c"),
    "concatenate": ({"axis"}, None, "c"),
    "stack": ({"axis"}, None, "c"),
    "broadcast_to": ({"shape"}, 1, "c"),
    "astype": ({"dtype"}, 1, "c"),
    "round": ({"decimals"}, 1, "c"),
    "where": (set(), 3, "c"),
    "clip": ({"has_min", "has_max"}, "clip", "c"),
    "lut": ({"table"}, 1, "c"),
    "round_bit_pattern": ({"lsbs"}, 1, "c"),
    "enc_input": ({"index", "name", "lo"}, 0, ""),
    "enc_add": (set(), 2, "ee"),
    "enc_sub": (set(), 2, "ee"),
    "enc_neg": (set(), 1, "e"),
    "enc_add_clear": ({"neg_enc", "neg_clear"}, 2, "ec"),
    "enc_mul_clear": (set(), 2, "ec"),
    "enc_matmul": ({"enc_left"}, 2, "matmul"),
    "enc_sum": ({"axis", "keepdims"}, 1, "e"),
    "enc_reshape": ({"shape"}, 1, "e"),
    "enc_transpose": ({"axes"}, 1, "e"),
    "enc_getitem": ({"index"}, 1, "e"),
    "enc_concatenate": ({"axis"}, None, "e"),
    "enc_stack": ({"axis"}, None, "e"),
    "enc_broadcast_to": ({"shape"}, 1, "e"),
    "enc_trivial": (set(), 1, "c"),
    "tlu": ({"lo", "shift", "tables", "table_index", "index_bits", "pin", "premul"}, 1, "e"),
}
assert set(_ATTRS) == ENCRYPTED_OPS | CLEAR_OPS


def _check_node(k, node, earlier):
    """Attributes, arity and operand kinds of one node loaded from a spec."""
    op, attrs = node.op, node.attrs
    required, arity, kinds = _ATTRS[op]
    if set(attrs) != required:
        raise ValueError(f"node {k} ({op}): attributes {sorted(attrs)}, expected "
                         f"{sorted(required)}")
    for key, value in attrs.items():
        check = _ATTR_CHECKS["index_array" if key == "index" and op.endswith("getitem") else key]
        if not check(value):
            raise ValueError(f"node {k} ({op}): bad attribute {key}")
    if node.encrypted != (op in ENCRYPTED_OPS):
        raise ValueError(f"node {k} ({op}): wrong encrypted flag")
    if op == "ufunc":
        if attrs["name"] not in UFUNCS:
            raise ValueError(f"node {k}: np.{attrs['name']} is not an allowed function")
        arity = getattr(np, attrs["name"]).nin
    elif op == "clip":
        arity = 1 + attrs["has_min"] + attrs["has_max"]
    n_in = len(node.inputs)
    if (arity is None and n_in < 1) or (arity is not None and n_in != arity):
        raise ValueError(f"node {k} ({op}): {n_in} operand(s)")
    enc = [earlier[i].encrypted for i in node.inputs]
    if kinds == "matmul":
        expected = [True, False] if attrs["enc_left"] else [False, True]
    elif kinds in ("c", "e"):
        expected = [kinds == "e"] * n_in
    else:
        expected = [c == "e" for c in kinds]
    if enc != expected:
        raise ValueError(f"node {k} ({op}): operands of the wrong kind (clear/encrypted)")
    if op in ("reshape", "broadcast_to", "enc_reshape", "enc_broadcast_to") \
            and list(attrs["shape"]) != list(node.shape):
        raise ValueError(f"node {k} ({op}): shape attribute differs from the node's shape")
    if op == "const" and np.shape(attrs["value"]) != node.shape:
        raise ValueError(f"node {k}: constant of shape {np.shape(attrs['value'])}, declared "
                         f"{node.shape}")
    if op == "tlu":
        _check_lookup(k, node, earlier[node.inputs[0]])


def _check_lookup(k, node, arg):
    attrs = node.attrs
    tables, ti = attrs["tables"], attrs["table_index"]
    if arg.shape != node.shape:
        raise ValueError(f"node {k} (tlu): input shape {arg.shape} != {node.shape}")
    if tables.shape[1] > 1 << attrs["pin"] or attrs["shift"] + attrs["pin"] > 62:
        raise ValueError(f"node {k} (tlu): tables longer than their precision")
    if ti is None:
        if tables.shape[0] != 1:
            raise ValueError(f"node {k} (tlu): several tables and no table index")
    elif (np.broadcast_shapes(ti.shape, node.shape) != node.shape
          or (ti.size and (ti.min() < 0 or ti.max() >= tables.shape[0]))):
        raise ValueError(f"node {k} (tlu): table index out of range or of the wrong shape")


def _dry_run(prog):
    """Evaluate every node on an empty batch (nothing allocated) and check its shape."""
    values = []
    backend = ClearBackend()
    for k, node in enumerate(prog.nodes):
        trailing = (1,) if node.encrypted else ()
        if node.op in ("const", "clear_input", "enc_input", "tlu"):
            dtype = np.asarray(node.attrs["value"]).dtype if node.op == "const" else np.int64
            v = np.zeros((0,) + node.shape + trailing, dtype=dtype)
        else:
            with np.errstate(all="ignore"):
                v = run_linear(node, [values[i] for i in node.inputs],
                               [prog.nodes[i] for i in node.inputs], backend)
            v = np.asarray(v)
            if v.shape != (0,) + node.shape + trailing:
                raise ValueError(f"node {k} ({node.op}): computes shape {v.shape[1:]}, declares "
                                 f"{node.shape}")
        values.append(v)


# ----------------------------------------------------------------------- backends -------

class ClearBackend:
    """Encrypted tensors as their messages: int64 ``(b, *shape, 1)``."""

    dtype = np.int64
    delta = np.int64(1)
    width = 1

    def __init__(self, rng=None, noise=None):
        self.rng = rng
        # simulation: {lookup node index: standard deviation of the noise at its decision,
        # in units of its input message}
        self.noise = noise

    def encode(self, values):
        return np.asarray(values).astype(np.int64)


class LweBackend:
    """Encrypted tensors as LWE ciphertext data: uint64 ``(b, *shape, dimension + 1)``."""

    dtype = np.uint64

    def __init__(self, precision, dimension):
        self.delta = np.uint64(1) << np.uint64(63 - precision)
        self.width = dimension + 1

    def encode(self, values):
        return np.asarray(values).astype(np.int64).astype(np.uint64) * self.delta


def _as_int(value, what):
    value = np.asarray(value)
    if value.dtype == bool:
        return value.astype(np.int64)
    if not np.issubdtype(value.dtype, np.integer):
        if np.issubdtype(value.dtype, np.floating) and np.all(value == np.round(value)):
            return value.astype(np.int64)
        raise TracingError(f"{what} must be integers to combine with encrypted values")
    return value.astype(np.int64)


def run_linear(node, args, arg_nodes, backend):
    """Evaluate a non-lookup node; encrypted operands are backend tensors."""
    op, attrs = node.op, node.attrs
    nds = [len(a.shape) for a in arg_nodes]
    nd = len(node.shape)
    dt = backend.dtype
    if op == "const":
        return np.asarray(attrs["value"])[None]
    if op in CLEAR_OPS:
        return evaluate_op(op, attrs, args, [a.shape for a in arg_nodes], node.shape)
    if op == "enc_add":
        return align(args[0], nds[0], nd) + align(args[1], nds[1], nd)
    if op == "enc_sub":
        return align(args[0], nds[0], nd) - align(args[1], nds[1], nd)
    if op == "enc_neg":
        return dt(0) - args[0]
    if op == "enc_add_clear":
        e = align(args[0], nds[0], nd)
        c = _as_int(align(args[1], nds[1], nd), "clear operands")
        b = max(e.shape[0], c.shape[0])
        out = np.array(np.broadcast_to(e, (b,) + node.shape + e.shape[-1:]))
        if attrs["neg_enc"]:
            out = dt(0) - out
        if attrs["neg_clear"]:
            c = -c
        out[..., -1] += backend.encode(c)
        return out
    if op == "enc_mul_clear":
        e = align(args[0], nds[0], nd)
        c = _as_int(align(args[1], nds[1], nd), "clear factors").astype(dt)
        return e * c[..., None]
    if op == "enc_matmul":
        enc_left = attrs["enc_left"]
        e, c = (args[0], args[1]) if enc_left else (args[1], args[0])
        e_nd, c_nd = (nds[0], nds[1]) if enc_left else (nds[1], nds[0])
        moved = np.moveaxis(e, -1, 1)  # (b, D, *shape): the ciphertext words act as a batch
        c = _as_int(c, "clear matrices").astype(dt)
        c = c.reshape(c.shape[:1] + (1,) + c.shape[1:])
        if enc_left:
            out = batched_matmul(moved, e_nd, c, c_nd, nb=2)
        else:
            out = batched_matmul(c, c_nd, moved, e_nd, nb=2)
        return np.moveaxis(out, 1, -1)
    if op == "enc_sum":
        return np.sum(args[0], axis=batch_axes(attrs["axis"], nds[0]),
                      keepdims=attrs["keepdims"], dtype=dt)
    if op == "enc_reshape":
        a = args[0]
        return a.reshape(a.shape[:1] + node.shape + a.shape[-1:])
    if op == "enc_transpose":
        return np.transpose(args[0], (0,) + tuple(x + 1 for x in attrs["axes"]) + (nds[0] + 1,))
    if op == "enc_getitem":
        return args[0][batch_index(attrs["index"], nds[0])]
    if op == "enc_concatenate":
        vals = broadcast_batch([align(a, n, nd) for a, n in zip(args, nds)])
        return np.concatenate(vals, axis=attrs["axis"] + 1)
    if op == "enc_stack":
        return np.stack(broadcast_batch(list(args)), axis=attrs["axis"] + 1)
    if op == "enc_broadcast_to":
        a = align(args[0], nds[0], nd)
        return np.broadcast_to(a, a.shape[:1] + node.shape + a.shape[-1:])
    if op == "enc_trivial":
        c = _as_int(args[0], "clear values")
        out = np.zeros(c.shape + (backend.width,), dtype=dt)
        out[..., -1] = backend.encode(c)
        return out
    raise ValueError(f"cannot run op {op!r}")


def lookup_indices(node, x):
    """Table index of every input message of a lookup, checking the compiled range."""
    lo, shift = node.attrs["lo"], node.attrs["shift"]
    idx = x.astype(np.int64) - np.int64(lo)
    if shift:
        idx = (idx + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    n = node.attrs["tables"].shape[1]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        got = x.min() if idx.min() < 0 else x.max()
        top = lo + ((n - 1) << shift)
        raise InputRangeError(
            f"the input of the lookup at {node.where or '<source not in the spec>'} reached {int(got)}, "
            f"outside the range [{lo}, {top}] its table covers (the worst case over the "
            "compiled input ranges): the encrypted result would be wrong. Keep the inputs "
            "inside the ranges the circuit was compiled for."
        )
    return idx


def padded_tables(node, pin):
    """Tables of the lookup extended to ``2**pin`` entries (edge values repeated)."""
    t = node.attrs["tables"]
    size = 1 << pin
    if t.shape[1] > size:
        raise ValueError("internal error: table longer than its precision")
    return np.pad(t, ((0, 0), (0, size - t.shape[1])), mode="edge")


def run_lookup_clear(node, x, backend, index=None):
    """Lookup on clear messages ``x`` (int64 ``(b, *shape)``); simulation if configured."""
    idx = lookup_indices(node, x)
    tables = node.attrs["tables"]
    ti = node.attrs.get("table_index")
    std = None if backend.noise is None else backend.noise.get(index)
    if std:
        idx = _noisy_indices(node, x, idx, std, backend.rng)
        tables = padded_tables(node, node.attrs["pin"])
    if ti is None:
        return tables[0][idx]
    return tables[np.broadcast_to(ti, idx.shape), idx]


def _noisy_indices(node, x, idx, std, rng):
    """Table indices an encrypted lookup reads: the noise at the decision (``std``, in
    units of the input message) moves a value across the boundary of its box.

    The lookup's box ``i`` holds the messages rounding to ``i * 2**shift`` (ties upward),
    so a message ``d`` units below the upper boundary reads box ``i + 1`` with probability
    ``Phi(-d / std)``, and symmetrically downward.  Without ``round_bit_pattern``
    (``shift == 0``) both distances are half a unit: the lookup's failure probability.
    With it, values near a rounding tie move often (the encrypted rounding is
    approximate) and values far from it almost never; the encrypted run adds half a unit
    first (:func:`run_encrypted`), so that a tie sits half a unit inside the box it
    rounds to rather than on the boundary.
    """
    from scipy.special import ndtr

    shift = node.attrs["shift"]
    width = float(1 << shift)
    # position in the box, in [-width/2, width/2): 0 at its centre
    position = (x.astype(np.int64) - np.int64(node.attrs["lo"]) - (idx << shift)).astype(
        np.float64) + (0.5 if shift else 0.0)
    up = ndtr(-(width / 2 - position) / std)
    down = ndtr(-(width / 2 + position) / std)
    u = rng.random(idx.shape)
    moved = idx + (u < up) - (u > 1.0 - down)
    return np.clip(moved, 0, (1 << node.attrs["pin"]) - 1)


def run_clear(program, inputs, backend):
    """Run a program with the clear backend.

    Parameters
    ----------
    inputs : list of numpy.ndarray
        One batched array per argument (encrypted ones as int64 messages).

    Returns
    -------
    list of numpy.ndarray
        One batched int64 array per output.
    """
    values = [None] * len(program.nodes)
    for k, node in enumerate(program.nodes):
        if node.op in ("enc_input", "clear_input"):
            v = inputs[node.attrs["index"]]
            values[k] = np.asarray(v).astype(np.int64)[..., None] if node.encrypted else v
            continue
        args = [values[i] for i in node.inputs]
        if node.op == "tlu":
            values[k] = run_lookup_clear(node, args[0][..., 0], backend, k)[..., None]
        else:
            with np.errstate(all="ignore"):
                values[k] = run_linear(node, args, [program.nodes[i] for i in node.inputs],
                                       backend)
    return [values[i][..., 0] for i in program.output_nodes]


def engine_tables(node, precision):
    """Padded tables reduced to output messages in ``[-2^P, 2^P)``."""
    t = padded_tables(node, node.attrs["pin"])
    mod = np.int64(1) << np.int64(precision + 1)
    t = np.mod(t, mod)
    return np.where(t >= mod // 2, t - mod, t)


def run_encrypted(program, inputs, evaluation_keys, n_jobs=1, verbose=None, precomputed=None,
                  skip=()):
    """Run a program on ciphertext data.

    Parameters
    ----------
    inputs : list
        Per argument: uint64 ciphertext data ``(b, *shape, D)`` (encrypted) or a batched
        clear array.
    evaluation_keys : fheml._core.EvaluationKeys
    n_jobs : int, default=1
    verbose : bool, optional
        Progress report of the lookups (see :mod:`fheml._progress`).
    precomputed : dict, optional
        ``{node: ciphertext data}`` of nodes the caller computed (e.g. the packed first
        layer, :class:`fheml.compiler.packed.FirstLayerPlan`).
    skip : set of int, optional
        Nodes not computed: only read by other skipped or precomputed nodes.

    Returns
    -------
    list of numpy.ndarray
        uint64 ciphertext data of each output.
    """
    params = evaluation_keys.params
    backends = {}

    def backend(k):  # encoding of node k's partition (clear nodes: any)
        p = nodes[k].precision if nodes[k].encrypted else program.precision
        if p not in backends:
            backends[p] = LweBackend(p, params.big_lwe_dimension)
        return backends[p]

    nodes = program.nodes
    width = params.big_lwe_dimension + 1
    values = [None] * len(nodes)
    precomputed = precomputed or {}
    for k, v in precomputed.items():
        values[k] = v
    skip = set(skip) | set(precomputed)
    n_stages = program.assign_stages()
    by_stage = [[] for _ in range(n_stages + 1)]
    for k, node in enumerate(nodes):
        by_stage[node.stage].append(k)
    batch = max((np.shape(v)[0] for v in list(inputs) + list(precomputed.values())
                 if np.ndim(v)), default=1)
    total = batch * sum(int(np.prod(n.shape, dtype=np.int64)) for n in program.lookups)
    # Drop each value after the last level that reads it: memory follows the widest level,
    # not the whole program.
    last_read = [n_stages + 1 if k in program.output_nodes else -1 for k in range(len(nodes))]
    for node in nodes:
        for i in node.inputs:
            last_read[i] = max(last_read[i], node.stage)
    with progress(total, "Encrypted run", unit="lookup", verbose=verbose) as bar:
        for stage in range(n_stages + 1):
            _run_stage(nodes, [k for k in by_stage[stage] if k not in skip], values, inputs,
                       evaluation_keys, backend, width, n_jobs, bar)
            for k in range(len(nodes)):
                if last_read[k] <= stage:
                    values[k] = None
    return [np.ascontiguousarray(values[i]) for i in program.output_nodes]


def _run_stage(nodes, stage_nodes, values, inputs, evaluation_keys, backend, width, n_jobs,
               bar):
    """The lookups of one level (one engine call per read precision), then its linear
    nodes.  ``backend(k)`` is the encoding of node ``k``'s partition."""
    from fheml._core.keys import LweCiphertext

    lookups = [k for k in stage_nodes if nodes[k].op == "tlu"]
    groups = {}
    for k in lookups:
        groups.setdefault(nodes[k].attrs["pin"], []).append(k)
    for pin, members in groups.items():
        # One engine call per read precision: a table whose output precision p is below
        # the call's is scaled by 2^(p_out - p), the same torus values.
        p_out = max(nodes[k].precision for k in members)
        datas, indices, tables, shapes = [], [], [], []
        table_offset = 0
        for k in members:
            node = nodes[k]
            x = values[node.inputs[0]]
            x = np.array(x)  # own copy: offsets are applied in place
            encoding = backend(node.inputs[0])
            x[..., -1] -= encoding.encode(node.attrs["lo"])
            if node.attrs["shift"]:
                # half a unit up: a rounding tie (rounded upward in the clear) is then
                # half a unit above its box boundary instead of on it (see _noisy_indices)
                x[..., -1] += encoding.delta >> np.uint64(1)
            premul = node.attrs["premul"]
            if premul != 1:
                x *= np.uint64(premul)
            shapes.append(x.shape)
            datas.append(x.reshape(-1, width))
            t = engine_tables(node, node.precision) << np.int64(p_out - node.precision)
            ti = node.attrs.get("table_index")
            if ti is None:
                idx = np.full(x.shape[:-1], table_offset, dtype=np.int64)
            else:
                idx = np.broadcast_to(ti + table_offset, x.shape[:-1])
            indices.append(idx.reshape(-1))
            tables.append(t)
            table_offset += t.shape[0]
        batch = LweCiphertext(np.concatenate(datas), evaluation_keys.key_id)
        out = evaluation_keys.programmable_bootstrap(
            batch, np.concatenate(tables), table_index=np.concatenate(indices),
            input_precision=pin, output_precision=p_out, n_jobs=n_jobs, bar=bar)
        start = 0
        for k, shape in zip(members, shapes):
            count = int(np.prod(shape[:-1], dtype=np.int64))
            values[k] = out.data[start:start + count].reshape(shape)
            start += count
    for k in stage_nodes:
        node = nodes[k]
        if node.op == "tlu":
            continue
        if node.op in ("enc_input", "clear_input"):
            v = inputs[node.attrs["index"]]
            if node.encrypted:
                v = np.array(v)
                v[..., -1] += backend(k).encode(node.attrs["lo"])
            values[k] = v
            continue
        values[k] = run_linear(node, [values[i] for i in node.inputs],
                               [nodes[i] for i in node.inputs], backend(k))
