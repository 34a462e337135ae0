# cython: language_level=3
"""Thin wrappers over the C kernels (kernels.h).  Every wrapper validates shapes, allocates
its outputs and scratch once, and runs the kernel with the GIL released."""
import os
import warnings

import numpy as np

from fheml._core import _csprng

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cnp.import_array()

cdef extern from "kernels.h" nogil:
    int FHEML_MAX_GROUP
    int FHEML_MAX_GROUPING
    int FHEML_SUBSETS_PER_PASS
    ctypedef struct fft_plan:
        int N, M, log2N
        const double *tw_re
        const double *tw_im
        const double *tw3_re
        const double *tw3_im
        const double *twist_re
        const double *twist_im
        const double *untwist_re
        const double *untwist_im
        const double *root_re
        const double *root_im
    int FHEML_HAVE_BARRIER
    ctypedef struct fheml_barrier:
        pass
    int fheml_barrier_init(fheml_barrier *b, int parties)
    void fheml_barrier_destroy(fheml_barrier *b)
    void fheml_barrier_leave(fheml_barrier *b)
    ctypedef struct pbs_scratch:
        uint64_t *diff
        double *fdig
        double *facc
        double *fsum
        double *mono
        uint32_t *small
        int32_t *abar
        uint64_t *acc
        int32_t *ks_digits
        fheml_barrier *barrier
    int fheml_cpu_simd_level()
    void fheml_forward_i32(int simd, const fft_plan *p, const int32_t *a, double *re, double *im)
    void fheml_forward_torus(int simd, const fft_plan *p, const uint64_t *a, double *re,
                             double *im)
    void fheml_backward_f64(int simd, const fft_plan *p, double *re, double *im, double *out)
    void fheml_add_f64_to_torus(int simd, const double *x, uint64_t *acc, int n)
    void fheml_dot_binary(int simd, const uint64_t *a, const uint64_t *keymask, int d,
                          int64_t rows, uint64_t *out)
    void fheml_decompose_i32(int simd, const uint64_t *v, int n, int base_log, int level,
                             int32_t *out)
    void fheml_keyswitch_group(int simd, const uint32_t *ksk, int n_in, int n_out,
                               int base_log, int level, const uint64_t *const *inp, int G,
                               uint32_t *const *out, int32_t *digits)
    void fheml_blind_rotate_group(int simd, const fft_plan *p, const double *bsk, int n, int k,
                                  int base_log, int level, int grouping, const int32_t *abar,
                                  int G, uint64_t *acc, pbs_scratch *sc)
    void fheml_pbs_range(int simd, const fft_plan *p, const uint32_t *ksk, int ks_base_log,
                         int ks_level, const double *bsk, int n, int k, int pbs_base_log,
                         int pbs_level, int grouping, const uint64_t *luts,
                         const int64_t *lut_index,
                         const uint64_t *inp, uint64_t *out, int64_t start, int64_t end,
                         int group, int n_extract, int extract_stride, pbs_scratch *sc)
    void fheml_mul_binary_exact(int simd, const fft_plan *p, const double *key_f,
                                const uint64_t *a, uint64_t *out, double *work, int32_t *limb)

MAX_GROUP = FHEML_MAX_GROUP
MAX_GROUPING = FHEML_MAX_GROUPING
SIMD_LEVELS = ("portable", "avx2", "avx512")
CPU_SIMD_LEVEL = SIMD_LEVELS[fheml_cpu_simd_level()]
cdef int _simd = 0


def available_simd_levels():
    """Kernel paths this CPU can run, from the portable one up to the best."""
    return SIMD_LEVELS[:SIMD_LEVELS.index(CPU_SIMD_LEVEL) + 1]


def simd_level():
    """The kernel path in use: ``"portable"``, ``"avx2"`` or ``"avx512"``."""
    return SIMD_LEVELS[_simd]


def set_simd_level(level):
    """Run the kernels of ``level`` (a name of :data:`SIMD_LEVELS`); returns the previous one.

    Every path gives the same results up to the FFT rounding (whose noise the parameter
    selection covers for all paths).  For tests and benchmarks; ``FHEML_SIMD`` sets it at
    import.

    Raises
    ------
    ValueError
        If ``level`` is unknown or the CPU cannot run it.
    """
    global _simd
    if level not in SIMD_LEVELS:
        raise ValueError(f"unknown kernel path {level!r}; expected one of {SIMD_LEVELS}")
    if level not in available_simd_levels():
        raise ValueError(f"this CPU cannot run the {level} kernels (best: {CPU_SIMD_LEVEL})")
    previous = simd_level()
    _simd = SIMD_LEVELS.index(level)
    _csprng._set_simd_level(_simd)
    return previous


