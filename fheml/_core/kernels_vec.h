/* Vector loops of the SIMD kernels, written once for any vector width and included by
 * kernels_impl.h inside the AVX2 copy (width 4) and the AVX-512 copy (widths 8 and 4, the
 * latter for the short FFT stages).  VFN(name) gives each width its suffix (name_v4, name_v8);
 * every lane does the same operations in the same order at both widths, so the two widths
 * give bit-identical results. */

#if FHEML_VW == 4
#define VD __m256d
#define VLD _mm256_loadu_pd
#define VST _mm256_storeu_pd
#define VADD _mm256_add_pd
#define VSUB _mm256_sub_pd
#define VMUL _mm256_mul_pd
#define VFMADD _mm256_fmadd_pd
#define VFMSUB _mm256_fmsub_pd
#define VFNMADD _mm256_fnmadd_pd
#define VZERO _mm256_setzero_pd
#elif FHEML_VW == 8
#define VD __m512d
#define VLD _mm512_loadu_pd
#define VST _mm512_storeu_pd
#define VADD _mm512_add_pd
#define VSUB _mm512_sub_pd
#define VMUL _mm512_mul_pd
#define VFMADD _mm512_fmadd_pd
#define VFMSUB _mm512_fmsub_pd
#define VFNMADD _mm512_fnmadd_pd
#define VZERO _mm512_setzero_pd
#else
#error "FHEML_VW must be 4 or 8"
#endif
#define VFN(name) FHEML_CAT(name, FHEML_CAT(_v, FHEML_VW))

/* The radix-4 butterfly of the forward DIF transform on one vector of each of the four
 * quarters a, b, c, d (see dif4 in kernels_impl.h): outputs a + b + c + d,
 * (a + c - b - d) conj(v), (t1 + t3) conj(w), (t1 - t3) conj(w3) with t1 = a - c,
 * t3 = -i (b - d): three complex multiplies.  o[0..7]: out a re, im, b re, im, ... */
static inline __attribute__((always_inline)) void
FN(VFN(dif4_core))(VD Ar, VD Ai, VD Br, VD Bi, VD Cr, VD Ci, VD Dr, VD Di, VD wr, VD wi, VD vr,
                   VD vi, VD ur, VD ui, double *const o[8], int j)
{
    VD a1r = VADD(Ar, Cr), a1i = VADD(Ai, Ci);
    VD t1r = VSUB(Ar, Cr), t1i = VSUB(Ai, Ci);
    VD b1r = VADD(Br, Dr), b1i = VADD(Bi, Di);
    VD t3r = VSUB(Bi, Di), t3i = VSUB(Dr, Br); /* -i (b - d) */
    VST(o[0] + j, VADD(a1r, b1r));
    VST(o[1] + j, VADD(a1i, b1i));
    VD xr = VSUB(a1r, b1r), xi = VSUB(a1i, b1i);
    VST(o[2] + j, VFMADD(xr, vr, VMUL(xi, vi)));
    VST(o[3] + j, VFMSUB(xi, vr, VMUL(xr, vi)));
    VD pr = VADD(t1r, t3r), pi = VADD(t1i, t3i);
    VST(o[4] + j, VFMADD(pr, wr, VMUL(pi, wi)));
    VST(o[5] + j, VFMSUB(pi, wr, VMUL(pr, wi)));
    VD qr = VSUB(t1r, t3r), qi = VSUB(t1i, t3i);
    VST(o[6] + j, VFMADD(qr, ur, VMUL(qi, ui)));
    VST(o[7] + j, VFMSUB(qi, ur, VMUL(qr, ui)));
}

