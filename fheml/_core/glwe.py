"""GLWE ciphertexts: seeded encryption of coefficient vectors, exact products by clear
integer polynomials, modulus switching, decryption and sample extraction.

A GLWE ciphertext under a binary key ``S = (S_0, ..., S_{k-1})`` (polynomials modulo
``X^N + 1``) is ``k`` uniform mask polynomials ``A_q`` and the body
``B = sum_q A_q * S_q + E + M`` (mod 2^64), ``M`` the plaintext polynomial (messages
already scaled, see :func:`fheml._core.encode`) and ``E`` Gaussian noise.  Coefficient ``j``
of ``B - sum_q A_q * S_q`` is the phase ``M_j + E_j``; :func:`sample_extract` turns it into an
LWE ciphertext of dimension ``k * N`` under the flattened key (the "big" key of
:class:`~fheml._core.SecretKeys` when ``S`` is its GLWE key).

Fresh encryptions are *seeded*: the masks are ChaCha20 output of a fresh public 32-byte
seed, so only the seed and the bodies travel, and the server regenerates the masks.  Only
the coefficients that carry data (``coefficients``, a slice) are encrypted and sent; the
others of the body are zero and meaningless, and so is every coefficient of a product that
depends on them.  Words may travel as their top ``word_bits`` bits (rounded to nearest,
bit-packed), which adds uniform rounding noise of variance ``2^(-2 word_bits) / 12`` per
word.
"""

import os
import secrets

import numpy as np

from fheml._core import _kernels
from fheml._core._csprng import Csprng, keystream_u64
from fheml._core.keys import (
    _STREAM_GLWE_MASKS,
    _STREAM_KEY_BITS,
    INSECURE_SEED_ENV,
    LweCiphertext,
    _fourier_plan,
)
from fheml._core.parameters import MIN_SECURE_DIMENSION, var_min
from fheml._core.serialization import SerializationError, pack, unpack

__all__ = ["GlweCiphertext", "GlweSecretKey", "decrypt_glwe", "encrypt_glwe",
           "glwe_add_plain", "glwe_polynomial_matmul", "modulus_switch", "sample_extract"]

_MAX_POLYNOMIAL_SIZE = 1 << 17
_SEED_BYTES = 32
# Default bound of a deserialized batch: words held (masks regenerated from a seed included)
# at most max(_DEFAULT_MAX_WORDS, _MAX_EXPANSION x the words received).
_DEFAULT_MAX_WORDS = 1 << 21
_MAX_EXPANSION = 64


def _check_int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _check_polynomial_size(N):
    N = _check_int(N, "polynomial_size", 8, _MAX_POLYNOMIAL_SIZE)
    if N & (N - 1):
        raise ValueError(f"polynomial_size must be a power of two, got {N}")
    return N


def _word_bits(word_bytes, word_bits):
    """Bits kept per word from the ``word_bytes`` / ``word_bits`` arguments (default 64)."""
    if word_bytes is not None and word_bits is not None:
        raise ValueError("give at most one of word_bytes and word_bits")
    if word_bytes is not None:
        return 8 * _check_int(word_bytes, "word_bytes", 1, 8)
    return 64 if word_bits is None else _check_int(word_bits, "word_bits", 1, 64)


def round_words(words, word_bytes=None, *, word_bits=None):
    """Round torus words to their top ``word_bytes`` bytes or ``word_bits`` bits (to
    nearest; the low bits are 0)."""
    bits = _word_bits(word_bytes, word_bits)
    if bits == 64:
        return words
    shift = np.uint64(64 - bits)
    return ((words + (np.uint64(1) << (shift - np.uint64(1)))) >> shift) << shift


def _packed_words(count, word_bits):
    """Bytes of ``count`` words bit-packed at ``word_bits`` bits."""
    return (count * word_bits + 7) // 8


def _glwe_masks(seed, count, k, N):
    """Masks of the ``count`` ciphertexts of a seeded batch, (count, k, N)."""
    return keystream_u64(seed, _STREAM_GLWE_MASKS, 0, count * k * N).reshape(count, k, N)


