"""Warnings of fheml and where they point: at the user's code.

A warning raised deep inside a fit or a predict is shown with the line of the first frame
outside fheml and the libraries that call it for the user (scikit-learn's meta-estimators
and joblib), so that ``GridSearchCV(...).fit(X, y)`` points at that line, not into
scikit-learn.
"""

import os
import sys

__all__ = ["FHEMLPerformanceWarning", "user_stacklevel"]


class FHEMLPerformanceWarning(UserWarning):
    """A compiled circuit will be slow or need large keys (e.g. a lookup of 7 or 8 bits)."""


def _module_dir(name):
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


_FHEML_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel():
    """``stacklevel`` for :func:`warnings.warn` that points at the user's code: the first
    caller frame outside fheml, scikit-learn and joblib (the caller of the warning
    function's caller when there is none)."""
    skip = tuple(d for d in (_FHEML_DIR, _module_dir("sklearn"), _module_dir("joblib")) if d)
    level, frame = 2, sys._getframe(2)  # 2: the caller of the function that warns
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 2
