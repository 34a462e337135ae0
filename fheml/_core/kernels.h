/* TFHE kernels of fheml: negacyclic FFT, decomposition, keyswitch, programmable bootstrap.
 *
 * kernels_impl.h is compiled three times: a portable copy (suffix _generic) and, on x86 with
 * GCC or Clang, an AVX2+FMA copy (suffix _avx2) and an AVX-512 copy (suffix _avx512) through
 * target pragmas.  The build itself uses no -march flag, so the extension loads on any x86-64
 * CPU and a SIMD copy is only called after the CPU has been checked (fheml_cpu_simd_level),
 * never "illegal instruction".  Every kernel takes the level to run as its first argument:
 * 0 portable, 1 AVX2, 2 AVX-512.
 */
#ifndef FHEML_KERNELS_H
#define FHEML_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define FHEML_MAX_GROUP 16
/* largest grouping factor of the multi-bit blind rotation */
#define FHEML_MAX_GROUPING 3
/* Subsets of a multi-bit key group per multiply-accumulate pass: the three of g = 2 in one
 * (the sum over them stays in registers), the seven of g = 3 one at a time (in one pass or
 * three at a time, their key and monomial streams and transforms made g = 3 1.2-1.7x
 * slower at N >= 4096).  The workspace holds the monomials of one pass. */
#define FHEML_SUBSETS_PER_PASS 3
#define FHEML_SUBSET_PASS(S) ((S) <= FHEML_SUBSETS_PER_PASS ? (S) : 1)
/* ciphertexts keyswitched together by pbs_range (<= FHEML_MAX_GROUP) */
#define FHEML_KS_GROUP 8

typedef struct {
    int N, M, log2N;
    const double *tw_re, *tw_im;           /* M entries: stage h uses [h, 2h) */
    const double *tw3_re, *tw3_im;         /* M entries: [h, h + h/2) = tw[h + j] * tw[h/2 + j] */
    const double *twist_re, *twist_im;     /* M entries: exp(i*pi*j/N) */
    const double *untwist_re, *untwist_im; /* M entries: exp(-i*pi*j/N) / M */
    /* 2N entries: exp(i*pi*t/N).  The Fourier point m evaluates the polynomial at
     * exp(i*pi*(1 - 4*bitrev(m))/N) (checked when the plan is made): the multi-bit
     * bootstrap builds the transforms of monomials from these roots. */
    const double *root_re, *root_im;
} fft_plan;

/* Step barrier of the lockstep bootstrap: threads running blind rotations of one batch
 * wait for each other before every step, so that each GGSW of the key is read from memory
 * once for all of them (the later threads find it in the shared cache) instead of once
 * per thread.  A thread that has no rotation left leaves, lowering the count it waits for.
 * POSIX threads; elsewhere (FHEML_HAVE_BARRIER 0) the calls do nothing and the Python side
 * never asks for lockstep. */
#if defined(_WIN32)
#define FHEML_HAVE_BARRIER 0
typedef struct {
    int parties;
} fheml_barrier;
static inline int fheml_barrier_init(fheml_barrier *b, int parties) { b->parties = parties; return 0; }
static inline void fheml_barrier_destroy(fheml_barrier *b) { (void)b; }
static inline void fheml_barrier_wait(fheml_barrier *b) { (void)b; }
static inline void fheml_barrier_leave(fheml_barrier *b) { (void)b; }
#else
#include <pthread.h>
#define FHEML_HAVE_BARRIER 1
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int parties, arrived;
    unsigned long generation;
} fheml_barrier;

static inline int fheml_barrier_init(fheml_barrier *b, int parties)
{
    b->parties = parties;
    b->arrived = 0;
    b->generation = 0;
    if (pthread_mutex_init(&b->mu, NULL))
        return -1;
    if (pthread_cond_init(&b->cv, NULL)) {
        pthread_mutex_destroy(&b->mu);
        return -1;
    }
    return 0;
}

