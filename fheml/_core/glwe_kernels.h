/* GLWE kernels of fheml: negacyclic products of torus polynomials by clear integer
 * polynomials, in exact wrapping 64-bit integer arithmetic (no FFT, so no precision limit
 * whatever the size of the operands).
 *
 * Kept apart from kernels_impl.h (the bootstrap kernels): plain C that the compiler
 * vectorizes for the baseline ISA, no run-time dispatch needed.
 */
#ifndef FHEML_GLWE_KERNELS_H
#define FHEML_GLWE_KERNELS_H

#include <stdint.h>

/* out += a * w mod (X^N + 1, 2^64).
 * a: N torus words of which only a[0 .. len_a) may be non-zero (the rest is not read);
 * w: a clear integer polynomial of degree < S (S <= N), read as int64 (negative values wrap).
 * Cost N * S multiply-adds at most; zero weights are skipped. */
static void fheml_poly_mul_int_acc(const uint64_t *restrict a, int len_a, int N,
                                   const int64_t *restrict w, int S, uint64_t *restrict out)
{
    for (int t = 0; t < S; t++) {
        const uint64_t wt = (uint64_t)w[t];
        if (wt == 0)
            continue;
        /* X^t * a: coefficient j moves to j + t, and to j + t - N negated past X^N */
        const int direct = len_a < N - t ? len_a : N - t;
        uint64_t *restrict o = out + t;
        for (int j = 0; j < direct; j++)
            o[j] += wt * a[j];
        const uint64_t *restrict a2 = a + (N - t);
        for (int j = 0; j < len_a - (N - t); j++)
            out[j] -= wt * a2[j];
    }
}

/* out[g, o, r] = sum_c a[g, c, r] * w[c, o] for G ciphertext groups of C ciphertexts of R
 * polynomials (masks then body), O outputs.  lengths[r]: non-zero prefix of polynomial r.
 * a: (G, C, R, N); w: (C, O, S); out: (G, O, R, N), overwritten. */
static void fheml_glwe_poly_matmul(const uint64_t *a, int64_t G, int C, int R, int N,
                                   const int *lengths, const int64_t *w, int O, int S,
                                   uint64_t *out)
{
    for (int64_t g = 0; g < G; g++) {
        for (int o = 0; o < O; o++) {
            uint64_t *dst = out + ((g * O + o) * (int64_t)R) * N;
            for (int64_t i = 0; i < (int64_t)R * N; i++)
                dst[i] = 0;
            for (int c = 0; c < C; c++) {
                const int64_t *wc = w + ((int64_t)c * O + o) * S;
                const uint64_t *src = a + ((g * C + c) * (int64_t)R) * N;
                for (int r = 0; r < R; r++)
                    fheml_poly_mul_int_acc(src + (int64_t)r * N, lengths[r], N, wc, S,
                                           dst + (int64_t)r * N);
            }
        }
    }
}

#endif
