"""The lowered program: integer operations on encrypted tensors and table lookups.

A program is what the server runs.  Its nodes are either *clear* (constants, clear runtime
arguments and numpy operations on them) or *encrypted*: linear operations on ciphertexts
and lookups (``"tlu"``).  The same program runs three ways:

- clear (``"disable"``): an encrypted tensor is an ``int64`` array ``(b, *shape, 1)``
  holding the message itself (scale 1, no mask), so every linear operation goes through
  the code used on real ciphertexts;
- simulation: the same, and each lookup reads a wrong neighbouring table entry with its
  modelled failure probability;
- encrypted: an encrypted tensor is the ``uint64`` data ``(b, *shape, dimension + 1)`` of a
  batch of LWE ciphertexts; all lookups of one level go to the engine in one call.
"""

import numpy as np

from fheml.compiler.graph import (
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
    """

    def __init__(self):
        self.nodes = []
        self.input_nodes = []
        self.output_nodes = []
        self.precision = None

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
    def to_json(self):
        """Return ``(header, arrays)``: a JSON-able description and the arrays it refers to."""
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
            return value

        nodes = []
        for n in self.nodes:
            nodes.append({
                "op": n.op, "inputs": n.inputs, "shape": list(n.shape), "encrypted": n.encrypted,
                "nu": n.nu, "where": n.where, "precision": n.precision,
                "bounds": None if n.bounds is None else [int(n.bounds[0]), int(n.bounds[1])],
                "attrs": {k: enc_attr(k, v, n.op) for k, v in n.attrs.items()},
            })
        header = {"nodes": nodes, "input_nodes": self.input_nodes,
                  "output_nodes": self.output_nodes, "precision": self.precision}
        return header, arrays

    @classmethod
    def from_json(cls, header, arrays):
        """Inverse of :meth:`to_json`, validating structure (ops, indices, shapes)."""
        prog = cls()

        def dec_attr(key, value):
            if isinstance(value, dict) and "__index__" in value:
                return index_from_json(value["__index__"])
            if isinstance(value, dict) and "__array__" in value:
                i = value["__array__"]
                if not isinstance(i, int) or not 0 <= i < len(arrays):
                    raise ValueError("array reference out of range")
                a = arrays[i]
                return a.astype(bool) if value.get("bool") else a
            return value

        for k, d in enumerate(header["nodes"]):
            op = d["op"]
            if op not in ENCRYPTED_OPS and op not in CLEAR_OPS:
                raise ValueError(f"unknown op {op!r}")
            inputs = [int(i) for i in d["inputs"]]
            if any(not 0 <= i < k for i in inputs):
                raise ValueError(f"node {k} refers to a later node")
            node = PNode(op, inputs, {key: dec_attr(key, v) for key, v in d["attrs"].items()},
                         d["shape"], d["encrypted"], d["nu"], d.get("where", ""))
            if d.get("bounds") is not None:
                node.bounds = (int(d["bounds"][0]), int(d["bounds"][1]))
            if node.encrypted:
                node.precision = int(d["precision"])
                if not 1 <= node.precision <= 62:
                    raise ValueError(f"node {k} has an invalid precision")
            if op == "tlu":
                t = node.attrs["tables"]
                if not isinstance(t, np.ndarray) or t.ndim != 2 or t.dtype != np.int64:
                    raise ValueError("lookup tables must be a 2-D int64 array")
            prog.nodes.append(node)
        n = len(prog.nodes)
        prog.input_nodes = [int(i) for i in header["input_nodes"]]
        prog.output_nodes = [int(i) for i in header["output_nodes"]]
        if any(not 0 <= i < n for i in prog.input_nodes + prog.output_nodes):
            raise ValueError("input/output node out of range")
        prog.precision = int(header["precision"])
        prog.assign_stages()
        return prog


# ----------------------------------------------------------------------- backends -------

class ClearBackend:
    """Encrypted tensors as their messages: int64 ``(b, *shape, 1)``."""

    dtype = np.int64
    delta = np.int64(1)
    width = 1

    def __init__(self, rng=None, p_fail=None):
        self.rng = rng
        self.p_fail = p_fail  # {node index: probability} for simulation

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
        seen_lo, seen_hi = node.bounds
        got = x.min() if idx.min() < 0 else x.max()
        raise InputRangeError(
            f"the input of the lookup at {node.where or '<unknown>'} reached {int(got)}, "
            f"outside the range [{seen_lo}, {seen_hi}] seen on the inputset at compile time: "
            "the encrypted result would be wrong. Compile with an inputset that covers "
            "the values you run on."
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
    p_fail = 0.0 if backend.p_fail is None else backend.p_fail.get(index, 0.0)
    shift = node.attrs["shift"]
    if backend.p_fail is not None and shift:
        # A value half-way between two multiples of 2^shift sits on the boundary of two
        # boxes of the bootstrap: the noise decides the rounding direction.
        tie = ((x.astype(np.int64) - node.attrs["lo"]) & ((1 << shift) - 1)) == (1 << (shift - 1))
        idx = np.where(tie & (backend.rng.random(idx.shape) < 0.5), idx - 1, idx)
    if p_fail > 0.0:
        pin = node.attrs["pin"]
        tables = padded_tables(node, pin)
        fail = backend.rng.random(idx.shape) < p_fail
        step = np.where(backend.rng.random(idx.shape) < 0.5, -1, 1)
        idx = np.clip(np.where(fail, idx + step, idx), 0, (1 << pin) - 1)
    if ti is None:
        return tables[0][idx]
    return tables[np.broadcast_to(ti, idx.shape), idx]


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


def run_encrypted(program, inputs, evaluation_keys, n_jobs=1):
    """Run a program on ciphertext data.

    Parameters
    ----------
    inputs : list
        Per argument: uint64 ciphertext data ``(b, *shape, D)`` (encrypted) or a batched
        clear array.
    evaluation_keys : fheml._core.EvaluationKeys

    Returns
    -------
    list of numpy.ndarray
        uint64 ciphertext data of each output.
    """
    from fheml._core.keys import LweCiphertext

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
    n_stages = program.assign_stages()
    by_stage = [[] for _ in range(n_stages + 1)]
    for k, node in enumerate(nodes):
        by_stage[node.stage].append(k)
    for stage in range(n_stages + 1):
        lookups = [k for k in by_stage[stage] if nodes[k].op == "tlu"]
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
                x[..., -1] -= backend(node.inputs[0]).encode(node.attrs["lo"])
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
                input_precision=pin, output_precision=p_out, n_jobs=n_jobs)
            start = 0
            for k, shape in zip(members, shapes):
                count = int(np.prod(shape[:-1], dtype=np.int64))
                values[k] = out.data[start:start + count].reshape(shape)
                start += count
        for k in by_stage[stage]:
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
    return [np.ascontiguousarray(values[i]) for i in program.output_nodes]
