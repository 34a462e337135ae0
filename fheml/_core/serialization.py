"""Versioned, validated byte format for everything that crosses the client/server boundary.

Layout::

    b"FHEML\\0"  format version (u16 LE)  kind (16 bytes, ASCII, NUL padded)
    header length (u64 LE)  header (UTF-8 JSON)
    for each array: raw little-endian bytes, in the order and with the dtype/shape the
    header lists under "arrays"
    SHA-256 of everything above (32 bytes)

No pickle: loading parses JSON (bounded: no NaN/Infinity, integers of at most
``_MAX_INT_DIGITS`` digits, nesting caught) and reads fixed-size arrays whose sizes come
from the header and are checked against the data length before anything is allocated.

The digest catches truncation and accidental corruption.  It is an integrity check, **not
authentication**: anyone can recompute it, so it says nothing about who made the bytes.  A
deployment that must know who sent a request (or that a server spec was not replaced) adds
authentication around these bytes: TLS with client certificates, or an HMAC / signature over
the bytes with a key the peers share out of band.

Everything a peer can send is validated into one exception type, :class:`SerializationError`
(a ``ValueError``).  Two subclasses say more: :class:`MismatchError`, well-formed data that
does not fit the receiver (other parameters, other keys, not the circuit's arguments), and
:class:`LimitExceededError`, a well-formed request larger than a configured limit.  A
server maps them to HTTP 422 and 413, any other SerializationError to 400.
"""

import contextlib
import hashlib
import json
import struct

import numpy as np

MAGIC = b"FHEML\0"
FORMAT_VERSION = 1
_KIND_BYTES = 16
_ALLOWED_DTYPES = {"<u8", "<i8", "<f8", "|u1", "<u4", "<i4"}
_PREFIX = struct.Struct("<6sH16sQ")
_DIGEST_BYTES = 32
# Integers in headers are dimensions, counts and small table entries; 64-bit values have at
# most 20 digits.
_MAX_INT_DIGITS = 24
# No array axis can be longer than this (2^40 elements is far beyond any honest request).
_MAX_AXIS = 1 << 40
_MAX_NDIM = 32


class SerializationError(ValueError):
    """Bytes (or objects decoded from bytes) that are not a valid fheml object of the expected
    kind and version, or that do not match what the receiver expects.

    The one exception type for everything a peer can send: malformed, corrupted or
    truncated bytes, invalid parameters or keys, and requests that do not fit the circuit.
    """


class MismatchError(SerializationError):
    """Well-formed data that does not fit what the receiver expects: made for other
    parameters, encrypted under other keys, or not the arguments the circuit takes (count,
    kind, shape, ciphertext dimension, clear values outside the compiled range)."""


class LimitExceededError(SerializationError):
    """A well-formed request larger than a configured limit.

    Attributes
    ----------
    limit : str
        Name of the limit (for instance ``"max_request_bytes"``).
    value : int
        What the request needs.
    maximum : int
        The configured limit.
    """

    def __init__(self, limit, value, maximum, what=""):
        self.limit = limit
        self.value = int(value)
        self.maximum = int(maximum)
        detail = f" ({what})" if what else ""
        super().__init__(f"request exceeds {limit}: needs {self.value}, the limit is "
                         f"{self.maximum}{detail}")


@contextlib.contextmanager
def peer_data(kind):
    """Turn any error raised while decoding peer data into :class:`SerializationError`.

    Decoders validate explicitly; this is the net under them, so that no malformed input
    escapes as a ``KeyError``, ``OverflowError``, ``RecursionError``... ``MemoryError`` is
    not caught: the limits are there to prevent it.
    """
    try:
        yield
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            RecursionError, UnicodeError) as exc:
        raise SerializationError(f"{kind}: {type(exc).__name__}: {exc}") from None


