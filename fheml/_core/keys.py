"""Secret keys, evaluation keys and LWE ciphertexts (the client/server entities).

The client holds :class:`SecretKeys`; it sends :class:`EvaluationKeys` (no secret) and
:class:`LweCiphertext` batches to the server.  Evaluation keys are *seeded*: their masks
come from a public 32-byte seed, so only the bodies and the seed travel; the server
regenerates the masks, rebuilds the full keys and moves the bootstrapping key to the
Fourier domain once.
"""

import hashlib
import math
import os
import secrets
import threading
import warnings

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from fheml._core import _kernels
from fheml._core._csprng import Csprng, keystream_u64
from fheml._core.parameters import (
    MAX_LWE_DIMENSION,
    ParameterSet,
    key_weight,
    log2_p_fail,
    max_key_weight,
)
from fheml._core.serialization import (
    LimitExceededError,
    MismatchError,
    SerializationError,
    check_int,
    pack,
    peer_data,
    unpack,
)
from fheml._progress import progress

# Domain separation of the ChaCha20 streams drawn from one seed.
_STREAM_KSK_MASKS = 1
_STREAM_BSK_MASKS = 2
_STREAM_KEY_BITS = 3
_STREAM_CT_MASKS = 4
_STREAM_GLWE_MASKS = 5

INSECURE_SEED_ENV = "FHEML_INSECURE_TEST_SEED"

# Masks are regenerated in chunks of this many words (peak memory: the ciphertexts
# themselves plus one chunk).
_MASK_CHUNK_WORDS = 1 << 19
# Default bound on the ciphertext bytes a seeded batch may expand to when loaded
# (LweCiphertext.from_bytes / from_parts); a Server sets its own (ServerLimits).
MAX_EXPANDED_BYTES = 1 << 32
# A uniform binary key of d bits has Hamming weight d/2 +- sqrt(d)/2; a weight further than
# this many standard deviations from d/2 happens with probability < 2^-70 for a real key.
_KEY_WEIGHT_SIGMAS = 11.0


class InsecureKeyWarning(UserWarning):
    """Use of secret keys made from a fixed test seed (predictable: tests only)."""

_plans = {}


def _fourier_plan(polynomial_size):
    plan = _plans.get(polynomial_size)
    if plan is None:
        plan = _plans.setdefault(polynomial_size, _kernels.FourierPlan(polynomial_size))
    return plan


def _delta(precision):
    """Scale of a message of ``precision`` bits with one padding bit: 2^64 / 2^(p+1)."""
    return np.uint64(1) << np.uint64(63 - precision)


def _check_bits(precision, what="precision"):
    """An integer number of message bits in 1..62 (one padding bit is added)."""
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {precision!r}")
    precision = int(precision)
    if not 1 <= precision <= 62:
        raise ValueError(f"{what} must be in 1..62, got {precision}")
    return precision


def encode(values, precision):
    """Plaintexts m * Delta (mod 2^64) of integer messages of ``precision`` bits.

    Values must lie in ``[-2^precision, 2^(precision+1))``: the signed and the unsigned
    reading of the ``precision + 1`` bits (message and padding bit); negative values wrap.
    """
    precision = _check_bits(precision)
    v = np.asarray(values)
    if v.dtype == bool:
        v = v.astype(np.int64)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"encode takes integers, got {v.dtype}")
    lo, hi = -(1 << precision), 1 << (precision + 1)
    if v.size and (int(v.min()) < lo or int(v.max()) >= hi):
        raise ValueError(f"values must be in [{lo}, {hi}) to be encoded on {precision} bits; "
                         f"got [{v.min()}, {v.max()}]")
    return v.astype(np.int64).astype(np.uint64) * _delta(precision)


def decode(phase, precision, signed=False):
    """Round torus phases to messages of ``precision`` bits (plus the padding bit)."""
    precision = _check_bits(precision)
    phase = np.asarray(phase)
    if phase.dtype != np.uint64:
        raise TypeError(f"phases must be uint64 torus values, got {phase.dtype}")
    shift = np.uint64(63 - precision)
    rounded = (phase + (np.uint64(1) << (shift - np.uint64(1)))) >> shift
    mod = np.uint64(1) << np.uint64(precision + 1)
    m = (rounded % mod).astype(np.int64)
    if signed:
        m = np.where(m >= (1 << precision), m - (1 << (precision + 1)), m)
    return m


def _check_precision(params, precision, what="precision", variance=None):
    """Bits of a message, defaulting to the parameters' precision.

    With ``variance`` (the error variance of the ciphertexts concerned), refuse a precision
    at which the modelled failure probability exceeds the set's ``p_error``.
    """
    if precision is None:
        return params.precision
    precision = _check_bits(precision, what)
    if variance is not None and log2_p_fail(variance, precision) > \
            math.log2(params.p_error) + 1e-9:
        raise ValueError(
            f"{what}={precision} is more than the noise of these parameters can carry: a "
            f"message of {precision} bits would be wrong with probability "
            f"2^{log2_p_fail(variance, precision):.1f}, above the set's p_error "
            f"2^{math.log2(params.p_error):.1f}")
    return precision


def _check_key_bits(bits, shape, name):
    """A 0/1 key of the given shape, checked before any cast; returned as uint8."""
    bits = np.asarray(bits)
    if bits.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {bits.shape}")
    if bits.dtype != np.uint8 and bits.dtype != bool:
        raise TypeError(f"{name} must be stored as uint8 (or bool), got {bits.dtype}")
    if bits.size and bits.view(np.uint8).max() > 1:
        raise ValueError("secret keys must be binary")
    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    d = bits.size
    if d:
        weight = int(np.count_nonzero(bits))
        if abs(weight - d / 2) > _KEY_WEIGHT_SIGMAS * math.sqrt(d) / 2:
            raise ValueError(
                f"{name} has {weight} bits set out of {d}: implausible for a uniformly "
                "random binary key (corrupted or forged key)")
    return bits


