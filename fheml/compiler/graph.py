"""The op-graph of a traced program and its evaluation in the clear.

Every value handled here carries a leading *batch axis*: an array of shape
``(b, *node.shape)`` where ``b`` is the number of samples evaluated at once (1 for
constants, which broadcast).  Encrypted tensors add one trailing axis for the ciphertext
words (``(b, *shape, D)``); the helpers below therefore count axes from the front.
"""

import numpy as np

__all__ = ["Graph", "Node", "TracingError", "UFUNCS", "evaluate_op", "bit_width"]

# The numpy ufuncs a graph (and a server spec) may name: elementwise numeric functions with
# one output.  Anything else is refused when tracing and when a spec is loaded, so a spec
# can never make the server call an arbitrary numpy attribute.
UFUNCS = frozenset(
    name for name in (
        "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "remainder",
        "fmod", "power", "float_power", "negative", "positive", "absolute", "fabs", "sign",
        "rint", "floor", "ceil", "trunc", "sqrt", "cbrt", "square", "reciprocal", "exp",
        "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "arcsin",
        "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
        "arctanh", "hypot", "deg2rad", "rad2deg", "degrees", "radians", "logaddexp",
        "logaddexp2", "maximum", "minimum", "fmax", "fmin", "less", "less_equal", "greater",
        "greater_equal", "equal", "not_equal", "logical_and", "logical_or", "logical_xor",
        "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift",
        "right_shift", "isfinite", "isinf", "isnan", "signbit", "copysign", "heaviside",
        "gcd", "lcm", "ldexp", "conjugate", "nextafter", "spacing", "bitwise_count",
    )
    if isinstance(getattr(np, name, None), np.ufunc) and getattr(np, name).nout == 1
)


class TracingError(ValueError):
    """An operation that the compiler cannot trace or compile."""


def bit_width(lo, hi):
    """Bits of the smallest two's complement (or unsigned when ``lo >= 0``) integer
    type holding every value in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return max(1, hi.bit_length())
    return max(hi.bit_length(), (-lo - 1).bit_length()) + 1


def range_bits(lo, hi):
    """Bits needed for ``hi - lo`` (the width of a value once offset by its minimum)."""
    return max(1, (int(hi) - int(lo)).bit_length())


class Node:
    """One operation of the graph.

    Attributes
    ----------
    id : int
        Position in :attr:`Graph.nodes` (nodes are stored in topological order).
    op : str
        Operation name (``"input"``, ``"const"``, ``"ufunc"``, ``"matmul"``, ...).
    inputs : list of int
        Ids of the operand nodes.
    attrs : dict
        Operation parameters (ufunc name, axis, index, ...).
    shape : tuple of int
        Shape of one sample of the value.
    kind : {"int", "bool", "float"}
    encrypted : bool
        Whether the value depends on an encrypted input.
    clear_input : bool
        Whether the value depends on a clear *runtime* argument (not only constants).
    location, code : str
        ``file:line`` and text of the user's source line that created the node.
    """

    __slots__ = ("id", "op", "inputs", "attrs", "shape", "kind", "encrypted", "clear_input",
                 "location", "code", "bounds")

    def __init__(self, id, op, inputs, attrs, shape, kind, encrypted, clear_input,
                 location="", code=""):
        self.id = id
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.shape = tuple(int(s) for s in shape)
        self.kind = kind
        self.encrypted = encrypted
        self.clear_input = clear_input
        self.location = location
        self.code = code
        self.bounds = None

    @property
    def label(self):
        """Short description: op name (ufunc name for ufuncs)."""
        if self.op == "ufunc":
            return self.attrs["name"]
        if self.op == "input":
            return f"input {self.attrs['name']!r}"
        return self.op

    def where(self):
        """``'file:line (code)'`` of the user's source, for error messages."""
        if not self.location:
            return "<unknown location>"
        return f"{self.location} ({self.code})" if self.code else self.location

    def type_str(self):
        if self.kind == "float":
            return "float"
        if self.bounds is None:
            return self.kind
        lo, hi = self.bounds
        w = bit_width(lo, hi)
        return f"uint{w}" if lo >= 0 else f"int{w}"


