"""Spread the bootstraps of an encrypted run over a Dask cluster.

A local cluster of 2 worker processes stands in for a real one (replace it by
``Client("tcp://scheduler-host:8786")``). The evaluation keys go to each worker once; the
result is bit for bit the local one. Needs the dask extra (``pip install "fheml[dask]"``).

    python examples/dask_scale_out.py
"""
import tempfile
import time

import joblib
import numpy as np
from distributed import Client, LocalCluster

import fheml
from fheml.deployment import FHEModelClient, FHEModelDev, FHEModelServer


@fheml.compiler({"x": "encrypted"})
def f(x):
    return fheml.univariate(lambda v: (v * 3 + 1) % 4)(x)


if __name__ == "__main__":  # worker processes re-import this file
    path = tempfile.mkdtemp()
    FHEModelDev(path, f.compile(np.arange(4))).save()
    client, server = FHEModelClient(path), FHEModelServer(path, n_jobs=-1)
    keys = server.load_evaluation_keys(client.get_serialized_evaluation_keys())
    x = np.arange(64) % 4
    request = client.quantize_encrypt_serialize(x)
    t0 = time.perf_counter()
    local = server.run(request, keys)
    t1 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as dask_client:
        with joblib.parallel_backend("dask"):
            t2 = time.perf_counter()
            remote = server.run(request, keys)
            t3 = time.perf_counter()
        print(f"workers: {len(dask_client.scheduler_info()['workers'])}")
    print(f"local {t1 - t0:.2f} s, on the cluster {t3 - t2:.2f} s (keys shipped included)")
    print(f"identical ciphertexts: {remote == local}")
    y = client.deserialize_decrypt_dequantize(remote)
    assert remote == local and np.array_equal(y, (x * 3 + 1) % 4)
