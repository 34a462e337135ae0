"""Warnings of fheml and where they point: at the user's code.

A warning raised deep inside a fit or a predict is shown with the line of the first frame
outside fheml and the libraries that call it for the user (scikit-learn's meta-estimators
and joblib), so that ``GridSearchCV(...).fit(X, y)`` points at that line, not into
scikit-learn.
"""

import os
import sys
import warnings

__all__ = ["FHEMLPerformanceWarning", "user_stacklevel", "warn_once_per_site"]


class FHEMLPerformanceWarning(UserWarning):
    """A compiled circuit will be slow or need large keys (e.g. a lookup of 7 or 8 bits)."""


def _module_dir(name):
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


_FHEML_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frame(depth):
    """``(index, frame)``: the first frame outside fheml, scikit-learn and joblib, from
    ``depth`` frames above the caller up; ``index`` frames above the caller."""
    skip = tuple(d for d in (_FHEML_DIR, _module_dir("sklearn"), _module_dir("joblib")) if d)
    index, frame = depth, sys._getframe(depth + 1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
        index += 1
    return (index, frame) if frame is not None else (depth, None)


def user_stacklevel():
    """``stacklevel`` for :func:`warnings.warn` that points at the user's code: the first
    caller frame outside fheml, scikit-learn and joblib (the caller of the warning
    function's caller when there is none)."""
    # frames above this one: 1 is the function that warns (its stacklevel 1), 2 its caller
    return _user_frame(2)[0]


_warned_sites = set()


def warn_once_per_site(message, category, kind):
    """Warn, pointing at the user's code, unless a warning of this ``kind`` already pointed
    at the same line (e.g. the line running a 40-fit ``GridSearchCV``): one warning per
    line of user code, like Python's ``"default"`` filter, even when counts in the
    messages differ.

    Returns
    -------
    bool
        Whether the warning was emitted.
    """
    index, frame = _user_frame(2)  # 1: the function that warns, 2: its caller
    level = index + 1  # warnings.warn is called here, one frame below
    site = None if frame is None else (kind, frame.f_code.co_filename, frame.f_lineno)
    if site is not None and site in _warned_sites:
        return False
    _warned_sites.add(site)
    warnings.warn(message, category, stacklevel=level)
    return True
