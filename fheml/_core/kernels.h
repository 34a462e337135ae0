/* TFHE kernels of fheml: negacyclic FFT, decomposition, keyswitch, programmable bootstrap.
 *
 * kernels_impl.h is compiled twice: a portable copy (suffix _generic) and, on x86 with GCC
 * or Clang, an AVX2+FMA copy (suffix _avx2) through target pragmas.  The build itself uses
 * no -march flag, so the extension loads on any x86-64 CPU and the AVX2 copy is only called
 * after the CPU has been checked (fheml_cpu_has_avx2), never "illegal instruction".
 */
#ifndef FHEML_KERNELS_H
#define FHEML_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FHEML_MAX_GROUP 16

typedef struct {
    int N, M, log2N;
    const double *tw_re, *tw_im;           /* M entries: stage h uses [h, 2h) */
    const double *twist_re, *twist_im;     /* M entries: exp(i*pi*j/N) */
    const double *untwist_re, *untwist_im; /* M entries: exp(-i*pi*j/N) / M */
} fft_plan;

typedef struct {
    uint64_t *diff;     /* N */
    double *fdig;       /* (k+1) * pbs_level * N   (re/im blocks of N/2) */
    double *facc;       /* (k+1) * N */
    uint32_t *small;    /* group * (n+1), top 32 bits of the torus */
    int32_t *abar;      /* group * n */
    uint64_t *acc;      /* group * (k+1) * N */
    int32_t *ks_digits; /* group * ks_level */
} pbs_scratch;

#define FN(name) name##_generic
#define FHEML_IMPL_AVX2 0
#include "kernels_impl.h"
#undef FHEML_IMPL_AVX2
#undef FN

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FHEML_HAVE_AVX2_PATH 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>
#define FN(name) name##_avx2
#define FHEML_IMPL_AVX2 1
#include "kernels_impl.h"
#undef FHEML_IMPL_AVX2
#undef FN
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define FHEML_HAVE_AVX2_PATH 0
#endif

static inline int fheml_cpu_has_avx2(void)
{
#if FHEML_HAVE_AVX2_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#if FHEML_HAVE_AVX2_PATH
#define FHEML_DISPATCH(simd, name, ...) \
    ((simd) ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
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

static inline void fheml_pbs_range(int simd, const fft_plan *p, const uint32_t *ksk,
                                   int ks_base_log, int ks_level, const double *bsk, int n,
                                   int k, int pbs_base_log, int pbs_level, const uint64_t *luts,
                                   const int64_t *lut_index, const uint64_t *in, uint64_t *out,
                                   int64_t start, int64_t end, int group, pbs_scratch *sc)
{
    FHEML_DISPATCH(simd, pbs_range, p, ksk, ks_base_log, ks_level, bsk, n, k, pbs_base_log,
                   pbs_level, luts, lut_index, in, out, start, end, group, sc);
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
