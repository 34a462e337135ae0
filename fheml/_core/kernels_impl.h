/* Hot kernels of the TFHE engine, written once and compiled three times by kernels.h: for the
 * baseline target, for AVX2+FMA and for AVX-512.  FN(name) gives each copy its suffix; the
 * vector loops shared by the two SIMD copies are in kernels_vec.h.
 * No allocation happens here: the caller passes every buffer (see pbs_scratch_size).
 *
 * Layouts (all row-major, C-contiguous):
 *   LWE ciphertext of dimension d : d mask words then the body            (d + 1) u64
 *   GLWE polynomial list          : (k+1) polynomials of N u64, body last
 *   KSK                           : [k*N][ks_level][n+1] u64
 *   Fourier BSK                   : [n][(k+1)*pbs_level][k+1][2][N/2] f64  (re block, im block)
 *                                   multi-bit: [n/gf][2^gf - 1][(k+1)*pbs_level][k+1][2][N/2]
 *   Fourier polynomial            : [2][N/2] f64, points in bit-reversed order
 */

#if FHEML_IMPL_AVX2
#define FHEML_VW 4
#include "kernels_vec.h"
#undef FHEML_VW
#endif
#if FHEML_IMPL_AVX512
#define FHEML_VW 8
#include "kernels_vec.h"
#undef FHEML_VW
#endif

/* ---------------------------------------------------------------- negacyclic FFT ---- */

/* Forward DIF stage of half-size h (radix 2). */
static inline void FN(dif2)(const fft_plan *p, double *restrict re, double *restrict im, int h,
                            int M)
{
    const double *restrict wr = p->tw_re + h, *restrict wi = p->tw_im + h;
    for (int s = 0; s < M; s += 2 * h) {
        double *restrict ar = re + s, *restrict ai = im + s;
        double *restrict br = re + s + h, *restrict bi = im + s + h;
        for (int j = 0; j < h; j++) {
            double xr = ar[j], xi = ai[j], yr = br[j], yi = bi[j];
            double dr = xr - yr, di = xi - yi;
            ar[j] = xr + yr;
            ai[j] = xi + yi;
            br[j] = dr * wr[j] + di * wi[j]; /* (dr + i di) * conj(w) */
            bi[j] = di * wr[j] - dr * wi[j];
        }
    }
}

/* Two forward DIF stages fused as one radix-4 pass (half-sizes H then H/2): one pass over
 * the data instead of two and three complex multiplies per four points instead of four (the
 * product of the two stages' twiddles comes from tw3); same output order as the radix-2
 * stages. */
static inline void FN(dif4)(const fft_plan *p, double *restrict re, double *restrict im, int H,
                            int M)
{
    const int Q = H / 2;
    const double *restrict w1r = p->tw_re + H, *restrict w1i = p->tw_im + H;
    const double *restrict w2r = p->tw_re + Q, *restrict w2i = p->tw_im + Q;
    const double *restrict w3r = p->tw3_re + H, *restrict w3i = p->tw3_im + H;
    for (int s = 0; s < M; s += 2 * H) {
        double *restrict ar = re + s, *restrict ai = im + s;
        double *restrict br = re + s + Q, *restrict bi = im + s + Q;
        double *restrict cr = re + s + H, *restrict ci = im + s + H;
        double *restrict dr = re + s + H + Q, *restrict di = im + s + H + Q;
#if FHEML_IMPL_AVX2
        /* GCC does not vectorize this loop by itself; Q >= 4 here. */
#if FHEML_IMPL_AVX512
        if (Q >= 8)
            FN(dif4_block_v8)(ar, ai, br, bi, cr, ci, dr, di, w1r, w1i, w2r, w2i, w3r, w3i, Q);
        else
#endif
            FN(dif4_block_v4)(ar, ai, br, bi, cr, ci, dr, di, w1r, w1i, w2r, w2i, w3r, w3i, Q);
#else
        for (int j = 0; j < Q; j++) {
            /* a1 = a + c, b1 = b + d, t1 = a - c, t3 = -i (b - d) */
            double a1r = ar[j] + cr[j], a1i = ai[j] + ci[j];
            double t1r = ar[j] - cr[j], t1i = ai[j] - ci[j];
            double b1r = br[j] + dr[j], b1i = bi[j] + di[j];
            double t3r = bi[j] - di[j], t3i = dr[j] - br[j];
            ar[j] = a1r + b1r;
            ai[j] = a1i + b1i;
            double xr = a1r - b1r, xi = a1i - b1i, vr = w2r[j], vi = w2i[j];
            br[j] = xr * vr + xi * vi; /* times conj(v) */
            bi[j] = xi * vr - xr * vi;
            double pr = t1r + t3r, pi = t1i + t3i, wr = w1r[j], wi = w1i[j];
            cr[j] = pr * wr + pi * wi;
            ci[j] = pi * wr - pr * wi;
            double qr = t1r - t3r, qi = t1i - t3i, ur = w3r[j], ui = w3i[j];
            dr[j] = qr * ur + qi * ui;
            di[j] = qi * ur - qr * ui;
        }
#endif
    }
}

/* Last two forward stages (h = 2 then h = 1) fused per block of four points. */
static inline void FN(dif_last)(double *restrict re, double *restrict im, int M)
{
#if FHEML_IMPL_AVX2
    for (int s = 0; s < M; s += 4) {
        __m256d Xr = _mm256_loadu_pd(re + s), Xi = _mm256_loadu_pd(im + s);
        __m256d Xrs = _mm256_permute2f128_pd(Xr, Xr, 0x01), Xis = _mm256_permute2f128_pd(Xi, Xi, 0x01);
        /* h = 2: low lanes (x0 + x2, x1 + x3); high lanes (x0 - x2, (x1 - x3) * -i) */
        __m256d sR = _mm256_add_pd(Xr, Xrs), sI = _mm256_add_pd(Xi, Xis);
        __m256d dR = _mm256_sub_pd(Xr, Xrs), dI = _mm256_sub_pd(Xi, Xis);
        __m256d hR = _mm256_blend_pd(dR, dI, 0x2);
        __m256d hI = _mm256_blend_pd(dI, _mm256_sub_pd(_mm256_setzero_pd(), dR), 0x2);
        Xr = _mm256_permute2f128_pd(sR, hR, 0x20);
        Xi = _mm256_permute2f128_pd(sI, hI, 0x20);
        /* h = 1: (y0 + y1, y0 - y1, y2 + y3, y2 - y3) */
        __m256d Xrw = _mm256_permute_pd(Xr, 0x5), Xiw = _mm256_permute_pd(Xi, 0x5);
        _mm256_storeu_pd(re + s, _mm256_blend_pd(_mm256_add_pd(Xr, Xrw), _mm256_sub_pd(Xrw, Xr), 0xA));
        _mm256_storeu_pd(im + s, _mm256_blend_pd(_mm256_add_pd(Xi, Xiw), _mm256_sub_pd(Xiw, Xi), 0xA));
    }
#else
    for (int s = 0; s < M; s += 4) {
        double r0 = re[s], r1 = re[s + 1], r2 = re[s + 2], r3 = re[s + 3];
        double i0 = im[s], i1 = im[s + 1], i2 = im[s + 2], i3 = im[s + 3];
        double a0r = r0 + r2, a0i = i0 + i2, a1r = r1 + r3, a1i = i1 + i3;
        double b0r = r0 - r2, b0i = i0 - i2;
        /* (r1 - r3 + i (i1 - i3)) * conj(i) = (i1 - i3) - i (r1 - r3) */
        double b1r = i1 - i3, b1i = r3 - r1;
        re[s] = a0r + a1r; im[s] = a0i + a1i;
        re[s + 1] = a0r - a1r; im[s + 1] = a0i - a1i;
        re[s + 2] = b0r + b1r; im[s + 2] = b0i + b1i;
        re[s + 3] = b0r - b1r; im[s + 3] = b0i - b1i;
    }
#endif
}