/* One radix-4 block of the forward DIF transform, in place.  Q % FHEML_VW == 0. */
static inline void FN(VFN(dif4_block))(double *restrict ar, double *restrict ai,
                                       double *restrict br, double *restrict bi,
                                       double *restrict cr, double *restrict ci,
                                       double *restrict dr, double *restrict di,
                                       const double *restrict w1r, const double *restrict w1i,
                                       const double *restrict w2r, const double *restrict w2i,
                                       const double *restrict w3r, const double *restrict w3i,
                                       int Q)
{
    double *const o[8] = {ar, ai, br, bi, cr, ci, dr, di};
    for (int j = 0; j < Q; j += FHEML_VW)
        FN(VFN(dif4_core))(VLD(ar + j), VLD(ai + j), VLD(br + j), VLD(bi + j), VLD(cr + j),
                           VLD(ci + j), VLD(dr + j), VLD(di + j), VLD(w1r + j), VLD(w1i + j),
                           VLD(w2r + j), VLD(w2i + j), VLD(w3r + j), VLD(w3i + j), o, j);
}

/* The radix-4 butterfly of the inverse DIT transform (see dit4 in kernels_impl.h): with
 * y = b v, x = c w, z = d w3, outputs a + y + (x + z), a - y + i (x - z), a + y - (x + z),
 * a - y - i (x - z) into r[0..7] (a re, im, b re, im, ...).  Three complex multiplies. */
static inline __attribute__((always_inline)) void
FN(VFN(dit4_core))(VD Ar, VD Ai, VD Br, VD Bi, VD Cr, VD Ci, VD Dr, VD Di, VD wr, VD wi, VD vr,
                   VD vi, VD ur, VD ui, VD r[8])
{
    VD yr = VFMSUB(Br, vr, VMUL(Bi, vi)), yi = VFMADD(Br, vi, VMUL(Bi, vr));
    VD xr = VFMSUB(Cr, wr, VMUL(Ci, wi)), xi = VFMADD(Cr, wi, VMUL(Ci, wr));
    VD zr = VFMSUB(Dr, ur, VMUL(Di, ui)), zi = VFMADD(Dr, ui, VMUL(Di, ur));
    VD a1r = VADD(Ar, yr), a1i = VADD(Ai, yi);
    VD b1r = VSUB(Ar, yr), b1i = VSUB(Ai, yi);
    VD sr = VADD(xr, zr), si = VADD(xi, zi);
    VD tr = VSUB(xr, zr), ti = VSUB(xi, zi);
    r[0] = VADD(a1r, sr);
    r[1] = VADD(a1i, si);
    r[4] = VSUB(a1r, sr);
    r[5] = VSUB(a1i, si);
    /* times i: (-ti, tr) */
    r[2] = VSUB(b1r, ti);
    r[3] = VADD(b1i, tr);
    r[6] = VADD(b1r, ti);
    r[7] = VSUB(b1i, tr);
}

/* One radix-4 block of the inverse DIT transform, in place. */
static inline void FN(VFN(dit4_block))(double *restrict ar, double *restrict ai,
                                       double *restrict br, double *restrict bi,
                                       double *restrict cr, double *restrict ci,
                                       double *restrict dr, double *restrict di,
                                       const double *restrict w1r, const double *restrict w1i,
                                       const double *restrict w2r, const double *restrict w2i,
                                       const double *restrict w3r, const double *restrict w3i,
                                       int Q)
{
    double *const o[8] = {ar, ai, br, bi, cr, ci, dr, di};
    for (int j = 0; j < Q; j += FHEML_VW) {
        VD r[8];
        FN(VFN(dit4_core))(VLD(ar + j), VLD(ai + j), VLD(br + j), VLD(bi + j), VLD(cr + j),
                           VLD(ci + j), VLD(dr + j), VLD(di + j), VLD(w1r + j), VLD(w1i + j),
                           VLD(w2r + j), VLD(w2i + j), VLD(w3r + j), VLD(w3i + j), r);
        for (int t = 0; t < 8; t++)
            VST(o[t] + j, r[t]);
    }
}

