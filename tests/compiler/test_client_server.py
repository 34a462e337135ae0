"""Client and server exchanging only bytes, including across two processes."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fheml
from fheml._core.serialization import SerializationError
from fheml.compiler import Client, ClientSpec, EncryptedArgs, EncryptedResult, Server, ServerSpec
from tests.compiler.conftest import use_cached_keys

REPO = pathlib.Path(__file__).resolve().parents[2]


def program(x, w):
    hidden = (x @ w + 3) // 4          # clear weights, lookup
    return np.maximum(hidden, x[:2]) - 1, (x > 2).astype(np.int64).sum()


@pytest.fixture(scope="module")
def circuit():
    rng = np.random.default_rng(7)
    inputset = [(rng.integers(0, 4, size=4), rng.integers(-1, 2, size=(4, 2))) for _ in range(200)]
    return fheml.compile(program, inputset, parameters={"x": "encrypted", "w": "clear"})


def test_specs_round_trip_through_bytes(circuit):
    server_bytes = circuit.server.spec.to_bytes()
    client_bytes = circuit.client.spec.to_bytes()
    server = Server.from_bytes(server_bytes)
    client_spec = ClientSpec.from_bytes(client_bytes)
    assert client_spec.params == circuit.parameters
    assert server.spec.params == circuit.parameters
    assert server.spec.to_bytes() == server_bytes
    assert b"secret" not in server_bytes
    # The deserialized program computes the same thing as the original.
    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 4, size=(5, 4)), rng.integers(-1, 2, size=(5, 4, 2))
    from fheml.compiler.program import ClearBackend, run_clear
    a = run_clear(circuit.program, [x, w], ClearBackend())
    b = run_clear(server.spec.program, [x, w], ClearBackend())
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_corrupted_or_wrong_bytes_are_rejected(circuit):
    data = bytearray(circuit.server.spec.to_bytes())
    data[100] ^= 1
    with pytest.raises(SerializationError, match="corrupted"):
        Server.from_bytes(bytes(data))
    with pytest.raises(SerializationError, match="expected a serialized server-spec"):
        Server.from_bytes(circuit.client.spec.to_bytes())
    with pytest.raises(SerializationError):
        EncryptedArgs.from_bytes(circuit.client.spec.to_bytes())


def test_client_server_in_two_processes(circuit, tmp_path):
    client = Client.from_bytes(circuit.client.spec.to_bytes())
    use_cached_keys(circuit)
    client.secret_keys = circuit.client.secret_keys
    client.evaluation_keys = circuit.client.evaluation_keys
    x = np.array([[3, 1, 3, 0], [2, 0, 1, 1]])
    w = np.array([[[1, -1], [1, 0], [0, 1], [-1, 1]]] * 2)
    (tmp_path / "server.spec").write_bytes(circuit.server.spec.to_bytes())
    (tmp_path / "evaluation.keys").write_bytes(client.evaluation_keys.to_bytes())
    (tmp_path / "args.bin").write_bytes(client.encrypt(x, w).to_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("server_process.py")),
                    str(tmp_path)], check=True, env=env, cwd=tmp_path, timeout=300)
    got = client.decrypt((tmp_path / "result.bin").read_bytes())
    expected = circuit.run(x, w)
    numpy_expected = [program(x[i], w[i]) for i in range(2)]
    for j in range(2):
        np.testing.assert_array_equal(got[j], expected[j])
        np.testing.assert_array_equal(got[j], np.stack([o[j] for o in numpy_expected]))


def test_server_validates_arguments(circuit):
    use_cached_keys(circuit)
    client = circuit.client
    args = client.encrypt(np.array([1, 2, 3, 0]), np.ones((4, 2), int))
    round_trip = EncryptedArgs.from_bytes(args.to_bytes())
    np.testing.assert_array_equal(round_trip.values[0].data, args.values[0].data)
    with pytest.raises(TypeError, match="2 argument"):
        circuit.server.run(EncryptedArgs(args.values[:1], False), client.evaluation_keys)
    with pytest.raises(TypeError, match="must be encrypted"):
        circuit.server.run(EncryptedArgs([np.zeros((1, 4), int), args.values[1]], False),
                           client.evaluation_keys)
    other = fheml.compile(lambda x: x + 1, [np.arange(3)])
    with pytest.raises(ValueError, match="other parameters"):
        circuit.server.run(args, other.keygen())


def test_result_bytes_round_trip(circuit):
    use_cached_keys(circuit)
    x, w = np.array([3, 1, 2, 1]), np.array([[1, 0], [0, 1], [1, 1], [1, -1]])
    result = circuit.server.run(circuit.client.encrypt(x, w), circuit.client.evaluation_keys)
    again = EncryptedResult.from_bytes(result.to_bytes())
    got = circuit.client.decrypt(again)
    for g, e in zip(got, program(x, w)):
        np.testing.assert_array_equal(g, e)
