"""The server's trust boundary (issue 7): specs are validated on load and carry no source,
requests are checked against the circuit and the limits before any work or memory."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fheml
from fheml._core import LimitExceededError, MismatchError, SerializationError
from fheml._core.serialization import pack, unpack
from fheml.compiler import EncryptedArgs, Server, ServerLimits, ServerSpec
from tests.compiler.conftest import use_cached_keys

REPO = pathlib.Path(__file__).resolve().parents[2]


def program(x, w):
    scaled = np.abs(w * 2 - 1)                       # clear nodes: ufuncs on a runtime arg
    hidden = (x @ scaled + 3) // 4                   # lookup
    return np.maximum(hidden, x[:2]) - 1


@pytest.fixture(scope="module")
def circuit():
    rng = np.random.default_rng(3)
    inputset = [(rng.integers(0, 4, size=4), rng.integers(0, 2, size=(4, 2)))
                for _ in range(100)]
    c = fheml.compile(program, inputset, parameters={"x": "encrypted", "w": "clear"})
    return use_cached_keys(c)


@pytest.fixture(scope="module")
def flat():
    """A circuit without lookups (no evaluation keys: cheap to fuzz)."""
    c = fheml.compile(lambda x: x * 3 + 1, [np.arange(4) + i for i in range(4)])
    return use_cached_keys(c)


def _spec_parts(circuit):
    return unpack(circuit.server.spec.to_bytes(), "server-spec")


def _repack(header, arrays):
    return pack("server-spec", header, arrays)


def _nodes(header, op, name=None):
    return [n for n in header["program"]["nodes"]
            if n["op"] == op and (name is None or n["attrs"].get("name") == name)]


# -- server spec ----------------------------------------------------------------------------
def test_spec_round_trips_and_is_validated(circuit):
    header, arrays = _spec_parts(circuit)
    server = Server.from_bytes(_repack(header, arrays))
    x, w = np.array([[1, 2, 3, 0]]), np.array([[[1, 0], [0, 1], [1, 1], [0, 0]]])
    from fheml.compiler.program import ClearBackend, run_clear
    np.testing.assert_array_equal(run_clear(server.spec.program, [x, w], ClearBackend())[0],
                                  circuit.run(x, w))


@pytest.mark.parametrize("name", ["info", "ones", "frompyfunc", "__import__", "load", "add.at"])
def test_spec_ufunc_names_are_whitelisted_at_load(circuit, name):
    header, arrays = _spec_parts(circuit)
    _nodes(header, "ufunc", "absolute")[0]["attrs"]["name"] = name
    with pytest.raises(SerializationError, match="not an allowed function|unknown|attribute"):
        Server.from_bytes(_repack(header, arrays))


def test_tracing_refuses_functions_outside_the_whitelist():
    with pytest.raises(fheml.compiler.TracingError):
        fheml.compile(lambda x: np.frexp(x)[0], [np.arange(4)])


def _mutations():
    """(description, function mutating a decoded spec header) -- each must be refused."""
    def node(op, name=None):
        return lambda h: _nodes(h, op, name)[0]

    def setattr_(op, key, value, name=None):
        return lambda h: node(op, name)(h)["attrs"].__setitem__(key, value)

    return [
        ("unknown op", lambda h: node("ufunc", "absolute")(h).__setitem__("op", "eval")),
        ("missing attr", lambda h: node("tlu")(h)["attrs"].pop("pin")),
        ("extra attr", setattr_("tlu", "fn", "print")),
        ("axis type", setattr_("enc_matmul", "enc_left", "yes")),
        ("table index range", lambda h: node("tlu")(h)["attrs"].__setitem__("pin", 0)),
        ("forward input", lambda h: node("enc_matmul")(h).__setitem__("inputs", [999, 0])),
        ("wrong kind", lambda h: node("enc_matmul")(h).__setitem__("encrypted", False)),
        ("shape lie", lambda h: node("enc_matmul")(h).__setitem__("shape", [2 ** 30])),
        ("shape lie small", lambda h: node("enc_matmul")(h).__setitem__("shape", [3])),
        ("shape float", lambda h: node("enc_matmul")(h).__setitem__("shape", [2.0])),
        ("nested shape", lambda h: node("enc_matmul")(h).__setitem__("shape", [[2]])),
        ("const list", lambda h: _nodes(h, "const")[0]["attrs"].__setitem__("value", [[1]])),
        ("input nodes", lambda h: h["program"].__setitem__("input_nodes", [0])),
        ("outputs clear", lambda h: h["program"].__setitem__("output_nodes", [0])),
        ("precision", lambda h: h["program"].__setitem__("precision", 10 ** 30)),
        ("io shape", lambda h: h["inputs"][0].__setitem__("shape", [5])),
        ("io lo", lambda h: h["inputs"][0].__setitem__("lo", "0")),
        ("io item", lambda h: h["inputs"].__setitem__(0, [1])),
        ("multiple", lambda h: h.__setitem__("multiple_outputs", "no")),
        ("params", lambda h: h["params"].__setitem__("pbs_base_log", 40)),
        ("lookup wider than params", setattr_("tlu", "pin", 8)),
        ("precision beyond noise", lambda h: h["program"].__setitem__("precision", 40)),
        ("array ref", lambda h: node("tlu")(h)["attrs"].__setitem__("tables", {"__array__": 99})),
        ("nodes type", lambda h: h["program"].__setitem__("nodes", {"0": 1})),
    ]


@pytest.mark.parametrize("what, mutate", _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_specs_fail_at_load_not_at_run(circuit, what, mutate):
    header, arrays = _spec_parts(circuit)
    mutate(header)
    with pytest.raises(SerializationError):
        Server.from_bytes(_repack(header, arrays))


def test_spec_keeps_the_users_source_out_unless_asked(circuit):
    line = b"hidden = (x @ scaled + 3) // 4"
    assert line not in circuit.server.spec.to_bytes()
    assert __file__.encode() not in circuit.server.spec.to_bytes()
    with_source = circuit.server.spec.to_bytes(include_source=True)
    assert line in with_source
    assert ServerSpec.from_bytes(with_source).program.lookups[0].where


# -- requests ---------------------------------------------------------------------------------
def _args_parts(circuit, *args):
    return unpack(circuit.client.encrypt(*args).to_bytes(), "circuit-args")


def test_request_checked_against_the_circuit(circuit):
    ek = circuit.client.evaluation_keys
    server = Server.from_bytes(circuit.server.spec.to_bytes())
    x, w = np.array([1, 2, 3, 0]), np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    good = circuit.client.encrypt(x, w).to_bytes()
    np.testing.assert_array_equal(circuit.client.decrypt(server.run(good, ek)), circuit.run(x, w))
    cases = {
        "dimension": lambda h, a: h["items"][0].__setitem__("dimension", 2 ** 24),
        "key id": lambda h, a: h["items"][0].__setitem__("key_id", "someone else"),
        "count": lambda h, a: (h["items"].pop(), a.pop()),
        "kind": lambda h, a: h["items"][1].__setitem__("encrypted", True),
        "shape": lambda h, a: a.__setitem__(0, a[0][:, :3]),
        "rows": lambda h, a: a.__setitem__(1, np.concatenate([a[1], a[1]])),
        "clear dtype": lambda h, a: a.__setitem__(1, a[1].astype(np.uint32)),
        "batched": lambda h, a: h.__setitem__("batched", 1),
        "unbatched rows": lambda h, a: (a.__setitem__(0, np.concatenate([a[0], a[0]])),
                                        a.__setitem__(1, np.concatenate([a[1], a[1]]))),
        "clear range": lambda h, a: a.__setitem__(1, a[1] + 7),
        "clear floats": lambda h, a: a.__setitem__(1, a[1] + 0.5),
    }
    malformed = {"clear dtype", "batched"}      # the others are well formed but do not fit
    for what, mutate in cases.items():
        header, arrays = _args_parts(circuit, x, w)
        mutate(header, arrays)
        with pytest.raises(SerializationError) as info:
            server.run(pack("circuit-args", header, arrays), ek)
        assert isinstance(info.value, MismatchError) == (what not in malformed), what


def test_server_limits_name_the_limit(circuit):
    ek = circuit.client.evaluation_keys
    x = np.tile(np.array([1, 2, 3, 0]), (5, 1))
    w = np.tile(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]), (5, 1, 1))
    request = circuit.client.encrypt(x, w).to_bytes()
    dim = circuit.parameters.big_lwe_dimension
    spec_bytes = circuit.server.spec.to_bytes()
    for limits, name in [(ServerLimits(max_request_bytes=len(request) - 1), "max_request_bytes"),
                         (ServerLimits(max_batch_rows=4), "max_batch_rows"),
                         (ServerLimits(max_expanded_bytes=5 * 4 * (dim + 1) * 8 - 1),
                          "max_expanded_bytes")]:
        server = Server.from_bytes(spec_bytes, limits)
        with pytest.raises(LimitExceededError, match=name) as info:
            server.run(request, ek)
        assert info.value.limit == name
        assert isinstance(info.value, SerializationError)
    exact = ServerLimits(max_request_bytes=len(request), max_batch_rows=5,
                         max_expanded_bytes=5 * 4 * (dim + 1) * 8)
    out = Server.from_bytes(spec_bytes, exact).run(request, ek)
    np.testing.assert_array_equal(circuit.client.decrypt(out), circuit.run(x, w))
    # in-memory arguments: the row limit applies too
    with pytest.raises(LimitExceededError, match="max_batch_rows"):
        Server.from_bytes(spec_bytes, ServerLimits(max_batch_rows=4)).run(
            circuit.client.encrypt(x, w), ek)
    for bad in (dict(max_batch_rows=-1), dict(max_request_bytes=1.5),
                dict(max_expanded_bytes=True)):
        with pytest.raises(ValueError):
            ServerLimits(**bad)


def test_oversized_evaluation_keys_refused_before_parsing(circuit):
    server = Server.from_bytes(circuit.server.spec.to_bytes())
    blob = circuit.client.evaluation_keys.to_bytes()
    assert server.load_keys(blob).key_id == circuit.client.evaluation_keys.key_id
    with pytest.raises(LimitExceededError, match="evaluation_key_bytes"):
        server.load_keys(blob + bytes(1 << 17))


_MEASURE = r"""
import pathlib, sys, tracemalloc
import numpy as np
from fheml._core import LweCiphertext, SerializationError
from fheml._core.serialization import pack
from fheml.compiler import Server

