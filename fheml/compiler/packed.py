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
is switched to its top ``output_bits`` bits and only those ``B`` body coefficients travel
with the ``N`` mask coefficients; the client decrypts them all with one exact product.

Weight digits.  The upload's bits per word grow with the 2-norm of the weights (the noise
and the rounding of the input words are multiplied by it) and with the bits of the
decrypted value.  With ``D > 1`` digits the weights are split in base ``2^k``:
``W = sum_j 2^(j k) W_j``, the lower digits balanced in ``[-2^(k-1), 2^(k-1))``, the top one
the rest.  The server computes every digit's product ``m_j = u @ W_j + c_j`` from the same
uploaded ciphertext and the client forms ``y = sum_j 2^(j k) m_j`` modulo ``2^P``
(``P`` the circuit's precision).  Each digit is decrypted modulo ``2^M``: a lower digit
exactly (its bias ``c_j`` shifts it into ``[0, 2^M)``, for every input in ``[0, U]^F``),
the top one modulo ``2^M >= 2^(P - (D-1) k)``, all that ``y`` needs of it; ``M`` can be
well below ``P`` and the noise grows with the largest digit norm only, so the words
travel with fewer bits, for ``D`` times the server work and result.

The number of digits is chosen at compile time by :meth:`PackedPlan.cost`; the client picks
the packed path or the LWE one for each call by :meth:`PackedPlan.cheaper_than_lwe`.
"""

import math

import numpy as np

from fheml.compiler.program import ClearBackend, run_clear, run_linear

__all__ = ["FirstLayerPlan", "PackedPlan", "affine_map", "first_layer", "packed_plan_from_dict",
           "plan_first_layer", "plan_packing"]

# Polynomial sizes tried: at least _SLACK * Fc so that at most 1/_SLACK of a ciphertext is
# padding, at most _MAX_AUTO_POLYNOMIAL_SIZE (larger N only helps huge batches).
_SLACK = 8
_MAX_AUTO_POLYNOMIAL_SIZE = 16384
# Largest input packed (the weights are read off the program with F + 2 clear runs, in
# chunks of _PROBE_CHUNK rows).
_MAX_FEATURES = 1 << 16
_PROBE_CHUNK = 256
# Weight digits tried: D in 1.._MAX_DIGITS, base 2^k for k in 1.._MAX_DIGIT_BASE_LOG.
_MAX_DIGITS = 4
_MAX_DIGIT_BASE_LOG = 8

# Cost model of the path and digit choices (ns per unit, measured on an AVX-512 Xeon):
# exact negacyclic product by the binary key, per N log2 N (four limbs, forward + inverse
# FFT: 1.65 ns); multiply-add of the packed server kernel (0.27-0.33 ns); client work per
# LWE mask word (ChaCha20, <mask, key>: ~10 ns); server multiply-add per LWE word.
_NS_EXACT_PRODUCT = 1.65
_NS_MULTIPLY_ADD = 0.3
_NS_LWE_MASK_WORD = 10.0
_NS_LWE_MATMUL = 1.0
# Bytes on the wire: a 10 Mbit/s upload and a 100 Mbit/s download (a client's link is
# usually asymmetric; the upload is the scarce direction).
_NS_UPLOAD_BYTE = 800.0
_NS_RESULT_BYTE = 80.0
# Packed first layer (measured on the same machine): a word of a sample-extracted LWE
# ciphertext, and the fixed cost of a packed call (seeds, key, small arrays: ~0.15 ms
# more than the LWE path's for one row of one feature).
_NS_EXTRACT_WORD = 2.0
_NS_PACKED_CALL = 150e3


def _single_input(program):
    """The node of the single encrypted argument (with its offset), or None."""
    if len(program.input_nodes) != 1:
        return None
    node = program.nodes[program.input_nodes[0]]
    if not node.encrypted or "lo" not in node.attrs \
            or int(np.prod(node.shape, dtype=np.int64)) > _MAX_FEATURES:
        return None
    return node


def _probe_affine(node, evaluate):
    """``(W, c)`` with ``evaluate(lo + u) == u @ W + c`` (checked on a random ``u``), or
    ``(None, None)``; ``evaluate`` maps input rows (b, *shape) to int64 (b, O)."""
    F = int(np.prod(node.shape, dtype=np.int64))
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
            rows.append(evaluate(probe.reshape((idx.size,) + node.shape)))
    y = np.concatenate(rows)
    bias, weights = y[0], y[1:F + 1] - y[0]
    if not np.array_equal(y[F + 1], bias + u @ weights):
        return None, None
    return weights, bias


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
    node = _single_input(program)
    if program.lookups or node is None:
        return None, None

    def evaluate(x):
        outs = run_clear(program, [x], ClearBackend())
        return np.concatenate([np.asarray(o, dtype=np.int64).reshape(len(x), -1)
                               for o in outs], axis=1)

    return _probe_affine(node, evaluate)


def first_layer(program):
    """``(prefix, frontier)`` of a program with lookups whose single encrypted argument
    feeds only linear operations (clear-weight dot products...), or None.

    ``prefix``: the encrypted nodes computed from the argument alone without a lookup (an
    affine map of it); ``frontier``: those of them read elsewhere (by lookups, by nodes
    that also read a lookup's result, or as outputs), in node order.
    """
    node = _single_input(program)
    if not program.lookups or node is None:
        return None
    nodes = program.nodes
    prefix = {program.input_nodes[0]}
    for k, n in enumerate(nodes):
        enc = [i for i in n.inputs if nodes[i].encrypted]
        if n.op != "tlu" and n.encrypted and enc and all(i in prefix for i in enc):
            prefix.add(k)
    read_outside = {i for k, n in enumerate(nodes) if k not in prefix for i in n.inputs}
    frontier = [k for k in sorted(prefix)
                if k in read_outside or k in program.output_nodes]
    if program.input_nodes[0] in frontier:  # the argument itself feeds a lookup
        return None
    return prefix, frontier


def frontier_map(program, prefix, frontier):
    """``(W, c)``: the frontier's values (flattened, concatenated) as an affine map of the
    shifted argument (see :func:`affine_map`), or ``(None, None)``."""
    node = _single_input(program)
    nodes = program.nodes
    clear = ClearBackend()

    def evaluate(x):
        values = {}
        for k, n in enumerate(nodes):
            if k == program.input_nodes[0]:
                values[k] = x[..., None]
            elif k in prefix or (not n.encrypted and n.op != "clear_input"):
                values[k] = run_linear(n, [values[i] for i in n.inputs],
                                       [nodes[i] for i in n.inputs], clear)
        return np.concatenate([np.broadcast_to(
            values[k][..., 0], (len(x),) + nodes[k].shape).reshape(len(x), -1)
            for k in frontier], axis=1).astype(np.int64)

    return _probe_affine(node, evaluate)


def _check_count(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def weight_digits(weights, digits, base_log):
    """``(D, F, O)`` int64 digits with ``weights == sum_j 2^(j base_log) digits[j]``: the
    lower ones balanced in ``[-2^(base_log-1), 2^(base_log-1))``, the top one the rest."""
    rest = np.asarray(weights, dtype=np.int64)
    out = np.empty((digits,) + rest.shape, dtype=np.int64)
    half = 1 << max(base_log - 1, 0)
    for j in range(digits - 1):
        out[j] = ((rest + half) & ((1 << base_log) - 1)) - half
        rest = (rest - out[j]) >> base_log
    out[digits - 1] = rest
    return out


def _lower_digit_span(digits, input_max):
    """Largest ``u @ W_j - min(u @ W_j)`` over inputs in ``[0, U]^F``, per digit and output."""
    return input_max * np.abs(digits).sum(axis=1)


def digit_bias(bias, digits, base_log, input_max):
    """``(D, O)`` biases ``c_j`` with ``sum_j 2^(j base_log) c_j == bias`` placing every
    lower digit's product in ``[0, U * sum|W_j| + 2^base_log)`` (see the module doc)."""
    D = digits.shape[0]
    rest = np.asarray(bias, dtype=np.int64)
    out = np.empty((D,) + rest.shape, dtype=np.int64)
    for j in range(D - 1):
        base = -input_max * np.minimum(digits[j], 0).sum(axis=0)
        out[j] = base + np.mod(rest - base, 1 << base_log)
        rest = (rest - out[j]) >> base_log
    out[D - 1] = rest
    return out


def _modulus_bits(digits, base_log, input_max, precision):
    """``M``: bits every digit is decrypted at (the module doc), or None when above
    ``precision`` (no gain)."""
    D = digits.shape[0]
    need = [precision - (D - 1) * base_log, int(input_max).bit_length(), 2]
    for j in range(D - 1):
        top = int(_lower_digit_span(digits[j:j + 1], input_max).max()) + (1 << base_log) - 1
        need.append(top.bit_length())
    bits = max(need)
    return bits if bits <= precision else None


def _digit_norm(digits):
    """Largest 2-norm of one digit's weights of one output (at least 1: a fresh encryption)."""
    norms = np.sqrt((digits.astype(np.float64) ** 2).sum(axis=1))
    return max(1.0, float(norms.max()))


class _Layout:
    """Rows laid out in GLWE coefficients (see the module doc): ``C`` chunks of ``Fc``
    features, ``B`` rows per ciphertext, input words sent at ``input_bits`` bits."""

    def __init__(self, glwe_dimension, polynomial_size, features, input_bits, precision):
        N = polynomial_size
        self.glwe_dimension = glwe_dimension
        self.polynomial_size = N
        self.features = _check_count("features", features, 1, _MAX_FEATURES)
        self.input_bits = input_bits
        self.input_precision = precision
        self.chunks = -(-features // N)
        self.chunk_size = -(-features // self.chunks)
        self.slots = N // self.chunk_size

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

    def carried(self, rows):
        """Input words that travel in a call: those of the rows (not the padding of a last,
        partly filled ciphertext)."""
        return rows * self.chunks * self.chunk_size

    def result_coefficients(self, rows):
        """Carried coefficients of a result: the dot product of each row."""
        Fc = self.chunk_size
        return (Fc - 1, self.slots_used(rows) * Fc, Fc)

    def _products(self, ct, rows, polys, bias):
        """``(G, R)`` GLWE ciphertexts: the argument times the reversed weight polynomials
        ``polys`` (C, R, Fc), plus ``bias`` (R,) uint64 at each row's result coefficient."""
        from fheml._core.glwe import glwe_add_plain, glwe_polynomial_matmul
        expected = (self.glwe_dimension, self.polynomial_size, self.input_coefficients(rows),
                    (self.groups(rows), self.chunks))
        if (ct.glwe_dimension, ct.polynomial_size, ct.coefficients, ct.shape) != expected:
            raise ValueError("the packed argument does not have the layout of this circuit "
                             f"for {rows} rows")
        out = glwe_polynomial_matmul(ct, polys)
        start, stop, step = self.result_coefficients(rows)
        plain = np.zeros((polys.shape[1], self.polynomial_size), dtype=np.uint64)
        plain[:, start:stop:step] = bias[:, None]
        return glwe_add_plain(out, plain)

    def _reversed_chunks(self, weights):
        """(C, R, Fc) int64: chunk ``c`` of column ``r`` of ``weights`` (F, R), reversed."""
        F, R = weights.shape
        padded = np.zeros((self.chunks * self.chunk_size, R), dtype=np.int64)
        padded[:F] = weights
        return np.ascontiguousarray(
            padded.reshape(self.chunks, self.chunk_size, R)[:, ::-1].transpose(0, 2, 1))

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
        return encrypt_glwe(key, encode(laid, self.input_precision),
                            word_bits=self.input_bits, carried=self.carried(rows))


class PackedPlan(_Layout):
    """Layout, parameters and weights of a packed linear circuit (see the module doc).

    Parameters
    ----------
    params : fheml._core.GlweParameters
        ``params.precision + 1`` is the bits ``M`` every digit is decrypted at.
    features : int
        ``F``, the flattened input size.
    outputs : int
        ``O``, the flattened total output size.
    precision : int
        ``P``, the circuit's precision: results are computed modulo ``2^P``, which holds
        every output (the compiler's worst-case bounds of each output span fewer than
        ``2^P`` values).
    input_max : int
        ``U``: the shifted inputs lie in ``[0, U]``.
    digits, digit_base_log : int, default=1, 0
        ``D`` weight digits in base ``2^k``.
    weights, bias : int64 arrays (F, O) and (O,), optional
        The affine map; only the server needs them.
    """

    def __init__(self, params, features, outputs, precision, input_max, digits=1,
                 digit_base_log=0, weights=None, bias=None):
        super().__init__(params.glwe_dimension, params.polynomial_size, features,
                         params.input_bits, params.precision)
        self.params = params
        self.outputs = _check_count("outputs", outputs, 1, _MAX_FEATURES)
        self.precision = _check_count("precision", precision, params.precision, 62)
        self.input_max = _check_count("input_max", input_max, 0,
                                      (1 << (params.precision + 1)) - 1)
        self.digits = _check_count("digits", digits, 1, _MAX_DIGITS)
        self.digit_base_log = _check_count("digit_base_log", digit_base_log,
                                           0 if digits == 1 else 1,
                                           0 if digits == 1 else _MAX_DIGIT_BASE_LOG)
        self.weights = weights
        self.bias = bias
        if weights is not None:
            self._set_weights(weights, bias)

    def _set_weights(self, weights, bias):
        F, O, D, k = self.features, self.outputs, self.digits, self.digit_base_log
        if weights.shape != (F, O) or bias.shape != (O,):
            raise ValueError("weights and bias do not match the plan")
        wd = weight_digits(weights, D, k)
        p = self.params
        bits = _modulus_bits(wd, k, self.input_max, self.precision) if D > 1 else \
            max(2, self.precision)
        if bits != p.precision + 1 or _digit_norm(wd) > p.norm2 * (1 + 1e-9):
            raise ValueError("the packed parameters do not fit these weights")
        # (C, O*D, Fc): chunk c's digit j of output o (at o*D + j), reversed
        self._polys = self._reversed_chunks(wd.transpose(1, 2, 0).reshape(F, O * D))
        # (O*D,) digit biases, reduced modulo 2^M
        self._bias = np.mod(digit_bias(bias, wd, k, self.input_max).T.reshape(-1),
                            1 << (p.precision + 1))

    @classmethod
    def with_weights_of(cls, plan, program):
        """``plan`` with the weights read off ``program`` (the server's copy), checking that
        the program is the affine map the plan was made for."""
        weights, bias = affine_map(program)
        if weights is None or weights.shape != (plan.features, plan.outputs):
            raise ValueError("the packed plan does not match the program")
        if plan.precision != program.precision:
            raise ValueError("the packed plan's precision does not match the program")
        return cls(plan.params, plan.features, plan.outputs, plan.precision, plan.input_max,
                   plan.digits, plan.digit_base_log, weights, bias)

    # -- description ---------------------------------------------------------------------
    _FIELDS = ("params", "features", "outputs", "precision", "input_max", "digits",
               "digit_base_log")

    def to_dict(self):
        """JSON-able description (what the client needs: no weights)."""
        out = {name: getattr(self, name) for name in self._FIELDS}
        out["params"] = self.params.to_dict()
        return out

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict` (ValueError on anything invalid)."""
        from fheml._core.parameters import GlweParameters
        if not isinstance(data, dict) or set(data) != set(cls._FIELDS):
            raise ValueError("bad packed-plan description")
        return cls(GlweParameters.from_dict(data["params"]),
                   *(data[name] for name in cls._FIELDS[1:]))

    def sizes(self, rows):
        """Bytes sent per call: ``(upload, result)`` (headers excluded)."""
        p, G, B = self.params, self.groups(rows), self.slots_used(rows)
        upload = -(-self.carried(rows) * p.input_bits // 8) + 32
        cts = G * self.outputs * self.digits
        result = -(-cts * B * p.output_bits // 8) + -(-cts * p.big_dimension * p.output_bits // 8)
        return upload, result

    def bytes_per_row(self):
        """Estimated peak memory of one row of a packed call, in bytes: its share of a
        group's input ciphertexts (regenerated masks included) and of their server copy,
        and of the ``O * D`` result ciphertexts on both sides, twice (temporaries)."""
        p = self.params
        words = (p.glwe_dimension + 1) * p.polynomial_size * 2 * (
            self.chunks + self.outputs * self.digits)
        return -(-2 * 8 * words // self.slots)

    def cost(self, rows):
        """Modelled time (ns) of a call: client encryption (one exact product per ciphertext),
        server products, client decryption (one exact product per result ciphertext) and
        the bytes sent both ways."""
        N, G, D = self.params.polynomial_size, self.groups(rows), self.digits
        product = _NS_EXACT_PRODUCT * N * math.log2(N)
        server = _NS_MULTIPLY_ADD * 2 * N * self.chunk_size * self.outputs * self.chunks * D
        upload, result = self.sizes(rows)
        return (G * (self.chunks * product + server + self.outputs * D * product)
                + _NS_UPLOAD_BYTE * upload + _NS_RESULT_BYTE * result)

    def cheaper_than_lwe(self, rows, lwe_dimension):
        """Whether packing beats one LWE ciphertext per value for a call of ``rows`` rows.

        The LWE path generates and multiplies ``F * (n + 1)`` mask words per row on the
        client, ``O`` multiply-adds per word on the server and decrypts ``O * (n + 1)``
        words per row; it uploads ``F`` 8-byte bodies per row (and a seed) and returns
        ``O * (n + 1)`` words.  Packing wins from one row on for tens of features; small
        inputs with few rows stay on the LWE path.
        """
        d = lwe_dimension + 1
        lwe = rows * d * (self.features * (_NS_LWE_MASK_WORD + self.outputs * _NS_LWE_MATMUL)
                          + self.outputs * _NS_LWE_MATMUL)
        lwe += (_NS_UPLOAD_BYTE * (8 * rows * self.features + 32)
                + _NS_RESULT_BYTE * 8 * rows * self.outputs * d)
        return self.cost(rows) < lwe

    # -- client --------------------------------------------------------------------------
    def decrypt(self, key, ct, rows):
        """Messages (rows, O) in ``[0, 2^P)`` (the outputs modulo ``2^P``) of a result of
        :meth:`evaluate`."""
        from fheml._core import decode
        from fheml._core.glwe import decrypt_glwe
        O, D = self.outputs, self.digits
        if (ct.coefficients != self.result_coefficients(rows) or len(ct.shape) != 2
                or ct.shape != (self.groups(rows), O * D)):
            raise ValueError("the result does not have the layout of this circuit for "
                             f"{rows} rows")
        m = decode(decrypt_glwe(key, ct), self.params.precision)     # (G, O*D, B)
        m = m.reshape(m.shape[0], O, D, -1)
        shifts = (np.arange(D, dtype=np.int64) * self.digit_base_log)[None, None, :, None]
        y = np.mod((m << shifts).sum(axis=2), 1 << self.precision)   # (G, O, B)
        return y.transpose(0, 2, 1).reshape(-1, O)[:rows]

    # -- server --------------------------------------------------------------------------
    def evaluate(self, ct, rows):
        """Products by the weight digits' polynomials, biases, modulus switch: the
        (G, O*D) result ciphertexts of a call of ``rows`` rows (digit ``j`` of output ``o``
        at ``o*D + j``)."""
        from fheml._core import encode
        from fheml._core.glwe import modulus_switch
        p = self.params
        out = self._products(ct, rows, self._polys, encode(self._bias, p.precision))
        return modulus_switch(out, word_bits=p.output_bits).with_coefficients(
            *self.result_coefficients(rows))


def plan_packing(program, p_error, input_max, polynomial_size=None, digits=None):
    """The packed plan of a finalized program, or None when it is not a packed-linear one.

    Parameters
    ----------
    program : Program
        Finalized (``precision`` set).
    p_error : float
        Failure probability of each decrypted output (``p_error / D`` for each of its
        ``D`` digits).
    input_max : int
        ``U``: the shifted input values lie in ``[0, U]`` (``hi - lo`` of its spec).
    polynomial_size : int, optional
        Force ``N`` (tests); default: the smallest secure size of at least ``8 * F`` (up to
        16384) whose noise fits.
    digits : tuple (D, k), optional
        Force the weight digits (tests); default: the cheapest by :meth:`PackedPlan.cost`.
    """
    from fheml._core.parameters import select_glwe_parameters
    weights, bias = affine_map(program)
    if weights is None:
        return None
    F, O = weights.shape
    P = program.precision
    if polynomial_size is None:
        min_size = min(_MAX_AUTO_POLYNOMIAL_SIZE, 1 << max(0, (_SLACK * F - 1).bit_length()))
    else:
        min_size = polynomial_size
    if digits is not None:
        choices = [digits]
    else:
        choices = [(1, 0)] + [(D, k) for D in range(2, _MAX_DIGITS + 1)
                              for k in range(1, _MAX_DIGIT_BASE_LOG + 1)]
    best = None
    for D, k in choices:
        wd = weight_digits(weights, D, k)
        bits = _modulus_bits(wd, k, input_max, P) if D > 1 else max(2, P)
        if bits is None:
            continue
        try:
            # the output fails if any of its D digits does: p_error / D each
            params = select_glwe_parameters(bits - 1, p_error / D, _digit_norm(wd), min_size)
        except ValueError:
            continue
        if polynomial_size is not None and params.polynomial_size != polynomial_size:
            continue
        plan = PackedPlan(params, F, O, P, input_max, D, k)
        if best is None or plan.cost(plan.slots) / plan.slots < best.cost(best.slots) / best.slots:
            best = plan
    if best is None:
        return None
    return PackedPlan(best.params, F, O, P, input_max, best.digits, best.digit_base_log,
                      weights, bias)


class FirstLayerPlan(_Layout):
    """The packed first layer of a circuit with lookups (see :func:`first_layer`).

    The client encrypts rows as GLWE ciphertexts under the GLWE key of the bootstrapping
    key set (:meth:`~fheml._core.SecretKeys.glwe_secret_key`), words whole (no rounding:
    the noise of each frontier value is the LWE path's, ``nu^2 sigma^2`` with the same
    ``sigma``); the server multiplies them by the frontier's reversed weight polynomials,
    adds the biases and sample-extracts each row's value to an LWE ciphertext under the big
    key, encoded as the LWE path's linear stage would have it, then runs the rest of the
    circuit (keyswitch, bootstrap...) as usual.

    Parameters
    ----------
    params : fheml._core.ParameterSet
        The circuit's (bootstrapping) parameters.
    features : int
    precision : int
        The circuit's precision.
    input_precision : int
        Encoding of the argument's partition (``2^(63 - p)`` per unit).
    weights, bias : int64 arrays (F, R) and (R,), optional
        The frontier's affine map (server only).
    prefix : set of int, optional
        From :func:`first_layer` (server only): nodes the server does not compute.
    frontier : list of (int, tuple), optional
        The frontier's nodes and shapes (server only), in the order of the weights.
    """

    def __init__(self, params, features, precision, input_precision, weights=None,
                 bias=None, prefix=None, frontier=None):
        super().__init__(params.glwe_dimension, params.polynomial_size, features, 64,
                         _check_count("input_precision", input_precision, 1, 62))
        self.params = params
        self.precision = _check_count("precision", precision, input_precision, 62)
        self.weights, self.bias = weights, bias
        self.prefix, self.frontier = prefix, frontier
        if weights is not None:
            from fheml._core import encode
            self._polys = self._reversed_chunks(weights)
            self._bias = encode(np.mod(bias, 1 << (input_precision + 1)), input_precision)

    @classmethod
    def with_weights_of(cls, plan, program):
        """``plan`` with the frontier's map read off ``program`` (the server's copy)."""
        split = first_layer(program)
        if split is None or plan.precision != program.precision:
            raise ValueError("the packed plan does not match the program")
        weights, bias = frontier_map(program, *split)
        if weights is None or weights.shape[0] != plan.features:
            raise ValueError("the packed plan does not match the program")
        return cls(plan.params, plan.features, plan.precision, plan.input_precision,
                   weights, bias, split[0], [(k, program.nodes[k].shape) for k in split[1]])

    def to_dict(self):
        """JSON-able description (no weights; the parameters are the circuit's)."""
        return {"first_layer": True, "features": self.features, "precision": self.precision,
                "input_precision": self.input_precision}

    @classmethod
    def from_dict(cls, data, params):
        """Inverse of :meth:`to_dict` for a circuit of parameters ``params``."""
        if not isinstance(data, dict) or set(data) != {"first_layer", "features", "precision",
                                                       "input_precision"}:
            raise ValueError("bad packed-plan description")
        if not params.has_bootstrap:
            raise ValueError("a packed first layer needs bootstrapping parameters")
        return cls(params, data["features"], data["precision"], data["input_precision"])

    def cheaper_than_lwe(self, rows, lwe_dimension):
        """Whether the packed first layer beats one LWE ciphertext per input value.

        Both send whole 64-bit words and then the same LWE values.  The packed path costs
        per ciphertext ``k`` mask polynomials and exact products on the client and
        ``(k N + B Fc) Fc`` multiply-adds per frontier value on the server, then the
        sample extraction of ``k N + 1`` words per row and frontier value, and a fixed
        cost per call; the LWE path ``F (n + 1)`` mask words per row and ``F (n + 1)``
        multiply-adds per frontier value and row.  One row of a few features stays on
        the LWE path; tens of features (an MLP's input) or many rows are packed.
        """
        N, k, G, R = self.polynomial_size, self.glwe_dimension, self.groups(rows), \
            self.weights_count
        B, Fc, d = self.slots_used(rows), self.chunk_size, lwe_dimension + 1
        product = _NS_EXACT_PRODUCT * N * math.log2(N) + _NS_LWE_MASK_WORD * N
        packed = G * self.chunks * (k * product
                                    + _NS_MULTIPLY_ADD * (k * N + B * Fc) * Fc * R)
        packed += _NS_EXTRACT_WORD * rows * R * (k * N + 1) + _NS_PACKED_CALL
        lwe = rows * d * self.features * (_NS_LWE_MASK_WORD + R * _NS_LWE_MATMUL)
        return packed < lwe

    @property
    def weights_count(self):
        """Frontier values per row (an upper bound on the client, which has no weights)."""
        return self.weights.shape[1] if self.weights is not None else self.features

    def evaluate(self, ct, rows):
        """The frontier's values of a call: {node: LWE data (rows, *shape, k N + 1)}."""
        from fheml._core.glwe import sample_extract
        out = self._products(ct, rows, self._polys, self._bias)
        idx = np.arange(*self.result_coefficients(rows))
        data = sample_extract(out, idx).data                  # (G, R, B, kN + 1)
        data = data.transpose(0, 2, 1, 3).reshape(-1, *data.shape[1:2], data.shape[-1])
        data = data[:rows]
        values, start = {}, 0
        for k, shape in self.frontier:
            size = int(np.prod(shape, dtype=np.int64))
            values[k] = np.ascontiguousarray(data[:, start:start + size]).reshape(
                (rows,) + shape + (data.shape[-1],))
            start += size
        return values


def plan_first_layer(program, params):
    """The packed first layer of a finalized program with lookups, or None."""
    split = first_layer(program)
    if split is None or not params.has_bootstrap:
        return None
    prefix, frontier = split
    weights, bias = frontier_map(program, prefix, frontier)
    if weights is None:
        return None
    # the frontier's noise is nu^2 sigma^2 on both paths (the same linear combination of
    # independent fresh noises); refuse a map whose norm exceeds the compiler's bound
    nodes, start = program.nodes, 0
    for k in frontier:
        size = int(np.prod(nodes[k].shape, dtype=np.int64))
        norms = np.sqrt((weights[:, start:start + size].astype(np.float64) ** 2).sum(axis=0))
        if norms.size and norms.max() > max(nodes[k].nu, 1.0) * (1 + 1e-9):
            return None
        start += size
    inp = nodes[program.input_nodes[0]]
    return FirstLayerPlan(params, weights.shape[0], program.precision, inp.precision, weights,
                          bias, prefix, [(k, nodes[k].shape) for k in frontier])


def packed_plan_from_dict(data, params):
    """A client's packed plan (:class:`PackedPlan` or :class:`FirstLayerPlan`) from its
    description (ValueError on anything invalid)."""
    if isinstance(data, dict) and data.get("first_layer") is True:
        return FirstLayerPlan.from_dict(data, params)
    return PackedPlan.from_dict(data)
