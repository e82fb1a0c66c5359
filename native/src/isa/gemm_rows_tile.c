/* Small-m GEMM against narrow float32 weight rows, register-tiled (AVX-512; issue 11, batched
 * decode): C[i, j] = alpha * A[i, :] . W[j, :] (+ beta C) for m = 2..16 rows, W^T stored [n, k],
 * k a multiple of 32 and <= 1024 (every Linear of the small models: the LM head, the attention
 * projections, the dense and shared MLPs at batch 2..16).
 *
 * gemm_gemv.c's nt_rows_narrow computes each output on its own: one A row against one W row,
 * 2 accumulator chains, then a horizontal sum. That costs 5 vector loads per 4 FMAs (the A row
 * is re-read from L1 for every W row) plus a full horizontal sum per output, so an 8-row step
 * runs well below the FMA rate (the 8-row LM head took ~3x the 1-row head, whose weights it
 * reads once). Here a tile of up to 4 A rows x 2 W rows (16 accumulators; 3 W rows when m <= 4)
 * shares every load: 6 loads per 8 FMAs at 4 x 2, and the outputs of a tile are reduced together by
 * transpose-and-add trees (8 outputs per tree).
 *
 * The values are those of the one-row path, bit for bit: each output keeps the one-row path's
 * two chains (even / odd 16-float vectors of k, FMA in order of p), adds them lane by lane, and
 * the tree adds lanes in exactly the pairs of _mm512_reduce_add_ps (GCC's expansion and the
 * SIMDe verification build's: lane i with i+8, then i+4, then i+2, then i+1; float addition is
 * commutative, so only the pairing matters). test/gemm-rows-narrow.test.ts checks every row of
 * an m-row call against its one-row call. */
#include "gemm_isa.h"

#if defined(DSV3_ISA_AVX512)
static inline void put(const gemm_prob* P, int64_t i, int64_t j, float s) {
  float* c = P->c + i * P->ldc + j;
  *c = P->beta == 0.0f ? P->alpha * s : P->alpha * s + P->beta * *c;
}

/* v[0..7] (output o = 2 * row + weight row) -> out[16] with output o's sum at lane 4 * (o % 4) + (o / 4). */
static inline __attribute__((always_inline)) void reduce8(const __m512 v[8], float out[16]) {
  __m512 u[4];
  for (int q = 0; q < 4; q++) /* lane i + lane i+8: the two 256-bit halves */
    u[q] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * q], v[2 * q + 1], 0x44), _mm512_shuffle_f32x4(v[2 * q], v[2 * q + 1], 0xEE));
  __m512 y[2];
  for (int q = 0; q < 2; q++) /* + lane i+4: the two 128-bit quarters of each half */
    y[q] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * q], u[2 * q + 1], 0x88), _mm512_shuffle_f32x4(u[2 * q], u[2 * q + 1], 0xDD));
  /* + lane i+2, then + lane i+1, inside each 128-bit lane */
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x44), _mm512_shuffle_ps(y[0], y[1], 0xEE));
  const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(z, z, 0x88), _mm512_shuffle_ps(z, z, 0xDD));
  _mm512_storeu_ps(out, f);
}

/* Rows i0 .. i0+M-1 of A (ar: [m][k]) against R = 2 or 3 W rows from j (with R = 2, j1 is the
 * second row; j1 = j for a lone last row: its outputs are computed twice and written once);
 * pf: prefetch the next R W rows along the way. */
