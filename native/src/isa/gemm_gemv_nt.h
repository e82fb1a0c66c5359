/* The B^T half of the small-m GEMM (gemm_gemv.c, which includes this file once after its
 * gemv_ctx, put, bval, vector macros and W): y[i][j] = dot(A row i, W row j) for a linear layer
 * (W stored [n,k], fp32 or bf16 widened / VDPBF16PS), register-blocked over M A rows x R W rows
 * x U vectors, narrow-row and several-group variants; nt_range computes outputs [j0, j1). */
#ifndef DSV3_ISA_GEMM_GEMV_NT_H
#define DSV3_ISA_GEMM_GEMV_NT_H

#ifdef V
/* Dot products of M A rows with R consecutive B^T columns (W rows) starting at j. With pf,
 * the same positions of the next R rows are prefetched: W rows can be short (k = 512 is 2 KB),
 * too short for the hardware prefetcher to ramp up on its own. */
/* (ar holds rows i0 .. i0+M-1 of the [m][k] copy of A; outputs go to those rows of C) */
static inline __attribute__((always_inline)) void nt_block_at(const gemm_prob* P, const float* ar, const int64_t i0, int64_t j,
                                                              const int M, const int R, const int U, const int bf, const int pf) {
  const int64_t k = P->k, ldb = P->ldb;
  V acc[2][4][4];
  for (int u = 0; u < U; u++)
    for (int i = 0; i < M; i++)
      for (int r = 0; r < R; r++) acc[u][i][r] = VZERO;
  int64_t p = 0;
  for (; p + U * W <= k; p += U * W) {
    if (pf)
      for (int r = 0; r < R; r++)
        __builtin_prefetch(bf ? (const void*)(P->bh + (j + R + r) * ldb + p) : (const void*)(P->bf + (j + R + r) * ldb + p));
    for (int u = 0; u < U; u++) {
      V w[4];
      for (int r = 0; r < R; r++)
        w[r] = bf ? widen(P->bh + (j + r) * ldb + p + u * W) : VLOADU(P->bf + (j + r) * ldb + p + u * W);
      for (int i = 0; i < M; i++) {
        const V av = VLOADU(ar + i * k + p + u * W);
        for (int r = 0; r < R; r++) acc[u][i][r] = VFMA(av, w[r], acc[u][i][r]);
      }
    }
  }
#if defined(DSV3_ISA_AVX512)
  if (M == 4 && R == 4 && U == 1 && p == k) {
    /* the 16 dot products at once: a transpose-and-add tree (45 shuffles/adds instead of 16
     * horizontal sums of ~8 each), leaving row i's 4 outputs in 128-bit lane i */
    __m512 w[4];
    for (int i = 0; i < 4; i++) {
      const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[0][i][0], acc[0][i][1]), _mm512_unpackhi_ps(acc[0][i][0], acc[0][i][1]));
      const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[0][i][2], acc[0][i][3]), _mm512_unpackhi_ps(acc[0][i][2], acc[0][i][3]));
      w[i] = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, 0x44), _mm512_shuffle_ps(s01, s23, 0xEE));
    }
    const __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
    const __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x88), _mm512_shuffle_f32x4(w[2], w[3], 0xDD));
    const __m512 f = _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, 0x88), _mm512_shuffle_f32x4(z01, z23, 0xDD));
    float out[16];
    _mm512_storeu_ps(out, f);
    for (int i = 0; i < 4; i++)
      for (int r = 0; r < 4; r++) put(P, i0 + i, j + r, out[4 * i + r]);
    return;
  }
#endif
  for (int i = 0; i < M; i++)
    for (int r = 0; r < R; r++) {
      V s = acc[0][i][r];
      if (U == 2) s = VADD(s, acc[1][i][r]);
      float t = VHSUM(s);
      for (int64_t q = p; q < k; q++) t += ar[i * k + q] * bval(P, (j + r) * ldb + q);
      put(P, i0 + i, j + r, t);
    }
}
static inline __attribute__((always_inline)) void nt_block(const gemm_prob* P, const float* ar, int64_t j, const int M,
                                                           const int R, const int U, const int bf, const int pf) {
  nt_block_at(P, ar, 0, j, M, R, U, bf, pf);
}
#endif

#ifdef V
/* m = 1 with bf16 weights, widen + FMA (AVX2, AVX-512 without avx512_bf16): as nt_row_dp1, one
 * weight row at a time, 4 accumulators, a prefetch 4 KiB ahead along the contiguous rows. */