#if FHEML_IMPL_AVX512
/* Twiddle vectors of the last 16-point blocks: [1 | w] and [v | w3] of the radix-4 pass of
 * half-size 8 (w = tw[8..12), v = tw[4..8), w3 = tw3[8..12)). */
typedef struct {
    __m512d fr, fi, gr, gi;
} FN(tw16);

static inline FN(tw16) FN(tw16_load)(const fft_plan *p)
{
    FN(tw16) t;
    t.fr = _mm512_insertf64x4(_mm512_set1_pd(1.0), _mm256_loadu_pd(p->tw_re + 8), 1);
    t.fi = _mm512_insertf64x4(_mm512_setzero_pd(), _mm256_loadu_pd(p->tw_im + 8), 1);
    t.gr = _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_loadu_pd(p->tw_re + 4)),
                              _mm256_loadu_pd(p->tw3_re + 8), 1);
    t.gi = _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_loadu_pd(p->tw_im + 4)),
                              _mm256_loadu_pd(p->tw3_im + 8), 1);
    return t;
}

static inline __m512d FN(neg8)(__m512d x)
{
    return _mm512_castsi512_pd(
        _mm512_xor_si512(_mm512_castpd_si512(x), _mm512_set1_epi64((long long)0x8000000000000000ULL)));
}

/* The last four forward stages (half-sizes 8, 4, 2, 1: the radix-4 pass dif4(8) then
 * dif_last) of each block of 16 points in registers: 16 lane permutes per block instead of
 * the 32 of dif_last at 256 bits.  The arithmetic is that of dif4_block and dif_last (the
 * twiddles of the last two stages are +-1, +-i, exact), so the results are those of the AVX2
 * copy up to the sign of zeros. */
static void FN(fft16_forward)(const fft_plan *p, double *restrict re, double *restrict im, int M)
{
    const FN(tw16) t = FN(tw16_load)(p);
    const __m512i fix0 = _mm512_setr_epi64(0, 8, 1, 9, 4, 12, 5, 13);
    const __m512i fix1 = _mm512_setr_epi64(2, 10, 3, 11, 6, 14, 7, 15);
    for (int s = 0; s < M; s += 16) {
        __m512d Ur = _mm512_loadu_pd(re + s), Vr = _mm512_loadu_pd(re + s + 8);
        __m512d Ui = _mm512_loadu_pd(im + s), Vi = _mm512_loadu_pd(im + s + 8);
        /* radix-4 of half-size 8: a | b = U, c | d = V */
        __m512d Sr = _mm512_add_pd(Ur, Vr), Si = _mm512_add_pd(Ui, Vi); /* a1 | b1 */
        __m512d Dr = _mm512_sub_pd(Ur, Vr), Di = _mm512_sub_pd(Ui, Vi); /* t1 | b - d */
        __m512d R1r = _mm512_shuffle_f64x2(Sr, Dr, 0x44), R1i = _mm512_shuffle_f64x2(Si, Di, 0x44);
        __m512d R2r = _mm512_shuffle_f64x2(Sr, Dr, 0xEE), R2i = _mm512_shuffle_f64x2(Si, Di, 0xEE);
        /* b1 | t3 = -i (b - d) */
        __m512d T2r = _mm512_mask_blend_pd(0xF0, R2r, R2i);
        __m512d T2i = _mm512_mask_blend_pd(0xF0, R2i, FN(neg8)(R2r));
        __m512d Fr = _mm512_add_pd(R1r, T2r), Fi = _mm512_add_pd(R1i, T2i); /* a1 + b1 | t1 + t3 */
        __m512d Gr = _mm512_sub_pd(R1r, T2r), Gi = _mm512_sub_pd(R1i, T2i); /* a1 - b1 | t1 - t3 */
        /* times conj([1 | w]) and conj([v | w3]): positions 0-3 | 8-11 and 4-7 | 12-15 */
        __m512d F2r = _mm512_fmadd_pd(Fr, t.fr, _mm512_mul_pd(Fi, t.fi));
        __m512d F2i = _mm512_fmsub_pd(Fi, t.fr, _mm512_mul_pd(Fr, t.fi));
        __m512d G2r = _mm512_fmadd_pd(Gr, t.gr, _mm512_mul_pd(Gi, t.gi));
        __m512d G2i = _mm512_fmsub_pd(Gi, t.gr, _mm512_mul_pd(Gr, t.gi));
        /* half-size 2: P = positions 0 1 8 9 4 5 12 13, Q = the same + 2 */
        __m512d Pr = _mm512_shuffle_f64x2(F2r, G2r, 0x88), Pi = _mm512_shuffle_f64x2(F2i, G2i, 0x88);
        __m512d Qr = _mm512_shuffle_f64x2(F2r, G2r, 0xDD), Qi = _mm512_shuffle_f64x2(F2i, G2i, 0xDD);
        __m512d Yr = _mm512_add_pd(Pr, Qr), Yi = _mm512_add_pd(Pi, Qi);
        __m512d Er = _mm512_sub_pd(Pr, Qr), Ei = _mm512_sub_pd(Pi, Qi);
        /* odd lanes times -i */
        __m512d Hr = _mm512_mask_blend_pd(0xAA, Er, Ei);
        __m512d Hi = _mm512_mask_blend_pd(0xAA, Ei, FN(neg8)(Er));
        /* half-size 1 */
        __m512d Lr = _mm512_unpacklo_pd(Yr, Hr), Li = _mm512_unpacklo_pd(Yi, Hi);
        __m512d Or = _mm512_unpackhi_pd(Yr, Hr), Oi = _mm512_unpackhi_pd(Yi, Hi);
        __m512d Zpr = _mm512_add_pd(Lr, Or), Zpi = _mm512_add_pd(Li, Oi);
        __m512d Zmr = _mm512_sub_pd(Lr, Or), Zmi = _mm512_sub_pd(Li, Oi);
        _mm512_storeu_pd(re + s, _mm512_permutex2var_pd(Zpr, fix0, Zmr));
        _mm512_storeu_pd(re + s + 8, _mm512_permutex2var_pd(Zpr, fix1, Zmr));
        _mm512_storeu_pd(im + s, _mm512_permutex2var_pd(Zpi, fix0, Zmi));
        _mm512_storeu_pd(im + s + 8, _mm512_permutex2var_pd(Zpi, fix1, Zmi));
    }
}

/* The first four inverse stages (dit_first then the radix-4 pass dit4(8)) of each block of
 * 16 points in registers: the mirror of fft16_forward. */
