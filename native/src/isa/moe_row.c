/* One token's experts in one call (moe_row.h): two pool phases instead of a barrier per GEMV.
 *   phase 1, tasks of RB rows of one expert: g = gate x, u = up x, act = silu(g) * u
 *            (FP8: act *= alpha, as the engine scales a routed expert's activations);
 *   between (calling thread): the down GEMV's operand prep (bf16 copies of act, FP8 exponents);
 *   phase 2, tasks of RB outputs of h: for each expert in order, h[rows] += its down rows.
 * Every output is computed by the same row kernels as gemmBf16 / linearFp8 (gemm_gemv_rows,
 * fp8_gemv_rows), which give a row the same value however the rows are split, and each h
 * element receives the experts' contributions in the same order as the separate calls: the
 * result is bit-identical to them. */
#include "fp8_weight_isa.h"
#include "moe_row.h"
#include "threadpool.h"

#define RB 128 /* rows per task: one FP8 scale block */

typedef struct {
  const dsv3_moe_row_args* a;
  int64_t off[MOE_ROW_MAX + 1]; /* expert e's intermediate rows are [off[e], off[e+1]) of g/u/act */
  int first[MOE_ROW_MAX + 1];   /* phase-1 tasks of expert e: [first[e], first[e+1]) */
  float *g, *u, *act, *ar, *xr;
  uint16_t *xh, *ah;
  int exx;                   /* fp8: exponent of x */
  int exa[MOE_ROW_MAX];      /* fp8: exponent of expert e's (scaled) activations */
  volatile int fail;
} moe_job;

static void phase1(void* ctx, int t, int thread) {
  (void)thread;
  moe_job* J = (moe_job*)ctx;
  const dsv3_moe_row_args* a = J->a;
  int e = 0;
  while (t >= J->first[e + 1]) e++;
  const int64_t I = a->inter[e], o = J->off[e];
  const int64_t j0 = (int64_t)(t - J->first[e]) * RB, j1 = j0 + RB < I ? j0 + RB : I;
  if (!a->fp8) {
    gemm_prob P;
    memset(&P, 0, sizeof P);
    P.tb = 1;
    P.bf16 = 1;
    P.dp = a->dp;
    P.m = 1;
    P.n = I;
    P.k = a->D;
    P.alpha = 1.0f;
    P.beta = 0.0f;
    P.a = a->x;
    P.lda = a->D;
    P.ldb = a->D;
    P.ldc = I;
    P.bh = a->bits[3 * e];
    P.c = J->g + o;
    ISA_FN(gemm_gemv_rows)(&P, J->xr, J->xh, j0, j1);
    P.bh = a->bits[3 * e + 1];
    P.c = J->u + o;
    ISA_FN(gemm_gemv_rows)(&P, J->xr, J->xh, j0, j1);
  } else {
    fp8_prob P = {1, I, a->D, (a->D + FP8_BLOCK - 1) / FP8_BLOCK, a->x, a->codes[3 * e], a->scales[3 * e], 0.0f, J->g + o, a->vbmi};
    if (ISA_FN(fp8_gemv_rows)(&P, &J->exx, j0, j1)) J->fail = 1;
    P.w = a->codes[3 * e + 1];
    P.s = a->scales[3 * e + 1];
    P.y = J->u + o;
    if (ISA_FN(fp8_gemv_rows)(&P, &J->exx, j0, j1)) J->fail = 1;
  }
  float* act = J->act + o;
  a->silu(J->g + o + j0, J->u + o + j0, act + j0, j1 - j0);
  if (a->fp8) {
    const float s = a->alpha[e];
    for (int64_t j = j0; j < j1; j++) act[j] = act[j] * s;
  }
}

static void phase2(void* ctx, int t, int thread) {
  (void)thread;
  moe_job* J = (moe_job*)ctx;
  const dsv3_moe_row_args* a = J->a;
  const int64_t D = a->D, d0 = (int64_t)t * RB, d1 = d0 + RB < D ? d0 + RB : D;
  for (int e = 0; e < a->E; e++) {
    const int64_t I = a->inter[e], o = J->off[e];
    if (!a->fp8) {
      if (a->alpha[e] == 0.0f) continue; /* gemmBf16 with alpha 0 leaves C * beta = C */
      gemm_prob P;
      memset(&P, 0, sizeof P);
      P.tb = 1;
      P.bf16 = 1;
      P.dp = a->dp;
      P.m = 1;
      P.n = D;
      P.k = I;
      P.alpha = a->alpha[e];
      P.beta = 1.0f;
      P.a = J->act + o;
      P.lda = I;
      P.bh = a->bits[3 * e + 2];
      P.ldb = I;
      P.c = a->h;
      P.ldc = D;
      ISA_FN(gemm_gemv_rows)(&P, J->ar + o, J->ah ? J->ah + o : NULL, d0, d1);
    } else {
      fp8_prob P = {1, D, I, (I + FP8_BLOCK - 1) / FP8_BLOCK, J->act + o, a->codes[3 * e + 2], a->scales[3 * e + 2], 1.0f, a->h, a->vbmi};
      if (ISA_FN(fp8_gemv_rows)(&P, &J->exa[e], d0, d1)) J->fail = 1;
    }
  }
}

int ISA_FN(dsv3_moe_row)(const dsv3_moe_row_args* a) {
  if (a->E <= 0 || a->E > MOE_ROW_MAX || a->D <= 0) return 0;
  moe_job J;
  memset(&J, 0, sizeof J);
  J.a = a;
  for (int e = 0; e < a->E; e++) {
    J.off[e + 1] = J.off[e] + a->inter[e];
    J.first[e + 1] = J.first[e] + (int)((a->inter[e] + RB - 1) / RB);
  }
  const int64_t S = J.off[a->E], D = a->D;
  J.g = a->scratch;
  J.u = J.g + S;
  J.act = J.u + S;
  J.ar = J.act + S;
  J.xr = J.ar + S;
  J.xh = (uint16_t*)(J.xr + D);
  J.ah = (uint16_t*)(J.xr + 2 * D);
  if (!a->fp8) { /* x copied as gemm_gemv copies A: rounded to bf16 (+ its bits for VDPBF16PS) */
    gemm_prob P;
    memset(&P, 0, sizeof P);
    P.bf16 = 1;
    P.dp = a->dp;
    P.m = 1;
    P.k = D;
    P.a = a->x;
    P.lda = D;
    ISA_FN(gemm_gemv_prep_a)(&P, J.xr, a->dp ? J.xh : NULL);
  } else {
    J.exx = ISA_FN(fp8_gemv_exponent)(a->x, D);
  }
  dsv3_parallel_for(J.first[a->E], phase1, &J);
  if (J.fail) return -1;
  for (int e = 0; e < a->E; e++) {
    const int64_t I = a->inter[e], o = J.off[e];
    if (!a->fp8) {
      gemm_prob P;
      memset(&P, 0, sizeof P);
      P.bf16 = 1;
      P.dp = a->dp;
      P.m = 1;
      P.k = I;
      P.a = J.act + o;
      P.lda = I;
      ISA_FN(gemm_gemv_prep_a)(&P, J.ar + o, a->dp ? J.ah + o : NULL);
    } else {
      J.exa[e] = ISA_FN(fp8_gemv_exponent)(J.act + o, I);
    }
  }
  if (!a->dp) J.ah = NULL;
  dsv3_parallel_for((int)((D + RB - 1) / RB), phase2, &J);
  return J.fail ? -1 : 0;
}