/* 64-bit integer lanes (decomposition) and the exact f64 -> torus conversion. */
#if FHEML_VW == 4
#define VI __m256i
#define VILD(p) _mm256_loadu_si256((const __m256i *)(p))
#define VIST(p, x) _mm256_storeu_si256((__m256i *)(p), x)
#define VI1 _mm256_set1_epi64x
#define VIADD _mm256_add_epi64
#define VISUB _mm256_sub_epi64
#define VIAND _mm256_and_si256
#define VISRL(x, c) _mm256_srl_epi64(x, _mm_cvtsi32_si128(c))
#define VISLL(x, c) _mm256_sll_epi64(x, _mm_cvtsi32_si128(c))
/* |x| < 2^51 to double, exactly (no cvtqq2pd before AVX-512) */
#define VI2D(x) _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(x, VI1(0x4338000000000000LL))), \
                              _mm256_set1_pd(6755399441055744.0))
#else
#define VI __m512i
#define VILD(p) _mm512_loadu_si512((const void *)(p))
#define VIST(p, x) _mm512_storeu_si512((void *)(p), x)
#define VI1 _mm512_set1_epi64
#define VIADD _mm512_add_epi64
#define VISUB _mm512_sub_epi64
#define VIAND _mm512_and_si512
#define VISRL(x, c) _mm512_srl_epi64(x, _mm_cvtsi32_si128(c))
#define VISLL(x, c) _mm512_sll_epi64(x, _mm_cvtsi32_si128(c))
#define VI2D(x) _mm512_cvtepi64_pd(x)
#endif

/* Decompose N torus values into `level` balanced digit polynomials and fold-twist each into
 * the FFT input of out + l * N (see decompose_fold in kernels_impl.h: same digits, same
 * arithmetic).  The running state stays in registers: v is read once.  M % FHEML_VW == 0. */
static void FN(VFN(decompose_fold))(const fft_plan *p, const uint64_t *restrict v,
                                    int base_log, int level, double *restrict out)
{
    const int M = p->M, total = base_log * level;
    const int rsh = total < 64 ? 64 - total : 0;
    const VI mask = VI1((long long)(((uint64_t)1 << base_log) - 1));
    const VI one = VI1(1), halfm1 = VI1((long long)(((uint64_t)1 << (base_log - 1)) - 1));
    const double *restrict tr = p->twist_re, *restrict ti = p->twist_im;
    for (int j = 0; j < M; j += FHEML_VW) {
        VI s0 = VILD(v + j), s1 = VILD(v + M + j);
        if (rsh) {
            /* round to the top `total` bits */
            s0 = VIADD(VISRL(s0, rsh), VIAND(VISRL(s0, rsh - 1), one));
            s1 = VIADD(VISRL(s1, rsh), VIAND(VISRL(s1, rsh - 1), one));
        }
        VD wr = VLD(tr + j), wi = VLD(ti + j);
        for (int l = level - 1; l >= 0; l--) {
            VI d0 = VIAND(s0, mask), d1 = VIAND(s1, mask);
            s0 = VISRL(s0, base_log);
            s1 = VISRL(s1, base_log);
            /* carry when d > B/2, or d == B/2 and the rest is odd (branch-free) */
            VI c0 = VISRL(VIADD(VIADD(d0, VIAND(s0, one)), halfm1), base_log);
            VI c1 = VISRL(VIADD(VIADD(d1, VIAND(s1, one)), halfm1), base_log);
            s0 = VIADD(s0, c0);
            s1 = VIADD(s1, c1);
            VD x = VI2D(VISUB(d0, VISLL(c0, base_log)));
            VD y = VI2D(VISUB(d1, VISLL(c1, base_log)));
            double *restrict re = out + (size_t)l * 2 * M + j;
            VST(re, VFMSUB(x, wr, VMUL(y, wi)));
            VST(re + M, VFMADD(x, wi, VMUL(y, wr)));
        }
    }
}

