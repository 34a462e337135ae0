"""TFHE engine of fheml: parameters, keys, encryption, keyswitch and programmable bootstrap.

>>> from fheml._core import select_parameters, SecretKeys
>>> params = select_parameters(precision=4, p_error=2**-40)
>>> sk = SecretKeys.generate(params); ek = sk.evaluation_keys()     # doctest: +SKIP
"""

from fheml._core.glwe import GlweCiphertext, GlweSecretKey
from fheml._core.keys import (
    EvaluationKeys,
    InsecureKeyWarning,
    LweCiphertext,
    SecretKeys,
    decode,
    encode,
    make_luts,
)
from fheml._core.parameters import (
    GlweParameters,
    ParameterSet,
    select_glwe_parameters,
    select_parameters,
)
from fheml._core.serialization import LimitExceededError, MismatchError, SerializationError

__all__ = [
    "EvaluationKeys",
    "GlweCiphertext",
    "GlweParameters",
    "GlweSecretKey",
    "InsecureKeyWarning",
    "LimitExceededError",
    "LweCiphertext",
    "MismatchError",
    "ParameterSet",
    "SecretKeys",
    "SerializationError",
    "decode",
    "encode",
    "make_luts",
    "select_glwe_parameters",
    "select_parameters",
]