def _simd_level_from_env():
    """Kernel path named by ``FHEML_SIMD``: ``auto`` (default, the CPU's best), ``portable``
    (also ``0``, ``off``, ``no``), ``avx2`` or ``avx512``; a path the CPU lacks falls back to
    the CPU's best, with a warning."""
    value = os.environ.get("FHEML_SIMD", "auto").strip().lower()
    if value in ("", "auto", "1", "on", "yes"):
        return CPU_SIMD_LEVEL
    if value in ("0", "off", "no"):
        return "portable"
    if value not in SIMD_LEVELS:
        warnings.warn(f"FHEML_SIMD={value!r} is not one of auto, {', '.join(SIMD_LEVELS)}; "
                      f"using {CPU_SIMD_LEVEL}", RuntimeWarning, stacklevel=2)
        return CPU_SIMD_LEVEL
    if value not in available_simd_levels():
        warnings.warn(f"FHEML_SIMD={value}: this CPU cannot run it; using {CPU_SIMD_LEVEL}",
                      RuntimeWarning, stacklevel=2)
        return CPU_SIMD_LEVEL
    return value


set_simd_level(_simd_level_from_env())


# Cache-line (and AVX-512 vector) alignment of the arrays the kernels stream through: an
# unaligned 64-byte load straddles two cache lines (large numpy arrays start 16 bytes into
# a page).
ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