/* x * 2^64 mod 2^64 for each lane, rounded to nearest with ties to even: exactly the scalar
 * f64_to_torus of kernels_impl.h.  The fraction f = x - round(x) is exact and |f| <= 1/2,
 * so f * 2^64 fits in 64 bits (2^63 wraps to itself mod 2^64). */
/* A macro, not a const int: the rounding operand must be an immediate, which a const
 * variable is not at -O0 (the checked build). */
#ifndef FHEML_ROUND_NEAREST
#define FHEML_ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#endif
static inline VI FN(VFN(to_torus))(VD x)
{
#if FHEML_VW == 8
    VD y = VMUL(VSUB(x, _mm512_roundscale_pd(x, FHEML_ROUND_NEAREST)), _mm512_set1_pd(0x1p64));
    return _mm512_cvt_roundpd_epi64(y, FHEML_ROUND_NEAREST);
#else
    /* f * 2^64 = hi * 2^32 + lo: hi = round(f * 2^32), lo the exact rest; adding
     * 1.5 * 2^52 rounds each (ties to even) into the low bits as two's complement, and
     * rounding lo rounds the sum (hi * 2^32 is even) */
    const VD magic = _mm256_set1_pd(0x1.8p52);
    const VI magic_bits = VI1(0x4338000000000000LL);
    VD a = VMUL(VSUB(x, _mm256_round_pd(x, FHEML_ROUND_NEAREST)), _mm256_set1_pd(0x1p32));
    VD hi = VADD(a, magic);
    VD lo = VFMADD(VSUB(a, VSUB(hi, magic)), _mm256_set1_pd(0x1p32), magic);
    VI h = VISUB(_mm256_castpd_si256(hi), magic_bits);
    VI l = VISUB(_mm256_castpd_si256(lo), magic_bits);
    return VIADD(_mm256_slli_epi64(h, 32), l);
#endif
}

/* acc[j] += x[j] * 2^64 mod 2^64, n % FHEML_VW == 0 */
static inline void FN(VFN(add_f64_to_torus))(const double *restrict x, uint64_t *restrict acc, int n)
{
    for (int j = 0; j < n; j += FHEML_VW)
        VIST(acc + j, VIADD(VILD(acc + j), FN(VFN(to_torus))(VLD(x + j))));
}

/* Untwist (with the 1/M scale) the inverse transform (re, im) and add it to the torus
 * polynomial acc (low half from the real parts, high half from the imaginary parts). */
static void FN(VFN(untwist_add_torus))(const fft_plan *p, const double *restrict re,
                                       const double *restrict im, uint64_t *restrict acc)
{
    const int M = p->M;
    const double *restrict ur = p->untwist_re, *restrict ui = p->untwist_im;
    uint64_t *restrict lo = acc, *restrict hi = acc + M;
    for (int j = 0; j < M; j += FHEML_VW) {
        VD xr = VLD(re + j), xi = VLD(im + j), wr = VLD(ur + j), wi = VLD(ui + j);
        VD a = VFMSUB(xr, wr, VMUL(xi, wi)), b = VFMADD(xr, wi, VMUL(xi, wr));
        VIST(lo + j, VIADD(VILD(lo + j), FN(VFN(to_torus))(a)));
        VIST(hi + j, VIADD(VILD(hi + j), FN(VFN(to_torus))(b)));
    }
}

/* One digit of each value of a vector pair (low half s0, high half s1 of a polynomial),
 * least significant level first (see decompose_fold in kernels_impl.h), folded and twisted
 * into one complex point. */
