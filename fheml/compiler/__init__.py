"""The fheml compiler: numpy programs to TFHE circuits.

Trace a numpy function into an op-graph, fuse floating-point subgraphs into table
lookups, bound every value on an inputset, choose cryptographic parameters and run the
result in the clear, in simulation or encrypted (client/server).

>>> import numpy as np, fheml
>>> @fheml.compiler({"x": "encrypted"})
... def f(x):
...     return (x * 3 + 1) % 7
>>> circuit = f.compile(np.arange(8))
>>> circuit.run(np.array([5, 6]))
array([2, 5])

``fheml.compiler`` is both this package and the decorator: the package object is callable,
``fheml.compiler(parameters)`` being :func:`fheml.compiler.api.compiler`.
"""

import sys
import types

from fheml.compiler.api import CheckReport, Compiler, check, compile, compiler
from fheml.compiler.circuit import (
    Circuit,
    Client,
    ClientSpec,
    EncryptedArgs,
    EncryptedResult,
    Server,
    ServerLimits,
    ServerSpec,
)
from fheml.compiler.graph import Graph, TracingError
from fheml.compiler.program import InputRangeError
from fheml.compiler.tracing import LookupTable, round_bit_pattern, univariate

__all__ = [
    "CheckReport",
    "Circuit",
    "Client",
    "ClientSpec",
    "Compiler",
    "EncryptedArgs",
    "EncryptedResult",
    "Graph",
    "InputRangeError",
    "LimitExceededError",
    "LookupTable",
    "MismatchError",
    "SerializationError",
    "Server",
    "ServerLimits",
    "ServerSpec",
    "TracingError",
    "check",
    "compile",
    "compiler",
    "round_bit_pattern",
    "univariate",
]


_ENGINE_ERRORS = ("LimitExceededError", "MismatchError", "SerializationError")


def __getattr__(name):
    # The boundary's exception types live in the engine, loaded on first use (importing
    # the engine costs most of a second).
    if name in _ENGINE_ERRORS:
        from fheml._core import serialization
        return getattr(serialization, name)
    raise AttributeError(f"module 'fheml.compiler' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``@fheml.compiler({...})`` work although ``fheml.compiler`` is a package."""

    def __call__(self, parameters):
        return compiler(parameters)


sys.modules[__name__].__class__ = _CallableModule
