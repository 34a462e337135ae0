/* GLWE kernels of fheml: negacyclic products of torus polynomials by clear integer
 * polynomials, in exact wrapping 64-bit integer arithmetic (no FFT, so no precision limit
 * whatever the size of the operands).
 *
 * Kept apart from kernels_impl.h (the bootstrap kernels).  One body, compiled three times:
 * portable, AVX2 and AVX-512 (target attributes of cpu.h; the build has no -march), the
 * caller passes the kernel level in use (never above the CPU's), so no "illegal
 * instruction".
 */
#ifndef FHEML_GLWE_KERNELS_H
#define FHEML_GLWE_KERNELS_H

#include <stdint.h>

#include "cpu.h"

/* dst[j] +=/-= a[j] * m for j < n, m < 2^32: two 32x32->64 products per word (what the
 * SIMD units multiply natively), exact modulo 2^64. */
static inline __attribute__((always_inline)) void fheml_axpy_u32(uint64_t *restrict dst,
                                                                 const uint64_t *restrict a,
                                                                 int n, uint64_t m, int negate)
{
    if (negate) {
        for (int j = 0; j < n; j++)
            dst[j] -= (a[j] & 0xffffffffu) * m + (((a[j] >> 32) * m) << 32);
    } else {
        for (int j = 0; j < n; j++)
            dst[j] += (a[j] & 0xffffffffu) * m + (((a[j] >> 32) * m) << 32);
    }
}

static inline __attribute__((always_inline)) void fheml_axpy_u64(uint64_t *restrict dst,
                                                                 const uint64_t *restrict a,
                                                                 int n, uint64_t w)
{
    for (int j = 0; j < n; j++)
        dst[j] += a[j] * w;
}

/* out += a * w mod (X^N + 1, 2^64).
 * a: N torus words of which only a[0 .. len_a) may be non-zero (the rest is not read);
 * w: a clear integer polynomial of degree < S (S <= N), int64 (negative values wrap).
 * At most N * S multiply-adds; zero weights are skipped. */
static inline __attribute__((always_inline)) void fheml_poly_mul_int_acc(
    const uint64_t *restrict a, int len_a, int N, const int64_t *restrict w, int S,
    uint64_t *restrict out)
{
    for (int t = 0; t < S; t++) {
        const int64_t wt = w[t];
        if (wt == 0)
            continue;
        /* X^t * a: coefficient j moves to j + t, and to j + t - N negated past X^N */
        const int direct = len_a < N - t ? len_a : N - t;
        const int wrapped = len_a - (N - t);
        const uint64_t mag = wt < 0 ? (uint64_t)0 - (uint64_t)wt : (uint64_t)wt;
        if (mag < ((uint64_t)1 << 32)) {
            fheml_axpy_u32(out + t, a, direct, mag, wt < 0);
            if (wrapped > 0)
                fheml_axpy_u32(out, a + (N - t), wrapped, mag, wt > 0);
        } else {
            fheml_axpy_u64(out + t, a, direct, (uint64_t)wt);
            if (wrapped > 0)
                fheml_axpy_u64(out, a + (N - t), wrapped, (uint64_t)0 - (uint64_t)wt);
        }
    }
}

/* out[g, o, r] = sum_c a[g, c, r] * w[c, o] for G ciphertext groups of C ciphertexts of R
 * polynomials (masks then body), O outputs.  lengths[r]: non-zero prefix of polynomial r.
 * a: (G, C, R, N); w: (C, O, S); out: (G, O, R, N), overwritten. */
#define FHEML_GLWE_MATMUL_BODY                                                              \
    for (int64_t g = 0; g < G; g++) {                                                       \
        for (int o = 0; o < O; o++) {                                                       \
            uint64_t *dst = out + ((g * O + o) * (int64_t)R) * N;                           \
            for (int64_t i = 0; i < (int64_t)R * N; i++)                                    \
                dst[i] = 0;                                                                 \
            for (int c = 0; c < C; c++) {                                                   \
                const int64_t *wc = w + ((int64_t)c * O + o) * S;                           \
                const uint64_t *src = a + ((g * C + c) * (int64_t)R) * N;                   \
                for (int r = 0; r < R; r++)                                                 \
                    fheml_poly_mul_int_acc(src + (int64_t)r * N, lengths[r], N, wc, S,      \
                                           dst + (int64_t)r * N);                           \
            }                                                                               \
        }                                                                                   \
    }

