"""Encoding precision per partition: a lookup's output is encoded for its consumers."""

import numpy as np
import pytest

import fheml
from tests.compiler.conftest import encrypted_run

_W1 = np.array([[3, -2, 1], [-3, 3, 2], [1, 1, -3], [2, -1, 3], [-1, 3, 3], [3, 2, -2]])
_W2 = np.array([[1, -1], [1, 1], [-1, 1]])


def _two_layers(x):
    acc = fheml.round_bit_pattern(x @ _W1, 6)  # wide accumulator, top bits read
    hidden = np.clip((acc // 64) + 4, 0, 7).astype(np.int64)
    return hidden @ _W2  # narrow output


def test_wide_accumulator_does_not_widen_the_outputs():
    rng = np.random.default_rng(0)
    inputset = rng.integers(0, 64, (200, 6))
    circuit = fheml.compile(_two_layers, inputset)
    program = circuit.program
    (lookup,) = program.lookups
    p_acc = program.nodes[lookup.inputs[0]].precision
    p_out = program.nodes[program.output_nodes[0]].precision
    assert p_acc >= 10 and p_out <= 5
    assert circuit.max_bit_width == p_acc
    assert circuit.client.spec.inputs[0]["precision"] == p_acc
    assert circuit.client.spec.outputs[0]["precision"] == p_out
    # One global precision would decrypt the output at p_acc bits, which a 4-bit parameter
    # set cannot do; per partition, the lookups set the parameters.
    assert circuit.parameters.precision == lookup.attrs["pin"] <= 4
    # Away from rounding ties (within a few noise deviations of one, the noise decides the
    # rounding), encrypted equals the clear program.
    pool = rng.integers(0, 64, (20000, 6))
    far = (np.abs((pool @ _W1) % 64 - 32) > 24).all(axis=1)
    x = pool[far][:16]
    np.testing.assert_array_equal(encrypted_run(circuit, x), circuit.run(x))


def test_precisions_survive_serialization():
    rng = np.random.default_rng(1)
    circuit = fheml.compile(_two_layers, rng.integers(0, 64, (100, 6)))
    server = fheml.compiler.ServerSpec.from_bytes(circuit.server.spec.to_bytes())
    client = fheml.compiler.ClientSpec.from_bytes(circuit.client.spec.to_bytes())
    assert [n.precision for n in server.program.nodes] == [n.precision
                                                           for n in circuit.program.nodes]
    assert client.outputs == circuit.client.spec.outputs


def test_outputs_needing_a_quiet_bootstrap_get_more_levels_not_more_precision():
    # Nine lookup outputs of 3 bits summed with weights up to 7, decrypted at ~9 bits: the
    # 4-bit parameter set's one-level bootstrap is too noisy for that; a second level is far
    # cheaper than raising the lookup precision (N = 2048 -> 8192).
    weights = np.array([7, -7, 6, 7, -5, 7, 6, -7, 7])

    def f(x):
        hidden = np.clip(fheml.round_bit_pattern(x, 2) // 4, 0, 7).astype(np.int64)
        return hidden @ weights

    circuit = fheml.compile(f, np.random.default_rng(2).integers(0, 32, (100, 9)))
    params = circuit.parameters
    assert params.precision == circuit.statistics["lookup_precision"] <= 4
    assert params.pbs_level >= 2 and params.polynomial_size <= 2048


def test_a_spec_lying_about_a_partition_precision_fails_at_load():
    from fheml._core.serialization import SerializationError, pack, unpack

    circuit = fheml.compile(_two_layers, np.random.default_rng(3).integers(0, 64, (100, 6)))
    header, arrays = unpack(circuit.server.spec.to_bytes(), "server-spec")
    out = header["program"]["output_nodes"][0]
    header["program"]["nodes"][out]["precision"] = 30  # beyond what the bootstrap noise allows
    with pytest.raises(SerializationError):
        fheml.compiler.Server.from_bytes(pack("server-spec", header, arrays))


def test_inputs_are_encrypted_at_the_widest_precision():
    # The output partition (weights up to 40 on 3-bit lookup outputs) is wider than the
    # input's (2-bit values): the client still encrypts at client.spec.precision.
    weights = np.array([[40, -33], [-25, 38], [31, 29]])

    def f(x):
        return (x // 2) @ weights

    inputset = np.random.default_rng(4).integers(0, 8, (50, 3))
    circuit = fheml.compile(f, inputset)
    assert circuit.client.spec.inputs[0]["precision"] == circuit.max_bit_width
    x = inputset[:4]
    np.testing.assert_array_equal(encrypted_run(circuit, x), circuit.run(x))
