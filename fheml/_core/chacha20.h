/* ChaCha20 block function (RFC 8439) used as the CSPRNG of fheml.
 *
 * The generator is a stream cipher keystream: a 256-bit key (the seed, from os.urandom in
 * production), a 64-bit stream id (domain separation: masks of the KSK, masks of the BSK,
 * noise, ...) and a 64-bit block counter.  Word i of block c is therefore addressable, which
 * lets the server regenerate the masks of a seeded key in any order.
 */
#ifndef FHEML_CHACHA20_H
#define FHEML_CHACHA20_H

#include <stdint.h>
#include <string.h>

#include "cpu.h"

#define FHEML_ROTL32(v, c) (((v) << (c)) | ((v) >> (32 - (c))))
#define FHEML_QR(a, b, c, d)                 \
    a += b; d ^= a; d = FHEML_ROTL32(d, 16); \
    c += d; b ^= c; b = FHEML_ROTL32(b, 12); \
    a += b; d ^= a; d = FHEML_ROTL32(d, 8);  \
    c += d; b ^= c; b = FHEML_ROTL32(b, 7);

/* One double round (column round then diagonal round) with quarter-round QR on state x. */
#define FHEML_DOUBLE_ROUND(QR, x)                                          \
    QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);              \
    QR(x[2], x[6], x[10], x[14]); QR(x[3], x[7], x[11], x[15]);            \
    QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);            \
    QR(x[2], x[7], x[8], x[13]); QR(x[3], x[4], x[9], x[14]);

/* One 64-byte block.  words12_15 are the last four state words: in RFC 8439 they are the
 * 32-bit counter and the 96-bit nonce; fheml uses (counter lo, counter hi, stream lo,
 * stream hi). */
static inline void chacha20_block(const uint32_t key[8], const uint32_t words12_15[4],
                                  uint32_t out[16])
{
    uint32_t x[16];
    x[0] = 0x61707865u; x[1] = 0x3320646eu; x[2] = 0x79622d32u; x[3] = 0x6b206574u;
    for (int i = 0; i < 8; i++) x[4 + i] = key[i];
    for (int i = 0; i < 4; i++) x[12 + i] = words12_15[i];
    uint32_t s[16];
    memcpy(s, x, sizeof s);
    for (int r = 0; r < 10; r++) {
        FHEML_DOUBLE_ROUND(FHEML_QR, x);
    }
    for (int i = 0; i < 16; i++) out[i] = x[i] + s[i];
}

#if FHEML_X86_SIMD
#include <immintrin.h>

#define FHEML_ROTV(x, c) \
    _mm256_or_si256(_mm256_slli_epi32(x, c), _mm256_srli_epi32(x, 32 - (c)))
/* rotations by 16 and 8 bits are byte shuffles (one instruction instead of three) */
#define FHEML_QRV(a, b, c, d)                                  \
    a = _mm256_add_epi32(a, b); d = _mm256_xor_si256(d, a); d = _mm256_shuffle_epi8(d, rot16); \
    c = _mm256_add_epi32(c, d); b = _mm256_xor_si256(b, c); b = FHEML_ROTV(b, 12); \
    a = _mm256_add_epi32(a, b); d = _mm256_xor_si256(d, a); d = _mm256_shuffle_epi8(d, rot8);  \
    c = _mm256_add_epi32(c, d); b = _mm256_xor_si256(b, c); b = FHEML_ROTV(b, 7);

/* Eight consecutive blocks (counters c .. c+7) at once, lane j of register i holding word i
 * of block c + j; written out as 8 * 16 words in block order. */
__attribute__((target(FHEML_TARGET_AVX2))) static void chacha20_blocks8_avx2(const uint32_t key[8],
                                                                 uint64_t c, uint64_t stream,
                                                                 uint32_t *out)
{
    const __m256i rot16 = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                           2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m256i rot8 = _mm256_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14,
                                          3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14);
    __m256i x[16], s[16];
    x[0] = _mm256_set1_epi32(0x61707865); x[1] = _mm256_set1_epi32(0x3320646e);
    x[2] = _mm256_set1_epi32(0x79622d32); x[3] = _mm256_set1_epi32(0x6b206574);
    for (int i = 0; i < 8; i++)
        x[4 + i] = _mm256_set1_epi32((int)key[i]);
    uint32_t lo[8], hi[8];
    for (int j = 0; j < 8; j++) {
        lo[j] = (uint32_t)(c + j);
        hi[j] = (uint32_t)((c + j) >> 32);
    }
    x[12] = _mm256_loadu_si256((const __m256i *)lo);
    x[13] = _mm256_loadu_si256((const __m256i *)hi);
    x[14] = _mm256_set1_epi32((int)(uint32_t)stream);
    x[15] = _mm256_set1_epi32((int)(uint32_t)(stream >> 32));
    for (int i = 0; i < 16; i++)
        s[i] = x[i];
    for (int r = 0; r < 10; r++) {
        FHEML_DOUBLE_ROUND(FHEML_QRV, x);
    }
    uint32_t t[16][8];
    for (int i = 0; i < 16; i++)
        _mm256_storeu_si256((__m256i *)t[i], _mm256_add_epi32(x[i], s[i]));
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 16; i++)
            out[j * 16 + i] = t[i][j];
}

