/* A thin SIMD layer for the fused kernels. Every isa/ file is compiled three times (see
 * binding.gyp); this header gives the same small vocabulary in each copy:
 *   vf            a vector of VL floats (AVX-512: 16, AVX2: 8, scalar: a plain float, VL 1)
 *   vload/vstore  unaligned full-vector access
 *   vloadt/vstoret the first n (1..VL) lanes only, never touching memory past them; the
 *                 other lanes of vloadt read as `fill`
 *   vmask/vloadm/vstorem  the same with a precomputed lane mask (hot loops)
 *   vexp          exp(x) to ~1 ulp (Cephes-style range reduction + degree-5 polynomial)
 *   vhsum/vhmax   horizontal reductions
 * Kernels are written once against this vocabulary, so the AVX2 copy that runs on the build
 * machine and the AVX-512 copy that only has to compile are the same source. */
#ifndef DSV3_ISA_SIMD_H
#define DSV3_ISA_SIMD_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "isa.h"
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
#include <immintrin.h>
#endif

#define SIMD_INLINE static inline __attribute__((always_inline))

/* exp(x) constants: x = n*ln2 + r, |r| <= ln2/2, exp(r) = 1 + r + r^2 * P(r) (Cephes expf). */
#define EXP_HI 88.3762626647949f  /* above: +inf (keeps 2^n a normal float)             */
#define EXP_LO -87.3365447504f    /* below: 0 (results would be denormal; flushed)        */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

