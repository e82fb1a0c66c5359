/* FP8 (E4M3) operand quantisation of the training GEMMs (paper §3.3.2; fixtures README
 * `fp8-linear/`): group amax, scale, E4M3 codes and dequantised values, bit-identical to the
 * TypeScript reference (src/engine/reference/fp8-quant.ts). Contracts: fp8_quant.h.
 *
 * Encoding q = float32(x / s) (a true float32 division, equal to the reference's float64
 * x * (1/s); see fp8_quant.h), on the float32 bits of |q| = a, as codec.ts e4m3FromBits:
 *   - a >= 2^-6 (normal E4M3): t = a + 0x7FFFF + bit20(a) rounds the mantissa to 3 bits (ties
 *     to even); code = (t >> 20) - 960 (rebias 127 -> 7), value = the float32 t & 0xFFF00000;
 *   - a < 2^-6 (E4M3 subnormals and zero): n = round_half_even(a * 2^9) in float arithmetic
 *     (exact scaling; n in 0..8, 8 being the smallest normal 0x08); code n, value n * 2^-9;
 *   - a >= 448 and infinities: code 0x7E, value 448; NaN: code 0x7F, value NaN (0x7FC00000);
 *   - the sign bit is ORed back (to the value only where it is non-zero when no codes are
 *     written: the reference's float64 rounding yields +0 there, see fp8_quant.h).
 * The dequantised output is value * s, exactly float32(e4m3(code) * s). No float32 denormal is
 * produced or consumed on the vector paths, so the MXCSR DAZ/FTZ state does not matter.
 * Decoding (fp8Dequant) is the inverse with normal floats only: for the 7-bit magnitude m of a
 * code, the float32 bits (m << 20) + (120 << 23) are e4m3(m) for m >= 8, and m * 2^-9 below.
 * The scalar copy uses codec.ts's integer encoder and the E4M3 table of fp8_codec.h. */
#include <math.h>
#include <string.h>
#include "../fp8_codec.h"
#include "../fp8_quant.h"
#include "simd.h"

/* The group scale: float32(max(amax, 1e-4) / 448), in double like codec.ts fp8Scale. */
static inline float q8_scale(float amax) {
  const double a = (double)amax > 1e-4 ? (double)amax : 1e-4;
  return (float)(a / 448.0);
}

#if defined(DSV3_ISA_AVX512)
typedef __m512i vi;
#define I_(c) _mm512_set1_epi32((int)(c))
SIMD_INLINE vf vabs(vf v) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), I_(0x7fffffff))); }
/* code (wc) and unscaled E4M3 value (wv) of the float32 q; sz: the value keeps the sign of zero */
SIMD_INLINE void q8_enc(vf q, int wc, int wv, int sz, vi* code, vf* val) {
  const vi u = _mm512_castps_si512(q), a = _mm512_and_si512(u, I_(0x7fffffff));
  const vi t = _mm512_add_epi32(_mm512_add_epi32(a, I_(0x7ffff)), _mm512_and_si512(_mm512_srli_epi32(a, 20), I_(1)));
  const vf rs = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  /* a is non-negative as a signed integer: signed compares are exact */
  const __mmask16 sub = _mm512_cmpgt_epi32_mask(I_(0x3c800000), a), sat = _mm512_cmpgt_epi32_mask(a, I_(0x43dfffff)),
                  nan = _mm512_cmpgt_epi32_mask(a, I_(0x7f800000));
  if (wc) {
    vi c = _mm512_sub_epi32(_mm512_srli_epi32(t, 20), I_(960));
    c = _mm512_mask_blend_epi32(sub, c, _mm512_cvttps_epi32(rs));
    c = _mm512_mask_blend_epi32(sat, c, I_(0x7e));
    c = _mm512_or_si512(c, _mm512_and_si512(_mm512_srli_epi32(u, 24), I_(0x80)));
    *code = _mm512_mask_blend_epi32(nan, c, I_(0x7f));
  }
  if (wv) {
    vi v = _mm512_and_si512(t, I_(0xfff00000));
    v = _mm512_mask_blend_epi32(sub, v, _mm512_castps_si512(_mm512_mul_ps(rs, _mm512_set1_ps(0x1p-9f))));
    v = _mm512_mask_blend_epi32(sat, v, I_(0x43e00000));
    const vi sg = _mm512_and_si512(u, I_(0x80000000));
    v = _mm512_or_si512(v, sz ? sg : _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(v, v), sg));
    *val = _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, v, I_(0x7fc00000)));
  }
}
/* the first n (1..16) lanes of c as bytes */
SIMD_INLINE void q8_store_codes(uint8_t* p, vi c, int n) {
  const __m128i b = _mm512_cvtepi32_epi8(c);
  if (n == 16) {
    _mm_storeu_si128((__m128i*)p, b);
  } else {
    uint8_t t[16];
    _mm_storeu_si128((__m128i*)t, b);
    memcpy(p, t, (size_t)n);
  }
}
SIMD_INLINE vi q8_load_codes(const uint8_t* p, int n) {
  if (n == 16) return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p));
  uint8_t t[16] = {0};
  memcpy(t, p, (size_t)n);
  return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)t));
}
SIMD_INLINE vf q8_dec(vi c) {
  const vi m = _mm512_and_si512(c, I_(0x7f));
  vi v = _mm512_add_epi32(_mm512_slli_epi32(m, 20), I_(120 << 23));
  const vf d = _mm512_mul_ps(_mm512_cvtepi32_ps(m), _mm512_set1_ps(0x1p-9f));
  v = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(I_(8), m), v, _mm512_castps_si512(d));
  v = _mm512_or_si512(v, _mm512_slli_epi32(_mm512_and_si512(c, I_(0x80)), 24));
  return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(m, I_(0x7f)), v, I_(0x7fc00000)));
}

