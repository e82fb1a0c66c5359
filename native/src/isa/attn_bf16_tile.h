/* The bf16 building blocks of the BF16 flash attention (isa/attention_bf16.c): rounding to
 * bf16 (scalar and vector), the pair layouts' loads and stores, the tile product on bf16 pairs
 * (VDPBF16PS, or pairs widened in registers and float32 FMAs) and the packing of float32 rows
 * into those layouts. Layouts: a product's B operand is stored in pairs along the reduction
 * dimension, [k/2][n][2]; its A operand row-major with the reduction dim contiguous, so one
 * 32-bit load is a pair (attention_bf16.h). */
#ifndef DSV3_ISA_ATTN_BF16_TILE_H
#define DSV3_ISA_ATTN_BF16_TILE_H
#include "../attention_bf16.h"
#include "simd.h"

/* scalar bf16 rounding (bf16_convert.c's rule): nearest even, subnormals kept, NaN quiet */
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

/* ---- bf16 vectors: vi holds VL 32-bit lanes (a pair each, or one bf16 in the low half) ---- */
#if defined(DSV3_ISA_AVX512)
typedef __m512i vi;
SIMD_INLINE vi vbf16(vf x) { /* bf16 bits of each lane, in its low 16 bits */
  const __m512i u = _mm512_castps_si512(x);
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                               _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
  return _mm512_srli_epi32(r, 16);
}
SIMD_INLINE void vstore_pairs(uint16_t* p, vi lo, vi hi) {
  _mm512_storeu_si512((void*)p, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
}
SIMD_INLINE void vstore_row(uint16_t* p, vi r) { _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16(r)); }
SIMD_INLINE vi viload(const uint16_t* p) { return _mm512_loadu_si512((const void*)p); }
SIMD_INLINE vf vwlo(vi x) { return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)); }
SIMD_INLINE vf vwhi(vi x) { return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u))); }
/* ceil as round-to-nearest + 1 where below x (SIMDe's roundscale, the verification build's
 * stand-in, mishandles the round-up mode; the result is the same on hardware) */
SIMD_INLINE vf vceil(vf x) {
  const vf t = vround(x);
  return vsel_gt(x, t, t, vadd(t, vset1(1.0f)));
}
SIMD_INLINE __m512bh as_bh(__m512i x) {
  __m512bh r;
  memcpy(&r, &x, sizeof r);
  return r;
}
SIMD_INLINE vi vibcast(const uint16_t* p) {
  int32_t u;
  memcpy(&u, p, 4);
  return _mm512_set1_epi32(u);
}
SIMD_INLINE vf vdp(vf c, vi a, vi b) { return _mm512_dpbf16_ps(c, as_bh(a), as_bh(b)); }
#elif defined(DSV3_ISA_AVX2)
typedef __m256i vi;
SIMD_INLINE vi vbf16(vf x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)),
                                     _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_srli_epi32(_mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan), 16);
}
SIMD_INLINE void vstore_pairs(uint16_t* p, vi lo, vi hi) {
  _mm256_storeu_si256((__m256i*)p, _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16)));
}
SIMD_INLINE void vstore_row(uint16_t* p, vi r) {
  /* packus works within 128-bit lanes: (r0..3 r0..3 | r4..7 r4..7) -> 64-bit elements 0, 2 */
  const __m256i q = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  _mm_storeu_si128((__m128i*)p, _mm256_castsi256_si128(q));
}
SIMD_INLINE vi viload(const uint16_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
SIMD_INLINE vf vwlo(vi x) { return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)); }
SIMD_INLINE vf vwhi(vi x) { return _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xffff0000u))); }
SIMD_INLINE vf vceil(vf x) { return _mm256_ceil_ps(x); }
SIMD_INLINE vi vibcast(const uint16_t* p) {
  int32_t u;
  memcpy(&u, p, 4);
  return _mm256_set1_epi32(u);
}
#else
typedef uint32_t vi;
SIMD_INLINE vi vbf16(vf x) { return round1(x); }
SIMD_INLINE void vstore_pairs(uint16_t* p, vi lo, vi hi) {
  p[0] = (uint16_t)lo;
  p[1] = (uint16_t)hi;
}
SIMD_INLINE void vstore_row(uint16_t* p, vi r) { p[0] = (uint16_t)r; }
SIMD_INLINE vi viload(const uint16_t* p) { return (uint32_t)p[0] | (uint32_t)p[1] << 16; }
SIMD_INLINE vf vwlo(vi x) { return widen1((uint16_t)x); }
SIMD_INLINE vf vwhi(vi x) { return widen1((uint16_t)(x >> 16)); }
SIMD_INLINE vf vceil(vf x) { return ceilf(x); }
#endif

