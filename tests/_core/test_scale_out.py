"""Bootstrap batches on a Dask cluster (joblib's dask backend) and under other backends.

examples/dask_scale_out.py (run by tests/test_examples.py) serves a saved circuit on a
cluster and checks it against the local run too."""

import joblib
import numpy as np
import pytest

from fheml._core import SecretKeys, scale_out, select_parameters

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def keys():
    params = select_parameters(2, 2.0 ** -40)
    secret = SecretKeys.generate(params)
    return secret, secret.evaluation_keys()


@pytest.fixture(scope="module")
def dask_client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_dask_run_equals_the_local_run_and_keys_go_once_to_each_worker(keys, dask_client):
    secret, evaluation = keys
    x = np.arange(30) % 4
    ct = secret.encrypt(x, precision=2)
    table = (np.arange(4) * 3 + 1) % 4
    local = evaluation.programmable_bootstrap(ct, table, n_jobs=2)
    with joblib.parallel_backend("dask"):
        first = evaluation.programmable_bootstrap(ct, table, n_jobs=-1)
        second = evaluation.programmable_bootstrap(ct[:7], table, n_jobs=-1)
    # The bootstrap is deterministic: the very same ciphertexts, bit for bit.
    np.testing.assert_array_equal(first.data, local.data)
    np.testing.assert_array_equal(second.data, local.data[:7])
    np.testing.assert_array_equal(secret.decrypt(first, precision=2), table[x])
    # Both workers took part, and each expanded the keys exactly once for both calls.
    assert dask_client.run(scale_out.expansions_in_this_process) == {
        w: 1 for w in dask_client.scheduler_info()["workers"]}


def test_process_backends_without_dask_still_run_in_threads(keys):
    # The chunks write into one output array: a process backend would lose the results.
    secret, evaluation = keys
    ct = secret.encrypt(np.arange(8) % 4, precision=2)
    with joblib.parallel_backend("loky", n_jobs=2):
        out = evaluation.programmable_bootstrap(ct, np.array([3, 2, 1, 0]), n_jobs=2)
    np.testing.assert_array_equal(secret.decrypt(out, precision=2), 3 - np.arange(8) % 4)
