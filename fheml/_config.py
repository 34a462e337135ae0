"""Global configuration, like :func:`sklearn.get_config` / :func:`sklearn.config_context`.

The settings belong to the process, so that the threads joblib starts for a
meta-estimator (``GridSearchCV(n_jobs=2)`` with the threading backend) see them too; worker
*processes* do not (set them in the worker, e.g. in the estimator's code path, if needed).
"""

from contextlib import contextmanager

__all__ = ["config_context", "get_config", "set_config"]

_DEFAULTS = {"fhe": None, "verbose": None, "working_memory": 256}
_MODES = ("disable", "simulate", "execute")
_CONFIG = dict(_DEFAULTS)


def _config():
    return _CONFIG


def get_config():
    """Current values of the settings of :func:`set_config`.

    Returns
    -------
    dict
        ``{"fhe": ..., "verbose": ..., "working_memory": ...}`` (a copy).
    """
    return dict(_config())


def set_config(fhe=None, verbose=None, working_memory=None):
    """Set fheml's settings (``None`` leaves a setting unchanged).

    Parameters
    ----------
    fhe : {"disable", "simulate", "execute"}, optional
        Run mode of ``predict``, ``predict_proba``, ``decision_function`` and ``score`` of
        every FHE estimator when the call does not pass ``fhe=`` itself, so that
        scikit-learn meta-estimators (``Pipeline``, ``GridSearchCV``,
        ``OneVsRestClassifier``, ...) run their FHE steps in that mode.
    verbose : bool, optional
        Progress reports of key generation and encrypted runs: ``True`` always (a progress
        bar on a terminal, ``logging`` at INFO level otherwise), ``False`` never; by default
        a bar appears on a terminal once a job has lasted a second.
    working_memory : int, optional
        Memory budget in MB of an encrypted run (default 256): a larger batch is encrypted,
        run and decrypted in chunks of rows that fit in it (at least one row at a time).
    """
    config = _config()
    if fhe is not None:
        if fhe not in _MODES:
            raise ValueError(f"fhe must be one of {', '.join(map(repr, _MODES))}, got {fhe!r}")
        config["fhe"] = fhe
    if verbose is not None:
        if not isinstance(verbose, bool):
            raise TypeError(f"verbose must be True or False, got {verbose!r}")
        config["verbose"] = verbose
    if working_memory is not None:
        if isinstance(working_memory, bool) or not isinstance(working_memory, (int, float)) \
                or not working_memory > 0:
            raise ValueError(f"working_memory must be a positive number of MB, got "
                             f"{working_memory!r}")
        config["working_memory"] = working_memory


@contextmanager
def config_context(*, fhe=None, verbose=None, working_memory=None):
    """Temporarily change fheml's settings (see :func:`set_config`).

    Examples
    --------
    >>> import fheml
    >>> with fheml.config_context(fhe="simulate"):
    ...     fheml.get_config()["fhe"]
    'simulate'
    >>> fheml.get_config()["fhe"] is None
    True
    """
    old = get_config()
    set_config(fhe=fhe, verbose=verbose, working_memory=working_memory)
    try:
        yield
    finally:
        _config().clear()
        _config().update(old)
