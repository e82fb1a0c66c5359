/* AdamW update and sum of squares (optimizer step, global gradient norm). The update runs in
 * float64 with contraction into fused multiply-adds disabled, so every stored value is the
 * float32 rounding of exactly the float64 expression the TypeScript optimizer evaluates
 * (bit-identical results); the loop is memory-bound either way (28 bytes per element). */
#include <math.h>
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