#if defined(DSV3_ISA_AVX512)
#define VL 16
typedef __m512 vf;
typedef __mmask16 vmask_t;
SIMD_INLINE vf vload(const float* p) { return _mm512_loadu_ps(p); }
SIMD_INLINE void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
SIMD_INLINE vmask_t vmask(int n) { return (vmask_t)((1u << n) - 1u); }
SIMD_INLINE vf vloadm(const float* p, vmask_t m) { return _mm512_maskz_loadu_ps(m, p); }
SIMD_INLINE void vstorem(float* p, vf v, vmask_t m) { _mm512_mask_storeu_ps(p, m, v); }
SIMD_INLINE vf vloadt(const float* p, int n, float fill) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), vmask(n), p);
}
SIMD_INLINE void vstoret(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, vmask(n), v); }
SIMD_INLINE vf vset1(float x) { return _mm512_set1_ps(x); }
SIMD_INLINE vf vzero(void) { return _mm512_setzero_ps(); }
SIMD_INLINE vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
SIMD_INLINE vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
SIMD_INLINE vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
SIMD_INLINE vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
SIMD_INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }   /* a*b + c */
SIMD_INLINE vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
/* vmax(a, x)/vmin(a, x) return x when x is NaN (the second operand wins on NaN) */
SIMD_INLINE vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
SIMD_INLINE vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
/* (a > b) ? y : x, and (a == b) ? y : x */
SIMD_INLINE vf vsel_gt(vf a, vf b, vf x, vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), x, y); }
SIMD_INLINE vf vsel_eq(vf a, vf b, vf x, vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), x, y); }
SIMD_INLINE float vhsum(vf v) { return _mm512_reduce_add_ps(v); }
SIMD_INLINE float vhmax(vf v) { return _mm512_reduce_max_ps(v); }
SIMD_INLINE vf vround(vf v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* p * 2^n for integral n in [-126, 127] */
SIMD_INLINE vf vldexp(vf p, vf n) { return _mm512_scalef_ps(p, n); }

#elif defined(DSV3_ISA_AVX2)
#define VL 8
typedef __m256 vf;
typedef __m256i vmask_t;
static const int32_t simd_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
SIMD_INLINE vf vload(const float* p) { return _mm256_loadu_ps(p); }
SIMD_INLINE void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
SIMD_INLINE vmask_t vmask(int n) { return _mm256_loadu_si256((const __m256i*)(simd_mask_table + 8 - n)); }
SIMD_INLINE vf vloadm(const float* p, vmask_t m) { return _mm256_maskload_ps(p, m); }
SIMD_INLINE void vstorem(float* p, vf v, vmask_t m) { _mm256_maskstore_ps(p, m, v); }
SIMD_INLINE vf vloadt(const float* p, int n, float fill) {
  vmask_t m = vmask(n);
  return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
SIMD_INLINE void vstoret(float* p, vf v, int n) { _mm256_maskstore_ps(p, vmask(n), v); }
SIMD_INLINE vf vset1(float x) { return _mm256_set1_ps(x); }
SIMD_INLINE vf vzero(void) { return _mm256_setzero_ps(); }
SIMD_INLINE vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
SIMD_INLINE vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SIMD_INLINE vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
SIMD_INLINE vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
SIMD_INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
SIMD_INLINE vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
SIMD_INLINE vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
SIMD_INLINE vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
SIMD_INLINE vf vsel_gt(vf a, vf b, vf x, vf y) { return _mm256_blendv_ps(x, y, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
SIMD_INLINE vf vsel_eq(vf a, vf b, vf x, vf y) { return _mm256_blendv_ps(x, y, _mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
SIMD_INLINE float vhsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
SIMD_INLINE float vhmax(vf v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
SIMD_INLINE vf vround(vf v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
SIMD_INLINE vf vldexp(vf p, vf n) {
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#else /* scalar: a "vector" is one float; the kernels' tail paths are then never taken */
#define VL 1
typedef float vf;
typedef int vmask_t;
SIMD_INLINE vf vload(const float* p) { return *p; }
SIMD_INLINE void vstore(float* p, vf v) { *p = v; }
SIMD_INLINE vmask_t vmask(int n) { return n; }
SIMD_INLINE vf vloadm(const float* p, vmask_t m) { return m > 0 ? *p : 0.0f; }
SIMD_INLINE void vstorem(float* p, vf v, vmask_t m) { if (m > 0) *p = v; }
SIMD_INLINE vf vloadt(const float* p, int n, float fill) { return n > 0 ? *p : fill; }
SIMD_INLINE void vstoret(float* p, vf v, int n) { if (n > 0) *p = v; }
SIMD_INLINE vf vset1(float x) { return x; }
SIMD_INLINE vf vzero(void) { return 0.0f; }
SIMD_INLINE vf vadd(vf a, vf b) { return a + b; }
SIMD_INLINE vf vsub(vf a, vf b) { return a - b; }
SIMD_INLINE vf vmul(vf a, vf b) { return a * b; }
SIMD_INLINE vf vdiv(vf a, vf b) { return a / b; }
SIMD_INLINE vf vfma(vf a, vf b, vf c) { return a * b + c; }
SIMD_INLINE vf vfnma(vf a, vf b, vf c) { return c - a * b; }
/* same NaN convention as MAXPS/MINPS: the second operand is returned when either is NaN */
SIMD_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
SIMD_INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }
SIMD_INLINE vf vsel_gt(vf a, vf b, vf x, vf y) { return a > b ? y : x; }
SIMD_INLINE vf vsel_eq(vf a, vf b, vf x, vf y) { return a == b ? y : x; }
SIMD_INLINE float vhsum(vf v) { return v; }
SIMD_INLINE float vhmax(vf v) { return v; }
/* round to nearest even by the 1.5*2^23 trick (exact for |v| < 2^22; rintf would be a libm
 * call without SSE4.1) */
SIMD_INLINE vf vround(vf v) {
  float t = v + 12582912.0f;
  return t - 12582912.0f;
}
SIMD_INLINE vf vldexp(vf p, vf n) {
  int32_t e = ((int32_t)n + 127) << 23;
  float s;
  memcpy(&s, &e, sizeof s);
  return p * s;
}
#endif

/* exp(x), max error ~1 ulp on [EXP_LO, EXP_HI]; exp(-inf) = 0, exp(+inf) = +inf, NaN stays
 * NaN (the clamps are ordered so that a NaN x passes through). Results below 2^-126 are 0. */
SIMD_INLINE vf vexp(vf x) {
  vf xc = vmax(vset1(EXP_LO), vmin(vset1(EXP_HI), x));
  vf n = vround(vmul(xc, vset1(EXP_LOG2E)));
  vf r = vfnma(n, vset1(EXP_LN2_HI), xc);
  r = vfnma(n, vset1(EXP_LN2_LO), r);
  vf p = vset1(EXP_P0);
  p = vfma(p, r, vset1(EXP_P1));
  p = vfma(p, r, vset1(EXP_P2));
  p = vfma(p, r, vset1(EXP_P3));
  p = vfma(p, r, vset1(EXP_P4));
  p = vfma(p, r, vset1(EXP_P5));
  vf y = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
  y = vldexp(y, n);
  y = vsel_gt(x, vset1(EXP_HI), y, vset1(INFINITY));
  return vsel_gt(vset1(EXP_LO), x, y, vzero());
}

/* Length of the reduction blocks: partial sums are kept in float vectors within a block of
 * this many elements and added into a double across blocks, so a sum over a 129k-wide row
 * keeps float32 accuracy on every ISA (including the 1-lane scalar copy). */
#define SIMD_BLOCK 2048

#endif
