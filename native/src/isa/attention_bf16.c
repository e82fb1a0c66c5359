/* BF16 flash attention (attention_bf16.h): the tiles and tasks of isa/attention.c (FlashAttention
 * Alg. 1 forward, FlashAttention-2 Alg. 2 backward; DeepSeek-V3 Eq. 10) with the five matrix
 * products of a tile on bfloat16 operands and float32 accumulation, as the paper keeps
 * attention's matmuls in BF16 (§3.3, Figure 6).
 *
 * Forward, per key tile (S^T = K Q^T has the query rows as its vector dimension, as in the
 * float32 kernel):
 *   S^T[j][r] = scale * sum_d Kr[j][d] QT2[d][r]         (Kr: K rows, QT2: Q^T in d-pairs)
 *   mq' = max(mq, ceil(rowmax(S) * log2 e)),  P = exp(S - mq' ln 2),
 *   l = l * 2^(mq - mq') + rowsum(P),  O = O * 2^(mq - mq') + bf16(P) V2
 * (P written as key pairs P2[j/2][r][2] straight from the softmax loop; V2 = V in key pairs).
 * Backward, per key tile (P recomputed from lse, FlashAttention-2):
 *   S^T = K Q^T, dP^T = Vr dOT2, P = exp(S - lse), dS = P (dP - D) scale,
 *   dV += Pr^T dOn2, dK += dSr^T Qn2, dQ += dS2 K2
 * with Pr, dSr = bf16 rows [j][r] (pairs along r), dS2 = key pairs, Qn2/dOn2 = Q/dO in row
 * pairs, K2 = K in key pairs. All pad entries (odd d, odd key counts, rows past R, columns past
 * d up to the 16-float pad) are zero, so full vectors of B are always read and pairs never mix
 * a pad with data. */
#include "../attention_bf16.h"
#include "attn_bf16_tile.h"
#include "simd.h"

#define BK DSV3_ATT_BK
#define LN2F 0.693147180559945309f

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
/* rows of a tile: a whole number of vectors, and even (row pairs) */
static inline int64_t rup2(int64_t n) {
  const int64_t v = (n + VL - 1) / VL * VL;
  return (v + 1) & ~(int64_t)1;
}
static inline int64_t off3(const int64_t* s, int64_t b, int64_t t, int64_t h) { return b * s[0] + t * s[1] + h * s[2]; }
static inline int64_t coff(const dsv3_attn_ctx* c, int64_t b) { return c->coffs ? c->coffs[b] : c->causal_offset; }
static inline int64_t kvb(const dsv3_attn_ctx* c, int64_t b) { return c->kvb ? c->kvb[b] : b; }

/* The rows of chunk `ch` of (b, g), as attention.c's chunk_t. */
typedef struct {
  int64_t b, g, L0, R, Rp, minlim, maxlim;
} chunk_t;

static chunk_t chunk_of(const dsv3_attn_ctx* c, int64_t bg, int64_t ch) {
  chunk_t k;
  k.b = bg / c->kv_heads;
  k.g = bg % c->kv_heads;
  k.L0 = ch * c->rows_per_chunk;
  k.R = min64(c->rows_per_chunk, c->tq * c->group - k.L0);
  k.Rp = rup2(k.R);
  k.minlim = k.L0 / c->group + coff(c, k.b);
  k.maxlim = (k.L0 + k.R - 1) / c->group + coff(c, k.b);
  return k;
}
static inline int64_t row_i(const dsv3_attn_ctx* c, const chunk_t* k, int64_t r) { return (k->L0 + r) / c->group; }
static inline int64_t row_h(const dsv3_attn_ctx* c, const chunk_t* k, int64_t r) {
  return k->g * c->group + (k->L0 + r) % c->group;
}

/* QT2[d/2][Rp][2] = bf16(q) of the chunk's rows (unscaled; pad rows and an odd d's partner 0),
 * lim[r] = causal limit (pad rows: pad_lim) */
static void gather_qt2(const dsv3_attn_ctx* c, const chunk_t* k, uint16_t* QT2, float* lim, float pad_lim, uint16_t* tmp) {
  const int64_t Rp = k->Rp, dqk = c->dqk;
  for (int64_t r = 0; r < Rp; r++) {
    if (r + PF_AHEAD < k->R && dqk > 0)
      prefetch_row(c->q + off3(c->qs, k->b, row_i(c, k, r + PF_AHEAD), row_h(c, k, r + PF_AHEAD)), dqk);
    if (r < k->R) {
      const int64_t i = row_i(c, k, r);
      scatter_pairs_bf16(QT2 + 2 * r, Rp, c->q + off3(c->qs, k->b, i, row_h(c, k, r)), dqk, tmp);
      lim[r] = (float)(i + coff(c, k->b));
    } else {
      scatter_pairs_bf16(QT2 + 2 * r, Rp, NULL, dqk, tmp);
      lim[r] = pad_lim;
    }
  }
}

