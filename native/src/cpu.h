/* CPU feature detection and ISA selection (cpuid + OS support, overridable with DSV3_ISA). */
#ifndef DSV3_CPU_H
#define DSV3_CPU_H
enum { DSV3_ISA_LEVEL_SCALAR = 0, DSV3_ISA_LEVEL_AVX2 = 1, DSV3_ISA_LEVEL_AVX512 = 2 };
/* Active ISA level (detected once; DSV3_ISA=scalar|avx2|avx512 may lower it, never raise it). */
int dsv3_isa(void);
const char* dsv3_isa_name(int level);
/* Detected features of this CPU (independent of the DSV3_ISA override). */
int dsv3_has_avx2_fma(void);
int dsv3_has_avx512(void);      /* avx512 f+bw+vl+dq */
int dsv3_has_avx512_bf16(void);
int dsv3_has_avx512_vbmi(void);
int dsv3_has_gfni(void);        /* GFNI (VGF2P8AFFINEQB on zmm with AVX-512) */
/* Force an ISA level at run time (tests compare ISAs); returns 0 if this CPU lacks it. */
int dsv3_set_isa(int level);
#endif
