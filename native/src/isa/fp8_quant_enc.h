/* The E4M3 group scale, encoders and decoder shared by the FP8 operand quantisers of one ISA copy
 * (fp8_quant.c, fp8_quant_dual.c; the rules and why they equal the TypeScript reference are in
 * fp8_quant.c's header). Static: each kernel source gets its own copy, compiled for its ISA. */
#ifndef DSV3_ISA_FP8_QUANT_ENC_H
#define DSV3_ISA_FP8_QUANT_ENC_H
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
/* code (wc) and unscaled E4M3 value (wv) of the float32 q; sz: the value keeps the sign of zero.
 * Branch-free, on the exponent: E = max(exponent field of |q|, 121) (121: the exponent of 2^-6,
 * the smallest normal, so subnormals share its quantum 2^-9); |q| * 2^(3 - (E - 127)) (exact, a
 * power-of-two scaling) lies in [0, 16) (normals in [8, 16)), and its round-to-nearest-even
 * integer n is the E4M3 magnitude's code relative to the binade: code = n + 8 (E - 121) (a carry
 * n = 16 steps into the next binade by itself), value = n * 2^(E - 130). Saturation: codes above
 * 0x7E (|q| >= 464, infinities: the conversion's 0x80000000 read unsigned) clamp to 0x7E, values
 * to 448; NaN: code 0x7F, value 0x7FC00000. Equal to the rounding of codec.ts e4m3FromBits. */
SIMD_INLINE vi q8_binade(vi a) { return _mm512_max_epu32(_mm512_and_si512(a, I_(0x7f800000)), I_(121 << 23)); }
/* |q| * 2^(3 - (E - 127)) for E = q8_binade(a) >> 23: the multiplier's exponent field is 257 - E */
SIMD_INLINE vf q8_scaled(vi a, vi ea) {
  return _mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(_mm512_sub_epi32(I_(257u << 23), ea)));
}
SIMD_INLINE void q8_enc(vf q, int wc, int wv, int sz, vi* code, vf* val) {
  const vi u = _mm512_castps_si512(q), a = _mm512_and_si512(u, I_(0x7fffffff)), ea = q8_binade(a);
  const vf sc = q8_scaled(a, ea);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(a, I_(0x7f800000)); /* a >= 0 as a signed integer */
  if (wc) {
    const vi n = _mm512_cvt_roundps_epi32(sc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vi c = _mm512_min_epu32(_mm512_add_epi32(n, _mm512_sub_epi32(_mm512_srli_epi32(ea, 20), I_(968))), I_(0x7e));
    c = _mm512_ternarylogic_epi32(c, _mm512_srli_epi32(u, 24), I_(0x80), 0xf8); /* c | (u>>24 & 0x80) */
    *code = _mm512_mask_mov_epi32(c, nan, I_(0x7f));
  }
  if (wv) {
    const vf n = _mm512_roundscale_ps(sc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vf v = _mm512_min_ps(_mm512_mul_ps(n, _mm512_castsi512_ps(_mm512_sub_epi32(ea, I_(3 << 23)))), _mm512_set1_ps(448.0f));
    const vi sg = _mm512_and_si512(u, I_(0x80000000)), vb = _mm512_castps_si512(v);
    const vi r = _mm512_or_si512(vb, sz ? sg : _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(vb, vb), sg));
    *val = _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, nan, I_(0x7fc00000)));
  }
}
/* The encoder of x / s from q0 = x * r (r = float32(1 / s)), or 0 where it cannot decide.
 * q0 is within 2.5 ulp of q = float32(x / s) (r and x * r rounded, 2^-24 relative each, q half an
 * ulp), i.e. within 2.5 * 2^-20 after the exact scaling of q8_scaled (|q| -> [0, 16), an ulp at
 * most 2^-20 there). t = float32(16 + that scaled value) (one FMA; t in [16, 32], an ulp 2^-19)
 * is then within 3.5 * 2^-20 < 2 ulp(t) of 16 + the scaled q: unless t's fraction is within 4
 * ulp(t) of the rounding midpoint 1/2 (low 19 bits of t near 0x40000), round-to-nearest-even of
 * t is 16 + the scaled q's and the codes and values agree with q8_enc(q). Binade boundaries are
 * on the E4M3 grid (no midpoint near them), and the saturation region encodes alike throughout.
 * Returns 1 with *code / *val set, or 0 (about 1 lane in 2^16 of random data: the caller divides). */
/* The fast encoder's constants, made once per kernel call and held in registers: the empty asm
 * makes each opaque, so the compiler cannot re-materialise it (a GPR move and a broadcast, two
 * uops) inside the loops, which it otherwise does for most of them. */