#define GEMV_PF_BF 4096
static inline void nt_row_bf1(const gemm_prob* P, const float* ar, int64_t j, const char* pend) {
  const int64_t k = P->k;
  const uint16_t* w = P->bh + j * P->ldb;
  V a0 = VZERO, a1 = VZERO, a2 = VZERO, a3 = VZERO;
  int64_t p = 0;
  for (; p + 4 * W <= k; p += 4 * W) {
    const char* f = (const char*)(w + p) + GEMV_PF_BF;
    if (f < pend)
      for (int o = 0; o < 4 * W * 2; o += 64) _mm_prefetch(f + o, _MM_HINT_T1);
    a0 = VFMA(VLOADU(ar + p), widen(w + p), a0);
    a1 = VFMA(VLOADU(ar + p + W), widen(w + p + W), a1);
    a2 = VFMA(VLOADU(ar + p + 2 * W), widen(w + p + 2 * W), a2);
    a3 = VFMA(VLOADU(ar + p + 3 * W), widen(w + p + 3 * W), a3);
  }
  for (; p + W <= k; p += W) a0 = VFMA(VLOADU(ar + p), widen(w + p), a0);
  float t = VHSUM(VADD(VADD(a0, a1), VADD(a2, a3)));
  for (; p < k; p++) t += ar[p] * gemm_bf16_to_f32(w[p]);
  put(P, 0, j, t);
}
#endif

#if defined(DSV3_ISA_AVX512)
/* VDPBF16PS dot products: 32 bf16 products of one row pair per instruction. */
static inline __m512bh as_bh(__m512i x) {
  __m512bh r;
  memcpy(&r, &x, sizeof r);
  return r;
}
static inline __attribute__((always_inline)) void nt_block_dp_at(const gemm_prob* P, const uint16_t* ah, const float* ar,
                                                                 const int64_t i0, int64_t j, const int M, const int R,
                                                                 const int pf) {
  const int64_t k = P->k, ldb = P->ldb;
  __m512 acc[4][4];
  for (int i = 0; i < M; i++)
    for (int r = 0; r < R; r++) acc[i][r] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 32 <= k; p += 32) {
    __m512bh w[4];
    if (pf)
      for (int r = 0; r < R; r++) __builtin_prefetch(P->bh + (j + R + r) * ldb + p);
    for (int r = 0; r < R; r++) w[r] = as_bh(_mm512_loadu_si512((const void*)(P->bh + (j + r) * ldb + p)));
    for (int i = 0; i < M; i++) {
      const __m512bh av = as_bh(_mm512_loadu_si512((const void*)(ah + i * k + p)));
      for (int r = 0; r < R; r++) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], av, w[r]);
    }
  }
  for (int i = 0; i < M; i++)
    for (int r = 0; r < R; r++) {
      float t = _mm512_reduce_add_ps(acc[i][r]);
      for (int64_t q = p; q < k; q++) t += ar[i * k + q] * gemm_bf16_to_f32(P->bh[(j + r) * ldb + q]);
      put(P, i0 + i, j + r, t);
    }
}
/* m = 1 (batch-1 decode): one weight row at a time, 4 accumulators (128 bf16 = 256 bytes per
 * step), and a software prefetch GEMV_PF bytes ahead of the read position along the contiguous
 * rows (into the next rows near a row's end). A single sequential stream per thread with a
 * prefetch a few KiB ahead streams at the memory roofline; 4 interleaved rows (nt_block_dp)
 * measured ~0.65-0.75 of it (BENCHMARKS.md, issue 12). pend: end of the rows this call reads
 * (no prefetch past it). */
#define GEMV_PF 4096
static inline void nt_row_dp1(const gemm_prob* P, const uint16_t* ah, const float* ar, int64_t j, const char* pend) {
  const int64_t k = P->k;
  const uint16_t* w = P->bh + j * P->ldb;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t p = 0;
  for (; p + 128 <= k; p += 128) {
    const char* f = (const char*)(w + p) + GEMV_PF;
    if (f < pend) {
      _mm_prefetch(f, _MM_HINT_T1);
      _mm_prefetch(f + 64, _MM_HINT_T1);
      _mm_prefetch(f + 128, _MM_HINT_T1);
      _mm_prefetch(f + 192, _MM_HINT_T1);
    }
    a0 = _mm512_dpbf16_ps(a0, as_bh(_mm512_loadu_si512((const void*)(ah + p))), as_bh(_mm512_loadu_si512((const void*)(w + p))));
    a1 = _mm512_dpbf16_ps(a1, as_bh(_mm512_loadu_si512((const void*)(ah + p + 32))), as_bh(_mm512_loadu_si512((const void*)(w + p + 32))));
    a2 = _mm512_dpbf16_ps(a2, as_bh(_mm512_loadu_si512((const void*)(ah + p + 64))), as_bh(_mm512_loadu_si512((const void*)(w + p + 64))));
    a3 = _mm512_dpbf16_ps(a3, as_bh(_mm512_loadu_si512((const void*)(ah + p + 96))), as_bh(_mm512_loadu_si512((const void*)(w + p + 96))));
  }
  for (; p + 32 <= k; p += 32)
    a0 = _mm512_dpbf16_ps(a0, as_bh(_mm512_loadu_si512((const void*)(ah + p))), as_bh(_mm512_loadu_si512((const void*)(w + p))));
  float t = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; p < k; p++) t += ar[p] * gemm_bf16_to_f32(w[p]);
  put(P, 0, j, t);
}
static inline __attribute__((always_inline)) void nt_block_dp(const gemm_prob* P, const uint16_t* ah, const float* ar,
                                                              int64_t j, const int M, const int R, const int pf) {
  nt_block_dp_at(P, ah, ar, 0, j, M, R, pf);
}
#endif