class Graph:
    """A traced program: nodes in topological order, inputs and outputs.

    Attributes
    ----------
    nodes : list of Node
    input_ids, output_ids : list of int
    arg_names : list of str
    """

    def __init__(self):
        self.nodes = []
        self.input_ids = []
        self.output_ids = []
        self.arg_names = []
        self.multiple_outputs = False

    def format(self):
        """Text listing of the graph: one line per node with its type (bit width once
        bounds are known), shape, encryption status and source line.

        Returns
        -------
        str
        """
        lines = []
        for n in self.nodes:
            if n.op == "const":
                args = "constant"
            elif n.op == "input":
                args = n.attrs["name"]
            else:
                args = ", ".join(f"%{i}" for i in n.inputs)
            status = "encrypted" if n.encrypted else "clear"
            bounds = "" if n.bounds is None else f" in [{_fmt(n.bounds[0])}, {_fmt(n.bounds[1])}]"
            loc = f"  # {n.where()}" if n.location else ""
            lines.append(f"%{n.id} = {n.label}({args}) : {n.type_str()}{list(n.shape)} "
                         f"{status}{bounds}{loc}")
        outs = ", ".join(f"%{i}" for i in self.output_ids)
        lines.append(f"return {outs}")
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def _fmt(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------ clear evaluation --

def align(value, nd_in, nd_out):
    """Insert unit axes after the batch axis so a value of ``nd_in`` sample dimensions
    broadcasts like numpy would against ``nd_out`` sample dimensions."""
    if nd_in >= nd_out:
        return value
    return value.reshape(value.shape[:1] + (1,) * (nd_out - nd_in) + value.shape[1:])


def batch_axes(axis, nd):
    """Sample axis (int, tuple or None = all) -> tuple of axes in a batched array."""
    if axis is None:
        return tuple(range(1, nd + 1))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -nd <= a < nd:
            raise TracingError(f"axis {a} is out of bounds for {nd} dimensions")
        out.append(a % nd + 1)
    return tuple(out)


def batch_index(index, nd, trailing=0):
    """Sample index (normalised tuple, see :func:`normalize_index`) -> batched index."""
    return (slice(None),) + tuple(index) + (slice(None),) * trailing


def normalize_index(index, shape):
    """Expand an index to a tuple of slices / ints / int arrays / None covering ``shape``.

    Raises TracingError for boolean masks that are not constant or for advanced indexing
    patterns whose result layout depends on the batch axis.
    """
    if not isinstance(index, tuple):
        index = (index,)
    items = []
    for it in index:
        if isinstance(it, (list, np.ndarray)):
            arr = np.asarray(it)
            if arr.dtype == bool:
                items.extend(np.nonzero(arr))
                continue
            if not np.issubdtype(arr.dtype, np.integer):
                raise TracingError("array indices must be integers or booleans")
            items.append(arr.astype(np.int64))
        elif it is Ellipsis or it is None or isinstance(it, slice):
            items.append(it)
        elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            items.append(int(it))
        else:
            raise TracingError(f"index of type {type(it).__name__} is not supported "
                               "(use constant ints, slices, None or integer arrays)")
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    if consuming > len(shape):
        raise TracingError(f"too many indices for a value of shape {shape}")
    if sum(1 for it in items if it is Ellipsis) > 1:
        raise TracingError("an index can only have a single ellipsis")
    out = []
    for it in items:
        if it is Ellipsis:
            out.extend([slice(None)] * (len(shape) - consuming))
        else:
            out.append(it)
    advanced = [i for i, it in enumerate(out) if isinstance(it, (int, np.ndarray))]
    if any(isinstance(out[i], np.ndarray) for i in advanced) and advanced != list(
            range(advanced[0], advanced[-1] + 1)):
        raise TracingError("advanced indexing with index arrays separated by slices is not "
                           "supported; index in two steps")
    return tuple(out)


def index_to_json(index):
    out = []
    for it in index:
        if it is None:
            out.append({"t": "none"})
        elif isinstance(it, slice):
            out.append({"t": "slice", "v": [it.start, it.stop, it.step]})
        elif isinstance(it, np.ndarray):
            out.append({"t": "array", "v": it.tolist()})
        else:
            out.append({"t": "int", "v": int(it)})
    return out


def _json_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or not -2**62 <= v < 2**62:
        raise ValueError(f"bad index value {v!r}")
    return v


def index_from_json(items):
    """Inverse of :func:`index_to_json`; raises ValueError on anything malformed."""
    if not isinstance(items, list):
        raise ValueError("an index must be a list")
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("t"), str):
            raise ValueError("bad index item")
        t, v = it["t"], it.get("v")
        if t == "none":
            out.append(None)
        elif t == "slice":
            if not isinstance(v, list) or len(v) != 3:
                raise ValueError("bad slice")
            a, b, c = (None if x is None else _json_int(x) for x in v)
            if c == 0:
                raise ValueError("slice step cannot be zero")
            out.append(slice(a, b, c))
        elif t == "array":
            a = np.asarray(v) if isinstance(v, list) else None
            if a is None or (a.size and a.dtype.kind != "i"):
                raise ValueError("an index array must be a (nested) list of integers")
            out.append(a.astype(np.int64))
        elif t == "int":
            out.append(_json_int(v))
        else:
            raise ValueError(f"bad index item {t!r}")
    return tuple(out)


def broadcast_batch(values):
    """Broadcast the batch axes of several arrays to a common size."""
    b = max(v.shape[0] for v in values)
    return [v if v.shape[0] == b else np.broadcast_to(v, (b,) + v.shape[1:]) for v in values]


