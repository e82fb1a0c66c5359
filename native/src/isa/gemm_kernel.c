/* GEMM micro-kernels: one MR x NR tile of C from a packed A micro-panel ([kc][MR]) and a packed
 * B micro-panel ([kc][NR]), accumulators in registers for the whole kc loop.
 *   AVX2:    6 x 16, 12 ymm accumulators, B as 2 vector loads, A as 6 broadcasts per k.
 *   AVX-512: 12 x 32, 24 zmm accumulators, same scheme 16 lanes wide; plus the VDPBF16PS
 *            kernel on bf16 pairs (two k per instruction).
 *   scalar:  4 x 8 plain C (the compiler vectorises it with SSE).
 * Full tiles are written straight to C; edge tiles (mr < MR or nr < NR) go through a small
 * buffer and only the valid part is written. beta == 0 never reads C. */
#include "gemm_isa.h"

#define MR GEMM_MR
#define NR GEMM_NR

/* C[0:mr, 0:nr] = alpha * t + beta * C (beta == 0: overwrite), t is MR x NR. */
static void store_edge(const float* t, float* c, int64_t ldc, float alpha, float beta, int mr, int nr) {
  for (int i = 0; i < mr; i++) {
    float* ci = c + i * ldc;
    const float* ti = t + i * NR;
    if (beta == 0.0f)
      for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j];
    else
      for (int j = 0; j < nr; j++) ci[j] = alpha * ti[j] + beta * ci[j];
  }
}

#if defined(DSV3_ISA_AVX512)
#define V __m512
#define VZERO _mm512_setzero_ps()
#define VLOAD(p) _mm512_load_ps(p)
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define NV 2 /* vectors per tile row */
#elif defined(DSV3_ISA_AVX2)
#define V __m256
#define VZERO _mm256_setzero_ps()
#define VLOAD(p) _mm256_load_ps(p)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define NV 2
#endif

#ifdef V
/* Writes the accumulators: full tile straight to C, edge tile through a buffer. */
static inline __attribute__((always_inline)) void store_tile(V acc[MR][NV], float* c, int64_t ldc, float alpha,
                                                             float beta, int mr, int nr) {
  if (mr == MR && nr == NR) {
    const V va = VSET1(alpha);
    if (beta == 0.0f) {
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) VSTOREU(c + i * ldc + v * GEMM_VEC, VMUL(acc[i][v], va));
    } else {
      /* every load of the tile before any store: with ldc a multiple of 1024 floats the C
       * rows share their low 12 address bits, and a load behind the previous row's store can
       * be held as if it depended on it (4K aliasing); measured +0.6-1.6% on the kernel calls
       * of a 1024^3 GEMM (paired runs) */
      const V vb = VSET1(beta);
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = VFMA(acc[i][v], va, VMUL(VLOADU(c + i * ldc + v * GEMM_VEC), vb));
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) VSTOREU(c + i * ldc + v * GEMM_VEC, acc[i][v]);
    }
    return;
  }
  float t[MR * NR] __attribute__((aligned(64)));
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) VSTOREU(t + i * NR + v * GEMM_VEC, acc[i][v]);
  store_edge(t, c, ldc, alpha, beta, mr, nr);
}

/* Zeroes the accumulators and starts bringing the C tile's rows towards L1 while the k loop
 * runs (the stores need the lines too). */
static inline __attribute__((always_inline)) void start_tile(V acc[MR][NV], const float* c, int64_t ldc, int mr) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = VZERO;
  for (int i = 0; i < mr; i++) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
}

/* One k step: acc[i] += a[i * as] * (the NR-wide row b), i < MR. as = 1 for a packed A
 * micro-panel, lda for A read in place. */
static inline __attribute__((always_inline)) void k_step(V acc[MR][NV], const float* a, int64_t as, const float* b) {
  const V b0 = VLOAD(b), b1 = VLOAD(b + GEMM_VEC);
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    const V ai = VSET1(a[i * as]);
    acc[i][0] = VFMA(ai, b0, acc[i][0]);
    acc[i][1] = VFMA(ai, b1, acc[i][1]);
  }
}
#endif