static inline void fheml_barrier_destroy(fheml_barrier *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

/* called with b->mu held: release the waiting threads once all present ones arrived */
static inline void fheml_barrier_release_(fheml_barrier *b)
{
    if (b->parties > 0 && b->arrived >= b->parties) {
        b->arrived = 0;
        __atomic_store_n(&b->generation, b->generation + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&b->cv);
    }
}

/* Iterations a waiting thread spins (reading the generation) before it sleeps: threads
 * in lockstep meet once per step, usually a few microseconds apart when each has a core,
 * and a sleep costs a wake-up of tens of microseconds. */
#define FHEML_BARRIER_SPINS 20000

static inline void fheml_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void fheml_barrier_wait(fheml_barrier *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    const unsigned long gen = b->generation;
    b->arrived++;
    if (b->parties > 0 && b->arrived >= b->parties) {
        fheml_barrier_release_(b);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < FHEML_BARRIER_SPINS; i++) {
        if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen)
            return;
        fheml_cpu_relax();
    }
    pthread_mutex_lock(&b->mu);
    while (gen == b->generation)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static inline void fheml_barrier_leave(fheml_barrier *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->parties--;
    fheml_barrier_release_(b);
    pthread_mutex_unlock(&b->mu);
}
#endif

typedef struct {
    uint64_t *diff;     /* N */
    double *fdig;       /* group * (k+1) * pbs_level * N   (re/im blocks of N/2) */
    double *facc;       /* group * (k+1) * N */
    double *fsum;       /* group * (k+1) * N (multi-bit: the sum over a key group's subsets) */
    double *mono;       /* FHEML_SUBSET_PASS(2^gf - 1) * group * N (multi-bit: X^e - 1) */
    uint32_t *small;    /* FHEML_MAX_GROUP * (n+1), top 32 bits of the torus */
    int32_t *abar;      /* group * n */
    uint64_t *acc;      /* group * (k+1) * N */
    int32_t *ks_digits; /* FHEML_MAX_GROUP * ks_level */
    fheml_barrier *barrier; /* lockstep: waited on before every blind-rotation step, or NULL */
} pbs_scratch;

#define FHEML_CAT_(a, b) a##b
#define FHEML_CAT(a, b) FHEML_CAT_(a, b)

#define FN(name) FHEML_CAT(name, _generic)
#define FHEML_IMPL_AVX2 0
#define FHEML_IMPL_AVX512 0
#include "kernels_impl.h"
#undef FHEML_IMPL_AVX512
#undef FHEML_IMPL_AVX2
#undef FN

#if FHEML_X86_SIMD
#include <immintrin.h>
/* _Pragma with the target strings of cpu.h (a #pragma line would not expand them) */
#define FHEML_DO_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__clang__)
#define FHEML_TARGET_PUSH(t) \
    FHEML_DO_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#define FHEML_TARGET_POP FHEML_DO_PRAGMA(clang attribute pop)
#else
#define FHEML_TARGET_PUSH(t) FHEML_DO_PRAGMA(GCC push_options) FHEML_DO_PRAGMA(GCC target(t))
#define FHEML_TARGET_POP FHEML_DO_PRAGMA(GCC pop_options)
#endif

FHEML_TARGET_PUSH(FHEML_TARGET_AVX2)
#define FN(name) FHEML_CAT(name, _avx2)
#define FHEML_IMPL_AVX2 1
#define FHEML_IMPL_AVX512 0
#include "kernels_impl.h"
#undef FHEML_IMPL_AVX512
#undef FHEML_IMPL_AVX2
#undef FN
FHEML_TARGET_POP

FHEML_TARGET_PUSH(FHEML_TARGET_AVX512)
#define FN(name) FHEML_CAT(name, _avx512)
#define FHEML_IMPL_AVX2 1 /* the AVX2 code paths, plus 512-bit loops where they apply */
#define FHEML_IMPL_AVX512 1
#include "kernels_impl.h"
#undef FHEML_IMPL_AVX512
#undef FHEML_IMPL_AVX2
#undef FN
FHEML_TARGET_POP

#define FHEML_DISPATCH(simd, name, ...)                                 \
    ((simd) >= FHEML_SIMD_AVX512 ? name##_avx512(__VA_ARGS__)           \
     : (simd) >= FHEML_SIMD_AVX2 ? name##_avx2(__VA_ARGS__)             \
                                 : name##_generic(__VA_ARGS__))
#else
#define FHEML_DISPATCH(simd, name, ...) name##_generic(__VA_ARGS__)
#endif

static inline void fheml_forward_i32(int simd, const fft_plan *p, const int32_t *a, double *re,
                                     double *im)
{
    FHEML_DISPATCH(simd, forward_i32, p, a, re, im);
}

static inline void fheml_forward_torus(int simd, const fft_plan *p, const uint64_t *a,
                                       double *re, double *im)
{
    FHEML_DISPATCH(simd, forward_torus, p, a, re, im);
}

static inline void fheml_backward_f64(int simd, const fft_plan *p, double *re, double *im,
                                      double *out)
{
    FHEML_DISPATCH(simd, backward_f64, p, re, im, out);
}

static inline void fheml_add_f64_to_torus(int simd, const double *x, uint64_t *acc, int n)
{
    FHEML_DISPATCH(simd, add_f64_to_torus, x, acc, n);
}

static inline void fheml_dot_binary(int simd, const uint64_t *a, const uint64_t *keymask, int d,
                                    int64_t rows, uint64_t *out)
{
    FHEML_DISPATCH(simd, dot_binary, a, keymask, d, rows, out);
}

static inline void fheml_decompose_i32(int simd, const uint64_t *v, int n, int base_log,
                                       int level, int32_t *out)
{
    FHEML_DISPATCH(simd, decompose_i32, v, n, base_log, level, out);
}

static inline void fheml_keyswitch_group(int simd, const uint32_t *ksk, int n_in, int n_out,
                                         int base_log, int level, const uint64_t *const *in,
                                         int G, uint32_t *const *out, int32_t *digits)
{
    FHEML_DISPATCH(simd, keyswitch_group, ksk, n_in, n_out, base_log, level, in, G, out,
                   digits);
}

static inline void fheml_blind_rotate_group(int simd, const fft_plan *p, const double *bsk,
                                            int n, int k, int base_log, int level,
                                            int grouping, const int32_t *abar, int G,
                                            uint64_t *acc, pbs_scratch *sc)
{
    FHEML_DISPATCH(simd, blind_rotate_group, p, bsk, n, k, base_log, level, grouping, abar, G,
                   acc, sc);
}

static inline void fheml_pbs_range(int simd, const fft_plan *p, const uint32_t *ksk,
                                   int ks_base_log, int ks_level, const double *bsk, int n,
                                   int k, int pbs_base_log, int pbs_level, int grouping,
                                   const uint64_t *luts, const int64_t *lut_index,
                                   const uint64_t *in, uint64_t *out, int64_t start,
                                   int64_t end, int group, int n_extract, int extract_stride,
                                   pbs_scratch *sc)
{
    FHEML_DISPATCH(simd, pbs_range, p, ksk, ks_base_log, ks_level, bsk, n, k, pbs_base_log,
                   pbs_level, grouping, luts, lut_index, in, out, start, end, group, n_extract,
                   extract_stride, sc);
}

/* out += key * a mod (X^N + 1, 2^64), exactly, for a binary key given in the Fourier domain.
 * a is split in four 16-bit limbs so that every product coefficient (< N * 2^16 <= 2^32)
 * is an integer the f64 FFT computes with an error far below 1/2.
 * work: 3*N doubles + N int32. */
static inline void fheml_mul_binary_exact(int simd, const fft_plan *p, const double *key_f,
                                          const uint64_t *a, uint64_t *out, double *work,
                                          int32_t *limb)
{
    const int N = p->N, M = p->M;
    double *re = work, *im = work + M, *res = work + N;
    for (int t = 0; t < 4; t++) {
        for (int j = 0; j < N; j++)
            limb[j] = (int32_t)((a[j] >> (16 * t)) & 0xffff);
        fheml_forward_i32(simd, p, limb, re, im);
        for (int m = 0; m < M; m++) {
            double xr = re[m], xi = im[m];
            re[m] = xr * key_f[m] - xi * key_f[M + m];
            im[m] = xr * key_f[M + m] + xi * key_f[m];
        }
        fheml_backward_f64(simd, p, re, im, res);
        for (int j = 0; j < N; j++)
            out[j] += (uint64_t)llrint(res[j]) << (16 * t);
    }
}

#endif