/* Forward of split s of chunk ch of (batch, kv head) bg from the packed K rows Kr[key][dqk2]
 * and V key pairs V2[key/2][dvp][2] (indexed by absolute key). */
static void fwd_chunk(const dsv3_attn_ctx* c, int64_t bg, int64_t ch, int64_t s, int thread, const uint16_t* Kr,
                      const uint16_t* V2) {
  const int dp = c->dp;
  const int64_t S = c->splits, NC = c->chunks, dqk2 = dsv3_even(c->dqk), dv = c->dv, dvp = dsv3_pad(dv);
  const int64_t Rm = c->rows_per_chunk;
  const chunk_t k = chunk_of(c, bg, ch);
  const int64_t R = k.R, Rp = k.Rp;
  float* base = c->scratch + (size_t)thread * c->scratch_floats;
  uint16_t* QT2 = (uint16_t*)base;               /* [dqk2/2][Rp][2]               */
  float* ST = base + dqk2 * Rm / 2;              /* [BK][Rp] scores               */
  uint16_t* P2 = (uint16_t*)(ST + BK * Rm);      /* [BK/2][Rp][2] P, key pairs    */
  float* O = ST + BK * Rm + BK * Rm / 2;         /* [R][dvp] unnormalised out     */
  float *mrow = O + Rm * dvp, *lrow = mrow + Rm, *lim = lrow + Rm, *alpha = lim + Rm; /* mrow: mq */
  uint16_t* tmp = (uint16_t*)(alpha + Rm);
  gather_qt2(c, &k, QT2, lim, 3e38f, tmp);
  for (int64_t r = 0; r < Rp; r++) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  memset(O, 0, (size_t)(R * dvp) * sizeof(float));
  const int64_t kend = min64(c->tk, k.maxlim + 1);
  const int64_t nkb = kend > 0 ? (kend + BK - 1) / BK : 0;
  const int64_t kb1 = (s + 1) * nkb / S;
  const vf vscale = vset1(c->scale), ninf = vset1(-INFINITY);
  for (int64_t kb = s * nkb / S; kb < kb1; kb++) {
    const int64_t j0 = kb * BK, nk = min64(BK, kend - j0), nkp = (nk + 1) / 2;
    dpmm(dp, nk, Rp, dqk2 / 2, Kr + j0 * dqk2, dqk2, 2, QT2, 2 * Rp, ST, Rp, 0); /* S^T = K Q^T */
    const int masked = j0 + nk - 1 > k.minlim;
    for (int64_t rv = 0; rv < Rp; rv += VL) {
      const vf lv = vload(lim + rv), mv = vload(mrow + rv);
      vf bm = ninf;
      for (int64_t jj = 0; jj < nk; jj++) {
        float* sp = ST + jj * Rp + rv;
        vf x = vmul(vload(sp), vscale);
        if (masked) x = vsel_gt(vset1((float)(j0 + jj)), lv, x, ninf);
        vstore(sp, x);
        bm = vmax(bm, x);
      }
      /* running max on the grid mq * ln2: rescaling by 2^(mq - mq') commutes with bf16 rounding */
      const vf mq = vmax(mv, vceil(vmul(bm, vset1(1.44269504088896341f))));
      const vf muse = vsel_eq(mq, ninf, vmul(mq, vset1(LN2F)), vzero()); /* all masked so far: P = 0 */
      const vf dm = vsub(mv, mq);                                         /* <= 0, an integer        */
      vf al = vldexp(vset1(1.0f), vmax(dm, vset1(-126.0f)));
      al = vsel_gt(vset1(-126.0f), dm, al, vzero());
      al = vsel_eq(mv, ninf, al, vzero()); /* nothing accumulated yet (O, l are 0) */
      vf sum = vzero();
      for (int64_t jj = 0; jj < nk; jj += 2) {
        const vf p0 = vexp(vsub(vload(ST + jj * Rp + rv), muse));
        const vf p1 = jj + 1 < nk ? vexp(vsub(vload(ST + (jj + 1) * Rp + rv), muse)) : vzero();
        sum = vadd(sum, vadd(p0, p1));
        store_pairs_ps(dp, P2 + (jj >> 1) * 2 * Rp + 2 * rv, p0, p1);
      }
      vstore(lrow + rv, vfma(vload(lrow + rv), al, sum));
      vstore(mrow + rv, mq);
      vstore(alpha + rv, al);
    }
    for (int64_t r = 0; r < R; r++) {
      if (alpha[r] == 1.0f) continue;
      const vf a = vset1(alpha[r]);
      for (int64_t e = 0; e < dvp; e += VL) vstore(O + r * dvp + e, vmul(vload(O + r * dvp + e), a));
    }
    dpmm(dp, R, dv, nkp, P2, 2, 2 * Rp, V2 + (j0 >> 1) * 2 * dvp, 2 * dvp, O, dvp, 1); /* O += P V */
  }
  if (S == 1) {
    for (int64_t r = 0; r < R; r++) {
      const int64_t i = row_i(c, &k, r), h = row_h(c, &k, r);
      float* o = c->out + off3(c->os, k.b, i, h);
      const float l = lrow[r], inv = l > 0 ? 1.0f / l : 0.0f;
      for (int64_t e = 0; e < dv; e++) o[e] = O[r * dvp + e] * inv;
      const float muse = mrow[r] * LN2F;
      c->lse[(k.b * c->heads + h) * c->tq + i] = l > 0 ? (float)((double)muse + log((double)l)) : -INFINITY;
    }
  } else {
    float* p = c->part + (size_t)((bg * NC + ch) * S + s) * dsv3_attn_fwd_part(c);
    memcpy(p, O, (size_t)(R * dvp) * sizeof(float));
    memcpy(p + Rm * dvp, mrow, (size_t)R * sizeof(float));
    memcpy(p + Rm * dvp + Rm, lrow, (size_t)R * sizeof(float));
  }
}