static void FN(fft16_inverse)(const fft_plan *p, double *restrict re, double *restrict im, int M)
{
    const FN(tw16) t = FN(tw16_load)(p);
    const __m512i even = _mm512_setr_epi64(0, 2, 8, 10, 4, 6, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 9, 11, 5, 7, 13, 15);
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (int s = 0; s < M; s += 16) {
        __m512d Ar = _mm512_loadu_pd(re + s), Br = _mm512_loadu_pd(re + s + 8);
        __m512d Ai = _mm512_loadu_pd(im + s), Bi = _mm512_loadu_pd(im + s + 8);
        /* half-size 1: pairs (4b, 4b+1) and (4b+2, 4b+3) */
        __m512d Zpr = _mm512_permutex2var_pd(Ar, even, Br), Zpi = _mm512_permutex2var_pd(Ai, even, Bi);
        __m512d Zmr = _mm512_permutex2var_pd(Ar, odd, Br), Zmi = _mm512_permutex2var_pd(Ai, odd, Bi);
        __m512d Er = _mm512_add_pd(Zpr, Zmr), Ei = _mm512_add_pd(Zpi, Zmi); /* a0 | b0 */
        __m512d Or = _mm512_sub_pd(Zpr, Zmr), Oi = _mm512_sub_pd(Zpi, Zmi); /* a1 | b1 */
        /* half-size 2: (a0, b0) and (a1, i b1) */
        __m512d Pr = _mm512_unpacklo_pd(Er, Or), Pi = _mm512_unpacklo_pd(Ei, Oi);
        __m512d Qr = _mm512_unpackhi_pd(Er, Or), Qi = _mm512_unpackhi_pd(Ei, Oi);
        __m512d Tr = _mm512_mask_blend_pd(0xAA, Qr, FN(neg8)(Qi));
        __m512d Ti = _mm512_mask_blend_pd(0xAA, Qi, Qr);
        __m512d Sr = _mm512_add_pd(Pr, Tr), Si = _mm512_add_pd(Pi, Ti); /* positions 0 1 8 9 4 5 12 13 */
        __m512d Dr = _mm512_sub_pd(Pr, Tr), Di = _mm512_sub_pd(Pi, Ti); /* the same + 2 */
        /* radix-4 of half-size 8: K = a | c, L = b | d */
        __m512d Kr = _mm512_permutex2var_pd(Sr, lo, Dr), Ki = _mm512_permutex2var_pd(Si, lo, Di);
        __m512d Lr = _mm512_permutex2var_pd(Sr, hi, Dr), Li = _mm512_permutex2var_pd(Si, hi, Di);
        __m512d K2r = _mm512_fmsub_pd(Kr, t.fr, _mm512_mul_pd(Ki, t.fi)); /* a | x = c w */
        __m512d K2i = _mm512_fmadd_pd(Kr, t.fi, _mm512_mul_pd(Ki, t.fr));
        __m512d L2r = _mm512_fmsub_pd(Lr, t.gr, _mm512_mul_pd(Li, t.gi)); /* y = b v | z = d w3 */
        __m512d L2i = _mm512_fmadd_pd(Lr, t.gi, _mm512_mul_pd(Li, t.gr));
        __m512d Xr = _mm512_add_pd(K2r, L2r), Xi = _mm512_add_pd(K2i, L2i); /* a1 | s */
        __m512d Yr = _mm512_sub_pd(K2r, L2r), Yi = _mm512_sub_pd(K2i, L2i); /* b1 | t */
        __m512d X1r = _mm512_shuffle_f64x2(Xr, Yr, 0x44), X1i = _mm512_shuffle_f64x2(Xi, Yi, 0x44);
        __m512d X2r = _mm512_shuffle_f64x2(Xr, Yr, 0xEE), X2i = _mm512_shuffle_f64x2(Xi, Yi, 0xEE);
        /* s | i t */
        __m512d W2r = _mm512_mask_blend_pd(0xF0, X2r, FN(neg8)(X2i));
        __m512d W2i = _mm512_mask_blend_pd(0xF0, X2i, X2r);
        _mm512_storeu_pd(re + s, _mm512_add_pd(X1r, W2r));
        _mm512_storeu_pd(im + s, _mm512_add_pd(X1i, W2i));
        _mm512_storeu_pd(re + s + 8, _mm512_sub_pd(X1r, W2r));
        _mm512_storeu_pd(im + s + 8, _mm512_sub_pd(X1i, W2i));
    }
}
#endif

/* Points per block that stays in L1 (re + im: 16 KB). */
#define FHEML_FFT_BLOCK 1024

/* In-place decimation-in-frequency FFT, natural order in, bit-reversed out.
 * Twiddles for the stage of half-size h sit at tw[h .. 2h), value exp(+2*pi*i*j/(2h));
 * the forward transform uses their conjugate.
 * For M >= 64 the stages are grouped as: one radix-4 pass over the whole array (half-sizes
 * M/2, M/4; fused with the decomposition in the bootstrap, see decompose_dif4), a radix-2
 * stage M/8 when the number of stages is odd, radix-4 passes over the whole array while
 * their blocks exceed FHEML_FFT_BLOCK, then each block runs all its remaining stages while
 * it is in L1 (ending with half-sizes 8, 4, 2, 1).  fft_forward_rest is everything after
 * the first pass. */
static void FN(fft_forward_rest)(const fft_plan *p, double *restrict re, double *restrict im)
{
    const int M = p->M;
    int h = M >> 3;
    if (!(p->log2N & 1)) { /* log2(M) odd */
        FN(dif2)(p, re, im, h, M);
        h >>= 1;
    }
    for (; h >= 8 && 2 * h > FHEML_FFT_BLOCK; h >>= 2)
        FN(dif4)(p, re, im, h, M);
    const int blk = 2 * h < M ? 2 * h : M;
    for (int b = 0; b < M; b += blk) {
        int hh = h;
        for (; hh >= 32; hh >>= 2)
            FN(dif4)(p, re + b, im + b, hh, blk);
#if FHEML_IMPL_AVX512
        FN(fft16_forward)(p, re + b, im + b, blk);
#else
        FN(dif4)(p, re + b, im + b, 8, blk);
        FN(dif_last)(re + b, im + b, blk);
#endif
    }
}

static void FN(fft_forward)(const fft_plan *p, double *restrict re, double *restrict im)
{
    const int M = p->M;
    if (M >= 64) {
        FN(dif4)(p, re, im, M >> 1, M);
        FN(fft_forward_rest)(p, re, im);
        return;
    }
    /* small sizes: radix-2 first when the stage count is odd, radix-4, the last two */
    int h = M >> 1;
    if ((p->log2N - 1 - 2) & 1) {
        FN(dif2)(p, re, im, h, M);
        h >>= 1;
    }
    for (; h >= 8; h >>= 2)
        FN(dif4)(p, re, im, h, M);
    FN(dif_last)(re, im, M);
}

/* Inverse DIT stage of half-size h (radix 2). */
static inline void FN(dit2)(const fft_plan *p, double *restrict re, double *restrict im, int h,
                            int M)
{
    const double *restrict wr = p->tw_re + h, *restrict wi = p->tw_im + h;
    for (int s = 0; s < M; s += 2 * h) {
        double *restrict ar = re + s, *restrict ai = im + s;
        double *restrict br = re + s + h, *restrict bi = im + s + h;
        for (int j = 0; j < h; j++) {
            double yr = br[j] * wr[j] - bi[j] * wi[j];
            double yi = br[j] * wi[j] + bi[j] * wr[j];
            double xr = ar[j], xi = ai[j];
            ar[j] = xr + yr;
            ai[j] = xi + yi;
            br[j] = xr - yr;
            bi[j] = xi - yi;
        }
    }
}

/* Two inverse DIT stages fused as one radix-4 pass (half-sizes H/2 then H), three complex
 * multiplies per four points (see dif4). */
static inline void FN(dit4)(const fft_plan *p, double *restrict re, double *restrict im, int H,
                            int M)
{
    const int Q = H / 2;
    const double *restrict w1r = p->tw_re + H, *restrict w1i = p->tw_im + H;
    const double *restrict w2r = p->tw_re + Q, *restrict w2i = p->tw_im + Q;
    const double *restrict w3r = p->tw3_re + H, *restrict w3i = p->tw3_im + H;
    for (int s = 0; s < M; s += 2 * H) {
        double *restrict ar = re + s, *restrict ai = im + s;
        double *restrict br = re + s + Q, *restrict bi = im + s + Q;
        double *restrict cr = re + s + H, *restrict ci = im + s + H;
        double *restrict dr = re + s + H + Q, *restrict di = im + s + H + Q;
#if FHEML_IMPL_AVX2
#if FHEML_IMPL_AVX512
        if (Q >= 8)
            FN(dit4_block_v8)(ar, ai, br, bi, cr, ci, dr, di, w1r, w1i, w2r, w2i, w3r, w3i, Q);
        else
#endif
            FN(dit4_block_v4)(ar, ai, br, bi, cr, ci, dr, di, w1r, w1i, w2r, w2i, w3r, w3i, Q);
#else
        for (int j = 0; j < Q; j++) {
            double vr = w2r[j], vi = w2i[j], wr = w1r[j], wi = w1i[j], ur = w3r[j], ui = w3i[j];
            double yr = br[j] * vr - bi[j] * vi, yi = br[j] * vi + bi[j] * vr;
            double xr = cr[j] * wr - ci[j] * wi, xi = cr[j] * wi + ci[j] * wr;
            double zr = dr[j] * ur - di[j] * ui, zi = dr[j] * ui + di[j] * ur;
            double a1r = ar[j] + yr, a1i = ai[j] + yi, b1r = ar[j] - yr, b1i = ai[j] - yi;
            double sr = xr + zr, si = xi + zi, tr = xr - zr, ti = xi - zi;
            ar[j] = a1r + sr;
            ai[j] = a1i + si;
            cr[j] = a1r - sr;
            ci[j] = a1i - si;
            /* times i */
            br[j] = b1r - ti;
            bi[j] = b1i + tr;
            dr[j] = b1r + ti;
            di[j] = b1i - tr;
        }
#endif
    }
}