typedef struct {
  vi abs, expm, b121, k257, tadd, tmask, nine, c968, c7e, c80, c7f, c16, c3, sgn, nanv;
  vf f16, f448;
} q8_consts;
#ifdef DSV3_SIMD_EMULATED /* the SIMDe verification build: its vectors are not registers */
#define Q8_OPAQUE(v) ((void)(v))
#else
#define Q8_OPAQUE(v) __asm__("" : "+v"(v))
#endif
static inline q8_consts q8_consts_init(void) {
  q8_consts k = {I_(0x7fffffff), I_(0x7f800000), I_(121 << 23), I_(257u << 23), I_(4 - 0x40000), I_(0x7ffff), I_(9),
                 I_(968), I_(0x7e), I_(0x80), I_(0x7f), I_(16), I_(3 << 23), I_(0x80000000u), I_(0x7fc00000),
                 _mm512_set1_ps(16.0f), _mm512_set1_ps(448.0f)};
  Q8_OPAQUE(k.abs); Q8_OPAQUE(k.expm); Q8_OPAQUE(k.b121); Q8_OPAQUE(k.k257); Q8_OPAQUE(k.tadd); Q8_OPAQUE(k.tmask);
  Q8_OPAQUE(k.nine); Q8_OPAQUE(k.c968); Q8_OPAQUE(k.c7e); Q8_OPAQUE(k.c80); Q8_OPAQUE(k.c7f); Q8_OPAQUE(k.c16);
  Q8_OPAQUE(k.c3); Q8_OPAQUE(k.sgn); Q8_OPAQUE(k.nanv); Q8_OPAQUE(k.f16); Q8_OPAQUE(k.f448);
  return k;
}
SIMD_INLINE int q8_enc_fast(const q8_consts* K, vf q0, int wc, int wv, vi* code, vf* val) {
  const vi u = _mm512_castps_si512(q0), a = _mm512_and_si512(u, K->abs);
  const vi ea = _mm512_max_epu32(_mm512_and_si512(a, K->expm), K->b121);
  const vf t = _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(_mm512_sub_epi32(K->k257, ea)), K->f16);
  const vi tb = _mm512_castps_si512(t);
  if (_mm512_cmplt_epu32_mask(_mm512_and_si512(_mm512_add_epi32(tb, K->tadd), K->tmask), K->nine)) return 0;
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(a, K->expm);
  const vi n = _mm512_sub_epi32(_mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), K->c16);
  if (wc) {
    vi c = _mm512_min_epu32(_mm512_add_epi32(n, _mm512_sub_epi32(_mm512_srli_epi32(ea, 20), K->c968)), K->c7e);
    c = _mm512_ternarylogic_epi32(c, _mm512_srli_epi32(u, 24), K->c80, 0xf8); /* c | (u>>24 & 0x80) */
    *code = _mm512_mask_mov_epi32(c, nan, K->c7f);
  }
  if (wv) { /* the sign of zero is kept (with codes) or dropped, as q8_enc's sz = wc */
    const vf v = _mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(n), _mm512_castsi512_ps(_mm512_sub_epi32(ea, K->c3))), K->f448);
    const vi sg = _mm512_and_si512(u, K->sgn), vb = _mm512_castps_si512(v);
    const vi r = _mm512_or_si512(vb, wc ? sg : _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(vb, vb), sg));
    *val = _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, nan, K->nanv));
  }
  return 1;
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

#if !defined(DSV3_ISA_AVX512)
typedef int q8_consts; /* the fast encoder is AVX-512 only */
static inline q8_consts q8_consts_init(void) { return 0; }
#endif

/* n lanes (1..VL) of x / s -> codes (wc) and dequantised values (wv); r = float32(1 / s). The
 * AVX-512 copy encodes x * r instead of the division, except for a vector with a lane whose
 * rounding x * r might decide differently (q8_enc_fast returns 0: about 1 lane in 2^16), which divides. */
SIMD_INLINE void q8_lanes(const q8_consts* K, const float* x, vf s, vf r, int n, uint8_t* codes, float* out, int wc, int wv) {
  vi c;
  vf v;
  const vf xv = n == VL ? vload(x) : vloadt(x, n, 0.0f);
#if defined(DSV3_ISA_AVX512)
  if (__builtin_expect(!q8_enc_fast(K, vmul(xv, r), wc, wv, &c, &v), 0)) q8_enc(vdiv(xv, s), wc, wv, wc, &c, &v);
#else
  (void)r;
  (void)K;
  q8_enc(vdiv(xv, s), wc, wv, wc, &c, &v);
#endif
  if (wc) q8_store_codes(codes, c, n);
  if (wv) {
    if (n == VL) vstore(out, vmul(v, s));
    else vstoret(out, vmul(v, s), n);
  }
}

/* Encodes x[0, n) with the per-element scales sc[0, n) and their reciprocals rc (float32(1 / sc[j])),
 * or the scale s (reciprocal rs = float32(1 / s)) when sc is NULL. */
SIMD_INLINE void q8_seg_(const q8_consts* K, const float* x, int64_t n, const float* sc, const float* rc, float s, float rs, uint8_t* codes, float* out,
                         int wc, int wv) {
  const vf sv = vset1(s), rv = vset1(rs);
  int64_t j = 0;
  for (; j + VL <= n; j += VL)
    q8_lanes(K, x + j, sc ? vload(sc + j) : sv, sc ? vload(rc + j) : rv, VL, codes + j, out + j, wc, wv);
  if (j < n) {
    const int m = (int)(n - j);
    q8_lanes(K, x + j, sc ? vloadt(sc + j, m, 1.0f) : sv, sc ? vloadt(rc + j, m, 1.0f) : rv, m, codes + j, out + j, wc, wv);
  }
}
SIMD_INLINE void q8_seg(const q8_consts* K, const float* x, int64_t n, const float* sc, const float* rc, float s, float rs,
                        uint8_t* codes, float* out) {
  if (codes && out) q8_seg_(K, x, n, sc, rc, s, rs, codes, out, 1, 1);
  else if (codes) q8_seg_(K, x, n, sc, rc, s, rs, codes, out, 1, 0);
  else if (out) q8_seg_(K, x, n, sc, rc, s, rs, codes, out, 0, 1);
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

#endif