#define FHEML_GLWE_MATMUL_ARGS                                                              \
    const uint64_t *a, int64_t G, int C, int R, int N, const int *lengths, const int64_t *w, \
        int O, int S, uint64_t *out

static void fheml_glwe_poly_matmul_generic(FHEML_GLWE_MATMUL_ARGS) { FHEML_GLWE_MATMUL_BODY }

#if FHEML_X86_SIMD
__attribute__((target(FHEML_TARGET_AVX2))) static void
fheml_glwe_poly_matmul_avx2(FHEML_GLWE_MATMUL_ARGS) { FHEML_GLWE_MATMUL_BODY }

__attribute__((target(FHEML_TARGET_AVX512))) static void
fheml_glwe_poly_matmul_avx512(FHEML_GLWE_MATMUL_ARGS) { FHEML_GLWE_MATMUL_BODY }
#endif

/* level: FHEML_SIMD_* (cpu.h), at most what fheml_cpu_simd_level() returns. */
static inline void fheml_glwe_poly_matmul(int level, FHEML_GLWE_MATMUL_ARGS)
{
#if FHEML_X86_SIMD
    if (level >= FHEML_SIMD_AVX512) {
        fheml_glwe_poly_matmul_avx512(a, G, C, R, N, lengths, w, O, S, out);
        return;
    }
    if (level == FHEML_SIMD_AVX2) {
        fheml_glwe_poly_matmul_avx2(a, G, C, R, N, lengths, w, O, S, out);
        return;
    }
#endif
    fheml_glwe_poly_matmul_generic(a, G, C, R, N, lengths, w, O, S, out);
}

/* Bit packing of torus words that travel as their top `bits` bits (1..64): the top bits of
 * each word, most significant first, one after another in a byte stream (the last byte
 * padded with zero bits).  out: ceil(n * bits / 8) bytes. */
static inline void fheml_store_be64(uint8_t *p, uint64_t x, int nbytes)
{
    for (int b = 0; b < nbytes; b++)
        p[b] = (uint8_t)(x >> (56 - 8 * b));
}

static void fheml_pack_top_bits(const uint64_t *restrict w, int64_t n, int bits,
                                uint8_t *restrict out)
{
    uint64_t acc = 0; /* `have` pending bits, most significant first */
    int have = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t v = w[i] >> (64 - bits);
        const int room = 64 - have;
        if (bits < room) {
            acc |= v << (room - bits);
            have += bits;
        } else {
            const int spill = bits - room; /* bits of v left for the next accumulator */
            acc |= spill ? v >> spill : v;
            fheml_store_be64(out, acc, 8);
            out += 8;
            acc = spill ? v << (64 - spill) : 0;
            have = spill;
        }
    }
    fheml_store_be64(out, acc, (have + 7) / 8);
}

/* Inverse of fheml_pack_top_bits: words with their top `bits` bits read from `in` (exactly
 * ceil(n * bits / 8) bytes) and the low bits zero.  Returns the padding bits of the last
 * byte (0 in a canonical stream). */
static int fheml_unpack_top_bits(const uint8_t *restrict in, int64_t n, int bits,
                                 uint64_t *restrict w)
{
    const int64_t len = (n * bits + 7) / 8;
    for (int64_t i = 0; i < n; i++) {
        const int64_t off = i * bits;
        const int64_t byte = off >> 3;
        const int r = (int)(off & 7);
        uint64_t x = 0;
        for (int b = 0; b < 8; b++)
            x = (x << 8) | (byte + b < len ? in[byte + b] : 0);
        x <<= r;
        if (r && bits + r > 64)
            x |= (uint64_t)in[byte + 8] >> (8 - r);
        w[i] = bits == 64 ? x : (x >> (64 - bits)) << (64 - bits);
    }
    const int used = (int)((n * bits) & 7);
    return used ? in[len - 1] & ((1 << (8 - used)) - 1) : 0;
}

#endif