/* First two inverse stages (h = 1 then h = 2) fused per block of four points. */
static inline void FN(dit_first)(double *restrict re, double *restrict im, int M)
{
#if FHEML_IMPL_AVX2
    for (int s = 0; s < M; s += 4) {
        __m256d Xr = _mm256_loadu_pd(re + s), Xi = _mm256_loadu_pd(im + s);
        /* h = 1: (x0 + x1, x0 - x1, x2 + x3, x2 - x3) */
        __m256d Xrw = _mm256_permute_pd(Xr, 0x5), Xiw = _mm256_permute_pd(Xi, 0x5);
        Xr = _mm256_blend_pd(_mm256_add_pd(Xr, Xrw), _mm256_sub_pd(Xrw, Xr), 0xA);
        Xi = _mm256_blend_pd(_mm256_add_pd(Xi, Xiw), _mm256_sub_pd(Xiw, Xi), 0xA);
        /* h = 2: twiddles 1 and i applied to the high lanes, moved low */
        __m256d Xrs = _mm256_permute2f128_pd(Xr, Xr, 0x01), Xis = _mm256_permute2f128_pd(Xi, Xi, 0x01);
        __m256d tR = _mm256_blend_pd(Xrs, _mm256_sub_pd(_mm256_setzero_pd(), Xis), 0x2);
        __m256d tI = _mm256_blend_pd(Xis, Xrs, 0x2);
        __m256d sR = _mm256_add_pd(Xr, tR), sI = _mm256_add_pd(Xi, tI);
        __m256d dR = _mm256_sub_pd(Xr, tR), dI = _mm256_sub_pd(Xi, tI);
        _mm256_storeu_pd(re + s, _mm256_permute2f128_pd(sR, dR, 0x20));
        _mm256_storeu_pd(im + s, _mm256_permute2f128_pd(sI, dI, 0x20));
    }
#else
    for (int s = 0; s < M; s += 4) {
        double r0 = re[s], r1 = re[s + 1], r2 = re[s + 2], r3 = re[s + 3];
        double i0 = im[s], i1 = im[s + 1], i2 = im[s + 2], i3 = im[s + 3];
        /* h = 1 */
        double a0r = r0 + r1, a0i = i0 + i1, a1r = r0 - r1, a1i = i0 - i1;
        double b0r = r2 + r3, b0i = i2 + i3, b1r = r2 - r3, b1i = i2 - i3;
        /* h = 2: twiddles 1 and i */
        double tr = -b1i, ti = b1r;
        re[s] = a0r + b0r; im[s] = a0i + b0i;
        re[s + 2] = a0r - b0r; im[s + 2] = a0i - b0i;
        re[s + 1] = a1r + tr; im[s + 1] = a1i + ti;
        re[s + 3] = a1r - tr; im[s + 3] = a1i - ti;
    }
#endif
}

/* Inverse DIT transform (unscaled), bit-reversed in, natural out, for M >= 64: the mirror
 * of fft_forward except its last radix-4 pass (half-sizes M/4, M/2), which the caller runs
 * (fused with the untwist and the conversion to the torus in the bootstrap). */
static void FN(fft_inverse_head)(const fft_plan *p, double *restrict re, double *restrict im)
{
    const int M = p->M;
    /* h0: half-size of the first stage after the forward transform's first passes; h_top:
     * of the largest one it ran per block */
    const int h0 = (p->log2N & 1) ? M >> 3 : M >> 4;
    int h_top = h0;
    while (2 * h_top > FHEML_FFT_BLOCK)
        h_top >>= 2;
    const int blk = 2 * h_top < M ? 2 * h_top : M;
    int h = 16;
    for (int b = 0; b < M; b += blk) {
#if FHEML_IMPL_AVX512
        FN(fft16_inverse)(p, re + b, im + b, blk);
#else
        FN(dit_first)(re + b, im + b, blk);
        FN(dit4)(p, re + b, im + b, 8, blk);
#endif
        for (h = 16; 2 * h <= h_top; h <<= 2)
            FN(dit4)(p, re + b, im + b, 2 * h, blk);
    }
    /* large-stride stages over the whole array */
    for (; 2 * h <= h0; h <<= 2)
        FN(dit4)(p, re, im, 2 * h, M);
    if (!(p->log2N & 1))
        FN(dit2)(p, re, im, h, M);
}

/* In-place inverse DIT transform (unscaled), bit-reversed in, natural out. */
static void FN(fft_inverse)(const fft_plan *p, double *restrict re, double *restrict im)
{
    const int M = p->M;
    if (M >= 64) {
        FN(fft_inverse_head)(p, re, im);
        FN(dit4)(p, re, im, M >> 1, M);
        return;
    }
    FN(dit_first)(re, im, M);
    int h = 4;
    for (; 4 * h <= M; h <<= 2)
        FN(dit4)(p, re, im, 2 * h, M);
    if (h < M)
        FN(dit2)(p, re, im, h, M);
}

/* Fold and twist N small signed integers into N/2 complex points, then forward FFT. */
static void FN(forward_i32)(const fft_plan *p, const int32_t *restrict a,
                            double *restrict re, double *restrict im)
{
    const int M = p->M;
    const double *restrict tr = p->twist_re, *restrict ti = p->twist_im;
    const int32_t *restrict lo = a, *restrict hi = a + M;
    for (int j = 0; j < M; j++) {
        double x = (double)lo[j], y = (double)hi[j];
        re[j] = x * tr[j] - y * ti[j];
        im[j] = x * ti[j] + y * tr[j];
    }
    FN(fft_forward)(p, re, im);
}

/* Same for torus values read as signed fractions of 1 (used once per key, not hot). */
static void FN(forward_torus)(const fft_plan *p, const uint64_t *restrict a,
                              double *restrict re, double *restrict im)
{
    const int M = p->M;
    const double sc = 0x1p-64;
    const double *restrict tr = p->twist_re, *restrict ti = p->twist_im;
    for (int j = 0; j < M; j++) {
        double x = (double)(int64_t)a[j] * sc, y = (double)(int64_t)a[j + M] * sc;
        re[j] = x * tr[j] - y * ti[j];
        im[j] = x * ti[j] + y * tr[j];
    }
    FN(fft_forward)(p, re, im);
}

/* int64 with |x| < 2^51 to double without cvtqq2pd (absent before AVX-512; exact, so all
 * copies agree). */
static inline double FN(i64_to_f64)(int64_t x)
{
    uint64_t bits = (uint64_t)x + 0x4338000000000000ULL;
    double d;
    memcpy(&d, &bits, 8);
    return d - 6755399441055744.0;
}

/* Decompose N torus values into `level` balanced digit polynomials and fold-twist each into
 * the FFT input (re | im blocks of N/2) of out + l * N.  v is overwritten (it holds the
 * running decomposition state); every loop is a straight pass that the compiler vectorizes. */