/* Rounding of P and dS in the softmax loops: dp (an avx512_bf16 CPU) uses VCVTNE(2)PS2BF16,
 * the same round-to-nearest-even except that it flushes subnormal results (< 2^-126) to 0:
 * P is never subnormal there (vexp returns 0 below 2^-126); a flushed dS is below 2^-126 (its
 * products with q, k are far below float32 resolution of the sums). */
#if defined(DSV3_ISA_AVX512)
SIMD_INLINE void store_pairs_ps(const int dp, uint16_t* p, vf lo, vf hi) {
  if (dp) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                         20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512bh x = _mm512_cvtne2ps_pbh(hi, lo); /* words 0..15: lo, 16..31: hi */
    __m512i xi;
    memcpy(&xi, &x, sizeof xi);
    _mm512_storeu_si512((void*)p, _mm512_permutexvar_epi16(idx, xi));
  } else {
    vstore_pairs(p, vbf16(lo), vbf16(hi));
  }
}
SIMD_INLINE void store_row_ps(const int dp, uint16_t* p, vf x) {
  if (dp) {
    const __m256bh y = _mm512_cvtneps_pbh(x);
    __m256i yi;
    memcpy(&yi, &y, sizeof yi);
    _mm256_storeu_si256((__m256i*)p, yi);
  } else {
    vstore_row(p, vbf16(x));
  }
}
#else
SIMD_INLINE void store_pairs_ps(const int dp, uint16_t* p, vf lo, vf hi) {
  (void)dp;
  vstore_pairs(p, vbf16(lo), vbf16(hi));
}
SIMD_INLINE void store_row_ps(const int dp, uint16_t* p, vf x) {
  (void)dp;
  vstore_row(p, vbf16(x));
}
#endif

/* float value of the low / high bf16 of the pair at p */
static inline float pair_lo(const uint16_t* p) { return widen1(p[0]); }
static inline float pair_hi(const uint16_t* p) { return widen1(p[1]); }

/* ---- the tile product -----------------------------------------------------------------------
 * C[m][0..N) (+)= sum_{kp < KP} A(m, 2kp) B[2kp][.] + A(m, 2kp+1) B[2kp+1][.], where the pair
 * A(m, 2kp..2kp+1) is at A + m*ars + kp*acs and B row pair kp at B + kp*ldb ([N][2], readable
 * in whole vectors: the callers pad B's rows). dp: one VDPBF16PS per pair and vector; else
 * the pair is widened (shift, mask) and two FMAs run. Blocking as attn_tile.h's mm_tile. */
SIMD_INLINE void dp_tile(const int dp, const int mr, const int nv, const int nn, const int64_t KP, const uint16_t* A,
                         const int64_t ars, const int64_t acs, const uint16_t* B, const int64_t ldb, float* C,
                         const int64_t ldc, const int acc) {
  vf c0[8], c1[8];
#pragma GCC unroll 8
  for (int i = 0; i < mr; i++) c0[i] = c1[i] = vzero();
  for (int64_t kp = 0; kp < KP; kp++) {
    const uint16_t* b = B + kp * ldb;
    const uint16_t* a = A + kp * acs;
    const vi b0 = viload(b), b1 = nv > 1 ? viload(b + 2 * VL) : b0;
#if defined(DSV3_ISA_AVX512)
    if (dp) {
#pragma GCC unroll 8
      for (int i = 0; i < mr; i++) {
        const vi ai = vibcast(a + i * ars);
        c0[i] = vdp(c0[i], ai, b0);
        if (nv > 1) c1[i] = vdp(c1[i], ai, b1);
      }
      continue;
    }
#else
    (void)dp;
#endif
    const vf b0l = vwlo(b0), b0h = vwhi(b0), b1l = vwlo(b1), b1h = vwhi(b1);
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
      const vi ai = vibcast(a + i * ars); /* one broadcast, then both halves in registers */
      const vf al = vwlo(ai), ah = vwhi(ai);
#else
      const vf al = pair_lo(a + i * ars), ah = pair_hi(a + i * ars);
#endif
      c0[i] = vfma(ah, b0h, vfma(al, b0l, c0[i]));
      if (nv > 1) c1[i] = vfma(ah, b1h, vfma(al, b1l, c1[i]));
    }
  }
  const int last = nn - (nv - 1) * VL;
