# cython: language_level=3
"""ChaCha20 cryptographically secure generator for keys, masks and noise.

Secret keys and noise are drawn from a generator seeded with ``os.urandom``.  Masks of seeded
evaluation keys are drawn from a generator whose seed travels with the key (masks are public,
so regenerating them on the server leaks nothing).
"""
import os

import numpy as np

cimport numpy as cnp
from libc.math cimport cos, log, sin, sqrt, M_PI
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

cnp.import_array()

cdef extern from "chacha20.h" nogil:
    int fheml_cpu_simd_level()
    void chacha20_block(const uint32_t *key, const uint32_t *words12_15, uint32_t *out)
    void chacha20_fill_u64(int simd, const uint32_t *key, uint64_t stream, uint64_t start,
                           uint64_t count, uint64_t *out)

# Kernel level of the keystream (0 portable, 1 AVX2, 2 AVX-512), set by
# fheml._core._kernels.set_simd_level together with the other kernels.
cdef int _simd = fheml_cpu_simd_level()


def _set_simd_level(int level):
    """Use the keystream kernels of ``level`` (already checked against the CPU)."""
    global _simd
    _simd = level

SEED_BYTES = 32


def chacha20_block_raw(bytes key, uint32_t counter, bytes nonce):
    """RFC 8439 block function: 64 keystream bytes for a 32-byte key, counter, 12-byte nonce."""
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError("key must be 32 bytes and nonce 12 bytes")
    cdef uint32_t[::1] k = np.frombuffer(key, dtype="<u4").copy()
    cdef uint32_t[::1] w = np.empty(4, dtype=np.uint32)
    w[0] = counter
    nv = np.frombuffer(nonce, dtype="<u4")
    w[1] = nv[0]
    w[2] = nv[1]
    w[3] = nv[2]
    cdef uint32_t[::1] out = np.empty(16, dtype=np.uint32)
    chacha20_block(&k[0], &w[0], &out[0])
    return np.asarray(out).astype("<u4").tobytes()


def keystream_u64(bytes seed, uint64_t stream, uint64_t start, uint64_t count):
    """Words ``start .. start+count`` of the ChaCha20 keystream (seed, stream) as uint64.

    Random access: the server uses this to regenerate the masks of a seeded key.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    cdef uint32_t[::1] k = np.frombuffer(seed, dtype="<u4").copy()
    out = np.empty(count, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    if count:
        with nogil:
            chacha20_fill_u64(_simd, &k[0], stream, start, count, &o[0])
    return out


cdef class Csprng:
    """A ChaCha20 keystream read sequentially.

    Parameters
    ----------
    seed : bytes of length 32 or None
        None (the default, and the only choice for secrets in production) draws the seed
        from ``os.urandom``.  An explicit seed makes the stream reproducible: use it for
        public material (masks of seeded keys) or, through the test-only paths, in tests.
    stream : int
        Domain separator: one seed may drive several independent streams.
    """
    cdef uint32_t key[8]
    cdef readonly uint64_t stream
    cdef readonly uint64_t position
    cdef bytes _seed

    def __init__(self, seed=None, uint64_t stream=0):
        if seed is None:
            seed = os.urandom(SEED_BYTES)
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes")
        self._seed = bytes(seed)
        kv = np.frombuffer(self._seed, dtype="<u4")
        for i in range(8):
            self.key[i] = kv[i]
        self.stream = stream
        self.position = 0

    @property
    def seed(self):
        return self._seed

    def __repr__(self):
        # Never print the seed.
        return f"Csprng(stream={self.stream}, position={self.position})"

    def __reduce__(self):
        raise TypeError("a Csprng holds secret state and cannot be pickled")

    cdef void _fill(self, uint64_t *out, uint64_t count) noexcept nogil:
        chacha20_fill_u64(_simd, self.key, self.stream, self.position, count, out)
        self.position += count

    def uniform_u64(self, shape):
        """Uniform uint64 words (masks)."""
        out = np.empty(shape, dtype=np.uint64)
        cdef uint64_t[::1] o = out.reshape(-1)
        if o.shape[0]:
            with nogil:
                self._fill(&o[0], o.shape[0])
        return out

    def binary(self, shape):
        """Uniform bits as uint8 0/1 (binary secret keys)."""
        out = np.empty(shape, dtype=np.uint8)
        cdef uint8_t[::1] o = out.reshape(-1)
        cdef Py_ssize_t n = o.shape[0], i
        words = self.uniform_u64((n + 63) // 64)
        cdef uint64_t[::1] w = words
        with nogil:
            for i in range(n):
                o[i] = (w[i >> 6] >> (i & 63)) & 1
        return out

    def gaussian_torus(self, shape, double std):
        """Centred Gaussian noise of standard deviation ``std`` (torus units), as uint64.

        Box-Muller on 53-bit uniforms from the keystream; each value is rounded to the
        nearest multiple of 2^-64 and wrapped to the torus.
        """
        if not (std >= 0.0) or std > 2.0 ** -4:
            raise ValueError(f"noise std {std} out of range [0, 2^-4]")
        out = np.empty(shape, dtype=np.uint64)
        cdef uint64_t[::1] o = out.reshape(-1)
        cdef Py_ssize_t n = o.shape[0], i
        cdef Py_ssize_t npairs = (n + 1) // 2
        raw = self.uniform_u64(2 * npairs)
        cdef uint64_t[::1] r = raw
        cdef double scale = std * 18446744073709551616.0
        cdef double u1, u2, rad, z
        with nogil:
            for i in range(npairs):
                u1 = (<double>(r[2 * i] >> 11) + 0.5) * (1.0 / 9007199254740992.0)
                u2 = <double>(r[2 * i + 1] >> 11) * (1.0 / 9007199254740992.0)
                rad = sqrt(-2.0 * log(u1)) * scale
                z = rad * cos(2.0 * M_PI * u2)
                o[2 * i] = <uint64_t>(<int64_t>(z + 0.5 if z >= 0 else z - 0.5))
                if 2 * i + 1 < n:
                    z = rad * sin(2.0 * M_PI * u2)
                    o[2 * i + 1] = <uint64_t>(<int64_t>(z + 0.5 if z >= 0 else z - 0.5))
        return out