class GlweCiphertext:
    """A batch of GLWE ciphertexts (see the module docstring).

    Parameters
    ----------
    bodies : uint64 array (*shape, N)
    key_id : str
        Names the key, so that nothing is decrypted with someone else's key by mistake.
    masks : uint64 array (*shape, k, N), optional
        Explicit masks; exactly one of ``masks`` and ``mask_seed``.
    mask_seed : bytes, optional
        32-byte public seed of the masks of a fresh encryption (regenerated on access).
    glwe_dimension : int, optional
        ``k``; required with ``mask_seed``.
    coefficients : tuple (start, stop, step), optional
        Body coefficients that carry data (default: all ``N``).
    word_bytes, word_bits : int, optional
        Words travel as their top bytes or bits (they must already be rounded to them,
        see :func:`round_words`); default: whole words.
    carried : int, optional
        Only the first ``carried`` body words at ``coefficients`` of the flattened batch
        carry data and travel (e.g. a last ciphertext only partly filled); the others are
        zero once received.  Default: all.
    """

    __slots__ = ("bodies", "_masks", "mask_seed", "key_id", "glwe_dimension", "coefficients",
                 "word_bits", "carried")

    def __init__(self, bodies, key_id, *, masks=None, mask_seed=None, glwe_dimension=None,
                 coefficients=None, word_bytes=None, word_bits=None, carried=None):
        bodies = np.asarray(bodies)
        if bodies.dtype != np.uint64 or bodies.ndim < 1:
            raise TypeError("GLWE bodies must be a uint64 array (*shape, N)")
        N = _check_polynomial_size(bodies.shape[-1])
        if (masks is None) == (mask_seed is None):
            raise ValueError("give exactly one of masks and mask_seed")
        if masks is not None:
            masks = np.asarray(masks)
            if (masks.dtype != np.uint64 or masks.ndim != bodies.ndim + 1
                    or masks.shape[:-2] != bodies.shape[:-1] or masks.shape[-1] != N):
                raise ValueError(f"masks of shape {masks.shape} do not match bodies "
                                 f"{bodies.shape}")
            glwe_dimension = masks.shape[-2]
        else:
            if not isinstance(mask_seed, bytes) or len(mask_seed) != _SEED_BYTES:
                raise ValueError(f"mask_seed must be {_SEED_BYTES} bytes")
            if glwe_dimension is None:
                raise ValueError("a seeded ciphertext needs its glwe_dimension")
        self.glwe_dimension = _check_int(glwe_dimension, "glwe_dimension", 1,
                                         _MAX_POLYNOMIAL_SIZE // N)
        start, stop, step = (0, N, 1) if coefficients is None else (int(c) for c in coefficients)
        if not (0 <= start < N and start < stop <= N and step >= 1):
            raise ValueError(f"coefficients {coefficients} is not a slice of [0, {N})")
        self.coefficients = (start, stop, step)
        self.word_bits = _word_bits(word_bytes, word_bits)
        total = int(np.prod(bodies.shape[:-1], dtype=np.int64)) * len(range(start, stop, step))
        self.carried = total if carried is None else _check_int(carried, "carried", 0, total)
        self.bodies = bodies
        self._masks = masks
        self.mask_seed = mask_seed
        self.key_id = str(key_id)

    @property
    def polynomial_size(self):
        return self.bodies.shape[-1]

    @property
    def shape(self):
        return self.bodies.shape[:-1]

    @property
    def masks(self):
        """(*shape, k, N) uint64 (regenerated from the seed of a fresh encryption)."""
        if self._masks is None:
            count = int(np.prod(self.shape, dtype=np.int64))
            masks = _glwe_masks(self.mask_seed, count, self.glwe_dimension, self.polynomial_size)
            # read-only: the seed stands for these masks when the batch is sent
            masks.flags.writeable = False
            self._masks = masks.reshape(self.shape + (self.glwe_dimension,
                                                      self.polynomial_size))
        return self._masks

    @property
    def coefficient_index(self):
        """Indices of the body coefficients that carry data."""
        return np.arange(*self.coefficients)

    def __repr__(self):
        return (f"GlweCiphertext(shape={self.shape}, k={self.glwe_dimension}, "
                f"N={self.polynomial_size}, coefficients={self.coefficients})")

    def with_coefficients(self, start, stop, step=1):
        """The same ciphertexts, keeping (and sending) only body coefficients
        ``start:stop:step`` (e.g. the outputs of a product)."""
        seeded = self.mask_seed is not None
        return GlweCiphertext(self.bodies, self.key_id, masks=None if seeded else self._masks,
                              mask_seed=self.mask_seed, glwe_dimension=self.glwe_dimension,
                              coefficients=(start, stop, step), word_bits=self.word_bits)

    # -- bytes ---------------------------------------------------------------------------
    def to_parts(self):
        """(JSON-able header, arrays): seed + bodies (fresh encryption) or masks + bodies,
        each word as its top ``word_bits`` bits (bit-packed, see
        :func:`fheml._core._kernels.pack_top_bits`), bodies only at ``coefficients``."""
        start, stop, step = self.coefficients
        header = {"key_id": self.key_id, "glwe_dimension": self.glwe_dimension,
                  "polynomial_size": self.polynomial_size, "shape": list(self.shape),
                  "coefficients": [start, stop, step], "word_bits": self.word_bits,
                  "carried": self.carried}
        bodies = np.ascontiguousarray(self.bodies[..., start:stop:step]).reshape(-1)
        arrays = [_kernels.pack_top_bits(bodies[:self.carried], self.word_bits)]
        if self.mask_seed is not None:
            header["mask_seed"] = self.mask_seed.hex()
        else:
            arrays.append(_kernels.pack_top_bits(self._masks, self.word_bits))
        return header, arrays

    @classmethod
    def from_parts(cls, header, arrays, *, max_words=None):
        """Inverse of :meth:`to_parts`, validated (SerializationError).

        ``max_words`` bounds the words the ciphertexts (regenerated masks included) may
        hold; by default ``max(2^21, 64 x the words received)``, so that a small payload
        cannot claim a huge expansion.
        """
        if max_words is None:
            received = sum(int(a.nbytes) for a in arrays) // 8
            max_words = max(_DEFAULT_MAX_WORDS, _MAX_EXPANSION * received)
        try:
            k = _check_int(header["glwe_dimension"], "glwe_dimension", 1, _MAX_POLYNOMIAL_SIZE)
            N = _check_polynomial_size(header["polynomial_size"])
            shape = tuple(_check_int(s, "shape", 0, 2**40) for s in header["shape"])
            start, stop, step = (_check_int(c, "coefficients", 0, N) for c in
                                 header["coefficients"])
            wb = _check_int(header["word_bits"], "word_bits", 1, 64)
            key_id = str(header["key_id"])
            seed = bytes.fromhex(header["mask_seed"]) if "mask_seed" in header else None
            if step < 1 or not start < stop:
                raise ValueError("bad coefficient slice")
            count = len(range(start, stop, step))
            words = int(np.prod(shape, dtype=np.int64)) * (k + 1) * N
            if max_words is not None and words > max_words:
                raise ValueError(f"{words} words exceed the limit of {max_words}")
            if len(arrays) != (1 if seed is not None else 2):
                raise ValueError("unexpected number of arrays")
            groups = int(np.prod(shape, dtype=np.int64))
            carried = _check_int(header["carried"], "carried", 0, groups * count)
            if arrays[0].dtype != np.uint8 or arrays[0].shape != (_packed_words(carried, wb),):
                raise ValueError("bodies do not match the header")
            flat = np.zeros(groups * count, dtype=np.uint64)
            flat[:carried] = _kernels.unpack_top_bits(arrays[0], carried, wb)
            bodies = np.zeros(shape + (N,), dtype=np.uint64)
            bodies[..., start:stop:step] = flat.reshape(shape + (count,))
            masks = None
            if seed is None:
                if arrays[1].dtype != np.uint8 or arrays[1].shape != (
                        _packed_words(groups * k * N, wb),):
                    raise ValueError("masks do not match the header")
                masks = _kernels.unpack_top_bits(arrays[1], groups * k * N, wb).reshape(
                    shape + (k, N))
            return cls(bodies, key_id, masks=masks, mask_seed=seed, glwe_dimension=k,
                       coefficients=(start, stop, step), word_bits=wb, carried=carried)
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"glwe-ciphertext: {exc}") from None

    def to_bytes(self):
        """Versioned bytes of :meth:`to_parts`."""
        header, arrays = self.to_parts()
        return pack("glwe-ciphertext", header, arrays)

    @classmethod
    def from_bytes(cls, data, *, expected_key_id=None, max_words=None):
        """Inverse of :meth:`to_bytes`, validated.

        Parameters
        ----------
        expected_key_id : str, optional
            Refuse ciphertexts under another key.
        max_words : int, optional
            Refuse batches whose ciphertexts (masks regenerated from a seed included) would
            hold more words than this (default: see :meth:`from_parts`).
        """
        header, arrays = unpack(data, "glwe-ciphertext")
        ct = cls.from_parts(header, arrays, max_words=max_words)
        if expected_key_id is not None and ct.key_id != expected_key_id:
            raise ValueError("GLWE ciphertext was encrypted under other keys than expected")
        return ct