/* m > 4 (several decode rows: continuous batching): per block of R weight rows, every group of
 * up to 4 A rows in turn, so each weight row is streamed from memory once and re-read from L1
 * by the later groups. RG: weight rows per block (the accumulators of 4 A rows x RG stay in
 * registers: 16 on AVX-512, 8 on AVX2). */
#if defined(DSV3_ISA_AVX512)
#define RG 4
#else
#define RG 2
#endif
#ifdef V
static inline __attribute__((always_inline)) void nt_group(const gemm_prob* P, const float* ar, int64_t i0, int64_t j, int M,
                                                           const int R, const int bf, const int pf) {
  const int64_t k = P->k;
  const float* a = ar + i0 * k;
  switch (M) {
    case 1: nt_block_at(P, a, i0, j, 1, R, 1, bf, pf); break;
    case 2: nt_block_at(P, a, i0, j, 2, R, 1, bf, pf); break;
    case 3: nt_block_at(P, a, i0, j, 3, R, 1, bf, pf); break;
    default: nt_block_at(P, a, i0, j, 4, R, 1, bf, pf); break;
  }
}
#endif
#if defined(DSV3_ISA_AVX512)
static inline __attribute__((always_inline)) void nt_group_dp(const gemm_prob* P, const uint16_t* ah, const float* ar, int64_t i0,
                                                              int64_t j, int M, const int R, const int pf) {
  const int64_t k = P->k;
  const uint16_t* h = ah + i0 * k;
  const float* a = ar + i0 * k;
  switch (M) {
    case 1: nt_block_dp_at(P, h, a, i0, j, 1, R, pf); break;
    case 2: nt_block_dp_at(P, h, a, i0, j, 2, R, pf); break;
    case 3: nt_block_dp_at(P, h, a, i0, j, 3, R, pf); break;
    default: nt_block_dp_at(P, h, a, i0, j, 4, R, pf); break;
  }
}
#endif

#ifdef V
/* m >= 2 rows against narrow fp32 W rows (k <= NARROW): as the m = 1 path, the W rows are read
 * one at a time in memory order (the next one prefetched), every A row against each (groups of 4
 * from L1), with the m = 1 path's accumulators (U = 2, one output's own chains): each output is
 * the value m = 1 gives it, and interleaving 4 short rows ran at about half their streaming rate
 * (the batched decode / verification forward, issue 11). */
static void nt_rows_narrow(const gemv_ctx* X, int64_t j0, int64_t j1) {
  const gemm_prob* P = X->P;
  const int m = (int)P->m;
  for (int64_t j = j0; j < j1; j++) {
    const int pf = j + 2 <= j1;
    for (int i0 = 0; i0 < m; i0 += 4) {
      const float* a = X->ar + i0 * P->k;
      switch (m - i0 < 4 ? m - i0 : 4) {
        case 1: nt_block_at(P, a, i0, j, 1, 1, 2, 0, pf && i0 == 0); break;
        case 2: nt_block_at(P, a, i0, j, 2, 1, 2, 0, pf && i0 == 0); break;
        case 3: nt_block_at(P, a, i0, j, 3, 1, 2, 0, pf && i0 == 0); break;
        default: nt_block_at(P, a, i0, j, 4, 1, 2, 0, pf && i0 == 0); break;
      }
    }
  }
}

static void nt_range_multi(const gemv_ctx* X, int64_t j0, int64_t j1) {
  const gemm_prob* P = X->P;
  const int m = (int)P->m;
  int64_t j = j0;
  if (!P->bf16 && P->k <= NARROW) {
    if (!ISA_FN(gemm_rows_tile)(P, X->ar, j0, j1)) nt_rows_narrow(X, j0, j1); /* same bits (gemm_rows_tile.c) */
    return;
  }
#if defined(DSV3_ISA_AVX512)
  if (P->dp) {
    for (; j + 4 <= j1; j += 4)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group_dp(P, X->ah, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, 4, i0 == 0 && j + 8 <= P->n);
    for (; j < j1; j++)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group_dp(P, X->ah, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, 1, 0);
    return;
  }
#endif
  if (P->bf16) {
    for (; j + RG <= j1; j += RG)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group(P, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, RG, 1, i0 == 0 && j + 2 * RG <= P->n);
    for (; j < j1; j++)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group(P, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, 1, 1, 0);
  } else {
    for (; j + RG <= j1; j += RG)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group(P, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, RG, 0, i0 == 0 && j + 2 * RG <= P->n);
    for (; j < j1; j++)
      for (int i0 = 0; i0 < m; i0 += 4) nt_group(P, X->ar, i0, j, m - i0 < 4 ? m - i0 : 4, 1, 0, 0);
  }
}
#endif

