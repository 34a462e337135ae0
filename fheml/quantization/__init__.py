"""Quantization: uniform affine quantizers calibrated on data and the integer linear layer.

>>> import numpy as np
>>> from fheml.quantization import UniformQuantizer, QuantizedLinear
>>> X = np.array([[0.0, 1.0], [2.0, -1.0]])
>>> qx = UniformQuantizer(n_bits=8, per_feature=True).fit(X)
>>> layer = QuantizedLinear(np.array([[1.0], [2.0]]), np.array([0.5]), qx, weight_n_bits=8)
>>> y = layer.dequantize(layer.accumulate(qx.quant(X)))
>>> bool(np.allclose(y.ravel(), X @ [1.0, 2.0] + 0.5, atol=0.05))
True
"""

from fheml.quantization.quantizers import (
    MAX_ACCUMULATOR_BITS,
    FHEMLClipWarning,
    QuantizedLinear,
    UniformQuantizer,
    signed_bit_width,
)

from fheml.quantization.quantizers import __all__  # one list of public names