static void FN(decompose_fold)(const fft_plan *p, uint64_t *restrict v, int base_log,
                               int level, double *restrict out)
{
    const int M = p->M, N = p->N, total = base_log * level;
    const uint64_t mask = ((uint64_t)1 << base_log) - 1;
    const uint64_t half = (uint64_t)1 << (base_log - 1);
    const double *restrict tr = p->twist_re, *restrict ti = p->twist_im;
#if FHEML_IMPL_AVX512
    if (M % 8 == 0) {
        FN(decompose_fold_v8)(p, v, base_log, level, out);
        return;
    }
#endif
#if FHEML_IMPL_AVX2
    FN(decompose_fold_v4)(p, v, base_log, level, out);
    return;
#endif
    if (total < 64) {
        const int rsh = 64 - total, rsh1 = 63 - total;
        for (int j = 0; j < N; j++)
            v[j] = (v[j] >> rsh) + ((v[j] >> rsh1) & 1);
    }
    uint64_t *restrict v0 = v, *restrict v1 = v + M;
    for (int l = level - 1; l >= 0; l--) {
        double *restrict re = out + (size_t)l * 2 * M, *restrict im = re + M;
        for (int j = 0; j < M; j++) {
            uint64_t s0 = v0[j], s1 = v1[j];
            uint64_t d0 = s0 & mask, d1 = s1 & mask;
            uint64_t r0 = s0 >> base_log, r1 = s1 >> base_log;
            /* carry when d > B/2, or d == B/2 and the rest is odd: adds and shifts only */
            uint64_t c0 = (d0 + (r0 & 1) + half - 1) >> base_log;
            uint64_t c1 = (d1 + (r1 & 1) + half - 1) >> base_log;
            v0[j] = r0 + c0;
            v1[j] = r1 + c1;
            double x = FN(i64_to_f64)((int64_t)d0 - (int64_t)(c0 << base_log));
            double y = FN(i64_to_f64)((int64_t)d1 - (int64_t)(c1 << base_log));
            re[j] = x * tr[j] - y * ti[j];
            im[j] = x * ti[j] + y * tr[j];
        }
    }
}

/* Decompose N torus values (v, overwritten) into `level` digit polynomials and transform
 * each: polynomial l at out + l * N.  The SIMD copies fuse the decomposition with the first
 * FFT pass (one pass over the data instead of three). */
static void FN(forward_digits)(const fft_plan *p, uint64_t *restrict v, int base_log, int level,
                               double *restrict out)
{
    const int M = p->M;
#if FHEML_IMPL_AVX2
    if (M >= 64) {
#if FHEML_IMPL_AVX512
        FN(decompose_dif4_v8)(p, v, base_log, level, out);
#else
        FN(decompose_dif4_v4)(p, v, base_log, level, out);
#endif
        for (int l = 0; l < level; l++)
            FN(fft_forward_rest)(p, out + (size_t)l * 2 * M, out + (size_t)l * 2 * M + M);
        return;
    }
#endif
    FN(decompose_fold)(p, v, base_log, level, out);
    for (int l = 0; l < level; l++)
        FN(fft_forward)(p, out + (size_t)l * 2 * M, out + (size_t)l * 2 * M + M);
}

/* Inverse FFT then untwist (includes the 1/M scale) into N doubles. */
static void FN(backward_f64)(const fft_plan *p, double *restrict re, double *restrict im,
                             double *restrict out)
{
    const int M = p->M;
    FN(fft_inverse)(p, re, im);
    const double *restrict ur = p->untwist_re, *restrict ui = p->untwist_im;
    double *restrict lo = out, *restrict hi = out + M;
    for (int j = 0; j < M; j++) {
        lo[j] = re[j] * ur[j] - im[j] * ui[j];
        hi[j] = re[j] * ui[j] + im[j] * ur[j];
    }
}

/* x * 2^64 mod 2^64, exactly, rounded to nearest with ties to even, for a finite double
 * holding a torus value in units of 1.  Adding 1.5 * 2^52 rounds a value of magnitude
 * <= 2^51 to an integer (ties to even) and leaves it, as two's complement, in the low bits
 * of the sum (not folded: no -ffast-math).  So for |x| < 2^51: f = x - round(x) is exact,
 * |f| <= 1/2, and f * 2^64 = hi * 2^32 + lo with hi = round(f * 2^32) and lo the exact
 * rest; rounding lo rounds the whole (hi * 2^32 is even).  From 2^51 on, x is a multiple of
 * 1/2: the result is 2^63 when its 1/2 bit is set, else 0 (the two tests are predictable:
 * bootstrap values stay far below 2^51).  The SIMD copies (to_torus in kernels_vec.h)
 * compute the same. */
static inline uint64_t FN(f64_to_torus_small)(double x)
{
    /* |x| < 2^51 */
    const double magic = 0x1.8p52;
    const uint64_t magic_bits = 0x4338000000000000ULL;
    double f = x - ((x + magic) - magic);
    double a = f * 0x1p32;
    double hi = a + magic;
    double lo = (a - (hi - magic)) * 0x1p32 + magic;
    uint64_t hb, lb;
    memcpy(&hb, &hi, 8);
    memcpy(&lb, &lo, 8);
    return ((hb - magic_bits) << 32) + (lb - magic_bits);
}

static inline uint64_t FN(f64_to_torus)(double x)
{
    double ax = fabs(x);
    if (ax < 0x1p51)
        return FN(f64_to_torus_small)(x);
    uint64_t xb;
    memcpy(&xb, &x, 8);
    return ax < 0x1p52 ? (xb & 1) << 63 : 0;
}

/* acc += x * 2^64 mod 2^64 */
static void FN(add_f64_to_torus)(const double *restrict x, uint64_t *restrict acc, int n)
{
    int j = 0;
#if FHEML_IMPL_AVX512
    j = n - n % 8;
    FN(add_f64_to_torus_v8)(x, acc, j);
#elif FHEML_IMPL_AVX2
    j = n - n % 4;
    FN(add_f64_to_torus_v4)(x, acc, j);
#endif
    for (; j < n; j++)
        acc[j] += FN(f64_to_torus)(x[j]);
}

/* Inverse FFT, untwist and acc += result (mod 2^64) in one pass after the transform. */
static void FN(backward_add_torus)(const fft_plan *p, double *restrict re, double *restrict im,
                                   uint64_t *restrict acc)
{
    const int M = p->M;
#if FHEML_IMPL_AVX2
    if (M >= 64) {
        /* the last FFT pass fused with the untwist and the conversion */
        FN(fft_inverse_head)(p, re, im);
#if FHEML_IMPL_AVX512
        FN(dit4_untwist_add_v8)(p, re, im, acc);
#else
        FN(dit4_untwist_add_v4)(p, re, im, acc);
#endif
        return;
    }
#endif
    FN(fft_inverse)(p, re, im);
#if FHEML_IMPL_AVX512
    if (M % 8 == 0) {
        FN(untwist_add_torus_v8)(p, re, im, acc);
        return;
    }
#endif
#if FHEML_IMPL_AVX2
    FN(untwist_add_torus_v4)(p, re, im, acc);
    return;
#endif
    const double *restrict ur = p->untwist_re, *restrict ui = p->untwist_im;
    uint64_t *restrict lo = acc, *restrict hi = acc + M;
    /* bootstrap values stay below 2^48 in magnitude: (k+1)·l·N terms of a digit (|d| <= B/2)
     * times a key coefficient (<= 1/2), with k·N <= 2^17 and l·B <= 2^32 */
    for (int j = 0; j < M; j++) {
        lo[j] += FN(f64_to_torus_small)(re[j] * ur[j] - im[j] * ui[j]);
        hi[j] += FN(f64_to_torus_small)(re[j] * ui[j] + im[j] * ur[j]);
    }
}

/* out[r] = sum_j a[r][j] & keymask[j] (mod 2^64): <mask, binary key> of each row, with
 * keymask[j] all ones where the key bit is set. */
static void FN(dot_binary)(const uint64_t *restrict a, const uint64_t *restrict keymask, int d,
                           int64_t rows, uint64_t *restrict out)
{
    for (int64_t r = 0; r < rows; r++) {
        const uint64_t *restrict row = a + r * (int64_t)d;
        uint64_t acc = 0;
        for (int j = 0; j < d; j++)
            acc += row[j] & keymask[j];
        out[r] = acc;
    }
}

