"""Versioned, validated byte format for everything that crosses the client/server boundary.

Layout::

    b"FHEML\\0"  format version (u16 LE)  kind (16 bytes, ASCII, NUL padded)
    header length (u64 LE)  header (UTF-8 JSON)
    for each array: raw little-endian bytes, in the order and with the dtype/shape the
    header lists under "arrays"
    SHA-256 of everything above (32 bytes)

No pickle: loading parses JSON and reads fixed-size arrays whose sizes come from the header
and are checked against the data length before anything is allocated.  The digest catches
truncation and corruption (it is an integrity check, not authentication).
"""

import hashlib
import json
import struct

import numpy as np

MAGIC = b"FHEML\0"
FORMAT_VERSION = 1
_KIND_BYTES = 16
_ALLOWED_DTYPES = {"<u8", "<i8", "<f8", "|u1", "<u4", "<i4"}
_PREFIX = struct.Struct("<6sH16sQ")


class SerializationError(ValueError):
    """Bytes that are not a valid fheml object of the expected kind and version."""


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
    hbytes = json.dumps(full_header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    body = b"".join(
        [_PREFIX.pack(MAGIC, FORMAT_VERSION, kind_b.ljust(_KIND_BYTES, b"\0"), len(hbytes)), hbytes]
        + blobs
    )
    return body + hashlib.sha256(body).digest()


def unpack(data, kind):
    """Inverse of :func:`pack`; checks magic, version, kind, lengths and digest.

    Returns
    -------
    header : dict
    arrays : list of numpy.ndarray (read-only views of ``data`` are copied into owned arrays)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size + 32:
        raise SerializationError(f"{kind}: {len(data)} bytes is too short to be an fheml object")
    magic, version, kind_b, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SerializationError(f"{kind}: not fheml data (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise SerializationError(
            f"{kind}: format version {version} is not supported (this fheml reads {FORMAT_VERSION})"
        )
    got_kind = kind_b.rstrip(b"\0").decode("ascii", "replace")
    if got_kind != kind:
        raise SerializationError(f"expected a serialized {kind}, got a {got_kind}")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise SerializationError(f"{kind}: data is corrupted or truncated (checksum mismatch)")
    start = _PREFIX.size
    if start + hlen > len(body):
        raise SerializationError(f"{kind}: header length exceeds the data")
    try:
        header = json.loads(body[start : start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"{kind}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise SerializationError(f"{kind}: header has no array list")
    pos = start + hlen
    arrays = []
    for spec in header.pop("arrays"):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise SerializationError(f"{kind}: bad array description {spec!r}") from None
        if spec["dtype"] not in _ALLOWED_DTYPES or any(s < 0 for s in shape):
            raise SerializationError(f"{kind}: bad array description {spec!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + nbytes > len(body):
            raise SerializationError(f"{kind}: data ends inside an array")
        arrays.append(np.frombuffer(body, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos)
                      .reshape(shape).astype(dtype.newbyteorder("="), copy=True))
        pos += nbytes
    if pos != len(body):
        raise SerializationError(f"{kind}: {len(body) - pos} unexpected trailing bytes")
    return header, arrays