static inline __attribute__((always_inline)) void
FN(VFN(digit_point))(VI *s0, VI *s1, VI mask, VI one, VI halfm1, int base_log, VD tr, VD ti,
                     VD *re, VD *im)
{
    VI d0 = VIAND(*s0, mask), d1 = VIAND(*s1, mask);
    *s0 = VISRL(*s0, base_log);
    *s1 = VISRL(*s1, base_log);
    VI c0 = VISRL(VIADD(VIADD(d0, VIAND(*s0, one)), halfm1), base_log);
    VI c1 = VISRL(VIADD(VIADD(d1, VIAND(*s1, one)), halfm1), base_log);
    *s0 = VIADD(*s0, c0);
    *s1 = VIADD(*s1, c1);
    VD x = VI2D(VISUB(d0, VISLL(c0, base_log)));
    VD y = VI2D(VISUB(d1, VISLL(c1, base_log)));
    *re = VFMSUB(x, tr, VMUL(y, ti));
    *im = VFMADD(x, ti, VMUL(y, tr));
}

/* Decompose N torus values into `level` digit polynomials, fold and twist them and run the
 * first radix-4 pass of the forward FFT (half-sizes M/2, M/4) on each, in one pass over v:
 * the digit polynomial l goes to out + l * N ready for fft_forward_rest.  Same arithmetic as
 * decompose_fold then dif4.  M % (4 * FHEML_VW) == 0. */
static inline void FN(VFN(decompose_dif4))(const fft_plan *p, const uint64_t *restrict v, int base_log,
                                    int level, double *restrict out)
{
    const int M = p->M, H = M / 2, Q = M / 4, total = base_log * level;
    const int rsh = total < 64 ? 64 - total : 0;
    const VI mask = VI1((long long)(((uint64_t)1 << base_log) - 1));
    const VI one = VI1(1), halfm1 = VI1((long long)(((uint64_t)1 << (base_log - 1)) - 1));
    for (int j = 0; j < Q; j += FHEML_VW) {
        VI s0[4], s1[4];
        for (int t = 0; t < 4; t++) {
            s0[t] = VILD(v + t * Q + j);
            s1[t] = VILD(v + M + t * Q + j);
            if (rsh) {
                s0[t] = VIADD(VISRL(s0[t], rsh), VIAND(VISRL(s0[t], rsh - 1), one));
                s1[t] = VIADD(VISRL(s1[t], rsh), VIAND(VISRL(s1[t], rsh - 1), one));
            }
        }
        const VD wr = VLD(p->tw_re + H + j), wi = VLD(p->tw_im + H + j);
        const VD vr = VLD(p->tw_re + Q + j), vi = VLD(p->tw_im + Q + j);
        const VD ur = VLD(p->tw3_re + H + j), ui = VLD(p->tw3_im + H + j);
        for (int l = level - 1; l >= 0; l--) {
            VD pr[4], pi[4];
            for (int t = 0; t < 4; t++)
                FN(VFN(digit_point))(&s0[t], &s1[t], mask, one, halfm1, base_log,
                                     VLD(p->twist_re + t * Q + j), VLD(p->twist_im + t * Q + j),
                                     &pr[t], &pi[t]);
            double *re = out + (size_t)l * 2 * M, *im = re + M;
            double *const o[8] = {re, im, re + Q, im + Q, re + H, im + H, re + H + Q, im + H + Q};
            FN(VFN(dif4_core))(pr[0], pi[0], pr[1], pi[1], pr[2], pi[2], pr[3], pi[3], wr, wi, vr,
                               vi, ur, ui, o, j);
        }
    }
}

/* The last radix-4 pass of the inverse FFT (half-sizes M/4, M/2), the untwist and
 * acc += result (mod 2^64) in one pass (same arithmetic as dit4 then untwist_add_torus).
 * M % (4 * FHEML_VW) == 0. */
