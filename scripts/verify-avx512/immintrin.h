/* Verification build only (scripts/verify-avx512.sh): the real <immintrin.h> for what this CPU
 * has (AVX2, FMA, F16C), then SIMDe's portable implementations of the AVX-512 intrinsics under
 * their usual names, so that the AVX-512 copies of the kernels run on a CPU without AVX-512.
 * The few intrinsics SIMDe 0.7.4 lacks are defined below, lane by lane (masked loads touch only
 * the selected lanes, as the instructions do). */
#ifndef DSV3_VERIFY_IMMINTRIN_H
#define DSV3_VERIFY_IMMINTRIN_H
/* kernels may test this: vectors here are SIMDe structs, not registers (no "v" asm operands) */
#define DSV3_SIMD_EMULATED 1
#include_next <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static inline simde__m512 dsv3v_mask_loadu_ps(simde__m512 src, simde__mmask16 k, const void* p) {
  float t[16];
  simde_mm512_storeu_ps(t, src);
  for (int i = 0; i < 16; i++)
    if ((k >> i) & 1) t[i] = ((const float*)p)[i];
  return simde_mm512_loadu_ps(t);
}
static inline simde__m512 dsv3v_maskz_loadu_ps(simde__mmask16 k, const void* p) {
  return dsv3v_mask_loadu_ps(simde_mm512_setzero_ps(), k, p);
}
static inline void dsv3v_mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 v) {
  float t[16];
  simde_mm512_storeu_ps(t, v);
  for (int i = 0; i < 16; i++)
    if ((k >> i) & 1) ((float*)p)[i] = t[i];
}
static inline float dsv3v_reduce_add_ps(simde__m512 v) {
  float t[16];
  simde_mm512_storeu_ps(t, v);
  /* the same pairwise tree as GCC's expansion: halves, then quarters, ... */
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++) t[i] += t[i + w];
  return t[0];
}
static inline float dsv3v_reduce_max_ps(simde__m512 v) {
  float t[16];
  simde_mm512_storeu_ps(t, v);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++) t[i] = t[i] > t[i + w] ? t[i] : t[i + w];
  return t[0];
}
static inline simde__m512i dsv3v_cvtepi8_epi32(simde__m128i a) {
  int8_t s[16];
  int32_t d[16];
  simde_mm_storeu_si128((simde__m128i*)s, a);
  for (int i = 0; i < 16; i++) d[i] = s[i];
  return simde_mm512_loadu_si512(d);
}
static inline simde__m512i dsv3v_cvtepu16_epi32(simde__m256i a) {
  uint16_t s[16];
  int32_t d[16];
  simde_mm256_storeu_si256((simde__m256i*)s, a);
  for (int i = 0; i < 16; i++) d[i] = s[i];
  return simde_mm512_loadu_si512(d);
}
static inline simde__m512i dsv3v_cvtepu8_epi32(simde__m128i a) {
  uint8_t s[16];
  int32_t d[16];
  simde_mm_storeu_si128((simde__m128i*)s, a);
  for (int i = 0; i < 16; i++) d[i] = s[i];
  return simde_mm512_loadu_si512(d);
}
static inline simde__m128i dsv3v_cvtepi32_epi8(simde__m512i a) { /* VPMOVDB: truncation */
  int32_t s[16];
  uint8_t d[16];
  simde_mm512_storeu_si512(s, a);
  for (int i = 0; i < 16; i++) d[i] = (uint8_t)s[i];
  return simde_mm_loadu_si128((const simde__m128i*)d);
}
static inline simde__m512 dsv3v_cvtepi32_ps(simde__m512i a) {
  int32_t s[16];
  float d[16];
  simde_mm512_storeu_si512(s, a);
  for (int i = 0; i < 16; i++) d[i] = (float)s[i];
  return simde_mm512_loadu_ps(d);
}
static inline simde__m512i dsv3v_cvttps_epi32(simde__m512 a) { /* out of range and NaN: INT32_MIN */
  float s[16];
  int32_t d[16];
  simde_mm512_storeu_ps(s, a);
  for (int i = 0; i < 16; i++) d[i] = s[i] > -2147483904.0f && s[i] < 2147483648.0f ? (int32_t)s[i] : INT32_MIN;
  return simde_mm512_loadu_si512(d);
}
#undef _mm512_mask_loadu_ps
#define _mm512_mask_loadu_ps dsv3v_mask_loadu_ps
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps dsv3v_maskz_loadu_ps
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps dsv3v_mask_storeu_ps
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps dsv3v_reduce_add_ps
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps dsv3v_reduce_max_ps
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32 dsv3v_cvtepi8_epi32
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 dsv3v_cvtepu16_epi32
#undef _mm512_cvtepu8_epi32
#define _mm512_cvtepu8_epi32 dsv3v_cvtepu8_epi32
#undef _mm512_cvtepi32_epi8
#define _mm512_cvtepi32_epi8 dsv3v_cvtepi32_epi8
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps dsv3v_cvtepi32_ps
#undef _mm512_cvttps_epi32
#define _mm512_cvttps_epi32 dsv3v_cvttps_epi32
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, imm) simde_mm512_shuffle_f32x4(a, b, imm)
/* attention_bf16.c: VPMOVDW (truncation) and VCVTNE(2)PS2BF16 (nearest even; NaN -> quiet NaN;
 * subnormal inputs read as zero, DAZ, as the instructions do) */