/* ------------------------------------------------------------ decomposition ---- */

/* Balanced signed decomposition of each value into `level` digits of base 2^base_log,
 * most significant level first: out[l*n + j] is digit l of value j, in [-B/2, B/2].
 * Values are first rounded to the closest multiple of 2^(64 - base_log*level). */
static void FN(decompose_i32)(const uint64_t *restrict v, int n, int base_log, int level,
                              int32_t *restrict out)
{
    const int total = base_log * level;
    const uint64_t mask = ((uint64_t)1 << base_log) - 1;
    const uint64_t half = (uint64_t)1 << (base_log - 1);
    for (int j = 0; j < n; j++) {
        uint64_t st = total >= 64 ? v[j]
                                  : (v[j] >> (64 - total)) + ((v[j] >> (63 - total)) & 1);
        const uint64_t lsb = st & 1;
        for (int l = level - 1; l >= 0; l--) {
            uint64_t d = st & mask;
            st >>= base_log;
            /* A tie (d == B/2) carries when the rest is odd, so digits average 0 and the
             * key's fixed noise adds no bias.  At the top level the carry is lost mod 2^64
             * (+B/2 and -B/2 are the same there): split ties on the value's lowest bit. */
            uint64_t carry = (d > half) | ((d == half) & (l ? st : lsb));
            st += carry;
            out[(size_t)l * n + j] = (int32_t)((int64_t)d - (int64_t)(carry << base_log));
        }
    }
}

/* --------------------------------------------------------------- keyswitch ---- */

/* Keyswitch a group of G ciphertexts of dimension n_in to dimension n_out.
 * The key and the outputs keep only the top 32 bits of the torus: the keyswitching key's
 * noise (~2^-17) makes the low bits meaningless, rounding them adds a variance of about
 * n_in * level * B^2/12 * 2^-64/12 (~2^-52, negligible), and 32-bit words halve the memory
 * the key streams through while AVX2 multiplies 8 of them at once.  Each KSK row is read
 * once for the whole group.  digits: scratch of G*level int32. */
static void FN(keyswitch_group)(const uint32_t *restrict ksk, int n_in, int n_out,
                                int base_log, int level, const uint64_t *const *in, int G,
                                uint32_t *const *out, int32_t *restrict digits)
{
    const size_t row = (size_t)n_out + 1;
    for (int g = 0; g < G; g++) {
        memset(out[g], 0, row * 4);
        out[g][n_out] = (uint32_t)((in[g][n_in] + ((uint64_t)1 << 31)) >> 32);
    }
    for (int i = 0; i < n_in; i++) {
        for (int g = 0; g < G; g++)
            FN(decompose_i32)(&in[g][i], 1, base_log, level, digits + (size_t)g * level);
        for (int l = 0; l < level; l++) {
            const uint32_t *restrict r = ksk + ((size_t)i * level + l) * row;
            for (int g = 0; g < G; g++) {
                uint32_t d = (uint32_t)digits[(size_t)g * level + l];
                if (!d)
                    continue;
                uint32_t *restrict o = out[g];
                for (size_t j = 0; j < row; j++)
                    o[j] -= d * r[j];
            }
        }
    }
}

/* --------------------------------------------------------- blind rotation ---- */

/* dst = X^e * src mod X^N + 1, e in [0, 2N). */
static void FN(mul_xpow)(const uint64_t *restrict src, uint64_t *restrict dst, int N, int e)
{
    uint64_t neg = 0;
    if (e >= N) {
        e -= N;
        neg = 1;
    }
    /* coefficient c gets src[c - e]; indices wrapping below 0 change sign.  Shifted
     * pointers rather than src[c - e + N]: GCC then vectorizes plain loads instead of
     * emulating a gather. */
    const uint64_t *restrict wrap = src + (N - e);
    uint64_t *restrict hi = dst + e;
    for (int c = 0; c < e; c++)
        dst[c] = neg ? wrap[c] : (uint64_t)0 - wrap[c];
    for (int c = 0; c < N - e; c++)
        hi[c] = neg ? (uint64_t)0 - src[c] : src[c];
}

/* diff = X^e * src - src, e in (0, 2N). */
static void FN(rotate_minus_self)(const uint64_t *restrict src, uint64_t *restrict diff, int N,
                                  int e)
{
    const int neg = e >= N;
    if (neg)
        e -= N;
    /* coefficients [0, e) come from src[N - e ..) (wrapped), [e, N) from src[0 ..) */
    const uint64_t *restrict wrap = src + (N - e), *restrict src_hi = src + e;
    uint64_t *restrict diff_hi = diff + e;
    if (neg) {
        for (int c = 0; c < e; c++)
            diff[c] = wrap[c] - src[c];
        for (int c = 0; c < N - e; c++)
            diff_hi[c] = (uint64_t)0 - src[c] - src_hi[c];
    } else {
        for (int c = 0; c < e; c++)
            diff[c] = (uint64_t)0 - wrap[c] - src[c];
        for (int c = 0; c < N - e; c++)
            diff_hi[c] = src[c] - src_hi[c];
    }
}

/* fa[j][q] = sum_r fd[j][r] * ggsw[r][q] (complex, pointwise in the Fourier domain) for the
 * na ciphertexts j sharing one GGSW: the multiply-accumulate of the external product.  The
 * SIMD copies stream the GGSW once per four ciphertexts (results bit-identical to one at a
 * time). */
static void FN(external_mac)(const double *const *fds, const double *restrict ggsw,
                             double *const *fas, int M, int R, int K1, int na)
{
#if FHEML_IMPL_AVX2
#if FHEML_IMPL_AVX512
    if (M % 8 == 0) {
        FN(external_mac_v8)(fds, ggsw, fas, M, R, K1, na);
        return;
    }
#endif
    FN(external_mac_v4)(fds, ggsw, fas, M, R, K1, na);
#else
    for (int j = 0; j < na; j++) {
        const double *fd = fds[j];
        double *fa = fas[j];
        memset(fa, 0, sizeof(double) * (size_t)K1 * 2 * M);
        for (int r = 0; r < R; r++) {
            const double *restrict dr = fd + (size_t)r * 2 * M;
            const double *restrict di = dr + M;
            for (int q = 0; q < K1; q++) {
                const double *restrict br = ggsw + ((size_t)r * K1 + q) * 2 * M;
                const double *restrict bi = br + M;
                double *restrict ar = fa + (size_t)q * 2 * M;
                double *restrict ai = ar + M;
                for (int m = 0; m < M; m++) {
                    ar[m] += dr[m] * br[m] - di[m] * bi[m];
                    ai[m] += dr[m] * bi[m] + di[m] * br[m];
                }
            }
        }
    }
#endif
}

/* Blind-rotate G accumulators through the whole bootstrapping key, one key bit per step.
 *   acc     : G * (k+1) * N u64, already initialised to X^(-b~) * LUT (trivial GLWE)
 *   abar    : G * n ints, the modulus-switched masks (in [0, 2N))
 * Each GGSW of the key is read once per step for the whole group: the digits of all G
 * ciphertexts are transformed first (sc->fdig holds G of them), then the SIMD
 * multiply-accumulate streams the GGSW once per four ciphertexts. */
