"""Compile your own numpy function to an encrypted circuit and serve it like a model.

``x -> round(3 * sin(x))`` on 3-bit encrypted integers: the compiler fuses the float work
into one table lookup (a programmable bootstrap) per value. The circuit is saved with
FHEModelDev, and a client and a server exchange bytes, exactly as for an estimator.

    python examples/custom_circuit.py
"""
import tempfile
import time

import numpy as np

import fheml
from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer


@fheml.compiler({"x": "encrypted"})
def f(x):
    return np.round(3 * np.sin(x)).astype(np.int64)


circuit = f.compile(np.arange(8))
print(circuit)
print(f"clear run: {circuit.run(np.arange(8))}")

path = tempfile.mkdtemp()
FHEModelDev(path, circuit).save()
client, server = FHEModelClient(path), FHEModelServer(path, n_jobs=-1)
t0 = time.perf_counter()
keys = client.get_serialized_evaluation_keys()
t1 = time.perf_counter()
x = np.array([0, 1, 2, 3, 4, 5, 6, 7])
answer = server.run(client.quantize_encrypt_serialize(x), keys)
t2 = time.perf_counter()
y = client.deserialize_decrypt_dequantize(answer)
print(f"keygen {t1 - t0:.2f} s, evaluation keys {len(keys) / 1e6:.1f} MB; "
      f"{len(x)} encrypted lookups in {t2 - t1:.2f} s")
print(f"encrypted run: {y}")
assert np.array_equal(y, np.round(3 * np.sin(x)).astype(np.int64))