def batched_matmul(a, a_nd, b, b_nd, nb=1):
    """numpy.matmul of samples, arrays carrying ``nb`` leading batch axes."""
    if a_nd == 0 or b_nd == 0:
        raise TracingError("matmul does not take scalars (use *)")
    if a_nd == 1 and b_nd == 1:
        return np.sum(a * b, axis=-1)
    if a_nd == 1:
        a = a.reshape(a.shape[:nb] + (1,) * (b_nd - 2) + (1,) + a.shape[nb:])
        return np.squeeze(np.matmul(a, b), axis=-2)
    if b_nd == 1:
        b = b.reshape(b.shape[:nb] + (1,) * (a_nd - 2) + b.shape[nb:] + (1,))
        return np.squeeze(np.matmul(a, b), axis=-1)
    if a_nd < b_nd:
        a = a.reshape(a.shape[:nb] + (1,) * (b_nd - a_nd) + a.shape[nb:])
    elif b_nd < a_nd:
        b = b.reshape(b.shape[:nb] + (1,) * (a_nd - b_nd) + b.shape[nb:])
    return np.matmul(a, b)


def round_bits(x, lsbs):
    """Round integers to the nearest multiple of ``2**lsbs`` (ties upwards), the rounding
    the bootstrap applies when it reads only the top bits of a message."""
    x = np.asarray(x)
    if lsbs <= 0:
        return x
    half = np.int64(1) << np.int64(lsbs - 1)
    return ((x.astype(np.int64) + half) >> np.int64(lsbs)) << np.int64(lsbs)


def _ufunc(attrs, args, nds, nd_out):
    name = attrs["name"]
    if name not in UFUNCS:
        raise TracingError(f"np.{name} is not a supported elementwise function")
    fn = getattr(np, name)
    if fn.nin != len(args):
        raise TracingError(f"np.{name} takes {fn.nin} operand(s), got {len(args)}")
    return fn(*[align(a, n, nd_out) for a, n in zip(args, nds)])


def _dtype(name):
    return {"int64": np.int64, "bool": np.bool_, "float64": np.float64}[name]


def evaluate_op(op, attrs, args, in_shapes, out_shape):
    """Evaluate one op on batched clear arrays (see the module docstring).

    Parameters
    ----------
    op : str
    attrs : dict
    args : list of numpy.ndarray
        Operands with a leading batch axis.
    in_shapes : list of tuple
        Sample shapes of the operands.
    out_shape : tuple
        Sample shape of the result.

    Returns
    -------
    numpy.ndarray of shape ``(b, *out_shape)``
    """
    nds = [len(s) for s in in_shapes]
    nd_out = len(out_shape)
    if op == "ufunc":
        return _ufunc(attrs, args, nds, nd_out)
    if op == "matmul":
        return batched_matmul(args[0], nds[0], args[1], nds[1])
    if op == "sum":
        return np.sum(args[0], axis=batch_axes(attrs["axis"], nds[0]),
                      keepdims=attrs["keepdims"])
    if op == "reshape":
        return args[0].reshape(args[0].shape[:1] + tuple(out_shape))
    if op == "transpose":
        return np.transpose(args[0], (0,) + tuple(a + 1 for a in attrs["axes"]))
    if op == "getitem":
        return args[0][batch_index(attrs["index"], nds[0])]
    if op == "concatenate":
        vals = broadcast_batch([align(a, n, nd_out) for a, n in zip(args, nds)])
        return np.concatenate(vals, axis=attrs["axis"] + 1)
    if op == "stack":
        return np.stack(broadcast_batch(list(args)), axis=attrs["axis"] + 1)
    if op == "broadcast_to":
        v = align(args[0], nds[0], nd_out)
        return np.broadcast_to(v, v.shape[:1] + tuple(out_shape))
    if op == "astype":
        return args[0].astype(_dtype(attrs["dtype"]))
    if op == "round":
        return np.round(args[0], attrs.get("decimals", 0))
    if op == "where":
        return np.where(*[align(a, n, nd_out) for a, n in zip(args, nds)])
    if op == "clip":
        vals = [align(a, n, nd_out) for a, n in zip(args, nds)]
        lo = vals[1] if attrs["has_min"] else None
        hi = vals[1 + attrs["has_min"]] if attrs["has_max"] else None
        return np.clip(vals[0], lo, hi)
    if op == "lut":
        table = attrs["table"]
        n = table.shape[0]
        return table[np.clip(args[0].astype(np.int64), -n, n - 1)]
    if op == "univariate":
        return np.asarray(attrs["fn"](args[0]))
    if op == "round_bit_pattern":
        return round_bits(args[0], attrs["lsbs"])
    raise TracingError(f"no clear evaluation for op {op!r}")

