/* AdamW update and sum of squares (optimizer step, global gradient norm). The update runs in
 * float64 with contraction into fused multiply-adds disabled, so every stored value is the
 * float32 rounding of exactly the float64 expression the TypeScript optimizer evaluates
 * (bit-identical results); the loop is memory-bound either way (28 bytes per element). */
#include <math.h>
#include <string.h>
#include "../optim.h"

#if defined(DSV3_ISA_AVX2) || defined(DSV3_ISA_AVX512)
#include <immintrin.h>
#endif

__attribute__((optimize("fp-contract=off"))) void ISA_FN(dsv3_adamw)(float* restrict w, const float* restrict g,
                                                                      float* restrict m, float* restrict v, int64_t i0,
                                                                      int64_t i1, const dsv3_adamw_args* a) {
  const double gs = a->grad_scale, decay = a->decay, b1 = a->b1, b2 = a->b2, c1 = a->c1, c2 = a->c2;
  const double step = a->step_size, inv = a->inv_bc2, eps = a->eps;
  int64_t j = i0;
#if defined(DSV3_ISA_AVX2) || defined(DSV3_ISA_AVX512)
  /* 4 elements at a time in float64 lanes: the same operations in the same order as below */
  const __m256d vgs = _mm256_set1_pd(gs), vdecay = _mm256_set1_pd(decay), vb1 = _mm256_set1_pd(b1),
                vb2 = _mm256_set1_pd(b2), vc1 = _mm256_set1_pd(c1), vc2 = _mm256_set1_pd(c2),
                vstep = _mm256_set1_pd(step), vinv = _mm256_set1_pd(inv), veps = _mm256_set1_pd(eps);
  for (; j + 4 <= i1; j += 4) {
    const __m256d gj = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(g + j)), vgs);
    const __m256d mj = _mm256_add_pd(_mm256_mul_pd(vb1, _mm256_cvtps_pd(_mm_loadu_ps(m + j))), _mm256_mul_pd(vc1, gj));
    const __m256d vj =
        _mm256_add_pd(_mm256_mul_pd(vb2, _mm256_cvtps_pd(_mm_loadu_ps(v + j))), _mm256_mul_pd(_mm256_mul_pd(vc2, gj), gj));
    _mm_storeu_ps(m + j, _mm256_cvtpd_ps(mj));
    _mm_storeu_ps(v + j, _mm256_cvtpd_ps(vj));
    const __m256d den = _mm256_add_pd(_mm256_sqrt_pd(_mm256_mul_pd(vj, vinv)), veps);
    const __m256d upd = _mm256_div_pd(_mm256_mul_pd(vstep, mj), den);
    _mm_storeu_ps(w + j, _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + j)), vdecay), upd)));
  }
#endif
  for (; j < i1; j++) {
    const double gj = (double)g[j] * gs;
    const double mj = b1 * (double)m[j] + c1 * gj;
    const double vj = b2 * (double)v[j] + c2 * gj * gj;
    m[j] = (float)mj;
    v[j] = (float)vj;
    w[j] = (float)((double)w[j] * decay - (step * mj) / (sqrt(vj * inv) + eps));
  }
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
/* float32 -> bf16 bits, round to nearest even, NaN -> quiet NaN (dtype.ts f32ToBf16) */
static inline uint16_t f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__attribute__((optimize("fp-contract=off"))) void ISA_FN(dsv3_adamw_bf16)(float* restrict w, const float* restrict g,
                                                                           uint16_t* restrict m, uint16_t* restrict v,
                                                                           int64_t i0, int64_t i1, const dsv3_adamw_args* a) {
  const double gs = a->grad_scale, decay = a->decay, b1 = a->b1, b2 = a->b2, c1 = a->c1, c2 = a->c2;
  const double step = a->step_size, inv = a->inv_bc2, eps = a->eps;
  int64_t j = i0;
#if defined(DSV3_ISA_AVX512)
  { /* 8 elements at a time in float64 lanes: the same operations in the same order as below */
    const __m512d gs8 = _mm512_set1_pd(gs), decay8 = _mm512_set1_pd(decay), b18 = _mm512_set1_pd(b1),
                  b28 = _mm512_set1_pd(b2), c18 = _mm512_set1_pd(c1), c28 = _mm512_set1_pd(c2),
                  step8 = _mm512_set1_pd(step), inv8 = _mm512_set1_pd(inv), eps8 = _mm512_set1_pd(eps);
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), absm = _mm256_set1_epi32(0x7fffffff),
                  inf = _mm256_set1_epi32(0x7f800000), quiet = _mm256_set1_epi32(0x00400000);
    for (; j + 8 <= i1; j += 8) {
      const __m256 mf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(m + j))), 16));
      const __m256 vf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(v + j))), 16));
      const __m512d gj = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(g + j)), gs8);
      const __m512d mj = _mm512_add_pd(_mm512_mul_pd(b18, _mm512_cvtps_pd(mf)), _mm512_mul_pd(c18, gj));
      const __m512d vj = _mm512_add_pd(_mm512_mul_pd(b28, _mm512_cvtps_pd(vf)), _mm512_mul_pd(_mm512_mul_pd(c28, gj), gj));
      /* float64 -> float32 -> bf16 (RNE, NaN quiet), 8 lanes */
      const __m256i us[2] = {_mm256_castps_si256(_mm512_cvtpd_ps(mj)), _mm256_castps_si256(_mm512_cvtpd_ps(vj))};
      __m128i r[2];
      for (int q = 0; q < 2; q++) {
        const __m256i u = us[q];
        const __m256i rn = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(_mm256_srli_epi32(u, 16), one)), 16);
        const __m256i qn = _mm256_srli_epi32(_mm256_or_si256(u, quiet), 16);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
        const __m256i b = _mm256_blendv_epi8(rn, qn, nan); /* 8 values < 2^16 in 32-bit lanes */
        r[q] = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
      }
      _mm_storeu_si128((__m128i*)(m + j), r[0]);
      _mm_storeu_si128((__m128i*)(v + j), r[1]);
      const __m512d den = _mm512_add_pd(_mm512_sqrt_pd(_mm512_mul_pd(vj, inv8)), eps8);
      const __m512d upd = _mm512_div_pd(_mm512_mul_pd(step8, mj), den);
      _mm256_storeu_ps(w + j, _mm512_cvtpd_ps(_mm512_sub_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + j)), decay8), upd)));
    }
  }