def check_int(value, name, lo=None, hi=None):
    """A JSON integer (not a bool or float) in ``[lo, hi]``, else SerializationError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SerializationError(f"{name} must be an integer, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SerializationError(f"{name}={value} is outside [{lo}, {hi}]")
    return value


def pack(kind, header, arrays=()):
    """Serialize a JSON-able ``header`` and a sequence of numpy arrays."""
    kind_b = kind.encode("ascii")
    if len(kind_b) > _KIND_BYTES:
        raise ValueError(f"kind {kind!r} is too long")
    specs, blobs = [], []
    for a in arrays:
        a = np.asarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in ("|", "<") else a.dtype
        a = np.ascontiguousarray(a, dtype=dt)
        if a.dtype.str not in _ALLOWED_DTYPES:
            raise TypeError(f"dtype {a.dtype} cannot be serialized")
        specs.append({"dtype": a.dtype.str, "shape": list(a.shape)})
        blobs.append(a.tobytes())
    full_header = dict(header)
    full_header["arrays"] = specs
    hbytes = json.dumps(full_header, sort_keys=True, separators=(",", ":"),
                        allow_nan=False).encode("utf-8")
    body = b"".join(
        [_PREFIX.pack(MAGIC, FORMAT_VERSION, kind_b.ljust(_KIND_BYTES, b"\0"), len(hbytes)), hbytes]
        + blobs
    )
    return body + hashlib.sha256(body).digest()


def _parse_int(text):
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise SerializationError(f"integer of {len(text)} digits in the header")
    return int(text)


def _refuse_constant(name):
    raise SerializationError(f"{name} is not allowed in the header")


def _parse_header(raw, kind):
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_parse_int,
                          parse_constant=_refuse_constant)
    except SerializationError as exc:
        raise SerializationError(f"{kind}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{kind}: header is not valid JSON ({type(exc).__name__})") \
            from None


def _array_spec(spec, kind):
    """(dtype, shape, element count) of one header array description."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
        raise SerializationError(f"{kind}: bad array description")
    dtype, shape = spec["dtype"], spec["shape"]
    if not isinstance(dtype, str) or dtype not in _ALLOWED_DTYPES:
        raise SerializationError(f"{kind}: array dtype must be one of "
                                 f"{sorted(_ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
        raise SerializationError(f"{kind}: array shape must be a list of at most {_MAX_NDIM} "
                                 "integers")
    count = 1
    for s in shape:
        check_int(s, f"{kind}: array axis", 0, _MAX_AXIS)
        count *= s  # Python integers: no wrap-around
    return np.dtype(dtype), tuple(shape), count


def unpack(data, kind):
    """Inverse of :func:`pack`; checks magic, version, kind, lengths and digest.

    Memory: the arrays are copied once out of ``data`` (no other copy of the input).

    Returns
    -------
    header : dict
    arrays : list of numpy.ndarray (owned, native byte order)

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like (a programming error, not peer data).
    SerializationError
        For anything else wrong with the bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if len(view) < _PREFIX.size + _DIGEST_BYTES:
        raise SerializationError(f"{kind}: {len(view)} bytes is too short to be an fheml object")
    magic, version, kind_b, hlen = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise SerializationError(f"{kind}: not fheml data (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise SerializationError(
            f"{kind}: format version {version} is not supported (this fheml reads {FORMAT_VERSION})"
        )
    got_kind = kind_b.rstrip(b"\0").decode("ascii", "replace")
    if got_kind != kind:
        raise SerializationError(f"expected a serialized {kind}, got a {got_kind}")
    body, digest = view[:-_DIGEST_BYTES], bytes(view[-_DIGEST_BYTES:])
    if hashlib.sha256(body).digest() != digest:
        raise SerializationError(f"{kind}: data is corrupted or truncated (checksum mismatch)")
    start = _PREFIX.size
    if hlen > len(body) - start:
        raise SerializationError(f"{kind}: header length exceeds the data")
    header = _parse_header(bytes(body[start:start + hlen]), kind)
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise SerializationError(f"{kind}: header has no array list")
    specs = [_array_spec(spec, kind) for spec in header.pop("arrays")]
    pos = start + hlen
    if sum(count * dtype.itemsize for dtype, _, count in specs) != len(body) - pos:
        raise SerializationError(f"{kind}: the arrays the header lists do not match the data "
                                 "length")
    arrays = []
    for dtype, shape, count in specs:
        a = np.frombuffer(body, dtype=dtype, count=count, offset=pos)
        arrays.append(a.reshape(shape).astype(dtype.newbyteorder("="), copy=True))
        pos += count * dtype.itemsize
    return header, arrays