void ISA_FN(gemm_kernel)(int kc, const float* restrict a, const float* restrict b, float* c, int64_t ldc,
                         float alpha, float beta, int mr, int nr) {
#ifdef V
  V acc[MR][NV];
  start_tile(acc, c, ldc, mr);
#pragma GCC unroll 4
  for (int p = 0; p < kc; p++) {
    k_step(acc, a, 1, b);
    a += MR;
    b += NR;
  }
  store_tile(acc, c, ldc, alpha, beta, mr, nr);
#else
  float t[MR * NR];
  for (int q = 0; q < MR * NR; q++) t[q] = 0.0f;
  for (int p = 0; p < kc; p++) {
    for (int i = 0; i < MR; i++) {
      const float ai = a[i];
      for (int j = 0; j < NR; j++) t[i * NR + j] += ai * b[j];
    }
    a += MR;
    b += NR;
  }
  store_edge(t, c, ldc, alpha, beta, mr, nr);
#endif
}

/* The same tile with A read in place instead of from a packed panel: row i of the MR-row
 * micro-panel is a + i*lda (op(A) = A stored [m,k], fp32, all MR rows valid). For a narrow C
 * each A micro-panel meets only a few B panels, so packing A would cost a large part of the
 * multiply (driver: use_direct_a); reading the rows in place, each cache line of A serves 16
 * k steps and the first B panel's calls bring the rows into L1/L2 for the others. */
void ISA_FN(gemm_kernel_rows)(int kc, const float* restrict a, int64_t lda, const float* an,
                              const float* restrict b, float* c, int64_t ldc, float alpha, float beta, int nr) {
#ifdef V
  V acc[MR][NV];
  start_tile(acc, c, ldc, MR);
  int p = 0;
  /* MR short row streams defeat the hardware prefetcher: each 16 k steps, bring in the next
   * cache line of each row of the next call's micro-panel (an) */
  for (; p + 16 <= kc; p += 16) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) __builtin_prefetch(an + i * lda + p, 0, 3);
#pragma GCC unroll 4
    for (int q = p; q < p + 16; q++) {
      k_step(acc, a + q, lda, b);
      b += NR;
    }
  }
  for (; p < kc; p++) {
    k_step(acc, a + p, lda, b);
    b += NR;
  }
  store_tile(acc, c, ldc, alpha, beta, MR, nr);
#else
  (void)an;
  float t[MR * NR];
  for (int q = 0; q < MR * NR; q++) t[q] = 0.0f;
  for (int p = 0; p < kc; p++) {
    for (int i = 0; i < MR; i++) {
      const float ai = a[i * lda + p];
      for (int j = 0; j < NR; j++) t[i * NR + j] += ai * b[j];
    }
    b += NR;
  }
  store_edge(t, c, ldc, alpha, beta, MR, nr);
#endif
}

/* VDPBF16PS kernel: each 32-bit word of A / B holds two consecutive-k bf16 values; one
 * instruction multiplies both pairs and adds them into the fp32 accumulator. Only the
 * AVX-512 build (compiled with -mavx512bf16) has it; the driver calls it only when the CPU
 * reports avx512_bf16. Elsewhere it is a portable fallback with the same semantics. */
#if defined(DSV3_ISA_AVX512)
static inline __m512bh as_bh(__m512i x) {
  __m512bh r;
  memcpy(&r, &x, sizeof r);
  return r;
}
#endif

