/* Tiled (flash-style) causal attention, backward: FlashAttention-2 Alg. 2, recomputing P from the
 * forward's lse (the equations, the task split and the packed mode are described at the top of
 * isa/attention.c; the helpers shared with the forward are in attn_chunk.h). */
#include <string.h>
#include "../fused.h"
#include "attn_chunk.h"
#include "attn_tile.h"
#include "simd.h"


void ISA_FN(dsv3_attn_bwd_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int64_t S = c->splits, s = task % S, bg = task / S, Rm = c->rows_per_chunk;
  const int64_t dqk = c->dqk, dv = c->dv, dqkp = dsv3_pad(dqk), dvp = dsv3_pad(dv), tk = c->tk;
  const int64_t b = bg / c->kv_heads, g = bg % c->kv_heads;
  const float* kbase = c->k + off3(c->ks, b, 0, g);
  const float* vbase = c->v + off3(c->vs, b, 0, g);
  float* dkbase = c->dk + off3(c->ks, b, 0, g);
  float* dvbase = c->dv_out + off3(c->vs, b, 0, g);
  /* this task owns key tiles s, s+S, ...: zero their dk/dv rows (dk and dv may even be views
   * of one buffer: both are zeroed before either is accumulated, so they then sum) */
  for (int64_t kb = s; kb * BK < tk; kb += S)
    for (int64_t j = kb * BK; j < min64(tk, kb * BK + BK); j++) {
      memset(dkbase + j * c->ks[1], 0, (size_t)dqk * sizeof(float));
      memset(dvbase + j * c->vs[1], 0, (size_t)dv * sizeof(float));
    }
  float* QT = c->scratch + (size_t)thread * c->scratch_floats; /* [dqk][Rp] q * scale, transposed */
  float* dOT = QT + dqk * Rm;                                   /* [dv][Rp]  dout, transposed     */
  float* Qn = dOT + dv * Rm;                                    /* [R][dqkp] q                    */
  float* dQc = Qn + Rm * dqkp;                                  /* [R][dqkp] dq of the chunk      */
  float* dOn = dQc + Rm * dqkp;                                 /* [R][dvp]  dout                 */
  float* ST = dOn + Rm * dvp;                                   /* [BK][Rp]  S^T, then P^T        */
  float* dPT = ST + BK * Rm;                                    /* [BK][Rp]  dP^T, then dS^T      */
  float *lser = dPT + BK * Rm, *D = lser + Rm, *lim = D + Rm;
  const vf vscale = vset1(c->scale);
  /* Packed mode (see pack_rows), when the caller gave scratch for it past the fused.h layout:
   * this task's key/value rows are packed once, and its dK/dV rows are summed in contiguous
   * scratch and added to the zeroed outputs at the end. */
  const size_t pk_floats = (size_t)(tk * 2 * (dqkp + dvp));
  const int packed = c->scratch_floats >= dsv3_attn_bwd_scratch(c) + pk_floats;
  const int64_t kend_all = min64(tk, chunk_of(c, bg, c->chunks - 1).maxlim + 1); /* keys any row sees */
  const int64_t ldk = packed ? dqkp : c->ks[1], ldv = packed ? dvp : c->vs[1];
  const float *kb0 = kbase, *vb0 = vbase;
  float *dkb0 = dkbase, *dvb0 = dvbase;
  if (packed) {
    float* Kp = c->scratch + (size_t)thread * c->scratch_floats + dsv3_attn_bwd_scratch(c);
    float *Vp = Kp + tk * dqkp, *dKp = Vp + tk * dvp, *dVp = dKp + tk * dqkp;
    for (int64_t kb = s; kb * BK < kend_all; kb += S) {
      const int64_t j0 = kb * BK, nk = min64(BK, kend_all - j0);
      pack_rows(Kp + j0 * dqkp, dqkp, kbase + j0 * c->ks[1], c->ks[1], nk, dqk);
      pack_rows(Vp + j0 * dvp, dvp, vbase + j0 * c->vs[1], c->vs[1], nk, dv);
      memset(dKp + j0 * dqkp, 0, (size_t)(nk * dqkp) * sizeof(float));
      memset(dVp + j0 * dvp, 0, (size_t)(nk * dvp) * sizeof(float));
    }
    kb0 = Kp, vb0 = Vp, dkb0 = dKp, dvb0 = dVp;
  }
  pf_state pf = {0}; /* the next task's rows (the napi layer runs runs of consecutive tasks on one thread) */
  if (S == 1) pf_init(c, &pf, bg + 1, 1);
  for (int64_t ch = 0; ch < c->chunks; ch++) {
    const chunk_t k = chunk_of(c, bg, ch);
    const int64_t R = k.R, Rp = k.Rp, kend = min64(tk, k.maxlim + 1);
    memset(dQc, 0, (size_t)(R * dqkp) * sizeof(float));
    if (s * BK < kend) {
      for (int64_t r = 0; r < R; r++) { /* overlap the misses of the scattered dout/out rows */
        const int64_t o = off3(c->os, b, row_i(c, &k, r), row_h(c, &k, r));
        for (int64_t e = 0; e < dv; e += 16) {
          __builtin_prefetch(c->dout + o + e);
          __builtin_prefetch(c->o + o + e);
        }
      }
      gather_qt(c, &k, QT, lim, -1.0f); /* pad rows: limit -1, always masked */
      for (int64_t r = 0; r < Rp; r++) {
        if (r < R) {
          const int64_t i = row_i(c, &k, r), h = row_h(c, &k, r);
          const float* q = c->q + off3(c->qs, b, i, h);
          const float* go = c->dout + off3(c->os, b, i, h);
          const float* o = c->o + off3(c->os, b, i, h);
          double dd = 0;
          for (int64_t d = 0; d < dqk; d++) Qn[r * dqkp + d] = q[d];
          for (int64_t e = 0; e < dv; e++) {
            dOT[e * Rp + r] = go[e];
            dOn[r * dvp + e] = go[e];
            dd += (double)go[e] * o[e];
          }
          D[r] = (float)dd;
          lser[r] = c->lse_in[(b * c->heads + h) * c->tq + i];
        } else {
          for (int64_t e = 0; e < dv; e++) dOT[e * Rp + r] = 0.0f;
          D[r] = 0.0f;
          lser[r] = 0.0f;
        }
      }
      for (int64_t kb = s; kb * BK < kend; kb += S) {
        const int64_t j0 = kb * BK, nk = min64(BK, kend - j0);
        if (pf.per > 0) pf_step(c, &pf);
        const float* Kb = kb0 + j0 * ldk;
        mm(nk, Rp, dqk, Kb, ldk, 1, QT, Rp, ST, Rp, 0);                 /* S^T  = K Q^T  */
        mm(nk, Rp, dv, vb0 + j0 * ldv, ldv, 1, dOT, Rp, dPT, Rp, 0);    /* dP^T = V dO^T */
        const int masked = j0 + nk - 1 > k.minlim;
        for (int64_t jj = 0; jj < nk; jj++) {
          const vf jv = vset1((float)(j0 + jj));
          for (int64_t rv = 0; rv < Rp; rv += VL) {
            float *sp = ST + jj * Rp + rv, *dp = dPT + jj * Rp + rv;
            vf p = vexp(vsub(vload(sp), vload(lser + rv)));
            if (masked) p = vsel_gt(jv, vload(lim + rv), p, vzero());
            vstore(sp, p);
            vstore(dp, vmul(vmul(p, vsub(vload(dp), vload(D + rv))), vscale));
          }
        }
        mm(nk, dv, R, ST, Rp, 1, dOn, dvp, dvb0 + j0 * ldv, ldv, 1);   /* dV += P^T dO */
        mm(nk, dqk, R, dPT, Rp, 1, Qn, dqkp, dkb0 + j0 * ldk, ldk, 1); /* dK += dS^T Q */
        mm(R, dqk, nk, dPT, 1, Rp, Kb, ldk, dQc, dqkp, 1);             /* dQ += dS K   */
      }
    }
    for (int64_t r = 0; r < R; r++) {
      float* dst = s == 0 ? c->dq + off3(c->qs, b, row_i(c, &k, r), row_h(c, &k, r))
                          : c->part + ((size_t)((s - 1) * c->batch * c->kv_heads + bg) * (size_t)(c->tq * c->group) +
                                       (size_t)(k.L0 + r)) * (size_t)dqkp;
      memcpy(dst, dQc + r * dqkp, (size_t)dqk * sizeof(float));
    }
  }
  if (packed) /* dk, dv (zeroed above) += the packed sums; sums, so aliased dk/dv still add */
    for (int64_t kb = s; kb * BK < kend_all; kb += S)
      for (int64_t j = kb * BK; j < min64(kend_all, kb * BK + BK); j++) {
        float *dk = dkbase + j * c->ks[1], *dvr = dvbase + j * c->vs[1];
        const float *sk = dkb0 + j * dqkp, *sv = dvb0 + j * dvp;
        add_row(dk, sk, dqk);
        add_row(dvr, sv, dv);
      }
}

/* dq += the dq contributions of splits 1..S-1 of (b, kv head) = task, in split order */
void ISA_FN(dsv3_attn_bwd_reduce_task)(const dsv3_attn_ctx* c, int task, int thread) {
  (void)thread;
  const int64_t bg = task, b = bg / c->kv_heads, g = bg % c->kv_heads, dqkp = dsv3_pad(c->dqk);
  const int64_t rows = c->tq * c->group, BG = c->batch * c->kv_heads;
  for (int64_t L = 0; L < rows; L++) {
    float* dst = c->dq + off3(c->qs, b, L / c->group, g * c->group + L % c->group);
    for (int64_t s = 1; s < c->splits; s++) {
      const float* src = c->part + ((size_t)((s - 1) * BG + bg) * (size_t)rows + (size_t)L) * (size_t)dqkp;
      for (int64_t e0 = 0; e0 < c->dqk; e0 += VL) {
        const int t = (int)min64(VL, c->dqk - e0);
        vstoret(dst + e0, vadd(vloadt(dst + e0, t, 0), vloadt(src + e0, t, 0)), t);
      }
    }
  }
}
