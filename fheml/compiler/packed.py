"""Packed linear circuits: many rows' features in the coefficients of one GLWE ciphertext.

A circuit without lookups whose only argument is encrypted computes an affine map
``y = u @ W + c`` of the shifted input ``u = x - lo`` (every clear operand is a constant).
:func:`affine_map` reads ``W`` and ``c`` off the program by running it in the clear on
``lo`` and on ``lo + e_f`` for every feature ``f`` (and checks the map on a random input).

Layout (``F`` features, polynomial size ``N``): the features are cut into ``C = ceil(F/N)``
chunks of ``Fc = ceil(F/C) <= N``; ciphertext ``(g, c)`` holds chunk ``c`` of rows
``g*B .. g*B + B - 1`` (``B = N // Fc``), row ``i``'s chunk at coefficients
``i*Fc .. i*Fc + Fc - 1``.  The server multiplies ciphertext ``(g, c)`` by the reversed
chunk weights of output ``o`` (degree ``Fc - 1``) and sums over ``c``: coefficient
``i*Fc + Fc - 1`` of the result is row ``i``'s dot product (it only reads row ``i``'s
coefficients, so nothing wraps while ``B*Fc <= N``), to which the bias is added.  The result
is switched to its top ``output_bytes`` bytes and only those ``B`` body coefficients travel
with the ``N`` mask coefficients; the client decrypts them all with one exact product.

The client picks this path or the LWE one for each call by the cost model of
:meth:`PackedPlan.cheaper_than_lwe`.
"""

import math

import numpy as np

from fheml.compiler.program import ClearBackend, run_clear

__all__ = ["PackedPlan", "affine_map", "plan_packing"]

# Polynomial sizes tried: at least _SLACK * Fc so that at most 1/_SLACK of a ciphertext is
# padding, at most _MAX_AUTO_POLYNOMIAL_SIZE (larger N only helps huge batches).
_SLACK = 8
_MAX_AUTO_POLYNOMIAL_SIZE = 16384
# Largest input packed (the weights are read off the program with F + 2 clear runs, in
# chunks of _PROBE_CHUNK rows).
_MAX_FEATURES = 1 << 16
_PROBE_CHUNK = 256

# Cost model of the path choice (ns per unit, measured once; only their ratios matter):
# exact negacyclic product by the binary key, per N log2 N (four limbs, forward + inverse
# FFT); multiply-add of the packed server kernel; client work per LWE mask word (ChaCha20,
# <mask, key>, seed bookkeeping: ~12 ns measured); server multiply-add per LWE word.
_NS_EXACT_PRODUCT = 4.0
_NS_MULTIPLY_ADD = 0.5
_NS_LWE_MASK_WORD = 10.0
_NS_LWE_MATMUL = 1.0


def affine_map(program):
    """``(W, c)`` with ``program(lo + u) == u @ W + c`` for the single encrypted input.

    Returns
    -------
    W : int64 array (F, O) or None
        ``F`` = input size, ``O`` = total size of the outputs (flattened, concatenated);
        None when the program is not such an affine map (lookups, clear runtime
        arguments, several arguments).
    c : int64 array (O,) or None
    """
    if program.lookups or len(program.input_nodes) != 1:
        return None, None
    node = program.nodes[program.input_nodes[0]]
    if not node.encrypted or "lo" not in node.attrs:
        return None, None
    F = int(np.prod(node.shape, dtype=np.int64))
    if F > _MAX_FEATURES:
        return None, None
    lo = int(node.attrs["lo"])
    u = np.random.default_rng(0).integers(0, 2, F)
    rows = []
    # probes: lo, lo + e_f for every f, lo + u; run in chunks (bounded memory)
    for start in range(0, F + 2, _PROBE_CHUNK):
        idx = np.arange(start, min(F + 2, start + _PROBE_CHUNK))
        probe = np.full((idx.size, F), lo, dtype=np.int64)
        unit = (idx >= 1) & (idx <= F)
        probe[np.flatnonzero(unit), idx[unit] - 1] += 1
        probe[idx == F + 1] += u
        with np.errstate(all="ignore"):
            outs = run_clear(program, [probe.reshape((idx.size,) + node.shape)], ClearBackend())
        rows.append(np.concatenate([np.asarray(o, dtype=np.int64).reshape(idx.size, -1)
                                    for o in outs], axis=1))
    y = np.concatenate(rows)
    bias, weights = y[0], y[1:F + 1] - y[0]
    if not np.array_equal(y[F + 1], bias + u @ weights):
        return None, None
    return weights, bias


