"""fheml: scikit-learn compatible machine learning on encrypted data (TFHE).

The compiler entry points are available at the top level (loaded on first use, so that
``import fheml`` stays light)::

    import fheml

    @fheml.compiler({"x": "encrypted"})
    def f(x):
        return (x * 3 + 1) % 7

    circuit = f.compile(range(8))
    circuit.encrypt_run_decrypt(5)
"""

import importlib

from fheml._config import config_context, get_config, set_config
from fheml._warnings import FHEMLPerformanceWarning

__version__ = "0.1.0.dev0"

_COMPILER_NAMES = frozenset({
    "Circuit", "LookupTable", "check", "compile", "compiler", "round_bit_pattern",
    "univariate",
})

__all__ = sorted(_COMPILER_NAMES | {"FHEMLPerformanceWarning", "config_context", "get_config",
                                    "set_config"})


def __getattr__(name):
    if name in _COMPILER_NAMES:
        module = importlib.import_module("fheml.compiler")
        # The package itself is callable as the decorator (see fheml.compiler).
        return module if name == "compiler" else getattr(module, name)
    raise AttributeError(f"module 'fheml' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _COMPILER_NAMES)