#elif defined(DSV3_ISA_AVX2)
typedef __m256i vi;
#define I_(c) _mm256_set1_epi32((int)(c))
#define F_(v) _mm256_castsi256_ps(v)
SIMD_INLINE vf vabs(vf v) { return _mm256_and_ps(v, F_(I_(0x7fffffff))); }
SIMD_INLINE void q8_enc(vf q, int wc, int wv, int sz, vi* code, vf* val) {
  const vi u = _mm256_castps_si256(q), a = _mm256_and_si256(u, I_(0x7fffffff));
  const vi t = _mm256_add_epi32(_mm256_add_epi32(a, I_(0x7ffff)), _mm256_and_si256(_mm256_srli_epi32(a, 20), I_(1)));
  const vf rs = _mm256_round_ps(_mm256_mul_ps(F_(a), _mm256_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  /* a is non-negative as a signed integer: signed compares are exact */
  const vi sub = _mm256_cmpgt_epi32(I_(0x3c800000), a), sat = _mm256_cmpgt_epi32(a, I_(0x43dfffff)),
           nan = _mm256_cmpgt_epi32(a, I_(0x7f800000));
  if (wc) {
    vi c = _mm256_sub_epi32(_mm256_srli_epi32(t, 20), I_(960));
    c = _mm256_blendv_epi8(c, _mm256_cvttps_epi32(rs), sub);
    c = _mm256_blendv_epi8(c, I_(0x7e), sat);
    c = _mm256_or_si256(c, _mm256_and_si256(_mm256_srli_epi32(u, 24), I_(0x80)));
    *code = _mm256_blendv_epi8(c, I_(0x7f), nan);
  }
  if (wv) {
    vf v = F_(_mm256_and_si256(t, I_(0xfff00000)));
    v = _mm256_blendv_ps(v, _mm256_mul_ps(rs, _mm256_set1_ps(0x1p-9f)), F_(sub));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(448.0f), F_(sat));
    vf sg = F_(_mm256_and_si256(u, I_(0x80000000)));
    if (!sz) sg = _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_EQ_OQ), sg);
    *val = _mm256_blendv_ps(_mm256_or_ps(v, sg), F_(I_(0x7fc00000)), F_(nan));
  }
}
SIMD_INLINE void q8_store_codes(uint8_t* p, vi c, int n) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  const __m128i b = _mm_packus_epi16(w, w);
  if (n == 8) {
    _mm_storel_epi64((__m128i*)p, b);
  } else {
    uint8_t t[16];
    _mm_storeu_si128((__m128i*)t, b);
    memcpy(p, t, (size_t)n);
  }
}
SIMD_INLINE vi q8_load_codes(const uint8_t* p, int n) {
  if (n == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
  uint8_t t[16] = {0};
  memcpy(t, p, (size_t)n);
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)t));
}
SIMD_INLINE vf q8_dec(vi c) {
  const vi m = _mm256_and_si256(c, I_(0x7f));
  vf v = F_(_mm256_add_epi32(_mm256_slli_epi32(m, 20), I_(120 << 23)));
  const vf d = _mm256_mul_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(0x1p-9f));
  v = _mm256_blendv_ps(v, d, F_(_mm256_cmpgt_epi32(I_(8), m)));
  v = _mm256_or_ps(v, F_(_mm256_slli_epi32(_mm256_and_si256(c, I_(0x80)), 24)));
  return _mm256_blendv_ps(v, F_(I_(0x7fc00000)), F_(_mm256_cmpeq_epi32(m, I_(0x7f))));
}