class LweCiphertext:
    """A batch of LWE ciphertexts, ``data`` of shape ``(*shape, dimension + 1)`` uint64.

    ``key_id`` names the key the batch is encrypted under, so that a batch is never
    decrypted or bootstrapped with someone else's keys by mistake.

    A fresh encryption draws its masks from a public 32-byte seed: serialized, it carries
    only the seed and the bodies (``dimension + 1`` times smaller).  Its ``data`` is made
    read-only so that the seed always stands for the masks (nothing is hashed per call); a
    batch made writable again is serialized in full, and so are results of operations.
    """

    __slots__ = ("data", "key_id", "_mask_seed")

    def __init__(self, data, key_id, *, mask_seed=None):
        data = np.asarray(data)
        if data.dtype != np.uint64 or data.ndim < 1:
            raise TypeError("ciphertext data must be a uint64 array with a last axis (mask, body)")
        if mask_seed is not None:
            # the masks are those of the seed: read-only from here on (a fresh array)
            data.flags.writeable = False
        self.data = data
        self.key_id = str(key_id)
        self._mask_seed = mask_seed

    @property
    def dimension(self):
        return self.data.shape[-1] - 1

    @property
    def shape(self):
        return self.data.shape[:-1]

    def __len__(self):
        return self.data.shape[0] if self.data.ndim > 1 else 1

    def __repr__(self):
        return f"LweCiphertext(shape={self.shape}, dimension={self.dimension})"

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], tuple):
            shape = shape[0]
        return LweCiphertext(self.data.reshape(*shape, self.dimension + 1), self.key_id)

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            index = (index,)
        return LweCiphertext(self.data[index + (Ellipsis, slice(None))], self.key_id)

    # Linear operators (see fheml._core.linear); clear operands must be integers.
    def __add__(self, other):
        from fheml._core import linear
        return linear.add(self, other)

    def __sub__(self, other):
        from fheml._core import linear
        return linear.subtract(self, other)

    def __neg__(self):
        from fheml._core import linear
        return linear.negate(self)

    def __mul__(self, weights):
        from fheml._core import linear
        return linear.multiply(self, weights)

    __rmul__ = __mul__

    def __matmul__(self, weights):
        from fheml._core import linear
        return linear.matmul(self, weights)

    def to_parts(self):
        """(JSON-able header, arrays) of the compact serialized form (see the class doc)."""
        meta = {"key_id": self.key_id, "dimension": self.dimension}
        if self._mask_seed is not None and not self.data.flags.writeable:
            meta["mask_seed"] = self._mask_seed.hex()
            return meta, [np.ascontiguousarray(self.data[..., -1])]
        return meta, [self.data]

    @classmethod
    def from_parts(cls, meta, arrays, *, expected_key_id=None, expected_dimension=None,
                   max_expanded_bytes=MAX_EXPANDED_BYTES):
        """Inverse of :meth:`to_parts` (regenerates the masks of a seeded batch).

        Everything is checked before the masks are expanded: the dimension (against
        ``expected_dimension`` when given), the key id and the size of the expanded batch
        (at most ``max_expanded_bytes``, else :class:`LimitExceededError`).

        Raises
        ------
        SerializationError
        """
        with peer_data("ciphertext"):
            return cls._from_parts(meta, arrays, expected_key_id, expected_dimension,
                                   max_expanded_bytes)

    @classmethod
    def _from_parts(cls, meta, arrays, expected_key_id, expected_dimension, max_expanded_bytes):
        if not isinstance(meta, dict) or len(arrays) != 1 or arrays[0].dtype != np.uint64:
            raise SerializationError("ciphertext: expected a header and one uint64 array")
        unknown = set(meta) - {"key_id", "dimension", "mask_seed", "encrypted"}
        if unknown:
            raise SerializationError(f"ciphertext: unknown header fields {sorted(unknown)}")
        key_id = meta.get("key_id")
        if not isinstance(key_id, str) or len(key_id) > 256:
            raise SerializationError("ciphertext: key id must be a string")
        dim = check_int(meta.get("dimension"), "ciphertext: dimension", 1, MAX_LWE_DIMENSION)
        if expected_dimension is not None and dim != expected_dimension:
            raise MismatchError(
                f"ciphertext dimension {dim} does not match the parameters "
                f"({expected_dimension})")
        if expected_key_id is not None and key_id != expected_key_id:
            raise MismatchError("ciphertext was encrypted under other keys than expected")
        array = arrays[0]
        seed = meta.get("mask_seed")
        if seed is None:
            if array.ndim < 1 or array.shape[-1] != dim + 1:
                raise SerializationError("ciphertext: dimension does not match its data")
            return cls(array, key_id)
        if not isinstance(seed, str) or len(seed) != 64:
            raise SerializationError("ciphertext: mask seed must be 32 bytes (64 hex digits)")
        seed = bytes.fromhex(seed)
        expanded = array.size * (dim + 1) * 8
        if max_expanded_bytes is not None and expanded > max_expanded_bytes:
            raise LimitExceededError("max_expanded_bytes", expanded, max_expanded_bytes,
                                     f"{array.size} ciphertexts of dimension {dim}")
        data = np.empty(array.shape + (dim + 1,), dtype=np.uint64)
        flat = data.reshape(-1, dim + 1)
        _fill_ct_masks(seed, flat)
        flat[:, dim] = array.reshape(-1)
        return cls(data, key_id, mask_seed=seed)

    def to_bytes(self):
        meta, arrays = self.to_parts()
        return pack("ciphertext", meta, arrays)

    @classmethod
    def from_bytes(cls, data, *, expected_key_id=None, expected_dimension=None,
                   max_expanded_bytes=MAX_EXPANDED_BYTES):
        """Load a batch; see :meth:`from_parts` for the checks (all done before the masks
        of a seeded batch are expanded).

        Raises
        ------
        SerializationError
        """
        header, arrays = unpack(data, "ciphertext")
        return cls.from_parts(header, arrays, expected_key_id=expected_key_id,
                              expected_dimension=expected_dimension,
                              max_expanded_bytes=max_expanded_bytes)