static uint16_t* pack_area(const dsv3_attn_ctx* c, int thread, size_t work) {
  return (uint16_t*)(c->scratch + (size_t)thread * c->scratch_floats + work);
}
static size_t fwd_work(const dsv3_attn_ctx* c) { return dsv3_attn_bf16_fwd_work(c); }

/* keys [j0, j1) of (b, g) into the thread's packed K rows and V pairs */
static void fwd_pack(const dsv3_attn_ctx* c, int64_t bg, int thread, int64_t j0, int64_t j1, uint16_t** Kr, uint16_t** V2) {
  const int64_t b = bg / c->kv_heads, g = bg % c->kv_heads, dqk2 = dsv3_even(c->dqk), dvp = dsv3_pad(c->dv);
  *Kr = pack_area(c, thread, fwd_work(c));
  *V2 = *Kr + c->tk * dqk2;
  if (j1 <= j0) return;
  pack_rows_bf16(*Kr, dqk2, c->k + off3(c->ks, kvb(c, b), 0, g), c->ks[1], j0, j1, c->dqk);
  pack_pairs_bf16(*V2, dvp, c->v + off3(c->vs, kvb(c, b), 0, g), c->vs[1], j0, j1, c->dv);
}

void ISA_FN(dsv3_attn_bf16_fwd_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int64_t S = c->splits, NC = c->chunks;
  const int64_t s = task % S, ch = NC - 1 - (task / S) % NC, bg = task / S / NC;
  const chunk_t k = chunk_of(c, bg, ch);
  const int64_t kend = min64(c->tk, k.maxlim + 1), nkb = kend > 0 ? (kend + BK - 1) / BK : 0;
  uint16_t *Kr, *V2;
  fwd_pack(c, bg, thread, s * nkb / S * BK, min64(kend, (s + 1) * nkb / S * BK), &Kr, &V2);
  fwd_chunk(c, bg, ch, s, thread, Kr, V2);
}

void ISA_FN(dsv3_attn_bf16_fwd_bg_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int64_t bg = task, NC = c->chunks;
  const int64_t kend = min64(c->tk, chunk_of(c, bg, NC - 1).maxlim + 1);
  uint16_t *Kr, *V2;
  fwd_pack(c, bg, thread, 0, kend, &Kr, &V2);
  for (int64_t ch = NC - 1; ch >= 0; ch--) fwd_chunk(c, bg, ch, 0, thread, Kr, V2);
}

