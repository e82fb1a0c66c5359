/* Small-m GEMM (m <= GEMV_MAX_M: decode, x[1..16,k] times a weight; above 4 rows in groups of 4): memory bound, so B is
 * streamed exactly once straight from the caller's buffer, never packed; n is split into
 * column chunks claimed by the pool threads. op(A) (tiny) is first copied to a contiguous
 * [m][k] buffer, rounded to bf16 for gemmBf16 (and as bf16 bits for the VDPBF16PS path).
 *   B^T (linear layer, B = W stored [n,k]): each output is a dot product of an A row with a
 *     contiguous W row; R rows of W at a time share the A loads, U vectors of k per step give
 *     M*R*U independent FMA chains.
 *   B (stored [k,n]): y[0:cw] += a[p] * B[p, 0:cw] over groups of RB rows, y held in a
 *     cache-resident buffer; each B row is read as one long sequential segment.
 * bf16 weights are read as 2-byte values and widened in registers (or fed to VDPBF16PS),
 * which halves the memory traffic compared with fp32. */
#include "gemm_isa.h"
#include "threadpool.h"

/* NN column block: B rows are read in segments of CW values (16 KB fp32), whole pages, so
 * the hardware prefetcher and the TLB see long sequential runs; y (M x CW floats, 16-64 KB,
 * L1/L2) is updated once per RB rows. */
#define CW 4096
/* One decode row against narrow fp32 rows (<= NARROW values, 4 KiB; e.g. a head's absorbed
 * W^UK [128][512] or W^UV [128][512] of MLA): the rows are read one at a time, in memory order,
 * instead of 4 rows interleaved, which streamed such 2 KiB rows at ~0.5 of one sequential run
 * (BENCHMARKS.md, issue 12). Each output sums exactly as before (NN: over rows p = 0, 1, ... in
 * order; NT: one row's own accumulators), so the results are identical. */
#define NARROW 1024

typedef struct {
  const gemm_prob* P;
  const float* ar;    /* [m][k] */
  const uint16_t* ah; /* [m][k] bf16 bits (dp path) */
  int64_t chunk;
  volatile int fail;
} gemv_ctx;

static inline void put(const gemm_prob* P, int64_t i, int64_t j, float s) {
  float* c = P->c + i * P->ldc + j;
  *c = P->beta == 0.0f ? P->alpha * s : P->alpha * s + P->beta * *c;
}
static inline float bval(const gemm_prob* P, int64_t off) {
  return P->bf16 ? gemm_bf16_to_f32(P->bh[off]) : P->bf[off];
}