def _fill_ct_masks(seed, data):
    """Write the masks of seed into the first columns of ``data`` (rows, d + 1), a chunk of
    rows at a time: no mask array as large as the batch is ever materialized."""
    rows, d = data.shape[0], data.shape[1] - 1
    step = max(1, _MASK_CHUNK_WORDS // max(d, 1))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        data[r0:r1, :d] = keystream_u64(seed, _STREAM_CT_MASKS, r0 * d, (r1 - r0) * d) \
            .reshape(r1 - r0, d)


def _params_header(params):
    return {"params": params.to_dict()}


def params_from_header(header, kind):
    """The ParameterSet of a serialized header (validated), or SerializationError."""
    if not isinstance(header, dict) or "params" not in header:
        raise SerializationError(f"{kind}: no parameters in the header")
    with peer_data(f"{kind}: invalid parameters"):
        return ParameterSet.from_dict(header["params"])


def _bounded_weight_key(rng, shape, grouping_factor):
    """Uniform key bits, drawn again while their weight exceeds the bound the noise model
    charges (parameters.max_key_weight: about one draw in 44)."""
    size = math.prod(shape)
    bound = max_key_weight(size, grouping_factor) if size else 0
    while True:
        bits = rng.binary(shape)
        if key_weight(bits, grouping_factor) <= bound:
            return bits


class SecretKeys:
    """The client's keys: a binary LWE key (dimension n) and a binary GLWE key (k x N).

    Ciphertexts are encrypted under the GLWE key read as an LWE key of dimension k*N (the
    "big" key), the output key of the bootstrap.  For parameter sets without bootstrap
    there is only the LWE key and ciphertexts use it directly.

    Use :meth:`generate`; the constructor takes already generated key bits.
    """

    def __init__(self, params, lwe_key, glwe_key, key_id, *, insecure=False):
        if not isinstance(params, ParameterSet):
            raise TypeError("params must be a ParameterSet")
        self.lwe_key = _check_key_bits(lwe_key, (params.lwe_dimension,), "LWE key")
        self.glwe_key = _check_key_bits(
            glwe_key, (params.glwe_dimension, params.polynomial_size), "GLWE key")
        self.params = params
        self.key_id = str(key_id)
        self.insecure = bool(insecure)
        heavy = [name for name, bits, g in (
            ("LWE key", self.lwe_key, params.grouping_factor), ("GLWE key", self.glwe_key, 1))
            if bits.size and key_weight(bits, g) > max_key_weight(bits.size, g)]
        if heavy:
            # keys saved before keygen bounded the weight (1 in 44 were heavier)
            warnings.warn(
                f"the {' and '.join(heavy)} of these secret keys "
                f"{'is' if len(heavy) == 1 else 'are'} heavier than the noise "
                "model assumes (parameters.max_key_weight): lookups may fail more often "
                f"than p_error={params.p_error:.3g}; generate new keys with "
                "SecretKeys.generate", RuntimeWarning, stacklevel=2)

    def _warn_if_insecure(self):
        if self.insecure:
            warnings.warn(
                "these secret keys were made from a fixed test seed: anyone who knows the seed "
                "can decrypt; never use them outside tests", InsecureKeyWarning, stacklevel=3)

    @classmethod
    def generate(cls, params, *, seed=None):
        """Fresh keys from the operating system's CSPRNG.

        ``seed`` (32 bytes) makes the key bits reproducible and exists for tests only: it
        is refused unless the environment variable ``FHEML_INSECURE_TEST_SEED=1`` is set,
        and keys made that way are marked ``insecure``.
        """
        if not isinstance(params, ParameterSet):
            raise TypeError("params must be a ParameterSet (see fheml._core.select_parameters)")
        insecure = seed is not None
        if insecure and os.environ.get(INSECURE_SEED_ENV) != "1":
            raise RuntimeError(
                "a fixed seed makes secret keys predictable; it is only accepted in tests "
                f"with the environment variable {INSECURE_SEED_ENV}=1"
            )
        rng = Csprng(seed, stream=_STREAM_KEY_BITS)
        lwe_key = _bounded_weight_key(rng, (params.lwe_dimension,), params.grouping_factor)
        glwe_key = _bounded_weight_key(rng, (params.glwe_dimension, params.polynomial_size), 1)
        return cls(params, lwe_key, glwe_key, secrets.token_hex(16), insecure=insecure)

    def __repr__(self):
        return f"SecretKeys(key_id={self.key_id[:8]}..., {self.params})"

    def __reduce__(self):
        raise TypeError("SecretKeys cannot be pickled; use to_bytes() and keep it private")

    @property
    def big_key(self):
        """The key ciphertexts are encrypted under, as a flat 0/1 vector."""
        if self.params.has_bootstrap:
            return self.glwe_key.reshape(-1)
        return self.lwe_key

    # -- encryption -------------------------------------------------------------------
    def encrypt(self, values, precision=None, *, signed=False):
        """Encrypt integers of ``precision`` bits (default: the parameters' precision).

        Values must lie in ``[0, 2^precision)``, or in ``[-2^(precision-1), 2^(precision-1))``
        with ``signed=True`` (no lookup may then read them without an offset).
        """
        self._warn_if_insecure()
        precision = _check_precision(self.params, precision,
                                     variance=self.params.big_noise_std ** 2)
        v = np.asarray(values)
        if v.dtype == bool:
            v = v.astype(np.int64)
        if not np.issubdtype(v.dtype, np.integer):
            if np.issubdtype(v.dtype, np.floating) and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
                v = v.astype(np.int64)
            else:
                raise TypeError("encrypt takes integers (quantize floats first)")
        lo, hi = (-(1 << (precision - 1)), 1 << (precision - 1)) if signed else (0, 1 << precision)
        if v.size and (v.min() < lo or v.max() >= hi):
            raise ValueError(
                f"values must be in [{lo}, {hi}) for {precision}-bit "
                f"{'signed' if signed else 'unsigned'} encryption; got [{v.min()}, {v.max()}]"
            )
        return self._encrypt_plaintexts(encode(v, precision))

    def _encrypt_plaintexts(self, plain):
        plain = np.asarray(plain, dtype=np.uint64)
        key = self.big_key
        d = key.shape[0]
        # Masks from a fresh public seed (the batch then serializes as seed + bodies); noise
        # from a separate fresh OS-seeded stream, never derivable from what is sent.
        mask_seed = os.urandom(32)
        flat = plain.reshape(-1)
        data = np.empty((flat.shape[0], d + 1), dtype=np.uint64)
        _fill_ct_masks(mask_seed, data)
        body = _kernels.dot_binary(data, key)
        body += flat + Csprng().gaussian_torus(flat.shape[0], self.params.big_noise_std)
        data[:, d] = body
        return LweCiphertext(data.reshape(*plain.shape, d + 1), self.key_id, mask_seed=mask_seed)

    def phase(self, ct):
        """b - <a, s> of every ciphertext (message plus noise, as torus uint64)."""
        self._warn_if_insecure()
        return self._phase(ct)

    def _phase(self, ct):
        ct = self._check_ct(ct)
        a = np.ascontiguousarray(ct.data.reshape(-1, ct.dimension + 1))
        ph = a[:, -1] - _kernels.dot_binary(a, self.big_key)
        return ph.reshape(ct.shape)

    def decrypt(self, ct, precision=None, *, signed=False):
        """Decrypt to integers of ``precision`` bits; ``signed`` reads the padding bit as a
        sign (values in ``[-2^p, 2^p)``), otherwise values are in ``[0, 2^(p+1))``."""
        self._warn_if_insecure()
        precision = _check_precision(self.params, precision,
                                     variance=self.params.variance_output)
        return decode(self._phase(ct), precision, signed=signed)

    def _check_ct(self, ct):
        if not isinstance(ct, LweCiphertext):
            raise TypeError(f"expected an LweCiphertext, got {type(ct).__name__}")
        if ct.key_id != self.key_id:
            raise ValueError("this ciphertext was encrypted under other keys")
        if ct.dimension != self.big_key.shape[0]:
            raise ValueError(
                f"ciphertext dimension {ct.dimension} does not match the key "
                f"({self.big_key.shape[0]})"
            )
        return ct

    def glwe_secret_key(self):
        """The GLWE key as a :class:`~fheml._core.glwe.GlweSecretKey` (same key id): GLWE
        ciphertexts under it sample-extract to LWE ciphertexts under :attr:`big_key`."""
        from fheml._core.glwe import GlweSecretKey
        if not self.params.has_bootstrap:
            raise ValueError("parameters without bootstrapping have no GLWE key")
        return GlweSecretKey(self.glwe_key, self.key_id, self.params.glwe_noise_std,
                             insecure=self.insecure)

    def derived_glwe_key(self, glwe_dimension, polynomial_size, noise_std):
        """A GLWE key ``(k, N)`` for packed encryption, derived from this key set's secret
        bits (ChaCha20 keyed with a domain-separated SHA-256 of them), under the same key id.

        The same after :meth:`to_bytes` / :meth:`from_bytes`, so a reloaded client still
        decrypts packed results; the LWE key's ``n >= 256`` uniform bits make the seed
        unguessable, and the derived key is independent of the others as far as the hash
        behaves as a random oracle.
        """
        from fheml._core.glwe import GlweSecretKey
        digest = hashlib.sha256(b"fheml derived GLWE key\0" + np.array(
            [glwe_dimension, polynomial_size], dtype="<u8").tobytes() + self.lwe_key.tobytes()
            + self.glwe_key.tobytes()).digest()
        bits = Csprng(digest, stream=_STREAM_KEY_BITS).binary((glwe_dimension, polynomial_size))
        return GlweSecretKey(bits, self.key_id, noise_std, insecure=self.insecure)

    # -- evaluation keys ---------------------------------------------------------------
    def evaluation_keys(self, verbose=None):
        """Keyswitching and bootstrapping keys for the server (seeded; no secret inside).

        Parameters
        ----------
        verbose : bool, optional
            Progress report (see :mod:`fheml._progress`).
        """
        self._warn_if_insecure()
        p = self.params
        if not p.has_bootstrap:
            return EvaluationKeys(p, self.key_id, None, None, None)
        mask_seed = os.urandom(32)
        noise = Csprng()
        # bodies, then the server-side expansion the client does too (one step per GGSW)
        with progress(2 * p.bsk_ggsw_count, "Key generation", unit="GGSW",
                      verbose=verbose) as bar:
            ksk_bodies = _ksk_bodies(p, self.lwe_key, self.glwe_key.reshape(-1), mask_seed,
                                     noise)
            bsk_bodies = _bsk_bodies(p, self.lwe_key, self.glwe_key, mask_seed, noise, bar)
            return EvaluationKeys(p, self.key_id, mask_seed, ksk_bodies, bsk_bodies, bar=bar)

    # -- bytes -------------------------------------------------------------------------
    def to_bytes(self):
        """Serialize (this is the secret: store it encrypted at rest, never send it)."""
        header = _params_header(self.params)
        header.update(key_id=self.key_id, insecure=self.insecure)
        return pack("secret-keys", header, [self.lwe_key, self.glwe_key])

    @classmethod
    def from_bytes(cls, data):
        """Load keys saved by :meth:`to_bytes`: uint8 arrays, binary values, plausible weight.

        Raises
        ------
        SerializationError
        """
        header, arrays = unpack(data, "secret-keys")
        params = params_from_header(header, "secret-keys")
        if len(arrays) != 2 or any(a.dtype != np.uint8 for a in arrays):
            raise SerializationError("secret-keys: expected two uint8 key arrays")
        key_id, insecure = header.get("key_id"), header.get("insecure", False)
        if not isinstance(key_id, str) or not isinstance(insecure, bool):
            raise SerializationError("secret-keys: bad key id or insecure flag")
        with peer_data("secret-keys"):
            return cls(params, arrays[0], arrays[1], key_id, insecure=insecure)


# ---------------------------------------------------------------- key generation ----

def _ksk_masks(params, mask_seed, row_start, row_stop):
    n = params.lwe_dimension
    words = keystream_u64(mask_seed, _STREAM_KSK_MASKS, row_start * n, (row_stop - row_start) * n)
    return words.reshape(row_stop - row_start, n)


def _ksk_bodies(params, lwe_key, big_key, mask_seed, noise):
    """Bodies of the keyswitching key: row (i, l) encrypts big_key[i] * 2^(64 - (l+1) B)."""
    n_in, levels, base_log = big_key.shape[0], params.ks_level, params.ks_base_log
    rows = n_in * levels
    bodies = np.empty(rows, dtype=np.uint64)
    gadget = np.array([1 << (64 - (l + 1) * base_log) for l in range(levels)], dtype=np.uint64)
    messages = (big_key.astype(np.uint64)[:, None] * gadget[None, :]).reshape(-1)
    chunk = max(1, (1 << 22) // params.lwe_dimension)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        masks = _ksk_masks(params, mask_seed, r0, r1)
        b = _kernels.dot_binary(masks, lwe_key)
        b += messages[r0:r1] + noise.gaussian_torus(r1 - r0, params.lwe_noise_std)
        bodies[r0:r1] = b
    return bodies.reshape(n_in, levels)


def _bsk_masks(params, mask_seed, i):
    k, N, R = params.glwe_dimension, params.polynomial_size, (params.glwe_dimension + 1) * params.pbs_level
    per = R * k * N
    return keystream_u64(mask_seed, _STREAM_BSK_MASKS, i * per, per).reshape(R, k, N)


def _bsk_messages(lwe_key, grouping_factor):
    """The bits the GGSWs of the bootstrapping key encrypt: the LWE key bits (classic), or
    for each group j of g bits and each c in 1..2^g - 1 the indicator that the group's bits
    (bit t of c for key bit j*g + t) equal c (multi-bit)."""
    if grouping_factor == 1:
        return lwe_key
    groups = lwe_key.reshape(-1, grouping_factor).astype(np.int64)
    value = (groups << np.arange(grouping_factor)).sum(axis=1)
    subsets = np.arange(1, 1 << grouping_factor)
    return (value[:, None] == subsets[None, :]).reshape(-1).astype(np.uint8)


def _bsk_bodies(params, lwe_key, glwe_key, mask_seed, noise, bar):
    """Bodies of the GGSW encryptions of the bootstrapping key's messages
    (:func:`_bsk_messages`) under the GLWE key.

    Row (q, l) of GGSW(mu) has phase E + mu * g_l, added to the body when q == k and as
    -mu * g_l * S_q when q < k, so that the masks stay pure seed output.
    """
    k, N, levels = params.glwe_dimension, params.polynomial_size, params.pbs_level
    R = (k + 1) * params.pbs_level
    plan = _fourier_plan(N)
    gadget = [1 << (64 - (l + 1) * params.pbs_base_log) for l in range(levels)]
    messages = _bsk_messages(lwe_key, params.grouping_factor)
    bodies = np.empty((messages.size, R, N), dtype=np.uint64)
    for i in range(messages.size):
        masks = _bsk_masks(params, mask_seed, i)
        b = noise.gaussian_torus((R, N), params.glwe_noise_std)
        for q in range(k):
            _kernels.mul_binary_exact(plan, glwe_key[q], masks[:, q, :], out=b)
        if messages[i]:
            for l in range(levels):
                g = np.uint64(gadget[l])
                for q in range(k):
                    b[q * levels + l] -= glwe_key[q].astype(np.uint64) * g
                b[k * levels + l, :1] += g  # an array op: wraps mod 2^64 without a warning
        bodies[i] = b
        bar.update()
    return bodies


def _top32(x):
    """Round torus words to their top 32 bits."""
    return ((x >> np.uint64(32)) + ((x >> np.uint64(31)) & np.uint64(1))).astype(np.uint32)


class EvaluationKeys:
    """The server's keys: keyswitching key and bootstrapping key (Fourier domain).

    Built from seeded bodies (what the client sends); the full keys are regenerated here.
    """

    def __init__(self, params, key_id, mask_seed, ksk_bodies, bsk_bodies, *, bar=None):
        self.params = params
        self.key_id = str(key_id)
        self.mask_seed = mask_seed
        self._ksk_bodies = ksk_bodies
        self._bsk_bodies = bsk_bodies
        self.ksk = None
        self.bsk_fourier = None
        if params.has_bootstrap:
            if bar is None:
                with progress(params.bsk_ggsw_count, "Expanding evaluation keys",
                              unit="GGSW") as bar:
                    self._expand(bar)
            else:
                self._expand(bar)

    def _expand(self, bar):
        p = self.params
        k, N, n = p.glwe_dimension, p.polynomial_size, p.lwe_dimension
        kN, L, R, count = k * N, p.ks_level, (k + 1) * p.pbs_level, p.bsk_ggsw_count
        if not (isinstance(self.mask_seed, bytes) and len(self.mask_seed) == 32):
            raise ValueError("mask seed must be 32 bytes")
        if self._ksk_bodies.shape != (kN, L) or self._bsk_bodies.shape != (count, R, N):
            raise ValueError("evaluation key bodies do not match the parameters")
        # The kernel keeps the top 32 bits of the keyswitching key (see kernels_impl.h).
        ksk = _kernels.aligned_empty((kN, L, n + 1), np.uint32)
        flat = ksk.reshape(kN * L, n + 1)
        chunk = max(1, (1 << 22) // n)
        for r0 in range(0, kN * L, chunk):
            r1 = min(kN * L, r0 + chunk)
            flat[r0:r1, :n] = _top32(_ksk_masks(p, self.mask_seed, r0, r1))
        flat[:, n] = _top32(self._ksk_bodies.reshape(-1))
        plan = _fourier_plan(N)
        bsk = _kernels.aligned_empty((count, R, k + 1, N), np.float64)
        ggsw = np.empty((R, k + 1, N), dtype=np.uint64)
        for i in range(count):
            ggsw[:, :k, :] = _bsk_masks(p, self.mask_seed, i)
            ggsw[:, k, :] = self._bsk_bodies[i]
            bsk[i] = _kernels.fft_forward_torus(plan, ggsw.reshape(-1, N)).reshape(R, k + 1, N)
            bar.update()
        self.ksk = ksk
        self.bsk_fourier = bsk

    def __repr__(self):
        return f"EvaluationKeys(key_id={self.key_id[:8]}..., {self.params})"

    @property
    def nbytes(self):
        """Memory held by the expanded keys."""
        return sum(a.nbytes for a in (self.ksk, self.bsk_fourier) if a is not None)

    # -- bytes ---------------------------------------------------------------------------
    def to_bytes(self):
        """Seeded form: bodies and the mask seed (the masks are regenerated on load)."""
        header = _params_header(self.params)
        header["key_id"] = self.key_id
        if not self.params.has_bootstrap:
            return pack("evaluation-keys", header, [])
        header["mask_seed"] = self.mask_seed.hex()
        return pack("evaluation-keys", header, [self._ksk_bodies, self._bsk_bodies])

    @classmethod
    def from_bytes(cls, data, *, expected_params=None):
        """Load seeded keys and expand them (masks regenerated, BSK moved to Fourier).

        The parameters are checked against ``expected_params`` and the bodies' shapes
        against the parameters before anything is expanded, so the work done is the one
        the expected parameters imply.  Without ``expected_params`` the keys' own
        parameters decide it: always pass them for keys that come from a peer (as
        ``Server.load_keys`` does).

        Raises
        ------
        SerializationError
        """
        header, arrays = unpack(data, "evaluation-keys")
        params = params_from_header(header, "evaluation-keys")
        if expected_params is not None and params != expected_params:
            raise MismatchError(
                "evaluation keys were made for other parameters than this circuit")
        key_id = header.get("key_id")
        if not isinstance(key_id, str) or len(key_id) > 256:
            raise SerializationError("evaluation-keys: key id must be a string")
        if not params.has_bootstrap:
            if arrays or "mask_seed" in header:
                raise SerializationError("evaluation-keys: unexpected key material")
            return cls(params, key_id, None, None, None)
        seed = header.get("mask_seed")
        if not isinstance(seed, str) or len(seed) != 64:
            raise SerializationError("evaluation-keys: mask seed must be 64 hex digits")
        k, N = params.glwe_dimension, params.polynomial_size
        shapes = [(k * N, params.ks_level),
                  (params.bsk_ggsw_count, (k + 1) * params.pbs_level, N)]
        if [a.shape for a in arrays] != shapes or any(a.dtype != np.uint64 for a in arrays):
            raise SerializationError(
                f"evaluation-keys: expected uint64 bodies of shapes {shapes}")
        with peer_data("evaluation-keys"):
            return cls(params, key_id, bytes.fromhex(seed), arrays[0], arrays[1])

    # -- bootstrap -----------------------------------------------------------------------
    def make_luts(self, tables, input_precision=None, output_precision=None):
        """Test polynomials (T, N) u64 for integer tables (T, 2^input_precision)."""
        p = self.params
        pin = _check_precision(p, input_precision, "input_precision")
        pout = _check_precision(p, output_precision, "output_precision",
                                variance=p.variance_pbs)
        return make_luts(tables, p.polynomial_size, pin, pout)

    def programmable_bootstrap(self, ct, table, *, table_index=None, input_precision=None,
                               output_precision=None, n_jobs=1, group=None, bar=None):
        """Keyswitch + programmable bootstrap of every ciphertext of a batch.

        Parameters
        ----------
        ct : LweCiphertext
            Inputs encrypted under the big key, messages of ``input_precision`` bits.
        table : array of int
            ``(2^p,)``: one table for the whole batch; ``(*ct.shape, 2^p)``: one table per
            ciphertext; ``(T, 2^p)`` together with ``table_index`` of shape ``ct.shape``.
            Entries are the output messages, in ``[-2^q, 2^q)`` for ``q = output_precision``.
        n_jobs : int
            Threads (joblib, the kernel releases the GIL); -1 for all cores.
        group : int, optional
            Ciphertexts processed together per key pass (better cache use).
        bar : fheml._progress.Progress, optional
            Advanced by one per ciphertext done.

        Returns
        -------
        LweCiphertext of the same shape, messages of ``output_precision`` bits.
        """
        pin = self._check_bootstrap_input(ct, input_precision)
        table = np.asarray(table)
        batch_shape = ct.shape
        B = int(np.prod(batch_shape, dtype=np.int64))
        if table.ndim == 1:
            luts = self.make_luts(table[None, :], pin, output_precision)
            index = np.zeros(B, dtype=np.int64)
        elif table_index is not None:
            luts = self.make_luts(table, pin, output_precision)
            index = np.asarray(table_index)
            if not np.issubdtype(index.dtype, np.integer):
                raise TypeError(f"table_index must hold integers, got {index.dtype}")
            index = index.astype(np.int64)
            if index.shape != batch_shape:
                raise ValueError(f"table_index must have shape {batch_shape}, got {index.shape}")
            index = index.reshape(-1)
            if B and (index.min() < 0 or index.max() >= luts.shape[0]):
                raise ValueError(f"table_index values must be in [0, {luts.shape[0]})")
        elif table.shape[:-1] == batch_shape:
            uniq, inverse = np.unique(table.reshape(B, table.shape[-1]), axis=0, return_inverse=True)
            luts = self.make_luts(uniq, pin, output_precision)
            index = inverse.reshape(-1).astype(np.int64)
        else:
            raise ValueError(
                f"table must have shape (2^p,), {batch_shape + (1 << pin,)} or (T, 2^p) with "
                f"table_index; got {table.shape}"
            )
        return self._bootstrap(ct, luts, index, n_jobs=n_jobs, group=group, bar=bar)[0]

    def programmable_bootstrap_many(self, ct, tables, *, input_precision=None,
                                    output_precision=None, n_jobs=1, group=None):
        """Several lookups of each ciphertext from one blind rotation ("many-LUT").

        The ``t`` tables are packed side by side in one test polynomial (each input box of
        the lookup holds ``t`` sub-boxes) and output ``i`` is extracted from coefficient
        ``i`` times the sub-box width: one keyswitch and one blind rotation instead of ``t``.
        Sub-boxes are ``2^ceil(log2 t)`` times narrower, so the input noise must allow
        ``input_precision + ceil(log2 t)`` bits: that must not exceed the precision the
        parameters were selected for. The results decrypt exactly as ``t`` separate
        :meth:`programmable_bootstrap` calls would.

        Parameters
        ----------
        ct : LweCiphertext
            Inputs encrypted under the big key, messages of ``input_precision`` bits.
        tables : array of int
            ``(t, 2^p)``: the same ``t`` tables for the whole batch, or
            ``(*ct.shape, t, 2^p)``: ``t`` tables per ciphertext. Entries are output
            messages in ``[-2^q, 2^q)`` for ``q = output_precision``.
        n_jobs, group
            As in :meth:`programmable_bootstrap`.

        Returns
        -------
        list of LweCiphertext
            ``t`` ciphertexts of the shape of ``ct``, output ``i`` holding ``tables[..., i, m]``.
        """
        tables = np.asarray(tables)
        if tables.ndim < 2 or tables.shape[-2] < 1:
            raise ValueError(f"tables must have shape (t, 2^p) or (*ct.shape, t, 2^p), got {tables.shape}")
        t = tables.shape[-2]
        extra_bits = (t - 1).bit_length()
        pin = self._check_bootstrap_input(ct, input_precision, extra_bits)
        pout = _check_precision(self.params, output_precision, "output_precision",
                                variance=self.params.variance_pbs)
        batch_shape = ct.shape
        B = int(np.prod(batch_shape, dtype=np.int64))
        if tables.ndim == 2:
            luts = make_many_luts(tables[None], self.params.polynomial_size, pin, pout)
            index = np.zeros(B, dtype=np.int64)
        elif tables.shape[:-2] == batch_shape:
            flat = tables.reshape(B, t * tables.shape[-1])
            uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
            luts = make_many_luts(uniq.reshape(-1, t, tables.shape[-1]),
                                  self.params.polynomial_size, pin, pout)
            index = inverse.reshape(-1).astype(np.int64)
        else:
            raise ValueError(f"tables must have shape (t, 2^p) or {batch_shape + (t, 1 << pin)}, "
                             f"got {tables.shape}")
        stride = (self.params.polynomial_size >> pin) >> extra_bits
        return self._bootstrap(ct, luts, index, n_extract=t, stride=stride, n_jobs=n_jobs,
                               group=group)

    def _check_bootstrap_input(self, ct, input_precision, extra_bits=0):
        """Input precision of a lookup of ``ct`` whose boxes are ``2^extra_bits`` times
        narrower (many-LUT), checked against the keys and the parameters."""
        p = self.params
        if not p.has_bootstrap:
            raise ValueError("these parameters have no bootstrapping key (circuit without lookups)")
        if not isinstance(ct, LweCiphertext):
            raise TypeError(f"expected an LweCiphertext, got {type(ct).__name__}")
        if ct.key_id != self.key_id:
            raise ValueError("ciphertext and evaluation keys belong to different key sets")
        if ct.dimension != p.big_lwe_dimension:
            raise ValueError(f"ciphertext dimension {ct.dimension} != {p.big_lwe_dimension}")
        pin = _check_precision(p, input_precision, "input_precision")
        if pin + extra_bits > p.precision:
            tables = f" plus {extra_bits} bits for {1 << extra_bits} packed tables" if extra_bits else ""
            raise ValueError(
                f"input_precision {pin}{tables} exceeds the {p.precision} bits these "
                "parameters were selected for (the lookup would fail too often)"
            )
        return pin

    def _bootstrap(self, ct, luts, index, *, n_extract=1, stride=0, n_jobs=1, group=None,
                   bar=None):
        """Run the kernel on every ciphertext; ``n_extract`` outputs per input."""
        p = self.params
        batch_shape = ct.shape
        B = int(np.prod(batch_shape, dtype=np.int64))
        cts = np.ascontiguousarray(ct.data.reshape(B, ct.dimension + 1))
        out = np.empty((B, n_extract, p.big_lwe_dimension + 1), dtype=np.uint64)
        run_pbs_batch(self, cts, luts, index, out, n_jobs=n_jobs, group=group,
                      extract=(n_extract, stride), bar=bar)
        return [LweCiphertext(np.ascontiguousarray(out[:, i]).reshape(*batch_shape, out.shape[-1]),
                              self.key_id)
                for i in range(n_extract)]


def make_luts(tables, polynomial_size, input_precision, output_precision):
    """Test polynomials for tables f: [0, 2^p) -> [-2^q, 2^q).

    Coefficient j holds f(m) for the box m = round(j / box) of width N / 2^p, i.e. the
    table is rotated by half a box, and the half box that wraps past N holds -f(0): a
    phase slightly below 0 then still reads f(0).
    """
    tables = np.asarray(tables)
    if tables.ndim != 2:
        raise ValueError(f"tables must have shape (T, {1 << input_precision}), got {tables.shape}")
    return make_many_luts(tables[:, None, :], polynomial_size, input_precision,
                          output_precision)


def make_many_luts(table_sets, polynomial_size, input_precision, output_precision):
    """Test polynomials packing t tables each: table_sets (T, t, 2^p) -> (T, N) u64.

    Each box of width N / 2^p (see :func:`make_luts`) is split into ``2^ceil(log2 t)``
    sub-boxes of width s; sub-box i of box m holds f_i(m), rotated by half a sub-box, so
    that coefficient i * s of the rotated accumulator reads f_i(m). With t = 1 this is the
    one-table layout.
    """
    tables = np.asarray(table_sets)
    if tables.ndim != 3 or tables.shape[1] < 1 or tables.shape[2] != 1 << input_precision:
        raise ValueError(
            f"a table for {input_precision}-bit inputs must have {1 << input_precision} entries, "
            f"got shape {tables.shape[-1:]}"
        )
    if not np.issubdtype(tables.dtype, np.integer):
        if np.issubdtype(tables.dtype, np.floating) and np.all(tables == np.round(tables)):
            tables = tables.astype(np.int64)
        else:
            raise TypeError("tables must hold integers")
    lim = 1 << output_precision
    if tables.size and (tables.min() < -lim or tables.max() >= lim):
        raise ValueError(
            f"table values must be in [{-lim}, {lim}) for {output_precision}-bit outputs; "
            f"got [{tables.min()}, {tables.max()}]"
        )
    t = tables.shape[1]
    slots = 1 << (t - 1).bit_length()
    N = polynomial_size
    width = (N >> input_precision) // slots
    if width < 2:
        raise ValueError(f"polynomial_size {N} is too small for {input_precision}-bit lookups"
                         + (f" of {t} packed tables" if t > 1 else ""))
    u = (np.arange(N) + width // 2) // width  # global sub-box, rotated by half a sub-box
    m = np.minimum(u // slots, (1 << input_precision) - 1)
    i = np.minimum(u % slots, t - 1)  # unused sub-boxes (t < slots) repeat the last table
    enc = encode(tables, output_precision)
    luts = enc[:, i, m]
    luts[:, u >= (1 << input_precision) * slots] = np.uint64(0) - enc[:, 0, :1]
    return np.ascontiguousarray(luts)


def _pbs_chunk(ek, cts, luts, index, out, start, end, group, extract=(1, 0), bar=None,
               barrier=None):
    """Rows [start, end) of ``cts``; ``out``: (B, big + 1), or (B, count, big + 1) for
    ``extract`` = (count, stride) outputs per input (many-LUT); ``barrier``: a
    :class:`~fheml._core._kernels.StepBarrier` shared with the other threads of a lockstep
    run (left when this chunk is done or fails)."""
    try:
        p = ek.params
        ws = _kernels.PbsWorkspace(p.lwe_dimension, p.glwe_dimension, p.polynomial_size,
                                   p.pbs_level, p.ks_level, group, p.grouping_factor)
        plan = _fourier_plan(p.polynomial_size)
    except BaseException:
        if barrier is not None:
            barrier.leave()
        raise
    _kernels.pbs_range(plan, ek.ksk, p.ks_base_log, p.ks_level, ek.bsk_fourier,
                       p.lwe_dimension, p.glwe_dimension, p.pbs_base_log, p.pbs_level, luts,
                       index, cts, out.reshape(-1, out.shape[-1]), start, end, group, ws,
                       extract[0], extract[1], p.grouping_factor, barrier)
    if bar is not None:
        bar.update(end - start)


# Fourier bootstrapping keys from this size on are bootstrapped in lockstep when several
# threads run (run_pbs_batch): measured on a 2-core Xeon (L3 shared), 2 threads gave x1.73
# of one at p = 8 (3.2 GB key, memory-bound: each thread streamed the whole key) and
# x1.9-1.96 at p <= 7 (keys up to ~1.2 GB).
LOCKSTEP_MIN_KEY_BYTES = 2 << 30


def _cpus():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _lockstep_rounds(ek, cts, luts, index, out, ranges_per_round, group, extract, bar):
    """Rounds of lockstep chunks: each round runs its ranges in as many threads, all
    waiting for each other before every blind-rotation step (one read of each GGSW from
    memory per round instead of one per thread); an error in any thread is raised here."""
    for ranges in ranges_per_round:
        barrier = _kernels.StepBarrier(len(ranges))
        errors = []

        def work(a, b):
            try:
                _pbs_chunk(ek, cts, luts, index, out, a, b, group, extract, None, barrier)
            except BaseException as e:  # re-raised in the calling thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=r, daemon=True) for r in ranges[1:]]
        for t in threads:
            t.start()
        work(*ranges[0])
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if bar is not None:
            bar.update(ranges[-1][1] - ranges[0][0])


# Ciphertexts per task when progress is reported (a task is well over a second).
_PROGRESS_CHUNK = 256


def run_pbs_batch(ek, cts, luts, index, out, *, n_jobs=1, group=None, bar=None, extract=(1, 0),
                  lockstep=None):
    """KS + PBS of rows of ``cts`` into ``out``, split over ``n_jobs`` threads (and in
    tasks of :data:`_PROGRESS_CHUNK` rows when ``bar`` reports progress); ``extract`` =
    (count, stride) outputs per input (many-LUT, ``out`` of shape (B, count, big + 1)).

    ``lockstep``: the threads run their blind rotations step by step together, sharing
    each read of the key (``None``: when the Fourier key has at least
    :data:`LOCKSTEP_MIN_KEY_BYTES`, where reading it bounds the speed; results are the
    same either way).

    Inside ``joblib.parallel_backend("dask")`` the chunks run on the Dask workers instead
    (see :mod:`fheml._core.scale_out`); any other joblib backend runs them in threads of
    this process (they write into ``out``, which needs shared memory).
    """
    B = cts.shape[0]
    if B == 0:
        return out
    jobs = max(1, min(effective_n_jobs(n_jobs), B))
    if group is None:
        group = max(1, min(4, B // jobs))
    # with progress, tasks of at most about _PROGRESS_CHUNK rows, as many per thread (3
    # tasks on 2 threads kept one thread idle a third of the time)
    tasks = jobs if bar is None else jobs * -(-(-(-B // _PROGRESS_CHUNK)) // jobs)
    bounds = np.linspace(0, B, tasks + 1).astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    if jobs == 1:
        for a, b in ranges:
            _pbs_chunk(ek, cts, luts, index, out, a, b, group, extract, bar)
        return out
    from fheml._core.scale_out import active_dask_client, pbs_chunk_copy, scattered_keys

    client = active_dask_client()
    if lockstep is None:
        # threads in lockstep spin at each step while they wait: only as many as there are
        # CPUs to run them
        lockstep = ek.bsk_fourier.nbytes >= LOCKSTEP_MIN_KEY_BYTES and jobs <= _cpus()
    if client is None and lockstep and _kernels.HAVE_STEP_BARRIER:
        # rounds of `jobs` chunks (one per thread), of at most _PROGRESS_CHUNK rows per
        # thread when progress is reported
        per = -(-B // jobs) if bar is None else min(-(-B // jobs), _PROGRESS_CHUNK)
        edges = list(range(0, B, per)) + [B]
        chunks = list(zip(edges[:-1], edges[1:]))
        rounds = [chunks[i:i + jobs] for i in range(0, len(chunks), jobs)]
        _lockstep_rounds(ek, cts, luts, index, out, rounds, group, extract, bar)
        return out
    if client is None:
        Parallel(n_jobs=jobs, require="sharedmem")(
            delayed(_pbs_chunk)(ek, cts, luts, index, out, a, b, group, extract, bar)
            for a, b in ranges
        )
        return out
    keys = scattered_keys(client, ek)
    chunks = Parallel(n_jobs=jobs)(
        delayed(pbs_chunk_copy)(keys, cts[a:b], luts, index[a:b], group, extract)
        for a, b in ranges
    )
    for (a, b), chunk in zip(ranges, chunks):
        out[a:b] = chunk
        if bar is not None:
            bar.update(b - a)
    return out
