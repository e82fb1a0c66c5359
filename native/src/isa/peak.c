/* FMA peak micro-benchmark: `iters` rounds of 12 independent vector FMA chains (enough to
 * cover FMA latency x throughput on current x86 cores). Returns the flops performed; the
 * caller times it. */
#include "isa.h"
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
#include <immintrin.h>
#endif

double ISA_FN(dsv3_fma_peak_kernel)(int64_t iters, float* sink) {
#if defined(DSV3_ISA_AVX512)
  __m512 a[12];
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  *sink = _mm512_reduce_add_ps(s);
  return (double)iters * 12 * 16 * 2;
#elif defined(DSV3_ISA_AVX2)
  __m256 a[12];
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  float t[8];
  _mm256_storeu_ps(t, s);
  *sink = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
  return (double)iters * 12 * 8 * 2;
#else
  float a[12];
  for (int i = 0; i < 12; i++) a[i] = (float)i;
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < 12; i++) a[i] = a[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < 12; i++) s += a[i];
  *sink = s;
  return (double)iters * 12 * 2;
#endif
}
