/* The B half of the small-m GEMM (gemm_gemv.c, which includes this file once after its gemv_ctx,
 * put and vector macros): B stored [k,n], y[0:cw] += a[p] * B[p, 0:cw] over groups of RB rows
 * into a cache-resident column block of CW values; nn_range computes outputs [j0, j1). */
#ifndef DSV3_ISA_GEMM_GEMV_NN_H
#define DSV3_ISA_GEMM_GEMV_NN_H

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

#endif