/* M = max_s mq_s, w_s = 2^(mq_s - M), out = sum_s w_s O_s / sum_s w_s l_s, lse = M ln2 + log L */
void ISA_FN(dsv3_attn_bf16_fwd_combine_task)(const dsv3_attn_ctx* c, int task, int thread) {
  (void)thread;
  const int64_t S = c->splits, NC = c->chunks, dv = c->dv, dvp = dsv3_pad(dv), Rm = c->rows_per_chunk;
  const int64_t bg = task / NC, ch = task % NC;
  const chunk_t k = chunk_of(c, bg, ch);
  const size_t psz = dsv3_attn_fwd_part(c);
  const float* base = c->part + (size_t)((bg * NC + ch) * S) * psz;
  for (int64_t r = 0; r < k.R; r++) {
    const int64_t i = row_i(c, &k, r), h = row_h(c, &k, r);
    float* o = c->out + off3(c->os, k.b, i, h);
    float M = -INFINITY;
    for (int64_t s = 0; s < S; s++) M = fmaxf(M, base[s * psz + Rm * dvp + r]);
    float* lse = c->lse + (k.b * c->heads + h) * c->tq + i;
    if (M == -INFINITY) {
      memset(o, 0, (size_t)dv * sizeof(float));
      *lse = -INFINITY;
      continue;
    }
    double L = 0;
    float w[64];
    for (int64_t s = 0; s < S; s++) {
      const float* ps = base + s * psz;
      const float m = ps[Rm * dvp + r];
      w[s] = m == -INFINITY || m - M < -126.0f ? 0.0f : ldexpf(1.0f, (int)(m - M));
      L += (double)w[s] * ps[Rm * dvp + Rm + r];
    }
    const float inv = (float)(1.0 / L);
    for (int64_t e0 = 0; e0 < dv; e0 += VL) {
      const int t = (int)min64(VL, dv - e0);
      vf acc = vzero();
      for (int64_t s = 0; s < S; s++) acc = vfma(vset1(w[s]), vload(base + s * psz + r * dvp + e0), acc);
      vstoret(o + e0, vmul(acc, vset1(inv)), t);
    }
    *lse = (float)((double)(M * LN2F) + log(L));
  }
}

