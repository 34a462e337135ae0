"""Tracing: run the user's numpy function on tracer objects to record an op-graph.

A :class:`Tracer` stands for one value of the program.  Python operators, numpy ufuncs
(``__array_ufunc__``) and numpy functions (``__array_function__``) on tracers add nodes to
the graph instead of computing.  Every node records the user's source line so that errors
can point at it.
"""

import linecache
import os
import sys

import numpy as np

from fheml.compiler.graph import (
    UFUNCS,
    Graph,
    Node,
    TracingError,
    evaluate_op,
    normalize_index,
)

__all__ = ["LookupTable", "Tracer", "round_bit_pattern", "trace", "univariate"]

_COMPILER_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


def _user_location():
    """``(file:line, code)`` of the innermost frame outside the compiler and numpy."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_COMPILER_DIR) or filename.startswith(_NUMPY_DIR)
                or filename.startswith("<__array_function__")):
            code = linecache.getline(filename, frame.f_lineno).strip()
            return f"{os.path.basename(filename)}:{frame.f_lineno}", code
        frame = frame.f_back
    return "", ""


def _kind(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    raise TracingError(f"values of dtype {dtype} are not supported")


_DUMMY_DTYPE = {"bool": np.bool_, "int": np.int64, "float": np.float64}
_KIND_DTYPE = {"bool": np.dtype(np.bool_), "int": np.dtype(np.int64),
               "float": np.dtype(np.float64)}


def _unsupported(what, hint=""):
    location, code = _user_location()
    where = f" at {location} ({code})" if location else ""
    raise TracingError(f"unsupported operation {what}{where}{'; ' + hint if hint else ''}")


class _Builder:
    """Owns the graph being traced and the dummy values used for shape inference."""

    def __init__(self):
        self.graph = Graph()
        self.dummies = []

    def add(self, op, inputs, attrs=None, *, value=None, encrypted=None, clear_input=None,
            name=None):
        attrs = dict(attrs or {})
        location, code = _user_location()
        ids = [t.node.id for t in inputs]
        nodes = [self.graph.nodes[i] for i in ids]
        if op == "const":
            value = np.asarray(value)
            if value.dtype == object:
                raise TracingError(f"constant {value!r} is not numeric")
            if value.dtype.kind in "ui":
                value = value.astype(np.int64)
            elif value.dtype.kind == "f":
                value = value.astype(np.float64)
            dummy = value[None]
            attrs["value"] = value
        elif op == "input":
            dummy = value
        else:
            args = [self.dummies[i] for i in ids]
            try:
                with np.errstate(all="ignore"):
                    out_shape = _infer_shape(op, attrs, nodes)
                    dummy = np.asarray(evaluate_op(op, attrs, args, [n.shape for n in nodes],
                                                   out_shape))
            except TracingError:
                raise
            except Exception as exc:
                label = attrs.get("name", op)
                raise TracingError(f"cannot trace {label} at {location} ({code}): {exc}") from None
        if dummy.ndim == 0 or dummy.shape[0] != 1:
            raise TracingError(f"internal error: {op} lost the batch axis")
        kind = _kind(dummy.dtype)
        if encrypted is None:
            encrypted = any(n.encrypted for n in nodes)
        if clear_input is None:
            clear_input = any(n.clear_input for n in nodes)
        node = Node(len(self.graph.nodes), op, ids, attrs, dummy.shape[1:], kind, encrypted,
                    clear_input, location, code)
        self.graph.nodes.append(node)
        self.dummies.append(np.zeros_like(dummy) if op not in ("const",) else dummy)
        return Tracer(self, node)

    def const(self, value):
        return self.add("const", [], value=value, encrypted=False, clear_input=False)

    def wrap(self, value):
        if isinstance(value, Tracer):
            if value.builder is not self:
                raise TracingError("a tracer from another trace was used")
            return value
        if isinstance(value, LookupTable):
            _unsupported("using a LookupTable as a value", "index it: table[x]")
        return self.const(value)


def _infer_shape(op, attrs, nodes):
    """Output sample shape (or at least its dimension count) needed by the evaluation."""
    if op in ("reshape", "broadcast_to"):
        return tuple(attrs["shape"])
    if op in ("ufunc", "where", "clip"):
        return np.broadcast_shapes(*[n.shape for n in nodes])
    if op == "concatenate":
        return nodes[0].shape
    return ()


class Tracer:
    """Placeholder for a value while tracing; behaves like a numpy array."""

    __array_priority__ = 10000

    def __init__(self, builder, node):
        self.builder = builder
        self.node = node

    # -- array-like attributes ------------------------------------------------------------
    @property
    def shape(self):
        return self.node.shape

    @property
    def ndim(self):
        return len(self.node.shape)

    @property
    def size(self):
        return int(np.prod(self.node.shape, dtype=np.int64))

    @property
    def dtype(self):
        return _KIND_DTYPE[self.node.kind]

    @property
    def T(self):
        return self.transpose()

    def __len__(self):
        if not self.node.shape:
            raise TypeError("len() of a scalar value")
        return self.node.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return f"Tracer(%{self.node.id}, shape={self.shape}, {self.node.kind})"

    def __bool__(self):
        _unsupported("bool() of a traced value (data-dependent control flow: `if`, `and`, "
                     "`or`, `while`)", "use np.where or arithmetic instead")

    def __int__(self):
        _unsupported("int() of a traced value", "use .astype(np.int64)")

    def __float__(self):
        _unsupported("float() of a traced value", "use .astype(np.float64)")

    def __index__(self):
        _unsupported("using a traced value as an index", "use fheml.LookupTable for "
                     "data-dependent indexing")

    def __array__(self, *args, **kwargs):
        _unsupported("converting a traced value to a numpy array (np.array/np.asarray)",
                     "keep it as is; numpy functions accept it directly")

    # -- operators ---------------------------------------------------------------------------
    def _binary(self, name, other, reverse=False):
        b = self.builder
        operands = [b.wrap(other), self] if reverse else [self, b.wrap(other)]
        if name == "matmul":
            return _matmul(*operands)
        return b.add("ufunc", operands, {"name": name})

    def __add__(self, o): return self._binary("add", o)
    def __radd__(self, o): return self._binary("add", o, True)
    def __sub__(self, o): return self._binary("subtract", o)
    def __rsub__(self, o): return self._binary("subtract", o, True)
    def __mul__(self, o): return self._binary("multiply", o)
    def __rmul__(self, o): return self._binary("multiply", o, True)
    def __truediv__(self, o): return self._binary("true_divide", o)
    def __rtruediv__(self, o): return self._binary("true_divide", o, True)
    def __floordiv__(self, o): return self._binary("floor_divide", o)
    def __rfloordiv__(self, o): return self._binary("floor_divide", o, True)
    def __mod__(self, o): return self._binary("remainder", o)
    def __rmod__(self, o): return self._binary("remainder", o, True)
    def __pow__(self, o): return self._binary("power", o)
    def __rpow__(self, o): return self._binary("power", o, True)
    def __matmul__(self, o): return self._binary("matmul", o)
    def __rmatmul__(self, o): return self._binary("matmul", o, True)
    def __lt__(self, o): return self._binary("less", o)
    def __le__(self, o): return self._binary("less_equal", o)
    def __gt__(self, o): return self._binary("greater", o)
    def __ge__(self, o): return self._binary("greater_equal", o)
    def __eq__(self, o): return self._binary("equal", o)
    def __ne__(self, o): return self._binary("not_equal", o)
    def __and__(self, o): return self._binary("bitwise_and", o)
    def __rand__(self, o): return self._binary("bitwise_and", o, True)
    def __or__(self, o): return self._binary("bitwise_or", o)
    def __ror__(self, o): return self._binary("bitwise_or", o, True)
    def __xor__(self, o): return self._binary("bitwise_xor", o)
    def __rxor__(self, o): return self._binary("bitwise_xor", o, True)
    def __lshift__(self, o): return self._binary("left_shift", o)
    def __rlshift__(self, o): return self._binary("left_shift", o, True)
    def __rshift__(self, o): return self._binary("right_shift", o)
    def __rrshift__(self, o): return self._binary("right_shift", o, True)
    def __neg__(self): return self.builder.add("ufunc", [self], {"name": "negative"})
    def __pos__(self): return self
    def __abs__(self): return self.builder.add("ufunc", [self], {"name": "absolute"})
    def __invert__(self): return self.builder.add("ufunc", [self], {"name": "invert"})

    __hash__ = object.__hash__

    # -- methods -----------------------------------------------------------------------------
    def astype(self, dtype):
        kind = _kind(dtype)
        return self.builder.add("astype", [self], {"dtype": _KIND_DTYPE[kind].name})

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        new = np.empty(self.shape, dtype=np.uint8).reshape(shape).shape
        return self.builder.add("reshape", [self], {"shape": list(new)})

    def flatten(self):
        return self.reshape(-1)

    ravel = flatten

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
            axes = axes[0]
        if axes is None or axes == ():
            axes = tuple(range(self.ndim))[::-1]
        axes = [int(a) % max(1, self.ndim) for a in axes]
        if sorted(axes) != list(range(self.ndim)):
            raise TracingError(f"axes {axes} are not a permutation of {self.ndim} dimensions")
        return self.builder.add("transpose", [self], {"axes": axes})

    def swapaxes(self, a1, a2):
        axes = list(range(self.ndim))
        a1, a2 = a1 % self.ndim, a2 % self.ndim
        axes[a1], axes[a2] = axes[a2], axes[a1]
        return self.transpose(axes)

    def squeeze(self, axis=None):
        return np.squeeze(self, axis=axis)

    def sum(self, axis=None, keepdims=False):
        return _sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _mean(self, axis=axis, keepdims=keepdims)

    def dot(self, other):
        return _dot(self, other)

    def clip(self, a_min=None, a_max=None):
        return _clip(self, a_min, a_max)

    def round(self, decimals=0):
        return _round(self, decimals)

    def max(self, axis=None, keepdims=False):
        return _reduce_pairwise(self, "maximum", axis, keepdims)

    def min(self, axis=None, keepdims=False):
        return _reduce_pairwise(self, "minimum", axis, keepdims)

    def __getitem__(self, index):
        if isinstance(index, Tracer) or (isinstance(index, tuple)
                                         and any(isinstance(i, Tracer) for i in index)):
            _unsupported("indexing with a traced value", "use fheml.LookupTable for "
                         "data-dependent lookups")
        index = normalize_index(index, self.shape)
        return self.builder.add("getitem", [self], {"index": index})

    # -- numpy protocols ---------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if method == "reduce" and name in ("add", "maximum", "minimum") and len(inputs) == 1:
            axis = kwargs.pop("axis", 0)
            keepdims = kwargs.pop("keepdims", False)
            if kwargs.get("out") is not None:
                _unsupported(f"np.{name}.reduce with out=")
            if name == "add":
                return _sum(inputs[0], axis=axis, keepdims=keepdims)
            return _reduce_pairwise(inputs[0], name, axis, keepdims)
        if method != "__call__":
            _unsupported(f"np.{name}.{method}")
        if kwargs.get("out") is not None or kwargs.get("where", True) is not True:
            _unsupported(f"np.{name} with out= or where=")
        if ufunc.nout != 1:
            _unsupported(f"np.{name} (several outputs)")
        if name not in UFUNCS and name != "matmul":
            _unsupported(f"np.{name}")
        builder = next(i.builder for i in inputs if isinstance(i, Tracer))
        operands = [builder.wrap(i) for i in inputs]
        if name == "matmul":
            return _matmul(*operands)
        result = builder.add("ufunc", operands, {"name": name})
        dtype = kwargs.get("dtype")
        return result.astype(dtype) if dtype is not None else result

    def __array_function__(self, func, types, args, kwargs):
        handler = _FUNCTIONS.get(func)
        if handler is None:
            _unsupported(f"np.{func.__name__}")
        return handler(*args, **kwargs)


# ---------------------------------------------------------------- numpy functions ------

def _builder_of(*values):
    for v in values:
        if isinstance(v, Tracer):
            return v.builder
        if isinstance(v, (list, tuple)):
            for w in v:
                if isinstance(w, Tracer):
                    return w.builder
    raise TracingError("no traced value among the arguments")


def _sum(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    if out is not None or kw:
        _unsupported(f"np.sum with {', '.join(['out'] * (out is not None) + list(kw))}")
    b = _builder_of(a)
    a = b.wrap(a)
    if isinstance(axis, (list, np.ndarray)):
        axis = tuple(axis)
    if axis is not None:
        axis = [int(x) for x in ((axis,) if np.isscalar(axis) else axis)]
    result = b.add("sum", [a], {"axis": axis, "keepdims": bool(keepdims)})
    return result.astype(dtype) if dtype is not None else result


def _mean(a, axis=None, dtype=None, out=None, keepdims=False):
    a = _builder_of(a).wrap(a)
    total = _sum(a, axis=axis, keepdims=keepdims)
    count = a.size // max(1, total.size) if not keepdims else a.size // max(1, total.size)
    return total / count


def _dot(a, b, out=None):
    if out is not None:
        _unsupported("np.dot with out=")
    builder = _builder_of(a, b)
    a, b = builder.wrap(a), builder.wrap(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim > 2 or b.ndim > 2:
        _unsupported("np.dot of arrays with more than 2 dimensions", "use np.matmul")
    return _matmul(a, b)


def _matmul(a, b):
    """``a @ b``; of two encrypted values, as the sum of their elementwise products (each
    product then lowers to lookups, see lowering.py)."""
    if not (a.node.encrypted and b.node.encrypted):
        return a.builder.add("matmul", [a, b])
    if a.ndim == 0 or b.ndim == 0:
        _unsupported("matmul of a scalar", "use *")
    if b.ndim == 1:
        return (a * b).sum(axis=-1)
    if a.ndim == 1:
        return (a[:, None] * b).sum(axis=-2)
    return (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)


def _clip(a, a_min=None, a_max=None, out=None, **kw):
    if out is not None:
        _unsupported("np.clip with out=")
    a_min = kw.pop("min", a_min)
    a_max = kw.pop("max", a_max)
    b = _builder_of(a, a_min, a_max)
    operands = [b.wrap(a)]
    if a_min is not None:
        operands.append(b.wrap(a_min))
    if a_max is not None:
        operands.append(b.wrap(a_max))
    return b.add("clip", operands, {"has_min": a_min is not None, "has_max": a_max is not None})


def _round(a, decimals=0, out=None):
    if out is not None:
        _unsupported("np.round with out=")
    b = _builder_of(a)
    return b.add("round", [b.wrap(a)], {"decimals": int(decimals)})


def _reshape(a, shape=None, order="C", **kw):
    if shape is None:
        shape = kw.pop("newshape")
    if order != "C":
        _unsupported(f"reshape with order={order!r}")
    return _builder_of(a).wrap(a).reshape(shape)


def _transpose(a, axes=None):
    return _builder_of(a).wrap(a).transpose(axes)


def _ravel(a, order="C"):
    return _builder_of(a).wrap(a).reshape(-1)


def _squeeze(a, axis=None):
    a = _builder_of(a).wrap(a)
    shape = np.squeeze(np.empty(a.shape, dtype=np.uint8), axis=axis).shape
    return a.reshape(shape)


def _expand_dims(a, axis):
    a = _builder_of(a).wrap(a)
    return a.reshape(np.expand_dims(np.empty(a.shape, dtype=np.uint8), axis).shape)


def _broadcast_to(a, shape, subok=False):
    b = _builder_of(a)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    np.broadcast_shapes(b.wrap(a).shape, shape)
    return b.add("broadcast_to", [b.wrap(a)], {"shape": list(shape)})


def _concatenate(arrays, axis=0, out=None, **kw):
    if out is not None or kw:
        _unsupported("np.concatenate with out=/dtype=")
    b = _builder_of(arrays)
    operands = [b.wrap(a) for a in arrays]
    if axis is None:
        operands = [o.reshape(-1) for o in operands]
        axis = 0
    nd = operands[0].ndim
    return b.add("concatenate", operands, {"axis": int(axis) % max(1, nd)})


def _stack(arrays, axis=0, out=None, **kw):
    if out is not None or kw:
        _unsupported("np.stack with out=/dtype=")
    b = _builder_of(arrays)
    operands = [b.wrap(a) for a in arrays]
    nd = operands[0].ndim + 1
    return b.add("stack", operands, {"axis": int(axis) % nd})


def _hstack(arrays, **kw):
    b = _builder_of(arrays)
    operands = [b.wrap(a) for a in arrays]
    return _concatenate(operands, axis=0 if operands[0].ndim == 1 else 1)


def _vstack(arrays, **kw):
    b = _builder_of(arrays)
    operands = [b.wrap(a) for a in arrays]
    operands = [o.reshape(1, -1) if o.ndim == 1 else o for o in operands]
    return _concatenate(operands, axis=0)


def _where(condition, x=None, y=None):
    if x is None or y is None:
        _unsupported("np.where with one argument (data-dependent shape)")
    b = _builder_of(condition, x, y)
    return b.add("where", [b.wrap(condition), b.wrap(x), b.wrap(y)])


def _flip(m, axis=None):
    m = _builder_of(m).wrap(m)
    axes = range(m.ndim) if axis is None else ((axis,) if np.isscalar(axis) else axis)
    index = [slice(None)] * m.ndim
    for a in axes:
        index[a % m.ndim] = slice(None, None, -1)
    return m[tuple(index)]


def _reduce_pairwise(a, name, axis=None, keepdims=False, **kw):
    """max/min over axes as a tree of pairwise np.maximum / np.minimum."""
    if kw.get("out") is not None:
        _unsupported(f"np.{name} reduction with out=")
    a = _builder_of(a).wrap(a)
    if axis is None:
        axes = list(range(a.ndim))
    else:
        axes = [int(x) % a.ndim for x in ((axis,) if np.isscalar(axis) else axis)]
    fn = getattr(np, name)
    for ax in sorted(axes, reverse=True):
        while a.shape[ax] > 1:
            n = a.shape[ax]
            half = n // 2
            lo = [slice(None)] * a.ndim
            hi = [slice(None)] * a.ndim
            lo[ax] = slice(0, half)
            hi[ax] = slice(half, 2 * half)
            merged = fn(a[tuple(lo)], a[tuple(hi)])
            if n % 2:
                rest = [slice(None)] * a.ndim
                rest[ax] = slice(2 * half, n)
                merged = _concatenate([merged, a[tuple(rest)]], axis=ax)
            a = merged
        if not keepdims:
            a = a.reshape(a.shape[:ax] + a.shape[ax + 1:])
    return a


def _like(value):
    def make(a, dtype=None, **kw):
        shape = _builder_of(a).wrap(a).shape
        b = _builder_of(a)
        return b.const(np.full(shape, value, dtype=dtype or np.int64))
    return make


def _full_like(a, fill_value, dtype=None, **kw):
    b = _builder_of(a)
    return b.const(np.full(b.wrap(a).shape, fill_value, dtype=dtype))


_FUNCTIONS = {
    np.sum: _sum,
    np.mean: _mean,
    np.dot: _dot,
    np.clip: _clip,
    np.round: _round,
    np.around: _round,
    np.reshape: _reshape,
    np.transpose: _transpose,
    np.ravel: _ravel,
    np.squeeze: _squeeze,
    np.expand_dims: _expand_dims,
    np.broadcast_to: _broadcast_to,
    np.concatenate: _concatenate,
    np.stack: _stack,
    np.hstack: _hstack,
    np.vstack: _vstack,
    np.where: _where,
    np.flip: _flip,
    np.max: lambda a, axis=None, out=None, keepdims=False, **kw:
        _reduce_pairwise(a, "maximum", axis, keepdims, out=out),
    np.min: lambda a, axis=None, out=None, keepdims=False, **kw:
        _reduce_pairwise(a, "minimum", axis, keepdims, out=out),
    np.amax: lambda a, axis=None, out=None, keepdims=False, **kw:
        _reduce_pairwise(a, "maximum", axis, keepdims, out=out),
    np.amin: lambda a, axis=None, out=None, keepdims=False, **kw:
        _reduce_pairwise(a, "minimum", axis, keepdims, out=out),
    np.swapaxes: lambda a, axis1, axis2: _builder_of(a).wrap(a).swapaxes(axis1, axis2),
    np.shape: lambda a: a.shape,
    np.ndim: lambda a: a.ndim,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
    np.zeros_like: _like(0),
    np.ones_like: _like(1),
    np.full_like: _full_like,
    np.copy: lambda a, **kw: a,
}


# ------------------------------------------------------------ public helpers ----------

class LookupTable:
    """A table of integers indexed by an encrypted value: ``table[x]``.

    Negative indices count from the end, like numpy indexing.

    Parameters
    ----------
    table : array-like of int, 1-D

    Examples
    --------
    >>> import numpy as np, fheml
    >>> squares = fheml.LookupTable([0, 1, 4, 9])
    >>> squares[np.array([1, 3])]
    array([1, 9])
    """

    def __init__(self, table):
        table = np.asarray(table)
        if table.ndim != 1 or table.size == 0:
            raise ValueError("a LookupTable takes a non-empty 1-D array")
        if table.dtype == bool:
            table = table.astype(np.int64)
        if not np.issubdtype(table.dtype, np.integer):
            raise TypeError("LookupTable entries must be integers")
        self.table = table.astype(np.int64)

    def __len__(self):
        return self.table.shape[0]

    def __repr__(self):
        return f"LookupTable({self.table.tolist()})"

    def __getitem__(self, index):
        if isinstance(index, Tracer):
            return index.builder.add("lut", [index], {"table": self.table})
        return self.table[np.asarray(index)]


def univariate(fn):
    """Wrap an elementwise function of one integer array so that it compiles to a lookup.

    ``fn`` is evaluated on arrays of all possible input values to build the table, so it
    must be vectorised (elementwise) and deterministic.

    Parameters
    ----------
    fn : callable
        ``fn(x: ndarray) -> ndarray`` of the same shape.

    Returns
    -------
    callable
        Applies ``fn`` to numpy arrays, records a lookup on traced values.
    """
    def apply(x):
        if isinstance(x, Tracer):
            return x.builder.add("univariate", [x], {"fn": fn, "fn_name":
                                                      getattr(fn, "__name__", "fn")})
        return fn(x)

    apply.__name__ = getattr(fn, "__name__", "univariate")
    apply.__doc__ = fn.__doc__
    return apply


def round_bit_pattern(x, lsbs_to_remove):
    """Round integers to the nearest multiple of ``2**lsbs_to_remove`` (ties upward).

    Before a lookup this lets the engine read only the top bits of the value: the
    lookup's precision drops by ``lsbs_to_remove`` bits (each bit above 4 roughly halves
    the cost).

    Parameters
    ----------
    x : array-like of int or traced value
    lsbs_to_remove : int
        Number of low bits rounded away (>= 0).
    """
    if isinstance(lsbs_to_remove, bool) or not isinstance(lsbs_to_remove, (int, np.integer)) \
            or lsbs_to_remove < 0:
        raise ValueError(f"lsbs_to_remove must be a non-negative int, got {lsbs_to_remove!r}")
    if isinstance(x, Tracer):
        if x.node.kind == "float":
            raise TracingError("round_bit_pattern takes integers; convert with .astype(int)")
        if lsbs_to_remove == 0:
            return x
        return x.builder.add("round_bit_pattern", [x], {"lsbs": int(lsbs_to_remove)})
    from fheml.compiler.graph import round_bits
    return round_bits(np.asarray(x), int(lsbs_to_remove))


# ------------------------------------------------------------------- tracing ----------

def trace(fn, arg_names, encrypted, sample_args):
    """Trace ``fn`` on tracers shaped like ``sample_args``.

    Parameters
    ----------
    fn : callable
    arg_names : list of str
    encrypted : list of bool
    sample_args : list of numpy.ndarray
        One sample per argument (shapes and dtypes of the inputs).

    Returns
    -------
    Graph
    """
    builder = _Builder()
    tracers = []
    for i, (name, enc, arg) in enumerate(zip(arg_names, encrypted, sample_args)):
        t = builder.add("input", [], {"name": name, "index": i},
                        value=np.zeros((1,) + arg.shape, dtype=arg.dtype),
                        encrypted=enc, clear_input=not enc)
        tracers.append(t)
        builder.graph.input_ids.append(t.node.id)
    builder.graph.arg_names = list(arg_names)
    result = fn(*tracers)
    outputs = result if isinstance(result, tuple) else (result,)
    for out in outputs:
        if not isinstance(out, Tracer):
            raise TracingError(f"the function returned a {type(out).__name__}, not a value "
                               "computed from its inputs")
        builder.graph.output_ids.append(out.node.id)
    builder.graph.multiple_outputs = isinstance(result, tuple)
    return builder.graph
