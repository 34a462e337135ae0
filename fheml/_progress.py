"""Progress of long jobs: a tqdm bar on a terminal, ``logging`` otherwise.

One mechanism for everything slow (key generation, encrypted runs, deployment)::

    with progress(total, "Bootstrapping", unit="lookup") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

``verbose`` (the argument, else ``fheml.get_config()["verbose"]``):

- ``None`` (default): on a terminal, a bar that appears once the job has lasted
  :data:`BAR_DELAY` seconds (short jobs print nothing); start and end are logged at DEBUG.
- ``True``: a bar at once on a terminal; otherwise INFO log records on the ``"fheml"``
  logger (start, every :data:`LOG_EVERY` seconds, end), seen once logging is configured,
  e.g. ``logging.basicConfig(level=logging.INFO)``.
- ``False``: nothing.
"""

import logging
import sys
import threading
import time

__all__ = ["BAR_DELAY", "LOG_EVERY", "Progress", "progress"]

BAR_DELAY = 1.0
"""Seconds before the bar of a job appears when ``verbose`` is not set."""

LOG_EVERY = 10.0
"""Seconds between two log records of a job."""

logger = logging.getLogger("fheml")


def _stderr_is_terminal():
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress report of one job of ``total`` units (see the module docstring).

    Parameters
    ----------
    total : int
    desc : str
        What is being done, e.g. ``"Key generation"``.
    unit : str, default="it"
    verbose : bool, optional
        Defaults to ``fheml.get_config()["verbose"]``.

    Notes
    -----
    :meth:`update` may be called from several threads.
    """

    def __init__(self, total, desc, *, unit="it", verbose=None):
        if verbose is None:
            from fheml._config import get_config
            verbose = get_config()["verbose"]
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.done = 0
        self._lock = threading.Lock()
        self._start = self._last_log = time.monotonic()
        self._level = logging.INFO if verbose else logging.DEBUG
        self._quiet = verbose is False
        self._bar = None
        if not self._quiet and _stderr_is_terminal():
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False,
                             delay=0.0 if verbose else BAR_DELAY, file=sys.stderr)
        elif not self._quiet:
            logger.log(self._level, "%s: %d %s(s) to do", desc, self.total, unit)

    def update(self, n=1):
        """Record ``n`` more units done."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if not self._quiet and now - self._last_log >= LOG_EVERY and self.done < self.total:
                self._last_log = now
                logger.log(self._level, "%s: %d/%d %s(s), %.0f s", self.desc, self.done,
                           self.total, self.unit, now - self._start)

    def close(self):
        """End the report (the bar disappears; the duration is logged)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._quiet:
            logger.log(self._level, "%s: %d %s(s) in %.1f s", self.desc, self.done, self.unit,
                       time.monotonic() - self._start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total, desc, *, unit="it", verbose=None):
    """A :class:`Progress` (use it as a context manager)."""
    return Progress(total, desc, unit=unit, verbose=verbose)