cdef class FourierPlan:
    """Twiddle and twist tables of the negacyclic FFT for polynomials of size N."""
    cdef fft_plan plan
    cdef readonly object tables
    cdef readonly int polynomial_size

    def __init__(self, int polynomial_size):
        N = polynomial_size
        if N < 8 or N & (N - 1) or N > 1 << 17:
            raise ValueError(f"polynomial_size must be a power of two in [8, 2^17], got {N}")
        M = N // 2
        # Computed in extended precision: the tables' rounding error is FFT noise.
        pi = np.arctan(np.longdouble(1)) * 4
        tw = np.zeros(M, dtype=np.longdouble)
        tw_im = np.zeros(M, dtype=np.longdouble)
        # tw3: the product of the twiddles of two consecutive stages (radix-4 passes)
        tw3 = np.zeros(M, dtype=np.longdouble)
        tw3_im = np.zeros(M, dtype=np.longdouble)
        h = 1
        while h < M:
            j = np.arange(h, dtype=np.longdouble)
            ang = pi * j / h
            tw[h:2 * h] = np.cos(ang)
            tw_im[h:2 * h] = np.sin(ang)
            q = j[:h // 2]
            tw3[h:h + h // 2] = np.cos(3 * pi * q / h)
            tw3_im[h:h + h // 2] = np.sin(3 * pi * q / h)
            h *= 2
        j = np.arange(M, dtype=np.longdouble)
        ang = pi * j / N
        tables = {
            "tw_re": tw, "tw_im": tw_im, "tw3_re": tw3, "tw3_im": tw3_im,
            "twist_re": np.cos(ang), "twist_im": np.sin(ang),
            "untwist_re": np.cos(ang) / M, "untwist_im": -np.sin(ang) / M,
        }
        for name, table in tables.items():
            tables[name] = aligned_empty(M, np.float64)
            tables[name][:] = table
        self.tables = tables
        self.polynomial_size = N
        self.plan.N = N
        self.plan.M = M
        self.plan.log2N = N.bit_length() - 1
        cdef double[::1] v
        v = tables["tw_re"]; self.plan.tw_re = &v[0]
        v = tables["tw_im"]; self.plan.tw_im = &v[0]
        v = tables["tw3_re"]; self.plan.tw3_re = &v[0]
        v = tables["tw3_im"]; self.plan.tw3_im = &v[0]
        v = tables["twist_re"]; self.plan.twist_re = &v[0]
        v = tables["twist_im"]; self.plan.twist_im = &v[0]
        v = tables["untwist_re"]; self.plan.untwist_re = &v[0]
        v = tables["untwist_im"]; self.plan.untwist_im = &v[0]
        self._monomial_tables(pi)

    def _monomial_tables(self, pi):
        # Roots of unity exp(i pi t / N), t < 2N, for the transforms of monomials (multi-bit
        # bootstrap).  The kernel relies on point m evaluating at exp(i pi (1 - 4 bitrev(m))
        # / N): checked here on the transform of X.
        N, M = self.polynomial_size, self.polynomial_size // 2
        x = np.zeros((1, N), dtype=np.int32)
        x[0, 1] = 1
        f = fft_forward_i32(self, x)[0]
        bits = M.bit_length() - 1
        m = np.arange(M)
        rev = np.zeros(M, dtype=np.int64)
        for b in range(bits):
            rev |= ((m >> b) & 1) << (bits - 1 - b)
        if not np.allclose(f[:M] + 1j * f[M:], np.exp(1j * np.pi * (1 - 4 * rev) / N), atol=1e-9):
            raise AssertionError("the FFT's points are not in the order the kernels assume")
        t = np.arange(2 * N, dtype=np.longdouble)
        tables = {"root_re": aligned_empty(2 * N, np.float64),
                  "root_im": aligned_empty(2 * N, np.float64)}
        tables["root_re"][:] = np.cos(pi * t / N)
        tables["root_im"][:] = np.sin(pi * t / N)
        self.tables.update(tables)
        cdef double[::1] v
        v = tables["root_re"]; self.plan.root_re = &v[0]
        v = tables["root_im"]; self.plan.root_im = &v[0]


cdef inline void _check_rows(object a, int N, str name) except *:
    if a.ndim != 2 or a.shape[1] != N:
        raise ValueError(f"{name} must have shape (rows, {N}), got {a.shape}")


# Largest decomposition base: keyswitch digits are int32 in [-B/2, B/2] (kernels_impl.h).
MAX_BASE_LOG = 31


cdef inline void _check_decomposition(int base_log, int level, str name) except *:
    if not (1 <= base_log <= MAX_BASE_LOG and level >= 1 and base_log * level <= 64):
        raise ValueError(f"bad {name} decomposition: base_log={base_log} must be in "
                         f"1..{MAX_BASE_LOG}, level={level} >= 1, base_log * level <= 64")


cdef inline void _check_out(object out, tuple shape, object dtype, str name) except *:
    """``out`` is a writable C-contiguous ndarray of the given shape and dtype."""
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writable C-contiguous {np.dtype(dtype)} array of "
                         f"shape {shape}")


def fft_forward_i32(FourierPlan plan, a):
    """Negacyclic forward transform of rows of small integers -> (rows, N) f64 (re | im)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise TypeError(f"expected integers, got {a.dtype}")
    if a.dtype != np.int32 and a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise ValueError("values must fit in int32")
    return _forward(plan, np.ascontiguousarray(a, dtype=np.int32), False)


def fft_forward_torus(FourierPlan plan, a):
    """Negacyclic forward transform of rows of torus values (u64 read as fractions)."""
    return _forward(plan, np.ascontiguousarray(a, dtype=np.uint64), True)


cdef object _forward(FourierPlan plan, a, bint torus):
    cdef int N = plan.polynomial_size, M = N // 2
    _check_rows(a, N, "a")
    out = aligned_empty(a.shape, np.float64)
    cdef double[:, ::1] ov = out
    cdef const int32_t[:, ::1] iv
    cdef const uint64_t[:, ::1] tv
    cdef Py_ssize_t r, rows = a.shape[0]
    if torus:
        tv = a
    else:
        iv = a
    with nogil:
        for r in range(rows):
            if torus:
                fheml_forward_torus(_simd, &plan.plan, &tv[r, 0], &ov[r, 0], &ov[r, M])
            else:
                fheml_forward_i32(_simd, &plan.plan, &iv[r, 0], &ov[r, 0], &ov[r, M])
    return out


def fft_backward(FourierPlan plan, f):
    """Inverse of the forward transforms: (rows, N) f64 Fourier -> (rows, N) f64 values."""
    cdef int N = plan.polynomial_size, M = N // 2
    work = np.array(f, dtype=np.float64, order="C", copy=True)
    _check_rows(work, N, "f")
    out = np.empty(work.shape, dtype=np.float64)
    cdef double[:, ::1] wv = work
    cdef double[:, ::1] ov = out
    cdef Py_ssize_t r
    with nogil:
        for r in range(wv.shape[0]):
            fheml_backward_f64(_simd, &plan.plan, &wv[r, 0], &wv[r, M], &ov[r, 0])
    return out


def add_f64_to_torus(x, acc):
    """acc += x * 2^64 mod 2^64 in place (x: torus values in units of 1).

    ``acc`` must be a writable C-contiguous uint64 array (updated in place: a copy would
    silently lose the result) with as many values as ``x``."""
    x = np.asarray(x, dtype=np.float64)
    _check_out(acc, getattr(acc, "shape", None), np.uint64, "acc")
    if acc.size != x.size:
        raise ValueError(f"x has {x.size} values and acc {acc.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite")
    cdef const double[::1] xv = np.ascontiguousarray(x).reshape(-1)
    cdef uint64_t[::1] av = acc.reshape(-1)
    if xv.shape[0] == 0:
        return
    with nogil:
        fheml_add_f64_to_torus(_simd, &xv[0], &av[0], <int>xv.shape[0])


def dot_binary(masks, key_bits):
    """<mask, key> mod 2^64 of each row of ``masks`` (rows, d) with a 0/1 key of length d,
    read from columns 0..d-1 (a trailing body column is ignored)."""
    if masks.ndim != 2 or masks.dtype != np.uint64:
        raise ValueError("masks must be a 2-D uint64 array")
    if masks.shape[0] == 0:
        return np.empty(0, dtype=np.uint64)
    if masks.strides[1] != 8:
        masks = np.ascontiguousarray(masks)
    key_bits = np.asarray(key_bits)
    if key_bits.ndim != 1 or key_bits.size < 1 or key_bits.dtype.kind not in "iub":
        raise ValueError("key_bits must be a non-empty 1-D integer array")
    keymask = np.where(key_bits != 0, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0))
    cdef int d = keymask.shape[0]
    if masks.shape[1] < d:
        raise ValueError("rows are shorter than the key")
    cdef Py_ssize_t rows = masks.shape[0], stride = masks.strides[0] // 8
    out = np.empty(rows, dtype=np.uint64)
    if rows == 0:
        return out
    if masks.strides[0] % 8:
        raise ValueError("unaligned rows")
    cdef uint64_t[::1] km = keymask
    cdef uint64_t[::1] ov = out
    cdef const uint64_t[:, :] mv = masks
    cdef Py_ssize_t r
    with nogil:
        if stride == d:
            fheml_dot_binary(_simd, &mv[0, 0], &km[0], d, rows, &ov[0])
        else:
            for r in range(rows):
                fheml_dot_binary(_simd, &mv[r, 0], &km[0], d, 1, &ov[r])
    return out


def decompose(values, int base_log, int level):
    """Balanced signed decomposition -> int32 (level, n), most significant level first."""
    _check_decomposition(base_log, level, "")
    cdef uint64_t[::1] v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    out = np.empty((level, v.shape[0]), dtype=np.int32)
    cdef int32_t[:, ::1] ov = out
    if v.shape[0]:
        with nogil:
            fheml_decompose_i32(_simd, &v[0], <int>v.shape[0], base_log, level, &ov[0, 0])
    return out


def mul_binary_exact(FourierPlan plan, key_bits, a, out=None):
    """out (+)= key * a mod (X^N + 1, 2^64) exactly, for a binary key polynomial."""
    cdef int N = plan.polynomial_size
    key_bits = np.asarray(key_bits)
    if key_bits.shape != (N,) or key_bits.dtype.kind not in "iub" or (
            key_bits.size and (key_bits.min() < 0 or key_bits.max() > 1)):
        raise ValueError(f"key_bits must be {N} binary values")
    key_f = fft_forward_i32(plan, key_bits.astype(np.int32).reshape(1, N))
    a = np.asarray(a)
    if a.dtype != np.uint64:
        raise ValueError("a must be uint64 torus values")
    a = np.ascontiguousarray(a)
    _check_rows(a, N, "a")
    if out is None:
        out = np.zeros(a.shape, dtype=np.uint64)
    _check_out(out, a.shape, np.uint64, "out")
    cdef const double[:, ::1] kf = key_f
    cdef const uint64_t[:, ::1] av = a
    cdef uint64_t[:, ::1] ov = out
    cdef double[::1] work = np.empty(3 * N, dtype=np.float64)
    cdef int32_t[::1] limb = np.empty(N, dtype=np.int32)
    cdef Py_ssize_t r
    with nogil:
        for r in range(av.shape[0]):
            fheml_mul_binary_exact(_simd, &plan.plan, &kf[0, 0], &av[r, 0], &ov[r, 0],
                                   &work[0], &limb[0])
    return out


def keyswitch_batch(ksk, int ks_base_log, int ks_level, cts, int group=8):
    """Keyswitch (B, n_in + 1) u64 ciphertexts with a (n_in, ks_level, n_out + 1) uint32 key
    (top 32 bits of the torus); returns (B, n_out + 1) uint32 (top 32 bits)."""
    _check_decomposition(ks_base_log, ks_level, "keyswitch")
    if ksk.ndim != 3 or ksk.shape[1] != ks_level or ksk.shape[0] < 1 or ksk.shape[2] < 2 \
            or cts.ndim != 2 or cts.shape[1] != ksk.shape[0] + 1:
        raise ValueError("keyswitch key and ciphertexts do not match")
    if not 1 <= group <= FHEML_MAX_GROUP:
        raise ValueError(f"group must be in [1, {FHEML_MAX_GROUP}]")
    if ksk.dtype != np.uint32:
        raise ValueError("the keyswitching key must be uint32 (top 32 bits of the torus)")
    if cts.dtype != np.uint64:
        raise ValueError("ciphertexts must be uint64")
    cdef const uint32_t[:, :, ::1] kv = np.ascontiguousarray(ksk)
    cdef const uint64_t[:, ::1] cv = np.ascontiguousarray(cts)
    cdef int n_in = ksk.shape[0], n_out = ksk.shape[2] - 1
    cdef Py_ssize_t B = cts.shape[0], s, g, G
    out = np.empty((B, n_out + 1), dtype=np.uint32)
    cdef uint32_t[:, ::1] ov = out
    cdef int32_t[::1] digits = np.empty(FHEML_MAX_GROUP * ks_level, dtype=np.int32)
    cdef const uint64_t *ins[16]
    cdef uint32_t *outs[16]
    with nogil:
        s = 0
        while s < B:
            G = min(group, B - s)
            for g in range(G):
                ins[g] = &cv[s + g, 0]
                outs[g] = &ov[s + g, 0]
            fheml_keyswitch_group(_simd, &kv[0, 0, 0], n_in, n_out, ks_base_log, ks_level,
                                  ins, <int>G, outs, &digits[0])
            s += G
    return out


def _subsets_per_pass(int grouping):
    cdef int subsets = (1 << grouping) - 1
    return subsets if subsets <= FHEML_SUBSETS_PER_PASS else 1


cdef class PbsWorkspace:
    """Scratch buffers for one thread running fheml_pbs_range: allocated once, reused."""
    cdef pbs_scratch sc
    cdef object _keep
    cdef readonly tuple shape
    cdef readonly int grouping

    def __init__(self, int n, int k, int N, int pbs_level, int ks_level, int group,
                 int grouping=1):
        if not 1 <= group <= FHEML_MAX_GROUP:
            raise ValueError(f"group must be in [1, {FHEML_MAX_GROUP}]")
        if not 1 <= grouping <= FHEML_MAX_GROUPING:
            raise ValueError(f"grouping must be in [1, {FHEML_MAX_GROUPING}]")
        if n < 1 or k < 1 or N < 8 or pbs_level < 1 or ks_level < 0:
            raise ValueError(f"bad workspace dimensions {(n, k, N, pbs_level, ks_level)}")
        self.shape = (n, k, N, pbs_level, ks_level, group)
        self.grouping = grouping
        arrays = {
            "diff": aligned_empty(N, np.uint64),
            "fdig": aligned_empty(group * (k + 1) * pbs_level * N, np.float64),
            "facc": aligned_empty(group * (k + 1) * N, np.float64),
            "fsum": aligned_empty(group * (k + 1) * N, np.float64),
            # the transforms of one multiply-accumulate pass (FHEML_SUBSET_PASS in kernels.h)
            "mono": aligned_empty(_subsets_per_pass(grouping) * group * N, np.float64),
            "small": aligned_empty(FHEML_MAX_GROUP * (n + 1), np.uint32),
            "abar": np.empty(group * n, np.int32),
            "acc": aligned_empty(group * (k + 1) * N, np.uint64),
            "ks_digits": np.empty(FHEML_MAX_GROUP * max(ks_level, 1), np.int32),
        }
        self._keep = arrays
        cdef uint64_t[::1] u
        cdef uint32_t[::1] u32
        cdef int32_t[::1] i
        cdef double[::1] d
        u = arrays["diff"]; self.sc.diff = &u[0]
        d = arrays["fdig"]; self.sc.fdig = &d[0]
        d = arrays["facc"]; self.sc.facc = &d[0]
        d = arrays["fsum"]; self.sc.fsum = &d[0]
        d = arrays["mono"]; self.sc.mono = &d[0]
        u32 = arrays["small"]; self.sc.small = &u32[0]
        i = arrays["abar"]; self.sc.abar = &i[0]
        u = arrays["acc"]; self.sc.acc = &u[0]
        i = arrays["ks_digits"]; self.sc.ks_digits = &i[0]
        self.sc.barrier = NULL


HAVE_STEP_BARRIER = bool(FHEML_HAVE_BARRIER)


cdef class StepBarrier:
    """Barrier of ``parties`` threads running :func:`pbs_range` on parts of one batch
    ("lockstep"): each waits for the others before every blind-rotation step, so that a
    step's GGSW, read from memory by the first thread, is still in the shared cache for
    the others.  A thread that has no rotation left leaves (:meth:`leave`, called by
    :func:`pbs_range` when its range is done, and by the caller if it never starts), and
    the others stop waiting for it.  Every party must call :func:`pbs_range` with it or
    :meth:`leave`, exactly once, or the others wait forever."""
    cdef fheml_barrier b
    cdef bint _ready
    cdef readonly int parties

    def __cinit__(self, int parties):
        if not FHEML_HAVE_BARRIER:
            raise RuntimeError("lockstep bootstraps need POSIX threads")
        if parties < 1:
            raise ValueError(f"a barrier needs at least one party, got {parties}")
        if fheml_barrier_init(&self.b, parties):
            raise MemoryError("could not make a barrier")
        self._ready = True
        self.parties = parties

    def __dealloc__(self):
        if self._ready:
            fheml_barrier_destroy(&self.b)

    def leave(self):
        """This party has no (more) blind rotations: the others stop waiting for it."""
        with nogil:
            fheml_barrier_leave(&self.b)


def pbs_range(FourierPlan plan, ksk, int ks_base_log, int ks_level, bsk_fourier, int n,
              int k, int pbs_base_log, int pbs_level, luts, lut_index, cts, out,
              Py_ssize_t start, Py_ssize_t end, int group=4, PbsWorkspace workspace=None,
              int n_extract=1, int extract_stride=0, int grouping=1,
              StepBarrier barrier=None):
    """KS (if ksk is not None) + programmable bootstrap of rows [start, end) of ``cts`` into
    the same rows of ``out``.  Runs without the GIL: threads may call it on disjoint ranges.

    ``grouping`` > 1 runs the multi-bit blind rotation: ``bsk_fourier`` then holds
    ``2^grouping - 1`` GGSWs per group of ``grouping`` key bits (see :func:`bsk_ggsw_count`).

    With ``n_extract`` > 1 (many-LUT), ``out`` has ``n_extract`` rows per input, row
    ``b * n_extract + i`` being coefficient ``i * extract_stride`` of the rotated accumulator.

    With a ``barrier``, its blind-rotation steps run in lockstep with the other threads
    holding it (see :class:`StepBarrier`); it leaves the barrier when it returns, also on
    an error.
    """
    try:
        return _pbs_range(plan, ksk, ks_base_log, ks_level, bsk_fourier, n, k, pbs_base_log,
                          pbs_level, luts, lut_index, cts, out, start, end, group, workspace,
                          n_extract, extract_stride, grouping, barrier)
    finally:
        if barrier is not None:
            barrier.leave()


cdef _pbs_range(FourierPlan plan, ksk, int ks_base_log, int ks_level, bsk_fourier, int n,
                int k, int pbs_base_log, int pbs_level, luts, lut_index, cts, out,
                Py_ssize_t start, Py_ssize_t end, int group, PbsWorkspace workspace,
                int n_extract, int extract_stride, int grouping, StepBarrier barrier):
    cdef int N = plan.polynomial_size
    if not 1 <= group <= FHEML_MAX_GROUP:
        raise ValueError(f"group must be in [1, {FHEML_MAX_GROUP}]")
    if n < 1 or k < 1:
        raise ValueError(f"n={n} and k={k} must be >= 1")
    _check_decomposition(pbs_base_log, pbs_level, "bootstrap")
    if ksk is not None:
        _check_decomposition(ks_base_log, ks_level, "keyswitch")
    in_dim = k * N if ksk is not None else n
    if cts.ndim != 2 or cts.shape[1] != in_dim + 1 or cts.dtype != np.uint64 or not cts.flags.c_contiguous:
        raise ValueError(f"cts must be C-contiguous uint64 of shape (B, {in_dim + 1})")
    if n_extract < 1 or extract_stride < 0 or (n_extract - 1) * extract_stride >= N:
        raise ValueError(f"bad extraction: {n_extract} coefficients {extract_stride} apart "
                         f"in a polynomial of {N}")
    _check_out(out, (cts.shape[0] * n_extract, k * N + 1), np.uint64, "out")
    if bsk_fourier.shape != (bsk_ggsw_count(n, grouping), (k + 1) * pbs_level, k + 1, N) \
            or bsk_fourier.dtype != np.float64:
        raise ValueError("Fourier bootstrapping key does not match the parameters")
    if luts.ndim != 2 or luts.shape[0] < 1 or luts.shape[1] != N or luts.dtype != np.uint64:
        raise ValueError(f"luts must be uint64 of shape (T, {N})")
    if lut_index.shape != (cts.shape[0],) or lut_index.dtype != np.int64:
        raise ValueError("lut_index must be int64 of shape (B,)")
    if not 0 <= start <= end <= cts.shape[0]:
        raise ValueError("bad range")
    if end > start and (lut_index[start:end].min() < 0 or lut_index[start:end].max() >= luts.shape[0]):
        raise ValueError("lut_index out of range")
    cdef const uint32_t *kp = NULL
    cdef const uint32_t[:, :, ::1] kv
    if ksk is not None:
        if ksk.shape != (k * N, ks_level, n + 1) or ksk.dtype != np.uint32:
            raise ValueError("keyswitching key does not match the parameters")
        kv = ksk
        kp = &kv[0, 0, 0]
    if workspace is None:
        workspace = PbsWorkspace(n, k, N, pbs_level, ks_level, group, grouping)
    elif (workspace.shape != (n, k, N, pbs_level, ks_level, group)
          or workspace.grouping < grouping):
        raise ValueError("workspace was made for other parameters")
    cdef const double[:, :, :, ::1] bv = bsk_fourier
    cdef const uint64_t[:, ::1] lv = luts
    cdef const int64_t[::1] iv = lut_index
    cdef const uint64_t[:, ::1] cv = cts
    cdef uint64_t[:, ::1] ov = out
    if end <= start:
        return out
    workspace.sc.barrier = &barrier.b if barrier is not None else NULL
    try:
        with nogil:
            fheml_pbs_range(_simd, &plan.plan, kp, ks_base_log, ks_level, &bv[0, 0, 0, 0], n,
                            k, pbs_base_log, pbs_level, grouping, &lv[0, 0], &iv[0], &cv[0, 0],
                            &ov[0, 0], start, end, group, n_extract, extract_stride,
                            &workspace.sc)
    finally:
        workspace.sc.barrier = NULL
    return out


def bsk_ggsw_count(int n, int grouping):
    """GGSWs in a bootstrapping key of ``n`` bits with grouping factor ``grouping``: one per
    bit (1), or ``2^grouping - 1`` per group of ``grouping`` bits (``n % grouping == 0``)."""
    if not 1 <= grouping <= FHEML_MAX_GROUPING:
        raise ValueError(f"grouping factor must be in [1, {FHEML_MAX_GROUPING}], got {grouping}")
    if n < 1 or n % grouping:
        raise ValueError(f"LWE dimension {n} is not a positive multiple of the grouping factor "
                         f"{grouping}")
    return n // grouping * ((1 << grouping) - 1)


def blind_rotate(FourierPlan plan, bsk_fourier, int base_log, int level, abar, acc,
                 PbsWorkspace workspace=None, int grouping=1):
    """Blind rotation of G GLWE accumulators in place: for i < n, ``acc[g] += ExtProd(bsk[i],
    X^abar[g, i] * acc[g] - acc[g])`` (the CMux steps of a bootstrap, without its keyswitch,
    modulus switch and extraction); with ``grouping`` > 1 the multi-bit steps (kernels_impl.h,
    blind_rotate_multibit).  For tests and noise measurements.

    Parameters
    ----------
    bsk_fourier : ndarray of float64, shape (bsk_ggsw_count(n, grouping), (k+1)*level, k+1, N)
    abar : ndarray of int32, shape (G, n), values in [0, 2N)
    acc : ndarray of uint64, shape (G, k+1, N), C-contiguous, updated in place
    """
    cdef int N = plan.polynomial_size
    _check_decomposition(base_log, level, "bootstrap")
    if bsk_fourier.ndim != 4 or bsk_fourier.dtype != np.float64 or bsk_fourier.shape[3] != N:
        raise ValueError(f"bsk_fourier must be float64 of shape (n, (k+1)*level, k+1, {N})")
    abar = np.asarray(abar)
    if abar.ndim != 2:
        raise ValueError("abar must have shape (G, n)")
    cdef int n = abar.shape[1], k = bsk_fourier.shape[2] - 1
    if bsk_fourier.shape[1] != (k + 1) * level or not bsk_fourier.flags.c_contiguous \
            or n < 1 or k < 1 or bsk_fourier.shape[0] != bsk_ggsw_count(n, grouping):
        raise ValueError("Fourier bootstrapping key does not match the level, n or grouping")
    if not isinstance(acc, np.ndarray) or acc.ndim != 3:
        raise ValueError(f"acc must be C-contiguous uint64 of shape (G, {k + 1}, {N})")
    _check_out(acc, (acc.shape[0], k + 1, N), np.uint64, "acc")
    cdef int G = acc.shape[0]
    if not 1 <= G <= FHEML_MAX_GROUP:
        raise ValueError(f"between 1 and {FHEML_MAX_GROUP} accumulators")
    if abar.dtype.kind not in "iu":
        raise ValueError(f"abar must hold integers, got {abar.dtype}")
    if abar.shape != (G, n) or (abar.size and (abar.min() < 0 or abar.max() >= 2 * N)):
        raise ValueError(f"abar must have shape ({G}, {n}) with values in [0, {2 * N})")
    abar = np.ascontiguousarray(abar, dtype=np.int32)
    if workspace is None:
        workspace = PbsWorkspace(n, k, N, level, 1, G, grouping)
    elif (workspace.shape[1:4] != (k, N, level) or workspace.shape[5] < G
          or workspace.grouping < grouping):
        raise ValueError("workspace was made for other parameters")
    cdef const double[:, :, :, ::1] bv = bsk_fourier
    cdef const int32_t[:, ::1] av = abar
    cdef uint64_t[:, :, ::1] cv = acc
    if n:
        with nogil:
            fheml_blind_rotate_group(_simd, &plan.plan, &bv[0, 0, 0, 0], n, k, base_log, level,
                                     grouping, &av[0, 0], G, &cv[0, 0, 0], &workspace.sc)
    return acc
# ------------------------------------------------------------------------- GLWE ----------
# Exact products by clear integer polynomials (glwe_kernels.h), apart from the bootstrap.

cdef extern from "glwe_kernels.h" nogil:
    void fheml_glwe_poly_matmul(int level, const uint64_t *a, int64_t G, int C, int R, int N,
                                const int *lengths, const int64_t *w, int O, int S,
                                uint64_t *out)
    void fheml_pack_top_bits(const uint64_t *w, int64_t n, int bits, uint8_t *out)
    int fheml_unpack_top_bits(const uint8_t *data, int64_t n, int bits, uint64_t *w)


def pack_top_bits(words, int bits):
    """Top ``bits`` bits (1..64) of each uint64 word, most significant first, concatenated
    into ``ceil(n * bits / 8)`` bytes (the last one padded with zero bits)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    w = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1)
    cdef int64_t n = w.shape[0]
    out = np.zeros((n * bits + 7) // 8, dtype=np.uint8)
    if n == 0:
        return out
    cdef uint64_t[::1] wv = w
    cdef uint8_t[::1] ov = out
    with nogil:
        fheml_pack_top_bits(&wv[0], n, bits, &ov[0])
    return out


def unpack_top_bits(data, Py_ssize_t count, int bits):
    """Inverse of :func:`pack_top_bits`: ``count`` uint64 words (low bits zero).

    Raises ValueError unless ``data`` is exactly the ``ceil(count * bits / 8)`` bytes of a
    canonical stream (zero padding bits)."""
    if not 1 <= bits <= 64 or count < 0:
        raise ValueError(f"bits must be in 1..64 and count >= 0, got {bits}, {count}")
    d = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if d.shape[0] != (count * bits + 7) // 8:
        raise ValueError(f"{d.shape[0]} bytes do not hold {count} words of {bits} bits")
    out = np.empty(count, dtype=np.uint64)
    if count == 0:
        return out
    cdef const uint8_t[::1] dv = d
    cdef uint64_t[::1] ov = out
    cdef int padding
    with nogil:
        padding = fheml_unpack_top_bits(&dv[0], count, bits, &ov[0])
    if padding:
        raise ValueError("non-zero padding bits after the last word")
    return out


def glwe_poly_matmul(polys, lengths, weights):
    """Exact negacyclic products summed over an axis, modulo (X^N + 1, 2^64).

    Parameters
    ----------
    polys : uint64 array (G, C, R, N)
        G groups of C ciphertexts of R polynomials each (GLWE: k masks and the body).
    lengths : int array (R,)
        Polynomial r is zero from coefficient ``lengths[r]`` on (not read there).
    weights : int64 array (C, O, S)
        Clear integer polynomials of degree < S <= N.

    Returns
    -------
    uint64 array (G, O, R, N)
        ``out[g, o, r] = sum_c polys[g, c, r] * weights[c, o]``.
    """
    if polys.ndim != 4 or polys.dtype != np.uint64:
        raise ValueError("polys must be a uint64 array (G, C, R, N)")
    if weights.ndim != 3 or weights.dtype != np.int64:
        raise ValueError("weights must be an int64 array (C, O, S)")
    cdef Py_ssize_t G = polys.shape[0]
    cdef int C = polys.shape[1], R = polys.shape[2], N = polys.shape[3]
    cdef int O = weights.shape[1], S = weights.shape[2]
    if weights.shape[0] != C or S > N or N < 1:
        raise ValueError(f"weights of shape {weights.shape} do not match polys {polys.shape}")
    lens = np.ascontiguousarray(lengths, dtype=np.intc)
    if lens.shape != (R,) or (R and (lens.min() < 0 or lens.max() > N)):
        raise ValueError(f"lengths must be {R} values in [0, {N}]")
    a = np.ascontiguousarray(polys)
    w = np.ascontiguousarray(weights)
    out = np.empty((G, O, R, N), dtype=np.uint64)
    if out.size == 0:
        return out
    if C == 0 or S == 0:
        out[...] = 0
        return out
    cdef uint64_t[:, :, :, ::1] av = a
    cdef int[::1] lv = lens
    cdef int64_t[:, :, ::1] wv = w
    cdef uint64_t[:, :, :, ::1] ov = out
    # the copy of the kernel path in use (see set_simd_level)
    with nogil:
        fheml_glwe_poly_matmul(_simd, &av[0, 0, 0, 0], G, C, R, N, &lv[0], &wv[0, 0, 0], O,
                               S, &ov[0, 0, 0, 0])
    return out
