/* Tiled (flash-style) causal attention, forward and backward, after FlashAttention (Dao et
 * al. 2022) and FlashAttention-2 (Dao 2023). No [tq, tk] score matrix is ever stored: scores
 * live in one [BK keys x R rows] tile at a time.
 *
 * Layout of a tile. A chunk holds R query rows that share one kv head (fused.h). Its queries
 * are gathered once, transposed, into QT[d][Rp] (Rp = R rounded up to VL, zero padded), so
 * the score tile S^T[j][r] = sum_d K[j][d] * QT[d][r] is a product whose vector dimension is
 * the query rows: K is read straight from its strided rows, and the softmax statistics of the
 * R rows (running max, sum) are vectors too.
 *
 * Forward (online softmax, FlashAttention Alg. 1): for each key tile, with m the running max
 * and l the running sum of each row,
 *   m' = max(m, rowmax(S)),  P = exp(S - m'),  l = l*exp(m - m') + rowsum(P),
 *   O  = O*exp(m - m') + P V;
 * at the end out = O / l and lse = m + log(l) is saved for the backward. Keys past a row's
 * causal limit (i + causalOffset, or i + causalOffsets[b] per batch) are set to -inf before the max. Rows that see no key get
 * out = 0 and lse = -inf, like the reference.
 *
 * Backward (FlashAttention-2 Alg. 2, recomputing P from lse): per key tile and chunk,
 *   P = exp(S - lse), dP = dO V^T, D = rowsum(dO * O), dS = P * (dP - D) * scale,
 *   dV += P^T dO,  dK += dS^T Q,  dQ += dS K.
 * A backward task owns whole key tiles of one (batch, kv head), so dK/dV are written by one
 * thread only (no races when all heads share one K/V, kvHeads = 1); dQ of a chunk is summed
 * in scratch and written once. When there are fewer (batch, kv head) pairs than threads, the
 * key tiles are dealt round-robin to `splits` tasks and the dq contributions of splits 1..
 * are reduced afterwards in a fixed order (deterministic for a given thread count).
 *
 * Memory (see pack_rows, pf_step): with enough (batch, kv head)s, a forward task owns a whole
 * one; forward and backward tasks copy their K/V rows once into contiguous scratch (the
 * backward also sums dK/dV there and adds them to the outputs at the end) and prefetch the
 * rows of the (batch, kv head) their thread does next. */
#include "../fused.h"
#include "attn_chunk.h"
#include "attn_tile.h"
#include "simd.h"

/* S[j*ld] = K row j . q for j < nk (lanes 1..ld-1 of each row zeroed: they are pad rows) */
static void dots(int64_t nk, int64_t d, const float* K, int64_t ldk, const float* q, float* S, int64_t ld) {
  for (int64_t j = 0; j < nk; j++) {
    const float* kr = K + j * ldk;
    vf a0 = vzero(), a1 = vzero();
    int64_t e = 0;
    for (; e + 2 * VL <= d; e += 2 * VL) {
      a0 = vfma(vload(kr + e), vload(q + e), a0);
      a1 = vfma(vload(kr + e + VL), vload(q + e + VL), a1);
    }
    for (; e < d; e += VL) {
      const int t = (int)min64(VL, d - e);
      a0 = vfma(vloadt(kr + e, t, 0), vloadt(q + e, t, 0), a0);
    }
    S[j * ld] = vhsum(vadd(a0, a1));
    for (int64_t r = 1; r < ld; r++) S[j * ld + r] = 0.0f;
  }
}


/* Split s of chunk ch of (batch, kv head) bg. Key row j of this (b, g) is at kb0 + j*ldk
 * (values: vb0 + j*ldv): the tensors themselves, or their rows packed by the caller. */