#pragma GCC unroll 8
  for (int i = 0; i < mr; i++) {
    float* c = C + i * ldc;
    if (nv == 1) {
      if (last == VL) vstore(c, acc ? vadd(vload(c), c0[i]) : c0[i]);
      else vstoret(c, acc ? vadd(vloadt(c, last, 0), c0[i]) : c0[i], last);
    } else {
      vstore(c, acc ? vadd(vload(c), c0[i]) : c0[i]);
      if (last == VL) vstore(c + VL, acc ? vadd(vload(c + VL), c1[i]) : c1[i]);
      else vstoret(c + VL, acc ? vadd(vloadt(c + VL, last, 0), c1[i]) : c1[i], last);
    }
  }
}

#define DP_TILE(mr, nv) \
  dp_tile(dp, mr, nv, nn, KP, A + m0 * ars, ars, acs, B + 2 * n0, ldb, C + m0 * ldc + n0, ldc, acc)

SIMD_INLINE void dpmm_impl(const int dp, const int64_t M, const int64_t N, const int64_t KP, const uint16_t* A,
                           const int64_t ars, const int64_t acs, const uint16_t* B, const int64_t ldb, float* C,
                           const int64_t ldc, const int acc) {
  for (int64_t n0 = 0; n0 < N; n0 += 2 * VL) {
    const int nn = (int)(N - n0 < 2 * VL ? N - n0 : 2 * VL);
    int64_t m0 = 0;
    if (nn > VL) {
      for (; M - m0 >= 12 || M - m0 == 6; m0 += 6) DP_TILE(6, 2);
      switch (M - m0) {
        case 11: DP_TILE(6, 2); m0 += 6; DP_TILE(5, 2); break;
        case 10: DP_TILE(5, 2); m0 += 5; DP_TILE(5, 2); break;
        case 9: DP_TILE(5, 2); m0 += 5; DP_TILE(4, 2); break;
        case 8: DP_TILE(4, 2); m0 += 4; DP_TILE(4, 2); break;
        case 7: DP_TILE(4, 2); m0 += 4; DP_TILE(3, 2); break;
        case 5: DP_TILE(5, 2); break;
        case 4: DP_TILE(4, 2); break;
        case 3: DP_TILE(3, 2); break;
        case 2: DP_TILE(2, 2); break;
        case 1: DP_TILE(1, 2); break;
        default: break;
      }
    } else {
      for (; m0 + 8 <= M; m0 += 8) DP_TILE(8, 1);
      switch (M - m0) {
        case 7: DP_TILE(7, 1); break;
        case 6: DP_TILE(6, 1); break;
        case 5: DP_TILE(5, 1); break;
        case 4: DP_TILE(4, 1); break;
        case 3: DP_TILE(3, 1); break;
        case 2: DP_TILE(2, 1); break;
        case 1: DP_TILE(1, 1); break;
        default: break;
      }
    }
  }
}
#undef DP_TILE

/* C (+)= A.B on bf16 pairs (see dp_tile); acc 0 overwrites C (KP 0: zeroes it) */
static void dpmm(const int dp, const int64_t M, const int64_t N, const int64_t KP, const uint16_t* A, const int64_t ars,
                 const int64_t acs, const uint16_t* B, const int64_t ldb, float* C, const int64_t ldc, const int acc) {
  if (M <= 0 || N <= 0) return;
  if (dp) dpmm_impl(1, M, N, KP, A, ars, acs, B, ldb, C, ldc, acc);
  else dpmm_impl(0, M, N, KP, A, ars, acs, B, ldb, C, ldc, acc);
}

