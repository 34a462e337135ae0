"""Shared helpers for the compiler tests: keys cached per parameter set."""

import numpy as np
import pytest

_KEYS = {}


def use_cached_keys(circuit):
    """Give the circuit's client keys shared with every circuit of the same parameters
    (keygen dominates the cost of small encrypted tests)."""
    from fheml._core import SecretKeys

    params = circuit.parameters
    if params not in _KEYS:
        sk = SecretKeys.generate(params)
        _KEYS[params] = (sk, sk.evaluation_keys())
    circuit.client.secret_keys, circuit.client.evaluation_keys = _KEYS[params]
    return circuit


def encrypted_run(circuit, *args):
    use_cached_keys(circuit)
    return circuit.encrypt_run_decrypt(*args)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