#else /* scalar: one element at a time, codec.ts's integer encoder and the decode table */
typedef uint32_t vi;
SIMD_INLINE vf vabs(vf v) { return fabsf(v); }
SIMD_INLINE void q8_enc(vf q, int wc, int wv, int sz, vi* code, vf* val) {
  uint32_t u, c;
  memcpy(&u, &q, sizeof u);
  const uint32_t sign = (u >> 24) & 0x80, a = u & 0x7fffffff, e = a >> 23;
  if (a > 0x7f800000) c = 0x7f;
  else if (a >= 0x43e00000) c = sign | 0x7e;
  else if (e >= 121) c = sign | (((a + 0x7ffff + ((a >> 20) & 1)) >> 20) - 960);
  else if (e < 117) c = sign;
  else {
    const uint32_t m = (a & 0x7fffff) | 0x800000, sh = 141 - e;
    c = sign | ((m + (1u << (sh - 1)) - 1 + ((m >> sh) & 1)) >> sh);
  }
  if (wc) *code = c;
  if (wv) *val = (c & 0x7f) == 0 && !sz ? 0.0f : fp8_e4m3_table[c];
}
SIMD_INLINE void q8_store_codes(uint8_t* p, vi c, int n) { (void)n; *p = (uint8_t)c; }
SIMD_INLINE vi q8_load_codes(const uint8_t* p, int n) { (void)n; return *p; }
SIMD_INLINE vf q8_dec(vi c) { return fp8_e4m3_table[c]; }
#endif

/* n lanes (1..VL) of x / s -> codes (wc) and dequantised values (wv). */
SIMD_INLINE void q8_lanes(const float* x, vf s, int n, uint8_t* codes, float* out, int wc, int wv) {
  vi c;
  vf v;
  const vf xv = n == VL ? vload(x) : vloadt(x, n, 0.0f);
  q8_enc(vdiv(xv, s), wc, wv, wc, &c, &v);
  if (wc) q8_store_codes(codes, c, n);
  if (wv) {
    if (n == VL) vstore(out, vmul(v, s));
    else vstoret(out, vmul(v, s), n);
  }
}

/* Encodes x[0, n) with the per-element scales sc[0, n), or the scale s when sc is NULL. */
SIMD_INLINE void q8_seg_(const float* x, int64_t n, const float* sc, float s, uint8_t* codes, float* out, int wc, int wv) {
  const vf sv = vset1(s);
  int64_t j = 0;
  for (; j + VL <= n; j += VL) q8_lanes(x + j, sc ? vload(sc + j) : sv, VL, codes + j, out + j, wc, wv);
  if (j < n) {
    const int m = (int)(n - j);
    q8_lanes(x + j, sc ? vloadt(sc + j, m, 1.0f) : sv, m, codes + j, out + j, wc, wv);
  }
}
SIMD_INLINE void q8_seg(const float* x, int64_t n, const float* sc, float s, uint8_t* codes, float* out) {
  if (codes && out) q8_seg_(x, n, sc, s, codes, out, 1, 1);
  else if (codes) q8_seg_(x, n, sc, s, codes, out, 1, 0);
  else if (out) q8_seg_(x, n, sc, s, codes, out, 0, 1);
}

