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

/* One block of two fused forward DIF stages (see dif4 in kernels_impl.h); Q % FHEML_VW == 0. */
static inline void FN(VFN(dif4_block))(double *restrict ar, double *restrict ai,
                                       double *restrict br, double *restrict bi,
                                       double *restrict cr, double *restrict ci,
                                       double *restrict dr, double *restrict di,
                                       const double *restrict w1r, const double *restrict w1i,
                                       const double *restrict w2r, const double *restrict w2i,
                                       int Q)
{
    for (int j = 0; j < Q; j += FHEML_VW) {
        VD wr = VLD(w1r + j), wi = VLD(w1i + j);
        VD Ar = VLD(ar + j), Ai = VLD(ai + j);
        VD Br = VLD(br + j), Bi = VLD(bi + j);
        VD Cr = VLD(cr + j), Ci = VLD(ci + j);
        VD Dr = VLD(dr + j), Di = VLD(di + j);
        VD a1r = VADD(Ar, Cr), a1i = VADD(Ai, Ci);
        VD tr = VSUB(Ar, Cr), ti = VSUB(Ai, Ci);
        VD c1r = VFMADD(tr, wr, VMUL(ti, wi));
        VD c1i = VFMSUB(ti, wr, VMUL(tr, wi));
        VD b1r = VADD(Br, Dr), b1i = VADD(Bi, Di);
        VD ur = VSUB(Bi, Di), ui = VSUB(Dr, Br);
        VD d1r = VFMADD(ur, wr, VMUL(ui, wi));
        VD d1i = VFMSUB(ui, wr, VMUL(ur, wi));
        VD vr = VLD(w2r + j), vi = VLD(w2i + j);
        VD xr = VSUB(a1r, b1r), xi = VSUB(a1i, b1i);
        VST(ar + j, VADD(a1r, b1r));
        VST(ai + j, VADD(a1i, b1i));
        VST(br + j, VFMADD(xr, vr, VMUL(xi, vi)));
        VST(bi + j, VFMSUB(xi, vr, VMUL(xr, vi)));
        VD yr = VSUB(c1r, d1r), yi = VSUB(c1i, d1i);
        VST(cr + j, VADD(c1r, d1r));
        VST(ci + j, VADD(c1i, d1i));
        VST(dr + j, VFMADD(yr, vr, VMUL(yi, vi)));
        VST(di + j, VFMSUB(yi, vr, VMUL(yr, vi)));
    }
}

/* One block of two fused inverse DIT stages (see dit4 in kernels_impl.h). */
static inline void FN(VFN(dit4_block))(double *restrict ar, double *restrict ai,
                                       double *restrict br, double *restrict bi,
                                       double *restrict cr, double *restrict ci,
                                       double *restrict dr, double *restrict di,
                                       const double *restrict w1r, const double *restrict w1i,
                                       const double *restrict w2r, const double *restrict w2i,
                                       int Q)
{
    for (int j = 0; j < Q; j += FHEML_VW) {
        VD vr = VLD(w2r + j), vi = VLD(w2i + j);
        VD Ar = VLD(ar + j), Ai = VLD(ai + j);
        VD Br = VLD(br + j), Bi = VLD(bi + j);
        VD Cr = VLD(cr + j), Ci = VLD(ci + j);
        VD Dr = VLD(dr + j), Di = VLD(di + j);
        VD yr = VFMSUB(Br, vr, VMUL(Bi, vi));
        VD yi = VFMADD(Br, vi, VMUL(Bi, vr));
        VD a1r = VADD(Ar, yr), a1i = VADD(Ai, yi);
        VD b1r = VSUB(Ar, yr), b1i = VSUB(Ai, yi);
        VD zr = VFMSUB(Dr, vr, VMUL(Di, vi));
        VD zi = VFMADD(Dr, vi, VMUL(Di, vr));
        VD c1r = VADD(Cr, zr), c1i = VADD(Ci, zi);
        VD d1r = VSUB(Cr, zr), d1i = VSUB(Ci, zi);
        VD wr = VLD(w1r + j), wi = VLD(w1i + j);
        VD ur = VFMSUB(c1r, wr, VMUL(c1i, wi));
        VD ui = VFMADD(c1r, wi, VMUL(c1i, wr));
        VST(ar + j, VADD(a1r, ur));
        VST(ai + j, VADD(a1i, ui));
        VST(cr + j, VSUB(a1r, ur));
        VST(ci + j, VSUB(a1i, ui));
        VD tr = VFMSUB(d1r, wr, VMUL(d1i, wi));
        VD ti = VFMADD(d1r, wi, VMUL(d1i, wr));
        /* times i: (-ti, tr) */
        VST(br + j, VSUB(b1r, ti));
        VST(bi + j, VADD(b1i, tr));
        VST(dr + j, VADD(b1r, ti));
        VST(di + j, VSUB(b1i, tr));
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