# ------------------------------------------------------------------------ client ------

class GlweSecretKey:
    """A binary GLWE key ``(k, N)`` with its encryption noise.

    Use :meth:`generate`, :meth:`fheml._core.SecretKeys.glwe_secret_key` for the GLWE key of
    a bootstrapping key set (whose sample-extracted ciphertexts are then under its big key)
    or :meth:`fheml._core.SecretKeys.derived_glwe_key`.

    Parameters
    ----------
    key : array (k, N) of 0/1
    key_id : str
    noise_std : float
        Encryption noise (torus units); at least the 128-bit minimum for dimension ``k*N``.
    """

    def __init__(self, key, key_id, noise_std, *, insecure=False):
        key = np.ascontiguousarray(key, dtype=np.uint8)
        if key.ndim != 2:
            raise ValueError("a GLWE key has shape (k, N)")
        _check_polynomial_size(key.shape[1])
        if key.shape[0] < 1 or key.max(initial=0) > 1:
            raise ValueError("a GLWE key is k >= 1 binary polynomials")
        if key.size < MIN_SECURE_DIMENSION:
            raise ValueError(f"a GLWE key of dimension k*N = {key.size} is below the "
                             f"{MIN_SECURE_DIMENSION} the secure-noise curve is validated for")
        minimum = float(np.sqrt(var_min(key.size)))
        if not (noise_std >= minimum * (1 - 1e-4) and noise_std < 2.0**-4):
            raise ValueError(f"noise_std={noise_std!r} is outside [{minimum:.4e} (128-bit "
                             f"minimum for dimension {key.size}), 2^-4)")
        self.key = key
        self.key_id = str(key_id)
        self.noise_std = float(noise_std)
        self.insecure = bool(insecure)

    @classmethod
    def generate(cls, glwe_dimension, polynomial_size, noise_std=None, *, seed=None):
        """Fresh key bits from the OS-seeded CSPRNG (``seed``: tests only, see
        :meth:`fheml._core.SecretKeys.generate`); ``noise_std`` defaults to the 128-bit
        secure minimum for ``k * N``."""
        k = _check_int(glwe_dimension, "glwe_dimension", 1, _MAX_POLYNOMIAL_SIZE)
        N = _check_polynomial_size(polynomial_size)
        if seed is not None and os.environ.get(INSECURE_SEED_ENV) != "1":
            raise RuntimeError("a fixed seed makes secret keys predictable; it is only "
                               f"accepted in tests with {INSECURE_SEED_ENV}=1")
        noise_std = float(np.sqrt(var_min(k * N))) if noise_std is None else noise_std
        bits = Csprng(seed, stream=_STREAM_KEY_BITS).binary((k, N))
        return cls(bits, secrets.token_hex(16), noise_std, insecure=seed is not None)

    @property
    def glwe_dimension(self):
        return self.key.shape[0]

    @property
    def polynomial_size(self):
        return self.key.shape[1]

    def __repr__(self):
        return (f"GlweSecretKey(key_id={self.key_id[:8]}..., k={self.glwe_dimension}, "
                f"N={self.polynomial_size})")

    def __reduce__(self):
        raise TypeError("a GlweSecretKey cannot be pickled; use to_bytes() and keep it private")

    def encrypt(self, plaintexts, *, word_bytes=None, word_bits=None, carried=None):
        """Seeded encryption of plaintext coefficients, see :func:`encrypt_glwe`."""
        return encrypt_glwe(self, plaintexts, word_bytes=word_bytes, word_bits=word_bits,
                            carried=carried)

    def decrypt(self, ct):
        """Phases at the ciphertext's coefficients, see :func:`decrypt_glwe`."""
        return decrypt_glwe(self, ct)

    def to_bytes(self):
        """Serialize (this is the secret: keep it private)."""
        return pack("glwe-secret-key", {"key_id": self.key_id, "noise_std": self.noise_std,
                                        "insecure": self.insecure}, [self.key])

    @classmethod
    def from_bytes(cls, data):
        header, arrays = unpack(data, "glwe-secret-key")
        try:
            if len(arrays) != 1:
                raise ValueError("expected one key array")
            return cls(arrays[0], header["key_id"], float(header["noise_std"]),
                       insecure=bool(header.get("insecure", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"glwe-secret-key: {exc}") from None


def _key_times_masks(key, masks):
    """sum_q S_q * A_q for masks (G, k, N): one exact negacyclic product per polynomial."""
    G, k, N = masks.shape
    plan = _fourier_plan(N)
    acc = np.zeros((G, N), dtype=np.uint64)
    if G:
        for q in range(k):
            m = masks[:, q, :]
            _kernels.mul_binary_exact(plan, key[q], m if m.flags.writeable else m.copy(),
                                      out=acc)
    return acc


def encrypt_glwe(secret_key, plaintexts, *, word_bytes=None, word_bits=None, carried=None):
    """Seeded GLWE encryption of plaintext coefficients.

    Parameters
    ----------
    secret_key : GlweSecretKey
    plaintexts : uint64 array (*shape, L), L <= N
        Torus plaintexts of coefficients ``0 .. L-1`` of each ciphertext (see
        :func:`fheml._core.encode`); the other coefficients are not encrypted nor sent.
    word_bytes, word_bits : int, optional
        Bodies are rounded to their top bytes or bits (smaller upload, more noise; default:
        whole words).
    carried : int, optional
        Only the first ``carried`` plaintexts of the flattened batch carry data (the others
        are padding, sent as zeros); default: all.

    Returns
    -------
    GlweCiphertext
        Masks from a fresh ``os.urandom`` seed (sent instead of them), noise from a separate
        OS-seeded stream.
    """
    if not isinstance(secret_key, GlweSecretKey):
        raise TypeError("secret_key must be a GlweSecretKey")
    plain = np.asarray(plaintexts)
    if plain.dtype != np.uint64 or plain.ndim < 1:
        raise TypeError("plaintexts must be a uint64 array (*shape, L) (see encode)")
    k, N = secret_key.key.shape
    L = plain.shape[-1]
    if not 1 <= L <= N:
        raise ValueError(f"plaintexts have {L} coefficients; a ciphertext holds 1 to {N}")
    word_bits = _word_bits(word_bytes, word_bits)
    shape = plain.shape[:-1]
    G = int(np.prod(shape, dtype=np.int64))
    seed = os.urandom(_SEED_BYTES)
    bodies = _key_times_masks(secret_key.key, _glwe_masks(seed, G, k, N))
    bodies[:, :L] += plain.reshape(G, L) + Csprng().gaussian_torus((G, L), secret_key.noise_std)
    bodies[:, L:] = 0
    return GlweCiphertext(round_words(bodies, word_bits=word_bits).reshape(shape + (N,)),
                          secret_key.key_id, mask_seed=seed, glwe_dimension=k,
                          coefficients=(0, L, 1), word_bits=word_bits, carried=carried)


def _check_ct(ct):
    if not isinstance(ct, GlweCiphertext):
        raise TypeError(f"expected a GlweCiphertext, got {type(ct).__name__}")
    return ct


def decrypt_glwe(secret_key, ct):
    """Phases ``B - sum_q A_q * S_q`` at the coefficients the ciphertexts carry.

    Returns
    -------
    uint64 array (*shape, count)
        Message plus noise of each carried coefficient (decode with
        :func:`fheml._core.decode`).
    """
    _check_ct(ct)
    if ct.key_id != secret_key.key_id:
        raise ValueError("this GLWE ciphertext was encrypted under another key")
    k, N = secret_key.key.shape
    if (ct.glwe_dimension, ct.polynomial_size) != (k, N):
        raise ValueError(f"ciphertext (k={ct.glwe_dimension}, N={ct.polynomial_size}) does not "
                         f"match the key (k={k}, N={N})")
    G = int(np.prod(ct.shape, dtype=np.int64))
    start, stop, step = ct.coefficients
    dot = _key_times_masks(secret_key.key, ct.masks.reshape(G, k, N))
    phase = ct.bodies.reshape(G, N)[:, start:stop:step] - dot[:, start:stop:step]
    return phase.reshape(ct.shape + (phase.shape[-1],))


# ------------------------------------------------------------------------ server ------

def glwe_polynomial_matmul(ct, weights):
    """Exact sums of products of ciphertexts by clear integer polynomials.

    Parameters
    ----------
    ct : GlweCiphertext of shape (*batch, C)
    weights : integer array (C, O, S), S <= N
        ``weights[c, o]`` holds the coefficients (degree < S) of a clear polynomial.

    Returns
    -------
    GlweCiphertext of shape (*batch, O)
        ``out[..., o] = sum_c ct[..., c] * weights[c, o]`` modulo ``(X^N + 1, 2^64)``,
        computed exactly in integers (the noise grows by the 2-norm of the weights).
        Coefficients that depend on body coefficients ``ct`` does not carry are meaningless.
    """
    _check_ct(ct)
    w = np.asarray(weights)
    if not np.issubdtype(w.dtype, np.integer) or w.ndim != 3:
        raise TypeError("weights must be an integer array (C, O, S)")
    if len(ct.shape) < 1 or w.shape[0] != ct.shape[-1]:
        raise ValueError(f"weights {w.shape} do not match ciphertexts of shape {ct.shape} "
                         "(the last axis is summed)")
    k, N = ct.glwe_dimension, ct.polynomial_size
    if w.shape[2] > N:
        raise ValueError(f"weight polynomials of degree {w.shape[2] - 1} exceed N - 1 = {N - 1}")
    batch, C = ct.shape[:-1], ct.shape[-1]
    G = int(np.prod(batch, dtype=np.int64))
    polys = np.empty((G, C, k + 1, N), dtype=np.uint64)
    polys[:, :, :k] = ct.masks.reshape(G, C, k, N)
    polys[:, :, k] = ct.bodies.reshape(G, C, N)
    start, stop, step = ct.coefficients
    lengths = np.array([N] * k + [stop], dtype=np.intc)
    body_used = np.zeros(N, dtype=bool)
    body_used[start:stop:step] = True
    if not body_used[:stop].all():
        polys[:, :, k][..., ~body_used] = 0
    out = _kernels.glwe_poly_matmul(polys, lengths, w.astype(np.int64))
    O = w.shape[1]
    return GlweCiphertext(out[:, :, k].reshape(batch + (O, N)), ct.key_id,
                          masks=out[:, :, :k].reshape(batch + (O, k, N)))


def glwe_add_plain(ct, plaintexts):
    """Add plaintext polynomials (uint64, broadcast to the bodies) to the bodies."""
    _check_ct(ct)
    plain = np.asarray(plaintexts)
    if plain.dtype != np.uint64:
        raise TypeError("plaintexts must be uint64 torus values (see encode)")
    return GlweCiphertext(ct.bodies + plain, ct.key_id, masks=ct.masks,
                          coefficients=ct.coefficients)


def modulus_switch(ct, word_bytes=None, *, word_bits=None):
    """Round masks and bodies to their top ``word_bytes`` bytes or ``word_bits`` bits (a
    smaller result to send; adds rounding noise, see
    :func:`fheml._core.parameters.var_rounding`)."""
    _check_ct(ct)
    bits = _word_bits(word_bytes, word_bits)
    return GlweCiphertext(round_words(ct.bodies, word_bits=bits), ct.key_id,
                          masks=round_words(ct.masks, word_bits=bits),
                          coefficients=ct.coefficients, word_bits=bits)


def sample_extract(ct, indices):
    """LWE ciphertexts of chosen coefficients, under the flattened GLWE key.

    Coefficient ``h`` of the phase is ``B_h - sum_q sum_j S_q[j] * A_q[h - j]`` (with
    ``A_q[h - j] = -A_q[N + h - j]`` for ``j > h``), an LWE phase whose mask is read off
    the ``A_q``: no noise is added.

    Parameters
    ----------
    ct : GlweCiphertext of shape (*shape)
    indices : int array (m,)
        Coefficients in ``[0, N)``.

    Returns
    -------
    LweCiphertext of shape (*shape, m) and dimension ``k * N``.
    """
    _check_ct(ct)
    idx = np.asarray(indices)
    N, k = ct.polynomial_size, ct.glwe_dimension
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError("indices must be a 1-D integer array")
    if idx.size and (idx.min() < 0 or idx.max() >= N):
        raise ValueError(f"indices must be in [0, {N})")
    # mask of coefficient h: A[h], A[h-1], ..., A[0], -A[N-1], ..., -A[h+1], a window of
    # the reversed negacyclic extension E = (A[N-1], ..., A[0], -A[N-1], ..., -A[1]):
    # E[N-1-h : 2N-1-h] (one contiguous copy per coefficient)
    extension = np.empty(ct.masks.shape[:-1] + (2 * N - 1,), dtype=np.uint64)
    extension[..., :N] = ct.masks[..., ::-1]
    np.subtract(np.uint64(0), ct.masks[..., :0:-1], out=extension[..., N:])
    windows = np.lib.stride_tricks.sliding_window_view(extension, N, axis=-1)
    data = np.empty(ct.shape + (idx.size, k * N + 1), dtype=np.uint64)
    for q in range(k):
        data[..., q * N:(q + 1) * N] = windows[..., q, N - 1 - idx, :]
    data[..., k * N] = ct.bodies[..., idx]
    return LweCiphertext(data, ct.key_id)