class PackedPlan:
    """Layout, parameters and weights of a packed linear circuit (see the module doc).

    Parameters
    ----------
    params : fheml._core.GlweParameters
    features : int
        ``F``, the flattened input size.
    outputs : int
        ``O``, the flattened total output size.
    weights, bias : int64 arrays (F, O) and (O,), optional
        The affine map; only the server needs them.
    """

    def __init__(self, params, features, outputs, weights=None, bias=None):
        N = params.polynomial_size
        for name, value in (("features", features), ("outputs", outputs)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= _MAX_FEATURES:
                raise ValueError(f"{name} must be an integer in 1..{_MAX_FEATURES}")
        self.params = params
        self.features = features
        self.outputs = outputs
        self.chunks = -(-features // N)
        self.chunk_size = -(-features // self.chunks)
        self.slots = N // self.chunk_size
        self.weights = weights
        self.bias = bias
        if weights is not None:
            if weights.shape != (features, outputs) or bias.shape != (outputs,):
                raise ValueError("weights and bias do not match the plan")
            padded = np.zeros((self.chunks * self.chunk_size, outputs), dtype=np.int64)
            padded[:features] = weights
            # (C, O, Fc): chunk c's weights of output o, reversed
            self._polys = np.ascontiguousarray(
                padded.reshape(self.chunks, self.chunk_size, outputs)[:, ::-1].transpose(0, 2, 1))

    @classmethod
    def with_weights_of(cls, plan, program):
        """``plan`` with the weights read off ``program`` (the server's copy), checking that
        the program is the affine map the plan was made for."""
        weights, bias = affine_map(program)
        if weights is None or weights.shape != (plan.features, plan.outputs):
            raise ValueError("the packed plan does not match the program")
        if plan.params.precision != program.precision:
            raise ValueError("the packed plan's precision does not match the program")
        return cls(plan.params, plan.features, plan.outputs, weights, bias)

    # -- description ---------------------------------------------------------------------
    def to_dict(self):
        """JSON-able description (what the client needs: no weights)."""
        return {"params": self.params.to_dict(), "features": self.features,
                "outputs": self.outputs}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict` (ValueError on anything invalid)."""
        from fheml._core.parameters import GlweParameters
        if not isinstance(data, dict) or set(data) != {"params", "features", "outputs"}:
            raise ValueError("bad packed-plan description")
        return cls(GlweParameters.from_dict(data["params"]), data["features"], data["outputs"])

    def groups(self, rows):
        """Number of ciphertext groups for ``rows`` rows."""
        return -(-rows // self.slots)

    def slots_used(self, rows):
        """Rows per ciphertext of a call: all ``B`` slots, or ``rows`` when fewer (a small
        batch then sends only its own coefficients)."""
        return max(1, min(self.slots, rows))

    def input_coefficients(self, rows):
        """Carried coefficients of the encrypted rows of a call."""
        return (0, self.slots_used(rows) * self.chunk_size, 1)

    def result_coefficients(self, rows):
        """Carried coefficients of a result: the dot product of each row."""
        Fc = self.chunk_size
        return (Fc - 1, self.slots_used(rows) * Fc, Fc)

    def sizes(self, rows):
        """Bytes sent per call: ``(upload, result)`` (headers excluded)."""
        p, G, B = self.params, self.groups(rows), self.slots_used(rows)
        upload = G * self.chunks * B * self.chunk_size * p.input_bytes + 32
        result = G * self.outputs * (p.big_dimension + B) * p.output_bytes
        return upload, result

    def cost(self, rows):
        """Modelled time (ns) of a call: client encryption (one exact product per ciphertext),
        server products, client decryption (one exact product per output ciphertext)."""
        N, G = self.params.polynomial_size, self.groups(rows)
        product = _NS_EXACT_PRODUCT * N * math.log2(N)
        server = _NS_MULTIPLY_ADD * 2 * N * self.chunk_size * self.outputs * self.chunks
        return G * (self.chunks * product + server + self.outputs * product)

    def cheaper_than_lwe(self, rows, lwe_dimension):
        """Whether packing beats one LWE ciphertext per value for a call of ``rows`` rows.

        The LWE path generates and multiplies ``F * (n + 1)`` mask words per row on the
        client, ``O`` multiply-adds per word on the server and decrypts ``O * (n + 1)``
        words per row.  Constants measured on an AVX-512 Xeon: packing wins from one row
        on for tens of features; small inputs with few rows stay on the LWE path.
        """
        d = lwe_dimension + 1
        lwe = rows * d * (self.features * (_NS_LWE_MASK_WORD + self.outputs * _NS_LWE_MATMUL)
                          + self.outputs * _NS_LWE_MATMUL)
        return self.cost(rows) < lwe

    # -- client --------------------------------------------------------------------------
    def encrypt(self, key, u):
        """Seeded GLWE encryption of rows ``u`` (int64 (rows, F), the shifted inputs)."""
        from fheml._core import encode
        from fheml._core.glwe import encrypt_glwe
        rows = u.shape[0]
        G, B, C, Fc = self.groups(rows), self.slots_used(rows), self.chunks, self.chunk_size
        laid = np.zeros((G * B, C * Fc), dtype=np.int64)
        laid[:rows, :self.features] = u
        # (G, B, C, Fc) -> (G, C, B*Fc): chunk c of the B rows of group g, one after another
        laid = laid.reshape(G, B, C, Fc).transpose(0, 2, 1, 3).reshape(G, C, B * Fc)
        return encrypt_glwe(key, encode(laid, self.params.precision),
                            word_bytes=self.params.input_bytes)

    def decrypt(self, key, ct, rows):
        """Messages (rows, O) in ``[0, 2^(P+1))`` of a result of :meth:`evaluate`."""
        from fheml._core import decode
        from fheml._core.glwe import decrypt_glwe
        if (ct.coefficients != self.result_coefficients(rows) or len(ct.shape) != 2
                or ct.shape != (self.groups(rows), self.outputs)):
            raise ValueError("the result does not have the layout of this circuit for "
                             f"{rows} rows")
        m = decode(decrypt_glwe(key, ct), self.params.precision)     # (G, O, B)
        return m.transpose(0, 2, 1).reshape(-1, self.outputs)[:rows]

    # -- server --------------------------------------------------------------------------
    def evaluate(self, ct, rows):
        """Products by the weight polynomials, bias, modulus switch: the (G, O) result
        ciphertexts of a call of ``rows`` rows."""
        from fheml._core import encode
        from fheml._core.glwe import glwe_add_plain, glwe_polynomial_matmul, modulus_switch
        p = self.params
        expected = (p.glwe_dimension, p.polynomial_size, self.input_coefficients(rows),
                    (self.groups(rows), self.chunks))
        if (ct.glwe_dimension, ct.polynomial_size, ct.coefficients, ct.shape) != expected:
            raise ValueError("the packed argument does not have the layout of this circuit "
                             f"for {rows} rows")
        out = glwe_polynomial_matmul(ct, self._polys)
        start, stop, step = self.result_coefficients(rows)
        bias = np.zeros((self.outputs, p.polynomial_size), dtype=np.uint64)
        bias[:, start:stop:step] = encode(self.bias, p.precision)[:, None]
        out = glwe_add_plain(out, bias)
        return modulus_switch(out, p.output_bytes).with_coefficients(start, stop, step)


def plan_packing(program, p_error, polynomial_size=None):
    """The packed plan of a finalized program, or None when it is not a packed-linear one.

    Parameters
    ----------
    program : Program
        Finalized (``precision`` set).
    p_error : float
        Failure probability of each decrypted value.
    polynomial_size : int, optional
        Force ``N`` (tests); default: the smallest secure size of at least ``8 * F`` (up to
        16384) whose noise fits.
    """
    from fheml._core.parameters import select_glwe_parameters
    weights, bias = affine_map(program)
    if weights is None:
        return None
    F, O = weights.shape
    norm2 = max(1.0, float(np.sqrt((weights.astype(np.float64) ** 2).sum(axis=0)).max()))
    if polynomial_size is None:
        min_size = min(_MAX_AUTO_POLYNOMIAL_SIZE, 1 << max(0, (_SLACK * F - 1).bit_length()))
    else:
        min_size = polynomial_size
    try:
        params = select_glwe_parameters(program.precision, p_error, norm2, min_size)
    except ValueError:
        return None
    if polynomial_size is not None and params.polynomial_size != polynomial_size:
        return None
    return PackedPlan(params, F, O, weights, bias)