static void fwd_chunk(const dsv3_attn_ctx* c, int64_t bg, int64_t ch, int64_t s, int thread, const float* kb0,
                      int64_t ldk, const float* vb0, int64_t ldv, pf_state* pf) {
  const int64_t S = c->splits, NC = c->chunks, dqk = c->dqk, dv = c->dv, dvp = dsv3_pad(dv), Rm = c->rows_per_chunk;
  const chunk_t k = chunk_of(c, bg, ch);
  const int64_t R = k.R, Rp = k.Rp;
  float* QT = c->scratch + (size_t)thread * c->scratch_floats; /* [dqk][Rp] */
  float* ST = QT + dqk * Rm;                                    /* [BK][Rp]  scores, then P */
  float* O = ST + BK * Rm;                                      /* [R][dvp]  unnormalised out */
  float *mrow = O + Rm * dvp, *lrow = mrow + Rm, *lim = lrow + Rm, *alpha = lim + Rm, *qrow = alpha + Rm;
  gather_qt(c, &k, QT, lim, 3e38f);
  if (R == 1)
    for (int64_t d = 0; d < dqk; d++) qrow[d] = QT[d * Rp];
  for (int64_t r = 0; r < Rp; r++) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  memset(O, 0, (size_t)(R * dvp) * sizeof(float));
  const int64_t kend = min64(c->tk, k.maxlim + 1); /* keys [0, kend) are visible to some row */
  const int64_t nkb = kend > 0 ? (kend + BK - 1) / BK : 0;
  const int64_t kb1 = (s + 1) * nkb / S;
  for (int64_t kb = s * nkb / S; kb < kb1; kb++) {
    const int64_t j0 = kb * BK, nk = min64(BK, kend - j0);
    if (pf) pf_step(c, pf);
    if (R == 1) /* a lone query row (decode, kvHeads = heads): dot products, not a 1-lane tile */
      dots(nk, dqk, kb0 + j0 * ldk, ldk, qrow, ST, Rp);
    else
      mm(nk, Rp, dqk, kb0 + j0 * ldk, ldk, 1, QT, Rp, ST, Rp, 0); /* S^T = K Q^T */
    const int masked = j0 + nk - 1 > k.minlim;
    for (int64_t rv = 0; rv < Rp; rv += VL) {
      const vf lv = vload(lim + rv), mv = vload(mrow + rv), ninf = vset1(-INFINITY);
      vf bm = ninf;
      for (int64_t jj = 0; jj < nk; jj++) {
        float* sp = ST + jj * Rp + rv;
        vf x = vload(sp);
        if (masked) {
          x = vsel_gt(vset1((float)(j0 + jj)), lv, x, ninf);
          vstore(sp, x);
        }
        bm = vmax(bm, x);
      }
      const vf mnew = vmax(mv, bm);
      const vf muse = vsel_eq(mnew, ninf, mnew, vzero()); /* all masked so far: exp(-inf - 0) = 0 */
      const vf al = vexp(vsub(mv, muse));
      vf sum = vzero();
      for (int64_t jj = 0; jj < nk; jj++) {
        float* sp = ST + jj * Rp + rv;
        const vf p = vexp(vsub(vload(sp), muse));
        vstore(sp, p);
        sum = vadd(sum, p);
      }
      vstore(lrow + rv, vfma(vload(lrow + rv), al, sum));
      vstore(mrow + rv, mnew);
      vstore(alpha + rv, al);
    }
    for (int64_t r = 0; r < R; r++) {
      if (alpha[r] == 1.0f) continue;
      const vf a = vset1(alpha[r]);
      for (int64_t e = 0; e < dvp; e += VL) vstore(O + r * dvp + e, vmul(vload(O + r * dvp + e), a));
    }
    mm(R, dv, nk, ST, 1, Rp, vb0 + j0 * ldv, ldv, O, dvp, 1); /* O += P V */
  }
  if (S == 1) {
    for (int64_t r = 0; r < R; r++) {
      const int64_t i = row_i(c, &k, r), h = row_h(c, &k, r);
      float* o = c->out + off3(c->os, k.b, i, h);
      const float l = lrow[r], inv = l > 0 ? 1.0f / l : 0.0f;
      for (int64_t e = 0; e < dv; e++) o[e] = O[r * dvp + e] * inv;
      c->lse[(k.b * c->heads + h) * c->tq + i] = l > 0 ? (float)((double)mrow[r] + log((double)l)) : -INFINITY;
    }
  } else {
    float* p = c->part + (size_t)((bg * NC + ch) * S + s) * dsv3_attn_fwd_part(c);
    memcpy(p, O, (size_t)(R * dvp) * sizeof(float));
    memcpy(p + Rm * dvp, mrow, (size_t)R * sizeof(float));
    memcpy(p + Rm * dvp + Rm, lrow, (size_t)R * sizeof(float));
  }
}