void ISA_FN(gemm_kernel_dp)(int kc2, const uint32_t* restrict a, const uint32_t* restrict b, float* c, int64_t ldc,
                            float alpha, float beta, int mr, int nr) {
#if defined(DSV3_ISA_AVX512)
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = VZERO;
  /* bring the C tile towards L1 while the k loop runs (stores need the lines too) */
  for (int i = 0; i < mr; i++) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
#pragma GCC unroll 2
  for (int q = 0; q < kc2; q++) {
    const __m512bh b0 = as_bh(_mm512_load_si512((const void*)b));
    const __m512bh b1 = as_bh(_mm512_load_si512((const void*)(b + 16)));
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m512bh ai = as_bh(_mm512_set1_epi32((int)a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
    a += MR;
    b += NR;
  }
  store_tile(acc, c, ldc, alpha, beta, mr, nr);
#else
  float t[MR * NR];
  for (int q = 0; q < MR * NR; q++) t[q] = 0.0f;
  for (int q = 0; q < kc2; q++) {
    for (int i = 0; i < MR; i++) {
      const float a0 = gemm_bf16_to_f32((uint16_t)a[i]), a1 = gemm_bf16_to_f32((uint16_t)(a[i] >> 16));
      for (int j = 0; j < NR; j++)
        t[i * NR + j] += a0 * gemm_bf16_to_f32((uint16_t)b[j]) + a1 * gemm_bf16_to_f32((uint16_t)(b[j] >> 16));
    }
    a += MR;
    b += NR;
  }
  store_edge(t, c, ldc, alpha, beta, mr, nr);
#endif
}

/* gemm_kernel_dp with A read in place from bf16 bits stored [m,k] (see gemm_isa.h): for a
 * narrow C each A micro-panel meets few B panels, and reading its 32-bit pairs where they lie
 * saves packing them (as gemm_kernel_rows does for float32 A). Each 16 pairs (one cache line of
 * a row), the next line of each row of the next call's panel is prefetched. */
void ISA_FN(gemm_kernel_dp_rows)(int kc, const uint16_t* restrict a, int64_t lda, const uint16_t* an,
                                 const uint32_t* restrict b, float* c, int64_t ldc, float alpha, float beta, int nr) {
  const int kc2 = kc / 2;
#if defined(DSV3_ISA_AVX512)
  V acc[MR][NV];
  start_tile(acc, c, ldc, MR);
  int q = 0;
#define DP_ROWS_STEP(qq)                                                                        \
  do {                                                                                          \
    const __m512bh b0 = as_bh(_mm512_load_si512((const void*)b));                               \
    const __m512bh b1 = as_bh(_mm512_load_si512((const void*)(b + 16)));                        \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                     \
      uint32_t w;                                                                               \
      memcpy(&w, a + i * lda + 2 * (qq), 4);                                                    \
      const __m512bh ai = as_bh(_mm512_set1_epi32((int)w));                                     \
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);                                          \
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);                                          \
    }                                                                                           \
    b += NR;                                                                                    \
  } while (0)
  for (; q + 16 <= kc2; q += 16) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) __builtin_prefetch(an + i * lda + 2 * q, 0, 3);
#pragma GCC unroll 2
    for (int qq = q; qq < q + 16; qq++) DP_ROWS_STEP(qq);
  }
  for (; q < kc2; q++) DP_ROWS_STEP(q);
#undef DP_ROWS_STEP
  if (kc & 1) { /* the last k value, paired with 0 (the packed B pair holds 0 there too) */
    const __m512bh b0 = as_bh(_mm512_load_si512((const void*)b));
    const __m512bh b1 = as_bh(_mm512_load_si512((const void*)(b + 16)));
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m512bh ai = as_bh(_mm512_set1_epi32((int)a[i * lda + kc - 1]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  store_tile(acc, c, ldc, alpha, beta, MR, nr);
#else
  (void)an;
  float t[MR * NR];
  for (int q = 0; q < MR * NR; q++) t[q] = 0.0f;
  for (int q = 0; q < (kc + 1) / 2; q++) {
    for (int i = 0; i < MR; i++) {
      const float a0 = gemm_bf16_to_f32(a[i * lda + 2 * q]), a1 = 2 * q + 1 < kc ? gemm_bf16_to_f32(a[i * lda + 2 * q + 1]) : 0.0f;
      for (int j = 0; j < NR; j++)
        t[i * NR + j] += a0 * gemm_bf16_to_f32((uint16_t)b[j]) + a1 * gemm_bf16_to_f32((uint16_t)(b[j] >> 16));
    }
    b += NR;
  }
  store_edge(t, c, ldc, alpha, beta, MR, nr);
#endif
}