static inline void FN(VFN(dit4_untwist_add))(const fft_plan *p, const double *restrict re,
                                      const double *restrict im, uint64_t *restrict acc)
{
    const int M = p->M, H = M / 2, Q = M / 4;
    for (int j = 0; j < Q; j += FHEML_VW) {
        VD r[8];
        FN(VFN(dit4_core))(VLD(re + j), VLD(im + j), VLD(re + Q + j), VLD(im + Q + j),
                           VLD(re + H + j), VLD(im + H + j), VLD(re + H + Q + j),
                           VLD(im + H + Q + j), VLD(p->tw_re + H + j), VLD(p->tw_im + H + j),
                           VLD(p->tw_re + Q + j), VLD(p->tw_im + Q + j),
                           VLD(p->tw3_re + H + j), VLD(p->tw3_im + H + j), r);
        for (int t = 0; t < 4; t++) {
            const int c = t * Q + j;
            VD wr = VLD(p->untwist_re + c), wi = VLD(p->untwist_im + c);
            VD xr = r[2 * t], xi = r[2 * t + 1];
            VD a = VFMSUB(xr, wr, VMUL(xi, wi)), b = VFMADD(xr, wi, VMUL(xi, wr));
            VIST(acc + c, VIADD(VILD(acc + c), FN(VFN(to_torus))(a)));
            VIST(acc + M + c, VIADD(VILD(acc + M + c), FN(VFN(to_torus))(b)));
        }
    }
}

#undef VI
#undef VILD
#undef VIST
#undef VI1
#undef VIADD
#undef VISUB
#undef VIAND
#undef VISRL
#undef VISLL
#undef VI2D

/* s[g] = sum_r fd[g][r] * ggsw[r][q] at points m .. m + FHEML_VW - 1 (complex: sr, si) for
 * gb ciphertexts, each GGSW vector loaded once for all of them. */
static inline __attribute__((always_inline)) void
FN(VFN(mac_sums))(const double *const *fd, const double *restrict ggsw, int q, int m, int M,
                  int R, int K1, const int gb, VD *sr, VD *si)
{
    for (int g = 0; g < gb; g++) {
        sr[g] = VZERO();
        si[g] = VZERO();
    }
    for (int r = 0; r < R; r++) {
        const double *br = ggsw + ((size_t)r * K1 + q) * 2 * M + m;
        VD yr = VLD(br), yi = VLD(br + M);
        for (int g = 0; g < gb; g++) {
            const double *dr = fd[g] + (size_t)r * 2 * M + m;
            VD xr = VLD(dr), xi = VLD(dr + M);
            sr[g] = VFMADD(xr, yr, VFNMADD(xi, yi, sr[g]));
            si[g] = VFMADD(xr, yi, VFMADD(xi, yr, si[g]));
        }
    }
}

/* Multiply-accumulate of the external product in the Fourier domain for gb (<= 4)
 * ciphertexts sharing one GGSW: fa[g][q] = sum_r fd[g][r] * ggsw[r][q] (complex, pointwise),
 * q < K1, r < R.  Each GGSW vector is loaded once for the gb ciphertexts and the
 * accumulators stay in registers (one store per output point); gb is a constant after
 * inlining, so the g loops unroll.  Per ciphertext the operations are those of gb = 1.
 * M % FHEML_VW == 0. */
static inline __attribute__((always_inline)) void
FN(VFN(mac_block))(const double *const *fd, const double *restrict ggsw, double *const *fa,
                   int M, int R, int K1, const int gb)
{
    for (int q = 0; q < K1; q++) {
        for (int m = 0; m < M; m += FHEML_VW) {
            VD sr[4], si[4];
            FN(VFN(mac_sums))(fd, ggsw, q, m, M, R, K1, gb, sr, si);
            for (int g = 0; g < gb; g++) {
                double *ar = fa[g] + (size_t)q * 2 * M + m;
                VST(ar, sr[g]);
                VST(ar + M, si[g]);
            }
        }
    }
}

/* mac_block over G ciphertexts, four at a time. */
static void FN(VFN(external_mac))(const double *const *fd, const double *restrict ggsw,
                                  double *const *fa, int M, int R, int K1, int G)
{
    for (int g = 0; g < G; g += 4) {
        switch (G - g) {
        case 1: FN(VFN(mac_block))(fd + g, ggsw, fa + g, M, R, K1, 1); break;
        case 2: FN(VFN(mac_block))(fd + g, ggsw, fa + g, M, R, K1, 2); break;
        case 3: FN(VFN(mac_block))(fd + g, ggsw, fa + g, M, R, K1, 3); break;
        default: FN(VFN(mac_block))(fd + g, ggsw, fa + g, M, R, K1, 4); break;
        }
    }
}