#endif
#if defined(DSV3_ISA_AVX2) || defined(DSV3_ISA_AVX512)
  const __m256d vgs = _mm256_set1_pd(gs), vdecay = _mm256_set1_pd(decay), vb1 = _mm256_set1_pd(b1),
                vb2 = _mm256_set1_pd(b2), vc1 = _mm256_set1_pd(c1), vc2 = _mm256_set1_pd(c2),
                vstep = _mm256_set1_pd(step), vinv = _mm256_set1_pd(inv), veps = _mm256_set1_pd(eps);
  const __m128i lsb1 = _mm_set1_epi32(1), bias = _mm_set1_epi32(0x7fff), absm = _mm_set1_epi32(0x7fffffff),
                inf = _mm_set1_epi32(0x7f800000), quiet = _mm_set1_epi32(0x00400000);
  for (; j + 4 <= i1; j += 4) {
    const __m128i m16 = _mm_loadl_epi64((const __m128i*)(m + j)), v16 = _mm_loadl_epi64((const __m128i*)(v + j));
    const __m128 mf = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(m16), 16));
    const __m128 vf = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(v16), 16));
    const __m256d gj = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(g + j)), vgs);
    const __m256d mj = _mm256_add_pd(_mm256_mul_pd(vb1, _mm256_cvtps_pd(mf)), _mm256_mul_pd(vc1, gj));
    const __m256d vj = _mm256_add_pd(_mm256_mul_pd(vb2, _mm256_cvtps_pd(vf)), _mm256_mul_pd(_mm256_mul_pd(vc2, gj), gj));
    /* float64 -> float32 -> bf16 (RNE, NaN quiet), 4 lanes */
    __m128i r[2];
    const __m128i u0 = _mm_castps_si128(_mm256_cvtpd_ps(mj)), u1 = _mm_castps_si128(_mm256_cvtpd_ps(vj));
    const __m128i us[2] = {u0, u1};
    for (int q = 0; q < 2; q++) {
      const __m128i u = us[q];
      const __m128i rn = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, bias), _mm_and_si128(_mm_srli_epi32(u, 16), lsb1)), 16);
      const __m128i qn = _mm_srli_epi32(_mm_or_si128(u, quiet), 16);
      const __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(u, absm), inf);
      r[q] = _mm_blendv_epi8(rn, qn, nan);
    }
    _mm_storel_epi64((__m128i*)(m + j), _mm_packus_epi32(r[0], r[0]));
    _mm_storel_epi64((__m128i*)(v + j), _mm_packus_epi32(r[1], r[1]));
    const __m256d den = _mm256_add_pd(_mm256_sqrt_pd(_mm256_mul_pd(vj, vinv)), veps);
    const __m256d upd = _mm256_div_pd(_mm256_mul_pd(vstep, mj), den);
    _mm_storeu_ps(w + j, _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + j)), vdecay), upd)));
  }
#endif
  for (; j < i1; j++) {
    const double gj = (double)g[j] * gs;
    const double mj = b1 * (double)bf16_to_f32(m[j]) + c1 * gj;
    const double vj = b2 * (double)bf16_to_f32(v[j]) + c2 * gj * gj;
    m[j] = f32_to_bf16((float)mj);
    v[j] = f32_to_bf16((float)vj);
    w[j] = (float)((double)w[j] * decay - (step * mj) / (sqrt(vj * inv) + eps));
  }
}

double ISA_FN(dsv3_sum_squares)(const float* x, int64_t i0, int64_t i1) {
  /* 4 independent float64 accumulators (vectorisable); blocks keep the sums short */
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = i0;
  for (; j + 4 <= i1; j += 4) {
    const double a = x[j], b = x[j + 1], c = x[j + 2], d = x[j + 3];
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += d * d;
  }
  for (; j < i1; j++) s0 += (double)x[j] * x[j];
  return (s0 + s1) + (s2 + s3);
}