static void FN(blind_rotate_bits)(const fft_plan *p, const double *restrict bsk, int n, int k,
                                  int base_log, int level, const int32_t *restrict abar,
                                  int G, uint64_t *restrict acc, pbs_scratch *sc)
{
    const int N = p->N, M = p->M, K1 = k + 1, R = K1 * level;
    const size_t ggsw = (size_t)R * K1 * 2 * M;
    const size_t fdig_size = (size_t)R * 2 * M, facc_size = (size_t)K1 * 2 * M;
    const double *fds[FHEML_MAX_GROUP];
    double *fas[FHEML_MAX_GROUP];
    for (int j = 0; j < G; j++) {
        fds[j] = sc->fdig + (size_t)j * fdig_size;
        fas[j] = sc->facc + (size_t)j * facc_size;
    }
    for (int i = 0; i < n; i++) {
        fheml_barrier_wait(sc->barrier);
        /* decompose X^e * ACC - ACC of every ciphertext that rotates, polynomial by
         * polynomial, and transform (digits of active ciphertext j at fdig + j * fdig_size) */
        int active[FHEML_MAX_GROUP], na = 0;
        for (int g = 0; g < G; g++) {
            int e = abar[(size_t)g * n + i];
            if (e == 0)
                continue;
            const uint64_t *a = acc + (size_t)g * K1 * N;
            double *fd = sc->fdig + (size_t)na * fdig_size;
            active[na++] = g;
            for (int q = 0; q < K1; q++) {
                double *f = fd + (size_t)q * level * 2 * M;
                FN(rotate_minus_self)(a + (size_t)q * N, sc->diff, N, e);
                FN(forward_digits)(p, sc->diff, base_log, level, f);
            }
        }
        FN(external_mac)(fds, bsk + (size_t)i * ggsw, fas, M, R, K1, na);
        for (int j = 0; j < na; j++) {
            uint64_t *a = acc + (size_t)active[j] * K1 * N;
            for (int q = 0; q < K1; q++) {
                double *f = sc->facc + (size_t)j * facc_size + (size_t)q * 2 * M;
                FN(backward_add_torus)(p, f, f + M, a + (size_t)q * N);
            }
        }
    }
}

/* b = a * f (complex), h points: separate restrict arguments, so that the compiler
 * vectorizes the recurrence below. */
static inline void FN(scaled_copy)(const double *restrict ar, const double *restrict ai,
                                   double *restrict br, double *restrict bi, double fr,
                                   double fi, int h)
{
    for (int i = 0; i < h; i++) {
        br[i] = ar[i] * fr - ai[i] * fi;
        bi[i] = ar[i] * fi + ai[i] * fr;
    }
}

/* The transform of X^e - 1 (re block w, im block w + M), from the plan's roots without
 * gathers: point m evaluates at zeta_m = exp(i*pi*(1 - 4*bitrev(m))/N), so zeta_m^e for the
 * points [2^j, 2^(j+1)) is that of the points [0, 2^j) times exp(-4*i*pi*e*2^(L-1-j)/N)
 * (M = 2^L): M complex products, each value at most L roundings away from exact. */
static void FN(monomial_minus_one)(const fft_plan *p, int e, double *restrict w)
{
    const int M = p->M, L = p->log2N - 1;
    const uint32_t mask = 2 * (uint32_t)p->N - 1, step = 0u - 4u * (uint32_t)e;
    const double *restrict rr = p->root_re, *restrict ri = p->root_im;
    double *restrict wr = w, *restrict wi = w + M;
    wr[0] = rr[(uint32_t)e & mask];
    wi[0] = ri[(uint32_t)e & mask];
    for (int j = 0; j < L; j++) {
        const int h = 1 << j;
        const uint32_t t = (step << (L - 1 - j)) & mask;
        FN(scaled_copy)(wr, wi, wr + h, wi + h, rr[t], ri[t], h);
    }
    for (int m = 0; m < M; m++)
        wr[m] -= 1.0;
}

/* fs[j] (+)= sum_c w[c][j] * sum_r fd[j][r] * ggsw_c[r] for the na ciphertexts j of one
 * multi-bit step and S subsets of its key group: their external products (ggsw_c at
 * ggsw + c * gstride), each multiplied by the transform of its monomial minus one
 * (w[c][j] = w[c * wstride + j], zero where the monomial is 1) and summed, into fs or
 * added to it (accumulate).  fa: scratch of the portable copy. */
static void FN(external_mac_subsets)(const double *const *fds, const double *restrict ggsw,
                                     size_t gstride, const double *const *ws, int wstride,
                                     double *const *fss, double *const *fas, int M, int R,
                                     int K1, int S, int accumulate, int na)
{
#if FHEML_IMPL_AVX2
    (void)fas;
#if FHEML_IMPL_AVX512
    if (M % 8 == 0) {
        FN(external_mac_subsets_v8)(fds, ggsw, gstride, ws, wstride, fss, M, R, K1, S,
                                    accumulate, na);
        return;
    }
#endif
    FN(external_mac_subsets_v4)(fds, ggsw, gstride, ws, wstride, fss, M, R, K1, S, accumulate,
                                na);
#else
    if (!accumulate)
        for (int j = 0; j < na; j++)
            memset(fss[j], 0, sizeof(double) * (size_t)K1 * 2 * M);
    for (int c = 0; c < S; c++) {
        FN(external_mac)(fds, ggsw + (size_t)c * gstride, fas, M, R, K1, na);
        for (int j = 0; j < na; j++) {
            const double *restrict wr = ws[(size_t)c * wstride + j], *restrict wi = wr + M;
            for (int q = 0; q < K1; q++) {
                const double *restrict ar = fas[j] + (size_t)q * 2 * M, *restrict ai = ar + M;
                double *restrict sr = fss[j] + (size_t)q * 2 * M, *restrict si = sr + M;
                for (int m = 0; m < M; m++) {
                    sr[m] += wr[m] * ar[m] - wi[m] * ai[m];
                    si[m] += wr[m] * ai[m] + wi[m] * ar[m];
                }
            }
        }
    }
#endif
}

/* Multi-bit blind rotation: n / gf steps of gf key bits each.  The key holds, for each
 * group of gf bits s and each non-empty subset c of the group (bit t of c for bit t of the
 * group), the GGSW of the indicator [s == c]; exactly one indicator (or none, s = 0) is 1,
 * so X^<a,s> * ACC = ACC + sum_c (X^<a,c> - 1) * [s == c] * ACC and a step is
 *     ACC += sum_c (X^<a,c> - 1) * ExtProd(GGSW_c, ACC):
 * one decomposition and transform of ACC and one inverse transform per step for
 * 2^gf - 1 multiply-accumulates, the monomials applied in the Fourier domain. */
static void FN(blind_rotate_multibit)(const fft_plan *p, const double *restrict bsk, int n,
                                      int k, int base_log, int level, int gf,
                                      const int32_t *restrict abar, int G,
                                      uint64_t *restrict acc, pbs_scratch *sc)
{
    const int N = p->N, M = p->M, K1 = k + 1, R = K1 * level, S = (1 << gf) - 1;
    const int mask = 2 * N - 1, pass = FHEML_SUBSET_PASS(S);
    const size_t ggsw = (size_t)R * K1 * 2 * M;
    const size_t fdig_size = (size_t)R * 2 * M, facc_size = (size_t)K1 * 2 * M;
    for (int i = 0; i < n / gf; i++) {
        fheml_barrier_wait(sc->barrier);
        int active[FHEML_MAX_GROUP], na = 0;
        int e[FHEML_MAX_GROUP][1 << FHEML_MAX_GROUPING];
        for (int g = 0; g < G; g++) {
            const int32_t *a = abar + (size_t)g * n + (size_t)i * gf;
            int any = 0;
            e[na][0] = 0;
            for (int c = 1; c <= S; c++) {
                const int low = __builtin_ctz((unsigned)c);
                e[na][c] = (e[na][c & (c - 1)] + a[low]) & mask;
                any |= a[low];
            }
            if (!any)
                continue;
            const uint64_t *ag = acc + (size_t)g * K1 * N;
            double *fd = sc->fdig + (size_t)na * fdig_size;
            for (int q = 0; q < K1; q++) {
                memcpy(sc->diff, ag + (size_t)q * N, sizeof(uint64_t) * N);
                FN(forward_digits)(p, sc->diff, base_log, level, fd + (size_t)q * level * 2 * M);
            }
            active[na++] = g;
        }
        const double *fds[FHEML_MAX_GROUP], *ws[FHEML_SUBSETS_PER_PASS * FHEML_MAX_GROUP];
        double *fss[FHEML_MAX_GROUP], *fas[FHEML_MAX_GROUP];
        for (int j = 0; j < na; j++) {
            fds[j] = sc->fdig + (size_t)j * fdig_size;
            fss[j] = sc->fsum + (size_t)j * facc_size;
            fas[j] = sc->facc + (size_t)j * facc_size;
        }
        /* subsets [c0, c0 + pass): the transforms of X^e - 1 (zero where the monomial is
         * 1), then one multiply-accumulate pass */
        for (int c0 = 1; c0 <= S; c0 += pass) {
            for (int c = c0; c < c0 + pass; c++) {
                for (int j = 0; j < na; j++) {
                    double *w = sc->mono + ((size_t)(c - c0) * G + j) * N;
                    if (e[j][c])
                        FN(monomial_minus_one)(p, e[j][c], w);
                    else
                        memset(w, 0, sizeof(double) * N);
                    ws[(c - c0) * FHEML_MAX_GROUP + j] = w;
                }
            }
            FN(external_mac_subsets)(fds, bsk + ((size_t)i * S + (c0 - 1)) * ggsw, ggsw, ws,
                                     FHEML_MAX_GROUP, fss, fas, M, R, K1, pass, c0 > 1, na);
        }
        for (int j = 0; j < na; j++) {
            uint64_t *a = acc + (size_t)active[j] * K1 * N;
            for (int q = 0; q < K1; q++) {
                double *f = sc->fsum + (size_t)j * facc_size + (size_t)q * 2 * M;
                FN(backward_add_torus)(p, f, f + M, a + (size_t)q * N);
            }
        }
    }
}