/* max |x[j]| over j < n, NaN ignored (MAXPS returns its second operand on NaN) */
static inline float q8_amax(const float* x, int64_t n) {
  vf m0 = vzero(), m1 = vzero();
  int64_t j = 0;
  for (; j + 2 * VL <= n; j += 2 * VL) {
    m0 = vmax(vabs(vload(x + j)), m0);
    m1 = vmax(vabs(vload(x + j + VL)), m1);
  }
  for (; j + VL <= n; j += VL) m0 = vmax(vabs(vload(x + j)), m0);
  if (j < n) m0 = vmax(vabs(vloadt(x + j, (int)(n - j), 0.0f)), m0);
  return vhmax(vmax(m0, m1));
}

void ISA_FN(dsv3_fp8_quant_rows)(const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t cols, uint8_t* codes,
                            float* scales, float* out) {
  const int64_t nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
  for (int64_t r = r0; r < r1; r++) {
    for (int64_t t = 0; t < nt; t++) {
      const int64_t c0 = t * FP8_BLOCK, n = cols - c0 < FP8_BLOCK ? cols - c0 : FP8_BLOCK;
      const float* xs = x + r * ld + c0;
      const float s = q8_scale(q8_amax(xs, n));
      if (scales) scales[r * nt + t] = s;
      q8_seg(xs, n, NULL, s, codes ? codes + r * cols + c0 : NULL, out ? out + r * cols + c0 : NULL);
    }
  }
}

void ISA_FN(dsv3_fp8_quant_cols)(const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                            int64_t cols, int block, uint8_t* codes, float* scales, float* out) {
  float cm[FP8_QUANT_CHUNK] __attribute__((aligned(64)));
  const int64_t w = c1 - c0;
  int64_t j;
  for (j = 0; j < w; j++) cm[j] = 0.0f;
  for (int64_t r = r0; r < r1; r++) { /* column amax over the row group */
    const float* xr = x + r * ld + c0;
    for (j = 0; j + VL <= w; j += VL) vstore(cm + j, vmax(vabs(vload(xr + j)), vload(cm + j)));
    if (j < w) {
      const int m = (int)(w - j);
      vstoret(cm + j, vmax(vabs(vloadt(xr + j, m, 0.0f)), vloadt(cm + j, m, 0.0f)), m);
    }
  }
  if (!block) {
    for (j = 0; j < w; j++) cm[j] = q8_scale(cm[j]);
    if (scales) memcpy(scales + c0, cm, (size_t)w * sizeof(float));
  } else {
    for (int64_t g = 0; g < w; g += FP8_BLOCK) { /* one scale per 128 columns */
      const int64_t e = g + FP8_BLOCK < w ? g + FP8_BLOCK : w;
      float amax = 0.0f;
      for (j = g; j < e; j++) amax = cm[j] > amax ? cm[j] : amax;
      const float s = q8_scale(amax);
      if (scales) scales[(c0 + g) / FP8_BLOCK] = s;
      for (j = g; j < e; j++) cm[j] = s;
    }
  }
  for (int64_t r = r0; r < r1; r++)
    q8_seg(x + r * ld + c0, w, cm, 0.0f, codes ? codes + r * cols + c0 : NULL, out ? out + r * cols + c0 : NULL);
}

void ISA_FN(dsv3_fp8_quant_dequant)(const uint8_t* codes, const float* scales, int64_t r0, int64_t r1, int64_t cols,
                               int64_t block_rows, float* out) {
  const int64_t nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
  for (int64_t r = r0; r < r1; r++) {
    const float* sr = scales + (r / block_rows) * nt;
    const uint8_t* cr = codes + r * cols;
    float* o = out + r * cols;
    for (int64_t t = 0; t < nt; t++) {
      const vf s = vset1(sr[t]);
      const int64_t e = cols - t * FP8_BLOCK < FP8_BLOCK ? cols : (t + 1) * FP8_BLOCK;
      int64_t j = t * FP8_BLOCK;
      for (; j + VL <= e; j += VL) vstore(o + j, vmul(q8_dec(q8_load_codes(cr + j, VL)), s));
      if (j < e) vstoret(o + j, vmul(q8_dec(q8_load_codes(cr + j, (int)(e - j))), s), (int)(e - j));
    }
  }
}