void ISA_FN(dsv3_attn_fwd_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int64_t S = c->splits, NC = c->chunks;
  const int64_t s = task % S, ch = NC - 1 - (task / S) % NC, bg = task / S / NC;
  const int64_t b = bg / c->kv_heads, g = bg % c->kv_heads;
  const int64_t kb = kvb(c, b);
  fwd_chunk(c, bg, ch, s, thread, c->k + off3(c->ks, kb, 0, g), c->ks[1], c->v + off3(c->vs, kb, 0, g), c->vs[1], NULL);
}

/* The forward of a whole (batch, kv head) bg = task (splits must be 1): its key and value rows
 * are packed once (pack_rows) into the thread's scratch past dsv3_attn_fwd_scratch floats
 * ([tk][pad(dqk)] then [tk][pad(dv)]; the caller sizes it), then its chunks run from there,
 * longest first. */
void ISA_FN(dsv3_attn_fwd_bg_task)(const dsv3_attn_ctx* c, int task, int thread) {
  const int64_t bg = task, b = bg / c->kv_heads, g = bg % c->kv_heads, NC = c->chunks;
  const int64_t ldk = dsv3_pad(c->dqk), ldv = dsv3_pad(c->dv);
  float* Kp = c->scratch + (size_t)thread * c->scratch_floats + dsv3_attn_fwd_scratch(c);
  float* Vp = Kp + c->tk * ldk;
  const chunk_t last = chunk_of(c, bg, NC - 1);
  const int64_t kend = min64(c->tk, last.maxlim + 1); /* keys any row of bg sees */
  if (kend > 0) {
    pack_rows(Kp, ldk, c->k + off3(c->ks, kvb(c, b), 0, g), c->ks[1], kend, c->dqk);
    pack_rows(Vp, ldv, c->v + off3(c->vs, kvb(c, b), 0, g), c->vs[1], kend, c->dv);
  }
  pf_state pf; /* the napi layer runs runs of consecutive tasks on one thread */
  pf_init(c, &pf, bg + 1, 0);
  for (int64_t ch = NC - 1; ch >= 0; ch--) fwd_chunk(c, bg, ch, 0, thread, Kp, ldk, Vp, ldv, pf.per > 0 ? &pf : NULL);
}

/* Merges the key-split partials of one chunk: M = max_s m_s, w_s = exp(m_s - M),
 * out = sum_s w_s O_s / sum_s w_s l_s, lse = M + log(sum_s w_s l_s). */
void ISA_FN(dsv3_attn_fwd_combine_task)(const dsv3_attn_ctx* c, int task, int thread) {
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
      w[s] = expf(ps[Rm * dvp + r] - M);
      L += (double)w[s] * ps[Rm * dvp + Rm + r];
    }
    const float inv = (float)(1.0 / L);
    for (int64_t e0 = 0; e0 < dv; e0 += VL) {
      const int t = (int)min64(VL, dv - e0);
      vf acc = vzero();
      for (int64_t s = 0; s < S; s++) acc = vfma(vset1(w[s]), vload(base + s * psz + r * dvp + e0), acc);
      vstoret(o + e0, vmul(acc, vset1(inv)), t);
    }
    *lse = (float)((double)M + log(L));
  }
}