/* The multi-bit step's multiply-accumulate over S subsets of a key group, for gb
 * ciphertexts: fs[g][q] (+)= sum_c w[c][g] * sum_r fd[g][r] * ggsw_c[r][q] (ggsw_c at
 * ggsw + c * gstride; w[c][g] = w[c * wstride + g], zero where the monomial is 1; fs[g]
 * read first when accumulate).  The sum over c stays in registers, so each digit and output
 * vector crosses memory once per pass instead of once per subset (at N >= 2048 the
 * per-subset passes were bound by that traffic).  Per ciphertext the operations and their
 * order are those of one mac_block pass per subset into a zeroed fs (bit-identical).
 * M % FHEML_VW == 0. */
static inline __attribute__((always_inline)) void
FN(VFN(mac_subsets_block))(const double *const *fd, const double *restrict ggsw,
                           size_t gstride, const double *const *w, int wstride,
                           double *const *fs, int M, int R, int K1, int S, int accumulate,
                           const int gb)
{
    for (int q = 0; q < K1; q++) {
        for (int m = 0; m < M; m += FHEML_VW) {
            VD fr[4], fi[4];
            for (int g = 0; g < gb; g++) {
                double *ar = fs[g] + (size_t)q * 2 * M + m;
                fr[g] = accumulate ? VLD(ar) : VZERO();
                fi[g] = accumulate ? VLD(ar + M) : VZERO();
            }
            for (int c = 0; c < S; c++) {
                VD sr[4], si[4];
                FN(VFN(mac_sums))(fd, ggsw + (size_t)c * gstride, q, m, M, R, K1, gb, sr, si);
                for (int g = 0; g < gb; g++) {
                    const double *wc = w[(size_t)c * wstride + g];
                    VD wr = VLD(wc + m), wi = VLD(wc + M + m);
                    fr[g] = VFMADD(wr, sr[g], VFNMADD(wi, si[g], fr[g]));
                    fi[g] = VFMADD(wr, si[g], VFMADD(wi, sr[g], fi[g]));
                }
            }
            for (int g = 0; g < gb; g++) {
                double *ar = fs[g] + (size_t)q * 2 * M + m;
                VST(ar, fr[g]);
                VST(ar + M, fi[g]);
            }
        }
    }
}

/* mac_subsets_block over G ciphertexts: four at a time at width 8, two at width 4 (the
 * sums then fit the 16 registers of AVX2). */
static void FN(VFN(external_mac_subsets))(const double *const *fd, const double *restrict ggsw,
                                          size_t gstride, const double *const *w, int wstride,
                                          double *const *fs, int M, int R, int K1, int S,
                                          int accumulate, int G)
{
    const int step = FHEML_VW == 8 ? 4 : 2;
    for (int g = 0; g < G; g += step) {
        const int gb = G - g < step ? G - g : step;
#define FHEML_SUBSETS_PASS(b)                                                                \
    FN(VFN(mac_subsets_block))(fd + g, ggsw, gstride, w + g, wstride, fs + g, M, R, K1, S,  \
                               accumulate, b)
        switch (gb) {
        case 1: FHEML_SUBSETS_PASS(1); break;
        case 2: FHEML_SUBSETS_PASS(2); break;
        case 3: FHEML_SUBSETS_PASS(3); break;
        default: FHEML_SUBSETS_PASS(4); break;
        }
#undef FHEML_SUBSETS_PASS
    }
}

#undef VD
#undef VLD
#undef VST
#undef VADD
#undef VSUB
#undef VMUL
#undef VFMADD
#undef VFMSUB
#undef VFNMADD
#undef VZERO
#undef VFN