static inline __attribute__((always_inline)) void tile(const gemm_prob* P, const float* ar, int64_t i0, int64_t j, int64_t j1,
                                                       const int M, const int R, const int pf) {
  const int64_t k = P->k, ldb = P->ldb;
  const float* w[3] = {P->bf + j * ldb, P->bf + j1 * ldb, P->bf + (j + 2) * ldb};
  const float* a = ar + i0 * k;
  __m512 c0[4][3], c1[4][3];
  for (int i = 0; i < 4; i++)
    for (int r = 0; r < 3; r++) c0[i][r] = c1[i][r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; p += 32) {
    if (pf)
      for (int r = 0; r < R; r++) {
        __builtin_prefetch(w[0] + (R + r) * ldb + p);
        __builtin_prefetch(w[0] + (R + r) * ldb + p + 16);
      }
    __m512 x[3];
    for (int r = 0; r < R; r++) x[r] = _mm512_loadu_ps(w[r] + p);
    for (int i = 0; i < M; i++) {
      const __m512 av = _mm512_loadu_ps(a + i * k + p);
      for (int r = 0; r < R; r++) c0[i][r] = _mm512_fmadd_ps(av, x[r], c0[i][r]);
    }
    for (int r = 0; r < R; r++) x[r] = _mm512_loadu_ps(w[r] + p + 16);
    for (int i = 0; i < M; i++) {
      const __m512 av = _mm512_loadu_ps(a + i * k + p + 16);
      for (int r = 0; r < R; r++) c1[i][r] = _mm512_fmadd_ps(av, x[r], c1[i][r]);
    }
  }
  /* weight rows 0, 1: outputs o = 2 * i + r of the first tree; row 2: o = i of the second */
  __m512 v[8], v2[8];
  for (int i = 0; i < 4; i++) {
    for (int r = 0; r < 2; r++) v[2 * i + r] = i < M ? _mm512_add_ps(c0[i][r], c1[i][r]) : _mm512_setzero_ps();
    v2[i] = R == 3 && i < M ? _mm512_add_ps(c0[i][2], c1[i][2]) : _mm512_setzero_ps();
    v2[4 + i] = _mm512_setzero_ps();
  }
  float out[16], out2[16];
  reduce8(v, out);
  if (R == 3) reduce8(v2, out2);
  for (int i = 0; i < M; i++) {
    put(P, i0 + i, j, out[4 * ((2 * i) % 4) + (2 * i) / 4]);
    if (j1 != j) put(P, i0 + i, j1, out[4 * ((2 * i + 1) % 4) + (2 * i + 1) / 4]);
    if (R == 3) put(P, i0 + i, j + 2, out2[4 * i]);
  }
}
#endif

/* Outputs [j0, j1) of an m-row B^T problem (A already copied to ar [m][k]) on the calling thread;
 * returns 0 (nothing done) unless this is the AVX-512 build and the problem is float32 with
 * 2 <= m and k a multiple of 32, at most 1024. */
int ISA_FN(gemm_rows_tile)(const gemm_prob* P, const float* ar, int64_t j0, int64_t j1) {
#if defined(DSV3_ISA_AVX512)
  const int64_t m = P->m, k = P->k;
  if (P->bf16 || !P->tb || m < 2 || k % 32 != 0 || k > 1024 || k == 0) return 0;
  int64_t j = j0;
  /* 3 W rows per tile up to 4 A rows (one group; m = 2: 0.85x the time of 2 W rows on the
   * 4096 x 256 head), 2 above (m = 8: 3 W rows ran ~5% slower) */
  if (m <= 4)
    for (; j + 3 <= j1; j += 3) {
      const int pf = j + 6 <= j1;
      switch ((int)m) {
        case 2: tile(P, ar, 0, j, j + 1, 2, 3, pf); break;
        case 3: tile(P, ar, 0, j, j + 1, 3, 3, pf); break;
        default: tile(P, ar, 0, j, j + 1, 4, 3, pf); break;
      }
    }
  for (; j < j1; j += 2) {
    const int64_t jb = j + 1 < j1 ? j + 1 : j;
    const int pf = j + 4 <= j1;
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int pfi = pf && i0 == 0;
      switch (m - i0 < 4 ? (int)(m - i0) : 4) {
        case 1: tile(P, ar, i0, j, jb, 1, 2, pfi); break;
        case 2: tile(P, ar, i0, j, jb, 2, 2, pfi); break;
        case 3: tile(P, ar, i0, j, jb, 3, 2, pfi); break;
        default: tile(P, ar, i0, j, jb, 4, 2, pfi); break;
      }
    }
  }
  return 1;
#else
  (void)P;
  (void)ar;
  (void)j0;
  (void)j1;
  return 0;
#endif
}
