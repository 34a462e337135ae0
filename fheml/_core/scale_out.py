"""Bootstrap batches on a Dask cluster through joblib (``pip install fheml[dask]``).

Inside ``joblib.parallel_backend("dask")`` (or ``joblib.parallel_config(backend="dask")``)
with a ``distributed.Client`` connected, :func:`fheml._core.keys.run_pbs_batch` sends
its chunks of ciphertexts to the cluster's workers instead of local threads::

    from distributed import Client
    import joblib
    client = Client("tcp://scheduler:8786")          # or LocalCluster() for a try
    with joblib.parallel_backend("dask"):
        model.predict(X, fhe="execute")                # n_jobs=-1: all workers' threads

The evaluation keys go to every worker once per key set and client: they are broadcast
in their seeded form (a few tens of MB instead of the expanded GB), expanded once on each
worker, and kept there for every later batch; each task then only carries its ciphertexts,
tables and table indices.  Results are the same bits as a local run (the bootstrap is
deterministic).

Pickle is used only between this process and its own workers (as Dask does for every
task), never across the client/server boundary.
"""

import collections
import hashlib
import threading
import weakref

import numpy as np

__all__ = ["active_dask_client", "scattered_keys"]

_lock = threading.Lock()
# Evaluation keys -> {id of the distributed client: future of the keys on its workers}
_scattered = weakref.WeakKeyDictionary()
# Seeded-key digest -> expanded keys, in each worker process: a key set is expanded once,
# and at most WORKER_KEY_SETS of them are kept (least recently used dropped first).
_expanded = collections.OrderedDict()
WORKER_KEY_SETS = 4
_expansions = 0


def active_dask_client():
    """The ``distributed.Client`` of the active joblib dask backend, or ``None``."""
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    if type(backend).__name__ != "DaskDistributedBackend":
        return None
    return backend.client


def _key_digest(seeded):
    return hashlib.sha256(seeded).hexdigest()


class SeededKeys:
    """Evaluation keys in transit: the seeded bytes travel (and are what Dask stores and
    copies between workers); :meth:`expanded` loads them once per process."""

    def __init__(self, seeded):
        self.seeded = seeded
        self.digest = _key_digest(seeded)

    def expanded(self):
        global _expansions
        with _lock:
            keys = _expanded.get(self.digest)
            if keys is not None:
                _expanded.move_to_end(self.digest)
                return keys
        from fheml._core.keys import EvaluationKeys

        keys = EvaluationKeys.from_bytes(self.seeded)
        with _lock:
            _expanded[self.digest] = keys
            _expansions += 1
            while len(_expanded) > WORKER_KEY_SETS:
                _expanded.popitem(last=False)
        return keys


def scattered_keys(client, keys):
    """A future of ``keys`` on every worker of ``client`` (broadcast once, then reused)."""
    with _lock:
        future = _scattered.get(keys, {}).get(id(client))
    if future is None or future.status != "finished":
        [future] = client.scatter([SeededKeys(keys.to_bytes())], broadcast=True, hash=False)
        with _lock:
            _scattered.setdefault(keys, {})[id(client)] = future
    return future


def expansions_in_this_process():
    """Number of key sets expanded by :meth:`SeededKeys.expanded` here (for tests)."""
    return _expansions


def pbs_chunk_copy(keys, cts, luts, index, group, extract=(1, 0)):
    """KS + PBS of ``cts`` on a worker; returns the outputs (the caller copies them in):
    (B, count, big + 1) for ``extract`` = (count, stride) outputs per input."""
    from fheml._core.keys import _pbs_chunk

    keys = keys.expanded()
    out = np.empty((cts.shape[0], extract[0], keys.params.big_lwe_dimension + 1), dtype=np.uint64)
    _pbs_chunk(keys, cts, luts, index, out, 0, cts.shape[0], group, extract)
    return out