void ISA_FN(dsv3_attn_bf16_bwd_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int dp = c->dp;
  const int64_t S = c->splits, s = task % S, bg = task / S, Rm = c->rows_per_chunk;
  const int64_t dqk = c->dqk, dv = c->dv, dqk2 = dsv3_even(dqk), dv2 = dsv3_even(dv), dqkp = dsv3_pad(dqk);
  const int64_t dvp = dsv3_pad(dv), tk = c->tk, tk2 = dsv3_even(tk);
  const int64_t b = bg / c->kv_heads, g = bg % c->kv_heads;
  const float* kbase = c->k + off3(c->ks, b, 0, g);
  const float* vbase = c->v + off3(c->vs, b, 0, g);
  float* dkbase = c->dk + off3(c->ks, b, 0, g);
  float* dvbase = c->dv_out + off3(c->vs, b, 0, g);
  /* this task owns key tiles s, s+S, ...: zero their dk/dv rows (dk, dv may be views of one
   * buffer: both are zeroed before either is accumulated, so they then sum) */
  for (int64_t kb = s; kb * BK < tk; kb += S)
    for (int64_t j = kb * BK; j < min64(tk, kb * BK + BK); j++) {
      memset(dkbase + j * c->ks[1], 0, (size_t)dqk * sizeof(float));
      memset(dvbase + j * c->vs[1], 0, (size_t)dv * sizeof(float));
    }
  float* base = c->scratch + (size_t)thread * c->scratch_floats;
  uint16_t* QT2 = (uint16_t*)base;      /* [dqk2/2][Rp][2] bf16(q)      */
  uint16_t* dOT2 = QT2 + dqk2 * Rm;     /* [dv2/2][Rp][2]  bf16(dout)   */
  uint16_t* Qn2 = dOT2 + dv2 * Rm;      /* [R/2][dqkp][2]  bf16(q)      */
  uint16_t* dOn2 = Qn2 + Rm * dqkp;     /* [R/2][dvp][2]   bf16(dout)   */
  float* dQc = (float*)(dOn2 + Rm * dvp); /* [R][dqkp] dq of the chunk */
  float* ST = dQc + Rm * dqkp;          /* [BK][Rp] S^T                 */
  float* dPT = ST + BK * Rm;            /* [BK][Rp] dP^T                */
  uint16_t* Pr = (uint16_t*)(dPT + BK * Rm); /* [BK][Rp] bf16(P), rows j */
  uint16_t* dSr = Pr + BK * Rm;         /* [BK][Rp] bf16(dS), rows j    */
  uint16_t* dS2 = dSr + BK * Rm;        /* [BK/2][Rp][2] bf16(dS), key pairs */
  float* lser = (float*)(dS2 + BK * Rm);
  float *D = lser + Rm, *lim = D + Rm;
  uint16_t* tmp = (uint16_t*)(lim + Rm);
  uint16_t* Kr = (uint16_t*)(base + dsv3_attn_bf16_bwd_work(c)); /* [tk][dqk2] */
  uint16_t* K2 = Kr + tk * dqk2;             /* [tk/2][dqkp][2]   */
  uint16_t* Vr = K2 + tk2 * dqkp;            /* [tk][dv2]         */
  float* dKs = (float*)(Vr + tk * dv2);      /* [tk][dqkp] dK sums */
  float* dVs = dKs + tk * dqkp;              /* [tk][dvp]  dV sums */
  const int64_t kend_all = min64(tk, chunk_of(c, bg, c->chunks - 1).maxlim + 1);
  for (int64_t kb = s; kb * BK < kend_all; kb += S) {
    const int64_t j0 = kb * BK, j1 = min64(kend_all, j0 + BK);
    pack_rows_bf16(Kr, dqk2, kbase, c->ks[1], j0, j1, dqk);
    pack_pairs_bf16(K2, dqkp, kbase, c->ks[1], j0, j1, dqk);
    pack_rows_bf16(Vr, dv2, vbase, c->vs[1], j0, j1, dv);
    memset(dKs + j0 * dqkp, 0, (size_t)((j1 - j0) * dqkp) * sizeof(float));
    memset(dVs + j0 * dvp, 0, (size_t)((j1 - j0) * dvp) * sizeof(float));
  }
  const vf vscale = vset1(c->scale);
  for (int64_t ch = 0; ch < c->chunks; ch++) {
    const chunk_t k = chunk_of(c, bg, ch);
    const int64_t R = k.R, Rp = k.Rp, kend = min64(tk, k.maxlim + 1), RP = (R + 1) / 2;
    memset(dQc, 0, (size_t)(R * dqkp) * sizeof(float));
    if (s * BK < kend) {
      gather_qt2(c, &k, QT2, lim, -1.0f, tmp); /* pad rows: limit -1, always masked */
      for (int64_t r = 0; r < Rp; r += 2) { /* row pairs of q and dout, pad rows 0 */
        const float *q0 = NULL, *q1 = NULL, *g0 = NULL, *g1 = NULL;
        for (int64_t a = r + PF_AHEAD; a < r + PF_AHEAD + 2 && a < R && dv > 0; a++)
          prefetch_row(c->dout + off3(c->os, b, row_i(c, &k, a), row_h(c, &k, a)), dv);
        if (r < R) {
          q0 = c->q + off3(c->qs, b, row_i(c, &k, r), row_h(c, &k, r));
          g0 = c->dout + off3(c->os, b, row_i(c, &k, r), row_h(c, &k, r));
        }
        if (r + 1 < R) {
          q1 = c->q + off3(c->qs, b, row_i(c, &k, r + 1), row_h(c, &k, r + 1));
          g1 = c->dout + off3(c->os, b, row_i(c, &k, r + 1), row_h(c, &k, r + 1));
        }
        if (q0) {
          pair_rows_bf16(Qn2 + (r >> 1) * 2 * dqkp, dqkp, q0, q1, dqk);
          pair_rows_bf16(dOn2 + (r >> 1) * 2 * dvp, dvp, g0, g1, dv);
        } else {
          memset(Qn2 + (r >> 1) * 2 * dqkp, 0, (size_t)(2 * dqkp) * sizeof(uint16_t));
          memset(dOn2 + (r >> 1) * 2 * dvp, 0, (size_t)(2 * dvp) * sizeof(uint16_t));
        }
      }
      for (int64_t r = 0; r < Rp; r++) {
        if (r + PF_AHEAD < R && dv > 0) {
          const int64_t off = off3(c->os, b, row_i(c, &k, r + PF_AHEAD), row_h(c, &k, r + PF_AHEAD));
          prefetch_row(c->dout + off, dv);
          prefetch_row(c->o + off, dv);
        }
        if (r < R) {
          const int64_t i = row_i(c, &k, r), h = row_h(c, &k, r);
          const float* o = c->o + off3(c->os, b, i, h);
          scatter_pairs_bf16(dOT2 + 2 * r, Rp, c->dout + off3(c->os, b, i, h), dv, tmp); /* tmp: bf16(dout) */
          double dd = 0;
          for (int64_t e = 0; e < dv; e++) dd += (double)widen1(tmp[e]) * o[e];
          D[r] = (float)dd;
          lser[r] = c->lse_in[(b * c->heads + h) * c->tq + i];
        } else {
          scatter_pairs_bf16(dOT2 + 2 * r, Rp, NULL, dv, tmp);
          D[r] = 0.0f;
          lser[r] = 0.0f;
        }
      }
      for (int64_t kb = s; kb * BK < kend; kb += S) {
        const int64_t j0 = kb * BK, nk = min64(BK, kend - j0), nkp = (nk + 1) / 2;
        dpmm(dp, nk, Rp, dqk2 / 2, Kr + j0 * dqk2, dqk2, 2, QT2, 2 * Rp, ST, Rp, 0); /* S^T  = K Q^T  */
        dpmm(dp, nk, Rp, dv2 / 2, Vr + j0 * dv2, dv2, 2, dOT2, 2 * Rp, dPT, Rp, 0);  /* dP^T = V dO^T */
        const int masked = j0 + nk - 1 > k.minlim;
        for (int64_t jj = 0; jj < nk; jj += 2) {
          const int two = jj + 1 < nk;
          const vf jv0 = vset1((float)(j0 + jj)), jv1 = vset1((float)(j0 + jj + 1));
          for (int64_t rv = 0; rv < Rp; rv += VL) {
            const vf ls = vload(lser + rv), Dv = vload(D + rv), lv = vload(lim + rv);
            vf p0 = vexp(vsub(vmul(vload(ST + jj * Rp + rv), vscale), ls));
            if (masked) p0 = vsel_gt(jv0, lv, p0, vzero());
            const vf ds0 = vmul(vmul(p0, vsub(vload(dPT + jj * Rp + rv), Dv)), vscale);
            store_row_ps(dp, Pr + jj * Rp + rv, p0);
            store_row_ps(dp, dSr + jj * Rp + rv, ds0);
            vf ds1 = vzero();
            if (two) {
              vf p1 = vexp(vsub(vmul(vload(ST + (jj + 1) * Rp + rv), vscale), ls));
              if (masked) p1 = vsel_gt(jv1, lv, p1, vzero());
              ds1 = vmul(vmul(p1, vsub(vload(dPT + (jj + 1) * Rp + rv), Dv)), vscale);
              store_row_ps(dp, Pr + (jj + 1) * Rp + rv, p1);
              store_row_ps(dp, dSr + (jj + 1) * Rp + rv, ds1);
            }
            store_pairs_ps(dp, dS2 + (jj >> 1) * 2 * Rp + 2 * rv, ds0, ds1);
          }
        }
        dpmm(dp, nk, dv, RP, Pr, Rp, 2, dOn2, 2 * dvp, dVs + j0 * dvp, dvp, 1);     /* dV += P^T dO */
        dpmm(dp, nk, dqk, RP, dSr, Rp, 2, Qn2, 2 * dqkp, dKs + j0 * dqkp, dqkp, 1); /* dK += dS^T Q */
        dpmm(dp, R, dqk, nkp, dS2, 2, 2 * Rp, K2 + (j0 >> 1) * 2 * dqkp, 2 * dqkp, dQc, dqkp, 1); /* dQ += dS K */
      }
    }
    for (int64_t r = 0; r < R; r++) {
      float* dst = s == 0 ? c->dq + off3(c->qs, b, row_i(c, &k, r), row_h(c, &k, r))
                          : c->part + ((size_t)((s - 1) * c->batch * c->kv_heads + bg) * (size_t)(c->tq * c->group) +
                                       (size_t)(k.L0 + r)) * (size_t)dqkp;
      memcpy(dst, dQc + r * dqkp, (size_t)dqk * sizeof(float));
    }
  }
  /* dk, dv (zeroed above) += the packed sums; sums, so aliased dk/dv still add */
  for (int64_t kb = s; kb * BK < kend_all; kb += S)
    for (int64_t j = kb * BK; j < min64(kend_all, kb * BK + BK); j++) {
      float *dk = dkbase + j * c->ks[1], *dvr = dvbase + j * c->vs[1];
      const float *sk = dKs + j * dqkp, *sv = dVs + j * dvp;
      for (int64_t e = 0; e < dqk; e++) dk[e] += sk[e];
      for (int64_t e = 0; e < dv; e++) dvr[e] += sv[e];
    }
}