/* Sixteen consecutive blocks (counters c .. c+15) with AVX-512: same layout, rotations are
 * single instructions (vprold). */
#define FHEML_QRZ(a, b, c, d)                                                             \
    a = _mm512_add_epi32(a, b); d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 16);       \
    c = _mm512_add_epi32(c, d); b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 12);       \
    a = _mm512_add_epi32(a, b); d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 8);        \
    c = _mm512_add_epi32(c, d); b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 7);

__attribute__((target(FHEML_TARGET_AVX512))) static void
chacha20_blocks16_avx512(const uint32_t key[8], uint64_t c, uint64_t stream, uint32_t *out)
{
    __m512i x[16], s[16];
    x[0] = _mm512_set1_epi32(0x61707865); x[1] = _mm512_set1_epi32(0x3320646e);
    x[2] = _mm512_set1_epi32(0x79622d32); x[3] = _mm512_set1_epi32(0x6b206574);
    for (int i = 0; i < 8; i++)
        x[4 + i] = _mm512_set1_epi32((int)key[i]);
    uint32_t lo[16], hi[16];
    for (int j = 0; j < 16; j++) {
        lo[j] = (uint32_t)(c + j);
        hi[j] = (uint32_t)((c + j) >> 32);
    }
    x[12] = _mm512_loadu_si512((const void *)lo);
    x[13] = _mm512_loadu_si512((const void *)hi);
    x[14] = _mm512_set1_epi32((int)(uint32_t)stream);
    x[15] = _mm512_set1_epi32((int)(uint32_t)(stream >> 32));
    for (int i = 0; i < 16; i++)
        s[i] = x[i];
    for (int r = 0; r < 10; r++) {
        FHEML_DOUBLE_ROUND(FHEML_QRZ, x);
    }
    uint32_t t[16][16];
    for (int i = 0; i < 16; i++)
        _mm512_storeu_si512((void *)t[i], _mm512_add_epi32(x[i], s[i]));
    for (int j = 0; j < 16; j++)
        for (int i = 0; i < 16; i++)
            out[j * 16 + i] = t[i][j];
}
#endif

/* Words *pos .. (end of *pos's block, or end) of the keystream into out[*i ..]; advances both.
 * w holds the stream id in w[2], w[3]. */
static inline void chacha20_words_of_block(const uint32_t key[8], uint32_t w[4], uint64_t *pos,
                                           uint64_t end, uint64_t *out, uint64_t *i)
{
    uint32_t blk[16];
    uint64_t c = *pos >> 3;
    w[0] = (uint32_t)c;
    w[1] = (uint32_t)(c >> 32);
    chacha20_block(key, w, blk);
    for (unsigned j = (unsigned)(*pos & 7); j < 8 && *pos < end; j++, (*pos)++, (*i)++)
        out[*i] = (uint64_t)blk[2 * j] | ((uint64_t)blk[2 * j + 1] << 32);
}

/* Fill out[0..count) with the uint64 words start .. start+count of keystream (key, stream).
 * Word w is the little-endian pair of 32-bit words (2*(w%8), 2*(w%8)+1) of block w/8.
 * simd: highest kernel level to use (FHEML_SIMD_*, at most what the CPU has); every level
 * gives the same words. */
static inline void chacha20_fill_u64(int simd, const uint32_t key[8], uint64_t stream,
                                     uint64_t start, uint64_t count, uint64_t *out)
{
    uint32_t w[4];
    uint64_t pos = start, end = start + count, i = 0;
    w[2] = (uint32_t)stream;
    w[3] = (uint32_t)(stream >> 32);
#if FHEML_X86_SIMD
    if (end - pos >= 128 && simd >= FHEML_SIMD_AVX2) {
        /* scalar up to a block boundary, then 16 or 8 blocks (128 or 64 words) at a time;
         * little-endian: the 32-bit words of consecutive blocks are the uint64 words in order */
        while (pos & 7)
            chacha20_words_of_block(key, w, &pos, end, out, &i);
        if (simd >= FHEML_SIMD_AVX512) {
            for (; end - pos >= 128; pos += 128, i += 128)
                chacha20_blocks16_avx512(key, pos >> 3, stream, (uint32_t *)(out + i));
        }
        for (; end - pos >= 64; pos += 64, i += 64)
            chacha20_blocks8_avx2(key, pos >> 3, stream, (uint32_t *)(out + i));
    }
#endif
    while (pos < end)
        chacha20_words_of_block(key, w, &pos, end, out, &i);
}

#endif