/* ---- packing (once per task: O(keys * d), against O(rows * keys * d) of products) ---------- */

/* The rows packed here are read once, strided (one head's rows of [B, T, H, d] are H*d floats
 * apart), and the loads of their first touch dominated the packing: each packing loop asks for
 * the row PF_AHEAD rows ahead (a hint only; nothing it computes changes). */
#define PF_AHEAD 4
static inline void prefetch_row(const float* p, int64_t d) {
  for (int64_t e = 0; e < d; e += 16) __builtin_prefetch(p + e, 0, 3);
  __builtin_prefetch(p + d - 1, 0, 3);
}

/* rows j in [j0, j1) of src (row stride ld, d floats) -> bf16 rows dst + j*w (w even >= d, pad 0) */
static void pack_rows_bf16(uint16_t* dst, int64_t w, const float* src, int64_t ld, int64_t j0, int64_t j1, int64_t d) {
  for (int64_t j = j0; j < j1; j++) {
    const float* s = src + j * ld;
    if (j + PF_AHEAD < j1 && d > 0) prefetch_row(src + (j + PF_AHEAD) * ld, d);
    uint16_t* t = dst + j * w;
    int64_t e = 0;
    for (; e + VL <= d; e += VL) vstore_row(t + e, vbf16(vload(s + e)));
    for (; e < d; e++) t[e] = round1(s[e]);
    for (; e < w; e++) t[e] = 0;
  }
}

/* two rows (r1 NULL: zeros) of d floats -> pairs dst[e][2] for e < np (np >= d a multiple of VL, pad 0) */
static void pair_rows_bf16(uint16_t* dst, int64_t np, const float* r0, const float* r1, int64_t d) {
  int64_t e = 0;
  for (; e + VL <= d; e += VL)
    vstore_pairs(dst + 2 * e, vbf16(vload(r0 + e)), r1 ? vbf16(vload(r1 + e)) : vbf16(vzero()));
  if (e < d) {
    const int t = (int)(d - e);
    vstore_pairs(dst + 2 * e, vbf16(vloadt(r0 + e, t, 0.0f)), r1 ? vbf16(vloadt(r1 + e, t, 0.0f)) : vbf16(vzero()));
    e += VL;
  }
  for (; e < np; e += VL) vstore_pairs(dst + 2 * e, vbf16(vzero()), vbf16(vzero()));
}

/* rows j in [j0, j1) (j0 even) -> key pairs dst[(j/2)][e][2], row pairs of np pairs (np >= d,
 * a multiple of VL, pad 0); an odd j1's partner slot is zeroed */
static void pack_pairs_bf16(uint16_t* dst, int64_t np, const float* src, int64_t ld, int64_t j0, int64_t j1, int64_t d) {
  for (int64_t j = j0; j < j1; j += 2) {
    if (j + PF_AHEAD + 1 < j1 && d > 0) {
      prefetch_row(src + (j + PF_AHEAD) * ld, d);
      prefetch_row(src + (j + PF_AHEAD + 1) * ld, d);
    }
    pair_rows_bf16(dst + (j >> 1) * 2 * np, np, src + j * ld, j + 1 < j1 ? src + (j + 1) * ld : NULL, d);
  }
}

/* bf16 row of d floats into tmp (w even >= d, pad 0), then its pairs as 32-bit words
 * to dst[w * stride32] (a transposed pair layout [d/2][rows][2]: stride32 = rows) */
static void scatter_pairs_bf16(uint16_t* dst, int64_t stride32, const float* row, int64_t d, uint16_t* tmp) {
  const int64_t w = dsv3_even(d);
  int64_t e = 0;
  if (row) {
    for (; e + VL <= d; e += VL) vstore_row(tmp + e, vbf16(vload(row + e)));
    for (; e < d; e++) tmp[e] = round1(row[e]);
  }
  for (; e < w; e++) tmp[e] = 0;
  for (int64_t x = 0; x < w / 2; x++) memcpy(dst + 2 * x * stride32, tmp + 2 * x, 4);
}

#endif