static inline simde__m256i dsv3v_cvtepi32_epi16(simde__m512i a) {
  int32_t s[16];
  uint16_t d[16];
  simde_mm512_storeu_si512(s, a);
  for (int i = 0; i < 16; i++) d[i] = (uint16_t)s[i];
  return simde_mm256_loadu_si256((const simde__m256i*)d);
}
static inline uint16_t dsv3v_cvtne1(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u | 0x00400000u) >> 16);
  if ((u & 0x7f800000u) == 0) return (uint16_t)((u & 0x80000000u) >> 16);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline __m512bh dsv3v_cvtne2ps_pbh(simde__m512 a, simde__m512 b) { /* words 0..15 from b, 16..31 from a */
  float fa[16], fb[16];
  uint16_t r[32];
  __m512bh out;
  simde_mm512_storeu_ps(fa, a);
  simde_mm512_storeu_ps(fb, b);
  for (int i = 0; i < 16; i++) {
    r[i] = dsv3v_cvtne1(fb[i]);
    r[16 + i] = dsv3v_cvtne1(fa[i]);
  }
  memcpy(&out, r, sizeof out);
  return out;
}
static inline __m256bh dsv3v_cvtneps_pbh(simde__m512 a) {
  float fa[16];
  uint16_t r[16];
  __m256bh out;
  simde_mm512_storeu_ps(fa, a);
  for (int i = 0; i < 16; i++) r[i] = dsv3v_cvtne1(fa[i]);
  memcpy(&out, r, sizeof out);
  return out;
}
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16 dsv3v_cvtepi32_epi16
#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh dsv3v_cvtne2ps_pbh
#undef _mm512_cvtneps_pbh
#define _mm512_cvtneps_pbh dsv3v_cvtneps_pbh
/* optim.c (adamwBf16 on 8 lanes): VCVTPS2PD / VCVTPD2PS (float <-> double, round to nearest) */
static inline simde__m512d dsv3v_cvtps_pd(__m256 a) {
  float s[8];
  double d[8];
  _mm256_storeu_ps(s, a);
  for (int i = 0; i < 8; i++) d[i] = (double)s[i];
  return simde_mm512_loadu_pd(d);
}
static inline __m256 dsv3v_cvtpd_ps(simde__m512d a) {
  double s[8];
  float d[8];
  simde_mm512_storeu_pd(s, a);
  for (int i = 0; i < 8; i++) d[i] = (float)s[i];
  return _mm256_loadu_ps(d);
}
#undef _mm512_cvtps_pd
#define _mm512_cvtps_pd dsv3v_cvtps_pd
#undef _mm512_cvtpd_ps
#define _mm512_cvtpd_ps dsv3v_cvtpd_ps
/* fp8_quant.c: VCVTPS2DQ with embedded rounding; only round-to-nearest-even is used (out of
 * range or NaN -> INT32_MIN, the integer indefinite, as the instruction) */
static inline simde__m512i dsv3v_cvt_roundps_epi32_nearest(simde__m512 a) {
  float s[16];
  int32_t d[16];
  simde_mm512_storeu_ps(s, a);
  for (int i = 0; i < 16; i++) {
    const float r = __builtin_nearbyintf(s[i]);
    d[i] = r >= -2147483648.0f && r < 2147483648.0f ? (int32_t)r : INT32_MIN;
  }
  return simde_mm512_loadu_si512(d);
}
#undef _mm512_cvt_roundps_epi32
#define _mm512_cvt_roundps_epi32(a, r) \
  (((r) & 3) == _MM_FROUND_TO_NEAREST_INT ? dsv3v_cvt_roundps_epi32_nearest(a) : (abort(), simde_mm512_setzero_si512()))
/* fp8_quant.c: VPCMPUD (unsigned less-than, one mask bit per lane) */
static inline simde__mmask16 dsv3v_cmplt_epu32_mask(simde__m512i a, simde__m512i b) {
  uint32_t x[16], y[16];
  simde_mm512_storeu_si512(x, a);
  simde_mm512_storeu_si512(y, b);
  simde__mmask16 m = 0;
  for (int i = 0; i < 16; i++)
    if (x[i] < y[i]) m = (simde__mmask16)(m | (1u << i));
  return m;
}
#undef _mm512_cmplt_epu32_mask
#define _mm512_cmplt_epu32_mask dsv3v_cmplt_epu32_mask
#endif
