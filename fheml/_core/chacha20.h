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

#define FHEML_ROTL32(v, c) (((v) << (c)) | ((v) >> (32 - (c))))
#define FHEML_QR(a, b, c, d)                 \
    a += b; d ^= a; d = FHEML_ROTL32(d, 16); \
    c += d; b ^= c; b = FHEML_ROTL32(b, 12); \
    a += b; d ^= a; d = FHEML_ROTL32(d, 8);  \
    c += d; b ^= c; b = FHEML_ROTL32(b, 7);

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
        FHEML_QR(x[0], x[4], x[8], x[12]);
        FHEML_QR(x[1], x[5], x[9], x[13]);
        FHEML_QR(x[2], x[6], x[10], x[14]);
        FHEML_QR(x[3], x[7], x[11], x[15]);
        FHEML_QR(x[0], x[5], x[10], x[15]);
        FHEML_QR(x[1], x[6], x[11], x[12]);
        FHEML_QR(x[2], x[7], x[8], x[13]);
        FHEML_QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) out[i] = x[i] + s[i];
}

/* Fill out[0..count) with the uint64 words start .. start+count of keystream (key, stream).
 * Word w is the little-endian pair of 32-bit words (2*(w%8), 2*(w%8)+1) of block w/8. */
static inline void chacha20_fill_u64(const uint32_t key[8], uint64_t stream, uint64_t start,
                                     uint64_t count, uint64_t *out)
{
    uint32_t blk[16], w[4];
    uint64_t pos = start, end = start + count, i = 0;
    w[2] = (uint32_t)stream;
    w[3] = (uint32_t)(stream >> 32);
    while (pos < end) {
        uint64_t c = pos >> 3;
        w[0] = (uint32_t)c;
        w[1] = (uint32_t)(c >> 32);
        chacha20_block(key, w, blk);
        for (unsigned j = (unsigned)(pos & 7); j < 8 && pos < end; j++, pos++, i++)
            out[i] = (uint64_t)blk[2 * j] | ((uint64_t)blk[2 * j + 1] << 32);
    }
}

#endif
