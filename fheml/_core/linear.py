"""Linear operations on batches of LWE ciphertexts (all arithmetic wraps modulo 2^64).

Adding ciphertexts adds their messages and noise variances; multiplying by a clear integer
w multiplies the variance by w^2.  A dot product with clear integer weights therefore grows
the noise by the squared 2-norm of the weights: that is the ``norm2`` parameter selection
must be given for the lookup that follows.
"""

import numpy as np

from fheml._core.keys import LweCiphertext, encode

__all__ = ["add", "add_plain", "dot", "matmul", "multiply", "negate", "subtract", "sum"]


def _same_keys(*cts):
    for ct in cts:
        if not isinstance(ct, LweCiphertext):
            raise TypeError(f"expected LweCiphertext, got {type(ct).__name__}")
    key_id, dim = cts[0].key_id, cts[0].dimension
    for ct in cts[1:]:
        if ct.key_id != key_id:
            raise ValueError("ciphertexts are encrypted under different keys")
        if ct.dimension != dim:
            raise ValueError(f"ciphertext dimensions differ ({ct.dimension} != {dim})")
    return key_id


def _as_int_array(values, name):
    v = np.asarray(values)
    if v.dtype == bool:
        v = v.astype(np.int64)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"{name} must be integers (clear weights are quantized first)")
    return v.astype(np.int64)


def add(a, b):
    """Encryption of a + b (batch shapes broadcast)."""
    key_id = _same_keys(a, b)
    return LweCiphertext(a.data + b.data, key_id)


def subtract(a, b):
    """Encryption of a - b."""
    key_id = _same_keys(a, b)
    return LweCiphertext(a.data - b.data, key_id)


def negate(a):
    """Encryption of -a."""
    _same_keys(a)
    return LweCiphertext(np.uint64(0) - a.data, a.key_id)


def add_plain(a, values, precision):
    """Encryption of a + values (clear integers encoded at ``precision`` bits)."""
    _same_keys(a)
    plain = encode(_as_int_array(values, "values"), precision)
    data = a.data.copy() if plain.ndim == 0 else np.array(
        np.broadcast_to(a.data, np.broadcast_shapes(a.data.shape, plain.shape + (1,))))
    data[..., -1] += plain
    return LweCiphertext(data, a.key_id)


def multiply(a, weights):
    """Encryption of a * weights (clear integers, broadcast over the batch shape)."""
    _same_keys(a)
    w = _as_int_array(weights, "weights").astype(np.uint64)
    return LweCiphertext(a.data * w[..., None], a.key_id)


def sum(a, axis=None):
    """Encryption of the sum over ``axis`` of the batch (None: all)."""
    _same_keys(a)
    if axis is None:
        return LweCiphertext(a.data.reshape(-1, a.dimension + 1).sum(axis=0, dtype=np.uint64),
                             a.key_id)
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    nd = len(a.shape)
    axes = tuple(ax % nd if -nd <= ax < nd else _bad_axis(ax, nd) for ax in axes)
    return LweCiphertext(a.data.sum(axis=axes, dtype=np.uint64), a.key_id)


def _bad_axis(axis, nd):
    raise ValueError(f"axis {axis} is out of bounds for a batch of {nd} dimensions")


def matmul(a, weights):
    """Encryption of a @ weights: a of batch shape (..., F), clear weights (F,) or (F, O)."""
    _same_keys(a)
    w = _as_int_array(weights, "weights")
    if len(a.shape) < 1 or w.ndim not in (1, 2) or a.shape[-1] != w.shape[0]:
        raise ValueError(f"cannot multiply a batch of shape {a.shape} by weights {w.shape}")
    w2 = w.reshape(w.shape[0], -1).astype(np.uint64)
    # (..., F, d+1) x (F, O) -> (..., O, d+1); integer matmul in numpy wraps modulo 2^64.
    data = np.swapaxes(a.data, -1, -2) @ w2
    data = np.swapaxes(data, -1, -2)
    if w.ndim == 1:
        data = data[..., 0, :]
    return LweCiphertext(np.ascontiguousarray(data), a.key_id)


dot = matmul