#if defined(DSV3_ISA_AVX512)
#define V __m512
#define VZERO _mm512_setzero_ps()
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VHSUM(v) _mm512_reduce_add_ps(v)
static inline V widen(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
#elif defined(DSV3_ISA_AVX2)
#define V __m256
#define VZERO _mm256_setzero_ps()
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
static inline float VHSUM(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline V widen(const uint16_t* p) { return gemm_widen_bf16_v8(p); }
#endif

#define W GEMM_VEC

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

/* y[i][0:cw] += sum_r ar[i][p+r] * B[p+r][jb : jb+cw] for RB rows starting at p. */
static inline __attribute__((always_inline)) void nn_rows(const gemm_prob* P, const float* ar, int64_t p, int64_t jb,
                                                          int cw, float* yt, const int M, const int RB, const int bf) {
  const int64_t k = P->k, ldb = P->ldb;
  int c = 0;
#ifdef V
  V av[4][4];
  for (int i = 0; i < M; i++)
    for (int r = 0; r < RB; r++) av[i][r] = VSET1(ar[i * k + p + r]);
  for (; c + W <= cw; c += W) {
    V b[4];
    for (int r = 0; r < RB; r++)
      b[r] = bf ? widen(P->bh + (p + r) * ldb + jb + c) : VLOADU(P->bf + (p + r) * ldb + jb + c);
    for (int i = 0; i < M; i++) {
      V y = VLOADU(yt + i * CW + c);
      for (int r = 0; r < RB; r++) y = VFMA(av[i][r], b[r], y);
      VSTOREU(yt + i * CW + c, y);
    }
  }
#endif
  for (; c < cw; c++)
    for (int i = 0; i < M; i++) {
      float y = yt[i * CW + c];
      for (int r = 0; r < RB; r++) y += ar[i * k + p + r] * (bf ? gemm_bf16_to_f32(P->bh[(p + r) * ldb + jb + c]) : P->bf[(p + r) * ldb + jb + c]);
      yt[i * CW + c] = y;
    }
}

static inline __attribute__((always_inline)) void nn_block(const gemm_prob* P, const float* ar, int64_t jb, int cw,
                                                           float* yt, const int M, const int RB, const int bf) {
  int64_t p = 0;
  for (; p + RB <= P->k; p += RB) nn_rows(P, ar, p, jb, cw, yt, M, RB, bf);
  for (; p < P->k; p++) nn_rows(P, ar, p, jb, cw, yt, M, 1, bf);
}

/* Outputs [j0, j1) for B stored [k,n]. */
static void nn_range(const gemv_ctx* X, int64_t j0, int64_t j1) {
  const gemm_prob* P = X->P;
  const int m = (int)P->m;
  float* yt = (float*)ISA_FN(gemm_scratch)(0, (size_t)m * CW * sizeof(float)); /* slot 0: unused by GEMV callers */
  if (!yt) {
    ((gemv_ctx*)X)->fail = 1;
    return;
  }
  for (int64_t jb = j0; jb < j1; jb += CW) {
    const int cw = (int)(j1 - jb < CW ? j1 - jb : CW);
    for (int i = 0; i < m; i++) memset(yt + i * CW, 0, (size_t)cw * sizeof(float));
    /* M*RB broadcast registers + RB B vectors + 1 accumulator stay within 16 registers */
#define NN_CASE(M, RB)                                                      \
  case M:                                                                  \
    if (P->bf16) nn_block(P, ar, jb, cw, yg, M, RB, 1);                    \
    else if (M == 1 && cw <= NARROW) nn_block(P, ar, jb, cw, yg, 1, 1, 0);  \
    else nn_block(P, ar, jb, cw, yg, M, RB, 0);                            \
    break;
    for (int i0 = 0; i0 < m; i0 += 4) { /* groups of up to 4 rows (m > 4: several decode rows) */
      const float* ar = X->ar + (int64_t)i0 * P->k;
      float* yg = yt + (int64_t)i0 * CW;
      switch (m - i0 < 4 ? m - i0 : 4) {
        NN_CASE(1, 4)
        NN_CASE(2, 4)
        NN_CASE(3, 2)
        default: NN_CASE(4, 2)
      }
    }
#undef NN_CASE
    for (int i = 0; i < m; i++)
      for (int c = 0; c < cw; c++) put(P, i, jb + c, yt[i * CW + c]);
  }
}

static void gemv_task(void* ctx, int t, int thread) {
  (void)thread;
  const gemv_ctx* X = (const gemv_ctx*)ctx;
  const int64_t j0 = (int64_t)t * X->chunk;
  const int64_t j1 = j0 + X->chunk < X->P->n ? j0 + X->chunk : X->P->n;
  if (X->P->tb) nt_range(X, j0, j1);
  else nn_range(X, j0, j1);
}

/* The pieces of gemm_gemv for callers that schedule the rows themselves (moe_row.c): op(A)
 * copied as gemm_gemv does (ar [m][k], rounded to bf16 for bf16 problems; ah the bf16 bits when
 * P->dp), and outputs [j0, j1) of a B^T problem computed on the calling thread. Each output's
 * value does not depend on how [0, n) is cut, so any split gives gemm_gemv's result. */
void ISA_FN(gemm_gemv_prep_a)(const gemm_prob* P, float* ar, uint16_t* ah) {
  for (int64_t i = 0; i < P->m; i++)
    for (int64_t p = 0; p < P->k; p++) {
      float x = P->ta ? P->a[p * P->lda + i] : P->a[i * P->lda + p];
      ar[i * P->k + p] = P->bf16 ? gemm_round_bf16(x) : x;
      if (ah) ah[i * P->k + p] = gemm_bf16_bits(x);
    }
}
void ISA_FN(gemm_gemv_rows)(const gemm_prob* P, const float* ar, const uint16_t* ah, int64_t j0, int64_t j1) {
  gemv_ctx X = {P, ar, ah, P->n, 0};
  nt_range(&X, j0, j1);
}

int ISA_FN(gemm_gemv)(const gemm_prob* P) {
  const int64_t m = P->m, n = P->n, k = P->k;
  float* ar = (float*)ISA_FN(gemm_scratch)(2, (size_t)(m * k) * sizeof(float));
  uint16_t* ah = P->dp ? (uint16_t*)ISA_FN(gemm_scratch)(3, (size_t)(m * k) * sizeof(uint16_t)) : NULL;
  if (!ar || (P->dp && !ah)) return -1;
  for (int64_t i = 0; i < m; i++)
    for (int64_t p = 0; p < k; p++) {
      const int64_t off = P->ta ? p * P->lda + i : i * P->lda + p;
      float x = P->ah ? gemm_bf16_to_f32(P->ah[off]) : P->a[off]; /* gemm_bf16ab: exact, rounding keeps it */
      ar[i * k + p] = P->bf16 ? gemm_round_bf16(x) : x;
      if (ah) ah[i * k + p] = gemm_bf16_bits(x);
    }
  gemv_ctx X = {P, ar, ah, n, 0};
  /* Split n into chunks (multiples of 16 columns), about 4 per thread so that a thread slowed
   * by the OS does not hold up the call; small problems run on the calling thread. For B
   * stored [k,n] a chunk is a column stripe, read as one segment per row: keep segments at
   * >= 1024 columns (a 4 KB page of fp32) unless that would leave threads idle. */
  const int T = dsv3_threads();
  int64_t tasks = 1;
  if (T > 1 && n * k >= 65536) {
    tasks = 4 * (int64_t)T;
    if (!P->tb && tasks > n / 1024) tasks = n / 1024 > T ? n / 1024 : T;
    if (tasks > (n + 15) / 16) tasks = (n + 15) / 16;
    if (tasks < 1) tasks = 1;
  }
  X.chunk = ((n + tasks - 1) / tasks + 15) / 16 * 16;
  tasks = (n + X.chunk - 1) / X.chunk;
  dsv3_parallel_for((int)tasks, gemv_task, &X);
  return X.fail ? -1 : 0;
}
