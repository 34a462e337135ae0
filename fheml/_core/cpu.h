/* Which SIMD copies of the kernels this CPU can run (shared by kernels.h and chacha20.h).
 *   FHEML_SIMD_PORTABLE (0) : baseline x86-64 / any CPU
 *   FHEML_SIMD_AVX2     (1) : AVX2 + FMA
 *   FHEML_SIMD_AVX512   (2) : AVX-512 F, DQ, BW, VL (plus AVX2 + FMA)
 * The SIMD copies are compiled with the target strings below and never called on a CPU
 * below their level. */
#ifndef FHEML_CPU_H
#define FHEML_CPU_H

#define FHEML_SIMD_PORTABLE 0
#define FHEML_SIMD_AVX2 1
#define FHEML_SIMD_AVX512 2

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FHEML_X86_SIMD 1
#define FHEML_TARGET_AVX2 "avx2,fma"
#define FHEML_TARGET_AVX512 "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"
#else
#define FHEML_X86_SIMD 0
#endif

static inline int fheml_cpu_simd_level(void)
{
#if FHEML_X86_SIMD
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return FHEML_SIMD_PORTABLE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return FHEML_SIMD_AVX512;
    return FHEML_SIMD_AVX2;
#else
    return FHEML_SIMD_PORTABLE;
#endif
}

#endif