/* Blind rotation with grouping factor gf (1: one key bit per step; n % gf == 0). */
static void FN(blind_rotate_group)(const fft_plan *p, const double *restrict bsk, int n, int k,
                                   int base_log, int level, int gf,
                                   const int32_t *restrict abar, int G,
                                   uint64_t *restrict acc, pbs_scratch *sc)
{
    if (gf == 1)
        FN(blind_rotate_bits)(p, bsk, n, k, base_log, level, abar, G, acc, sc);
    else
        FN(blind_rotate_multibit)(p, bsk, n, k, base_log, level, gf, abar, G, acc, sc);
}

/* out = the LWE ciphertext of coefficient c of the GLWE a ((k+1) polynomials of N) under the
 * big key: mask of polynomial q is (a_q[c], ..., a_q[0], -a_q[N-1], ..., -a_q[c+1]). */
static void FN(sample_extract)(const uint64_t *restrict a, int k, int N, int c,
                               uint64_t *restrict o)
{
    for (int q = 0; q < k; q++) {
        const uint64_t *restrict aq = a + (size_t)q * N;
        uint64_t *restrict oq = o + (size_t)q * N;
        for (int i = 0; i <= c; i++)
            oq[i] = aq[c - i];
        for (int i = c + 1; i < N; i++)
            oq[i] = (uint64_t)0 - aq[N + c - i];
    }
    o[(size_t)k * N] = a[(size_t)k * N + c];
}

/* Full KS -> modulus switch -> blind rotation -> sample extraction for ciphertexts
 * [start, end) of a batch.  Keyswitches run FHEML_KS_GROUP-ish ciphertexts at a time (each
 * row of the keyswitching key, streamed from memory, serves all of them; their outputs are
 * small), blind rotations `group` at a time.
 *   in      : (count, k*N + 1) u64
 *   out     : (count, n_extract, k*N + 1) u64: output i of input b is coefficient
 *             i * extract_stride of its rotated accumulator (several tables packed in one
 *             test polynomial, "many-LUT"; n_extract = 1 for one table)
 *   luts    : (T, N) u64 test polynomials (bodies of trivial GLWEs), lut_index : (count,)
 * When ksk is NULL the inputs are already of dimension n (no keyswitch). */
static void FN(pbs_range)(const fft_plan *p, const uint32_t *ksk, int ks_base_log,
                          int ks_level, const double *bsk, int n, int k, int pbs_base_log,
                          int pbs_level, int grouping, const uint64_t *luts,
                          const int64_t *lut_index,
                          const uint64_t *in, uint64_t *out, int64_t start, int64_t end,
                          int group, int n_extract, int extract_stride, pbs_scratch *sc)
{
    const int N = p->N, K1 = k + 1, big = k * N;
    const int log2_2n = p->log2N + 1;
    const int in_dim = ksk ? big : n;
    /* keyswitch chunk: a multiple of the rotation group, about FHEML_KS_GROUP */
    const int chunk = group >= FHEML_KS_GROUP ? group : FHEML_KS_GROUP / group * group;
    for (int64_t s = start; s < end; s += chunk) {
        const int GK = (int)((end - s) < chunk ? (end - s) : chunk);
        const uint64_t *ins[FHEML_MAX_GROUP];
        uint32_t *smalls[FHEML_MAX_GROUP];
        for (int g = 0; g < GK; g++) {
            ins[g] = in + (size_t)(s + g) * (in_dim + 1);
            smalls[g] = sc->small + (size_t)g * (n + 1);
        }
        if (ksk) {
            FN(keyswitch_group)(ksk, big, n, ks_base_log, ks_level, ins, GK, smalls,
                                sc->ks_digits);
        } else {
            for (int g = 0; g < GK; g++)
                for (int j = 0; j <= n; j++)
                    smalls[g][j] = (uint32_t)((ins[g][j] + ((uint64_t)1 << 31)) >> 32);
        }
        for (int s2 = 0; s2 < GK; s2 += group) {
            const int G = GK - s2 < group ? GK - s2 : group;
            for (int g = 0; g < G; g++) {
                /* modulus switch from 2^32 to 2N, round to nearest, centred: the body
                 * takes half the sum of the mask's rounding errors e_i, the mean of
                 * sum_i e_i s_i over a uniform binary key, so that only
                 * sum_i e_i (s_i - 1/2) is left (half the variance; tfhe-rs's
                 * "centered mean" modulus switch) */
                const uint32_t *c = smalls[s2 + g];
                const int sh = 32 - log2_2n;
                const uint32_t two_n_mask = ((uint32_t)1 << log2_2n) - 1;
                int64_t err = 0;
                for (int i = 0; i < n; i++) {
                    const uint32_t r = ((c[i] >> (sh - 1)) + 1) >> 1;
                    err += ((int64_t)r << sh) - (int64_t)c[i];
                    sc->abar[(size_t)g * n + i] = (int32_t)(r & two_n_mask);
                }
                const uint32_t body = c[n] + (uint32_t)(err >> 1);
                /* the body rounded down, not to nearest: a box of the test polynomial
                 * holds the switched phases [c - h, c + h) (h half a box), i.e. the
                 * phases before rounding [c - h - 1/2, c + h - 1/2): flooring moves that
                 * to [c - h, c + h), centred on the message (measured: flips at the upper
                 * boundary 0.198 against 0.137 at the lower one, a whole sigma inside) */
                int bbar = (int)((body >> sh) & two_n_mask);
                uint64_t *a = sc->acc + (size_t)g * K1 * N;
                memset(a, 0, (size_t)k * N * 8);
                const uint64_t *lut = luts + (size_t)lut_index[s + s2 + g] * N;
                FN(mul_xpow)(lut, a + (size_t)k * N, N, bbar == 0 ? 0 : 2 * N - bbar);
            }
            FN(blind_rotate_group)(p, bsk, n, k, pbs_base_log, pbs_level, grouping, sc->abar, G,
                                   sc->acc, sc);
            for (int g = 0; g < G; g++)
                for (int i = 0; i < n_extract; i++)
                    FN(sample_extract)(sc->acc + (size_t)g * K1 * N, k, N, i * extract_stride,
                                       out + ((size_t)(s + s2 + g) * n_extract + i) * (big + 1));
        }
    }
}
