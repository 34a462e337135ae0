"""Fuzz harness of everything a peer can send (issue 7's acceptance).

Valid objects of every serialized kind are mutated (bytes, header JSON, header text, array
data, lengths; every mutation resealed with a valid digest so that it reaches the parser)
and loaded the way the receiving side loads them.  Every case must either load or raise
the documented :class:`~fheml._core.SerializationError` -- no other exception, no crash --
and its traced peak memory must stay within a bound proportional to its honest size
(``8 * (dimension + 1)`` bytes per byte received: the expansion of seeded masks).

The default run draws a fixed-seed sample of a few hundred cases; the slow run thousands.
"""

import hashlib
import json
import struct
import tracemalloc

import numpy as np
import pytest

import fheml
from fheml._core import LweCiphertext, SecretKeys, SerializationError
from fheml._core.glwe import GlweCiphertext
from fheml._core.serialization import MAGIC, _PREFIX
from fheml.compiler import Client, Server
from tests.compiler.conftest import use_cached_keys

_SLACK = 32 << 20


def program(x, w):
    return np.maximum((x @ (w * 2) + 3) // 4, x[:2]) - 1


@pytest.fixture(scope="module")
def targets():
    """(name, valid bytes, loader, key dimension) of every kind a peer can send."""
    rng = np.random.default_rng(5)
    lookup = use_cached_keys(fheml.compile(
        program, [(rng.integers(0, 4, 4), rng.integers(0, 2, (4, 2))) for _ in range(50)],
        parameters={"x": "encrypted", "w": "clear"}))
    flat = use_cached_keys(fheml.compile(lambda x: x * 3 + 1,
                                         [np.arange(4) + i for i in range(4)]))
    out = []
    for c in (lookup, flat):
        server = Server.from_bytes(c.server.spec.to_bytes())
        keys = c.client.evaluation_keys
        client = Client.from_bytes(c.client.spec.to_bytes())
        client.secret_keys, client.evaluation_keys = c.client.secret_keys, keys
        sample = (np.array([1, 2, 3, 0]), np.array([[1, 0], [0, 1], [1, 1], [0, 0]])) \
            if c is lookup else (np.arange(4),)
        args = c.client.encrypt(*sample, packing=False)
        dim = c.parameters.big_lwe_dimension
        run = (lambda s, k: lambda b: s.run(b, k))(server, keys)
        out += [
            ("server-spec", c.server.spec.to_bytes(), Server.from_bytes, dim),
            ("client-spec", c.client.spec.to_bytes(), Client.from_bytes, dim),
            ("circuit-args", args.to_bytes(), run, dim),
            ("circuit-result", server.run(args, keys).to_bytes(), client.decrypt, dim),
            ("ciphertext", args.values[0].to_bytes(),
             (lambda d, k: lambda b: LweCiphertext.from_bytes(
                 b, expected_dimension=d, expected_key_id=k))(dim, keys.key_id), dim),
            ("secret-keys", c.client.secret_keys.to_bytes(), SecretKeys.from_bytes, dim),
        ]
        if c is lookup:
            out.append(("evaluation-keys", keys.to_bytes(), server.load_keys, dim))
        else:  # the packed GLWE path: arguments, result, ciphertext
            packed = c.client.encrypt(np.arange(12).reshape(3, 4) % 4, packing=True)
            out += [
                ("circuit-args", packed.to_bytes(), run, dim),
                ("circuit-result", server.run(packed, keys).to_bytes(), client.decrypt, dim),
                ("glwe-ciphertext", packed.values[0].to_bytes(), GlweCiphertext.from_bytes,
                 dim),
            ]
    return out


# -- mutations -------------------------------------------------------------------------------
_VALUES = [None, True, False, -1, 0, 1, 3, 2**31, 2**63, 2**64 + 7, 10**30, 1.5, -0.0, 1e308,
           "", "x", "<u8", "|u1", "O", [], [1], [[1]], [2**63], {}, {"__array__": 0},
           {"__array__": 10**6}, {"__index__": [{"t": "slice", "v": [0, 0, 0]}]},
           {"t": "int", "v": 1}, ["<u8"], [[[[[[[[[[[[1]]]]]]]]]]]]]
_TEXT = ["Infinity", "-Infinity", "NaN", "1e400", "-1", "9" * 5000, "[" * 50000 + "]" * 50000,
         "null", '"x"', "{}", "[]", "18446744073709551617", "4294967296"]


def _split(blob):
    _, _, _, hlen = _PREFIX.unpack_from(blob)
    start = _PREFIX.size
    return blob[:start], blob[start:start + hlen], blob[start + hlen:-32]


def _seal(prefix, header, body):
    prefix = prefix[:_PREFIX.size - 8] + struct.pack("<Q", len(header))
    data = prefix + header + body
    return data + hashlib.sha256(data).digest()


def _paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield from _paths(v, path + (i,))


def _mutate_json(rng, header):
    doc = json.loads(header)
    paths = [p for p in _paths(doc) if p]
    path = paths[rng.integers(len(paths))]
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    action = rng.integers(4)
    if action == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == 1 and isinstance(parent, dict):
        parent["unexpected_" + str(rng.integers(9))] = _VALUES[rng.integers(len(_VALUES))]
    else:
        parent[path[-1]] = _VALUES[rng.integers(len(_VALUES))]
    return json.dumps(doc).encode()


def _mutate_text(rng, header):
    text = header.decode()
    spots = [i for i, ch in enumerate(text) if ch.isdigit() and not text[i - 1].isdigit()]
    if not spots:
        return header
    i = spots[rng.integers(len(spots))]
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    return (text[:i] + _TEXT[rng.integers(len(_TEXT))] + text[j:]).encode()


def mutate(rng, blob):
    prefix, header, body = _split(blob)
    kind = rng.integers(8)
    if kind == 0:                                      # raw flips, digest left stale
        b = bytearray(blob)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] ^= 1 << rng.integers(8)
        return bytes(b)
    if kind == 1:                                      # prefix fields (resealed)
        b = bytearray(prefix)
        b[rng.integers(len(MAGIC) + 18)] ^= 1 << rng.integers(8)
        data = bytes(b) + header + body
        return data + hashlib.sha256(data).digest()
    if kind in (2, 3):
        return _seal(prefix, _mutate_json(rng, header), body)
    if kind == 4:
        return _seal(prefix, _mutate_text(rng, header), body)
    if kind == 5 and body:                             # array data
        b = bytearray(body)
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(len(b))] = int(rng.integers(256))
        return _seal(prefix, header, bytes(b))
    if kind == 6:                                      # truncate or extend the arrays
        cut = int(rng.integers(-16, 17)) * 8 or 1
        body = body[:cut] if cut < 0 else body + bytes(cut)
        return _seal(prefix, header, body)
    return _seal(prefix, header[: int(rng.integers(len(header)))], body)