/* Outputs [j0, j1) for B^T. */
static void nt_range(const gemv_ctx* X, int64_t j0, int64_t j1) {
  const gemm_prob* P = X->P;
  const int m = (int)P->m;
  const float* ar = X->ar;
  int64_t j = j0;
#ifdef V
  if (m > 4) {
    nt_range_multi(X, j0, j1);
    return;
  }
#endif
#if defined(DSV3_ISA_AVX512)
  if (P->dp && m == 1) {
    const char* pend = (const char*)(P->bh + (j1 - 1) * P->ldb + P->k);
    for (; j < j1; j++) nt_row_dp1(P, X->ah, ar, j, pend);
    return;
  }
  if (P->dp) {
#define DP_CASE(M)                                                                  \
  case M:                                                                           \
    for (; j + 4 <= j1; j += 4) nt_block_dp(P, X->ah, ar, j, M, 4, j + 8 <= P->n); \
    for (; j < j1; j++) nt_block_dp(P, X->ah, ar, j, M, 1, 0);                      \
    break;
    /* M*4 accumulators (at most 16 of the 32 zmm registers) */
    switch (m) {
      DP_CASE(1)
      DP_CASE(2)
      DP_CASE(3)
      default: DP_CASE(4)
    }
#undef DP_CASE
    return;
  }
#endif
#ifdef V
#define NT_LOOP(M, R, U)                                                             \
  if (P->bf16) {                                                                     \
    for (; j + (R) <= j1; j += (R)) nt_block(P, ar, j, M, R, U, 1, j + 2 * (R) <= P->n); \
    for (; j < j1; j++) nt_block(P, ar, j, M, 1, U, 1, 0);                           \
  } else {                                                                           \
    for (; j + (R) <= j1; j += (R)) nt_block(P, ar, j, M, R, U, 0, j + 2 * (R) <= P->n); \
    for (; j < j1; j++) nt_block(P, ar, j, M, 1, U, 0, 0);                           \
  }
  /* M*R*U accumulators: 8 on AVX2 (16 registers), up to 16 on AVX-512 (32 registers) */
  if (P->bf16 && m == 1) {
    const char* pend = (const char*)(P->bh + (j1 - 1) * P->ldb + P->k);
    for (; j < j1; j++) nt_row_bf1(P, ar, j, pend);
    return;
  }
  if (!P->bf16 && m == 1 && P->k <= NARROW) {
    for (; j + 2 <= j1; j++) nt_block(P, ar, j, 1, 1, 2, 0, 1); /* prefetches row j+1 */
    for (; j < j1; j++) nt_block(P, ar, j, 1, 1, 2, 0, 0);
    return;
  }
  if (!P->bf16 && P->k <= NARROW) { /* m = 2 .. 4 */
    if (!ISA_FN(gemm_rows_tile)(P, X->ar, j0, j1)) nt_rows_narrow(X, j0, j1); /* same bits (gemm_rows_tile.c) */
    return;
  }
  switch (m) {
    case 1: NT_LOOP(1, 4, 2); break;
#if defined(DSV3_ISA_AVX512)
    case 2: NT_LOOP(2, 4, 2); break;
    case 3: NT_LOOP(3, 4, 1); break;
    default: NT_LOOP(4, 4, 1); break;
#else
    case 2: NT_LOOP(2, 4, 1); break;
    case 3: NT_LOOP(3, 2, 1); break;
    default: NT_LOOP(4, 2, 1); break;
#endif
  }
#undef NT_LOOP
#else
  const int64_t k = P->k, ldb = P->ldb;
  for (; j < j1; j++)
    for (int i = 0; i < m; i++) {
      const float* a = ar + i * k;
      float t = 0.0f;
      if (P->bf16) {
        const uint16_t* w = P->bh + j * ldb;
        for (int64_t p = 0; p < k; p++) t += a[p] * gemm_bf16_to_f32(w[p]);
      } else {
        const float* w = P->bf + j * ldb;
        for (int64_t p = 0; p < k; p++) t += a[p] * w[p];
      }
      put(P, i, j, t);
    }
#endif
}

#endif
