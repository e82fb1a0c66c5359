/* bfloat16 <-> float32 conversion of contiguous buffers (see bf16_convert.h). Integer
 * arithmetic on the float bits: r = (u + 0x7fff + ((u >> 16) & 1)) >> 16, NaN -> (u | quiet
 * bit) >> 16. The vector loops and the scalar tail compute the same function. */
#include <string.h>
#include "../bf16_convert.h"

#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
#include <immintrin.h>
#endif

static inline uint16_t round1(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u | 0x00400000u) >> 16);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float widen1(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float y;
  memcpy(&y, &u, 4);
  return y;
}

void ISA_FN(dsv3_bf16_round)(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
#if defined(DSV3_ISA_AVX512)
  const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), absm = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000), quiet = _mm512_set1_epi32(0x00400000);
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                       31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512((const void*)(x + i));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, bias), lsb);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absm), inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, quiet));
    /* the bf16 values are the high (odd) 16-bit words of the lanes: gather them into 256 bits */
    _mm256_storeu_si256((__m256i*)(out + i), _mm512_castsi512_si256(_mm512_permutexvar_epi16(odd, r)));
  }
#elif defined(DSV3_ISA_AVX2)
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), absm = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000), quiet = _mm256_set1_epi32(0x00400000);
  for (; i + 16 <= n; i += 16) {
    __m256i r2[2];
    for (int h = 0; h < 2; h++) {
      const __m256i u = _mm256_loadu_si256((const __m256i*)(x + i + 8 * h));
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, bias), lsb);
      const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
      r2[h] = _mm256_srli_epi32(_mm256_blendv_epi8(r, _mm256_or_si256(u, quiet), nan), 16);
    }
    /* packus works within 128-bit lanes: (a0 b0 a1 b1) -> permute to (a0 a1 b0 b1) */
    const __m256i p = _mm256_packus_epi32(r2[0], r2[1]);
    _mm256_storeu_si256((__m256i*)(out + i), _mm256_permute4x64_epi64(p, 0xd8));
  }
#endif
  for (; i < n; i++) out[i] = round1(x[i]);
}

void ISA_FN(dsv3_bf16_widen)(const uint16_t* h, float* out, int64_t n) {
  int64_t i = 0;
#if defined(DSV3_ISA_AVX512)
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(h + i));
    _mm512_storeu_si512((void*)(out + i), _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
#elif defined(DSV3_ISA_AVX2)
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm_loadu_si128((const __m128i*)(h + i));
    _mm256_storeu_si256((__m256i*)(out + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
#endif
  for (; i < n; i++) out[i] = widen1(h[i]);
}