def _check(name, data, load, dim):
    """Load one input; return the SerializationError message, or None if it loaded."""
    tracemalloc.start()
    try:
        load(data)
        outcome = None
    except SerializationError as exc:
        outcome = str(exc)
    except Exception as exc:  # noqa: BLE001 -- the point of the harness
        raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    bound = _SLACK + 8 * (dim + 1) * len(data)
    assert peak <= bound, f"{name}: {peak} bytes traced for a {len(data)}-byte input"
    return outcome


def _fuzz(targets, cases, seed):
    """Run ``cases`` mutations; return (loaded, refused by the digest, refused otherwise)."""
    rng = np.random.default_rng(seed)
    loaded = digest = other = 0
    for i in range(cases):
        name, blob, load, dim = targets[i % len(targets)]
        if name in ("evaluation-keys", "secret-keys") and i % 5:
            continue   # the largest blobs: fewer cases (loading a valid one costs ~1 s)
        outcome = _check(name, mutate(rng, blob), load, dim)
        if outcome is None:
            loaded += 1
        elif "checksum" in outcome:
            digest += 1
        else:
            other += 1
    return loaded, digest, other


def test_valid_objects_load(targets):
    for name, blob, load, dim in targets:
        assert _check(name, blob, load, dim) is None, name


def test_fuzz_sample(targets):
    loaded, digest, other = _fuzz(targets, 400, seed=2024)
    # most cases reach the parsers (resealed), a few are harmless and load
    assert other > 5 * digest and loaded > 0


@pytest.mark.slow
def test_fuzz_thousands(targets):
    loaded, digest, other = _fuzz(targets, 6000, seed=7)
    assert other > 5 * digest and loaded > 0