def peak_rss():
    # VmHWM: this process's peak resident memory (unlike ru_maxrss, not inherited from the
    # parent across fork/exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

d = pathlib.Path(sys.argv[1])
server = Server.from_bytes((d / "server.spec").read_bytes())
keys = server.load_keys((d / "evaluation.keys").read_bytes())
if sys.argv[2] == "lie":
    request = (d / "lie.bin").read_bytes()
    call = lambda: server.run(request, keys)
else:  # control: an honest expansion of 64 MB, seen by the same measurement
    request = pack("ciphertext", {"key_id": "k", "dimension": 2 ** 17, "mask_seed": "00" * 32},
                   [np.zeros(64, np.uint64)])
    call = lambda: LweCiphertext.from_bytes(request)
tracemalloc.start()
before = peak_rss()
try:
    call()
    outcome = "accepted"
except SerializationError as exc:
    outcome = "refused: " + str(exc)
_, traced = tracemalloc.get_traced_memory()
grown = peak_rss() - before
print(repr((len(request), outcome, traced, grown)))
"""


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_lying_dimension_request_is_refused_before_any_large_allocation(flat, tmp_path):
    """The audit's request: a few hundred bytes claiming dimension 2^24 made the server
    allocate 4.2 GB before refusing it.  Measured in a fresh process (peak RSS growth and
    traced allocations), against a control that does allocate."""
    (tmp_path / "server.spec").write_bytes(flat.server.spec.to_bytes())
    (tmp_path / "evaluation.keys").write_bytes(flat.client.evaluation_keys.to_bytes())
    header, arrays = unpack(flat.client.encrypt(np.arange(4), packing=False).to_bytes(),
                            "circuit-args")
    header["items"][0]["dimension"] = 2 ** 24
    (tmp_path / "lie.bin").write_bytes(pack("circuit-args", header, arrays))

    def measure(mode):
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path), mode],
                             capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
        return eval(out.stdout.strip().splitlines()[-1])

    size, outcome, traced, grown = measure("lie")
    assert size < 1000
    assert outcome.startswith("refused") and "dimension 16777216" in outcome
    assert traced < 1 << 20 and grown < 8 << 20, (traced, grown)
    size, outcome, traced, grown = measure("control")
    assert outcome == "accepted" and traced > 60 << 20 and grown > 48 << 20, (traced, grown)


def test_global_p_error_without_lookups_counts_the_decryptions(flat):
    stats = flat.statistics
    assert stats["lookups"] == 0
    p = flat.parameters.p_fail()
    assert stats["global_p_error"] > 0
    assert stats["global_p_error"] == pytest.approx(4 * p, rel=1e-6)   # 4 output values
    assert json.dumps(stats["global_p_error"])
