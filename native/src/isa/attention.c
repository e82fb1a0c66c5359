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
#include "attn_tile.h"
#include "simd.h"

#define BK DSV3_ATT_BK

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t rup(int64_t n) { return (n + VL - 1) / VL * VL; }
static inline int64_t off3(const int64_t* s, int64_t b, int64_t t, int64_t h) { return b * s[0] + t * s[1] + h * s[2]; }
/* Batch b's causal offset, and the batch of k/v it reads (continuous batching: each query batch
 * is a sequence at its own position, reading its own latent-cache slot). */
static inline int64_t coff(const dsv3_attn_ctx* c, int64_t b) { return c->coffs ? c->coffs[b] : c->causal_offset; }
static inline int64_t kvb(const dsv3_attn_ctx* c, int64_t b) { return c->kvb ? c->kvb[b] : b; }

/* The rows of chunk `ch` of (b, g): L = ch*R + r -> query position i, head h. */
typedef struct {
  int64_t b, g, L0, R, Rp, minlim, maxlim;
} chunk_t;

static chunk_t chunk_of(const dsv3_attn_ctx* c, int64_t bg, int64_t ch) {
  chunk_t k;
  k.b = bg / c->kv_heads;
  k.g = bg % c->kv_heads;
  k.L0 = ch * c->rows_per_chunk;
  k.R = min64(c->rows_per_chunk, c->tq * c->group - k.L0);
  k.Rp = rup(k.R);
  k.minlim = k.L0 / c->group + coff(c, k.b);
  k.maxlim = (k.L0 + k.R - 1) / c->group + coff(c, k.b);
  return k;
}
static inline int64_t row_i(const dsv3_attn_ctx* c, const chunk_t* k, int64_t r) { return (k->L0 + r) / c->group; }
static inline int64_t row_h(const dsv3_attn_ctx* c, const chunk_t* k, int64_t r) {
  return k->g * c->group + (k->L0 + r) % c->group;
}

/* Copies n rows of d floats (row stride ld) to dst (row stride dp >= d).
 * Why: K and V rows of one (batch, head) lie a head stride apart (1-2 KiB at training sizes)
 * and a causal pass re-reads each key tile once per query chunk. At B 8 H 8 T 256 (10 MiB of
 * q/k/v/out, past L2) the same kernel ran ~1.45x slower per (b, h) than with B = H = 1: the
 * strided tiles kept coming back from L3/memory (and, 4 KiB pages, the TLB). A task that owns
 * a whole (batch, kv head) therefore copies its K and V rows once into contiguous scratch and
 * runs every tile from there (with the prefetch below: -10..15% forward and backward time). */
static void pack_rows(float* restrict dst, int64_t dp, const float* restrict src, int64_t ld, int64_t n, int64_t d) {
  for (int64_t j = 0; j < n; j++) {
    const float* s = src + j * ld;
    float* t = dst + j * dp;
    int64_t e = 0;
    for (; e + VL <= d; e += VL) vstore(t + e, vload(s + e));
    if (e < d) vstoret(t + e, vloadt(s + e, (int)(d - e), 0.0f), (int)(d - e));
  }
}

/* y[0..n) += x[0..n): full vectors unmasked (a masked store is slow on AMD), then the tail */
static inline void add_row(float* restrict y, const float* restrict x, int64_t n) {
  int64_t e = 0;
  for (; e + VL <= n; e += VL) vstore(y + e, vadd(vload(y + e), vload(x + e)));
  if (e < n) vstoret(y + e, vadd(vloadt(y + e, (int)(n - e), 0), vloadt(x + e, (int)(n - e), 0)), (int)(n - e));
}

/* QT[d][Rp] = q rows * scale (pad rows 0); lim[r] = causal limit (pad rows: pad_lim) */
static void gather_qt(const dsv3_attn_ctx* c, const chunk_t* k, float* restrict QT, float* restrict lim, float pad_lim) {
  const int64_t Rp = k->Rp, dqk = c->dqk;
  const float scale = c->scale;
  /* the rows are scattered (one per token, head stride apart) and read once: request them all
   * before the copy so their cache misses overlap */
  for (int64_t r = 0; r < k->R; r++) {
    const char* q = (const char*)(c->q + off3(c->qs, k->b, row_i(c, k, r), row_h(c, k, r)));
    for (int64_t o = 0; o < dqk * 4; o += 64) __builtin_prefetch(q + o);
  }
  for (int64_t r = 0; r < k->R; r++) {
    const int64_t i = row_i(c, k, r);
    const float* restrict q = c->q + off3(c->qs, k->b, i, row_h(c, k, r));
    float* restrict col = QT + r;
    for (int64_t d = 0; d < dqk; d++) col[d * Rp] = q[d] * scale;
    lim[r] = (float)(i + coff(c, k->b));
  }
  for (int64_t r = k->R; r < Rp; r++) {
    for (int64_t d = 0; d < dqk; d++) QT[d * Rp + r] = 0.0f;
    lim[r] = pad_lim;
  }
}

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

/* Prefetch of the rows the next (batch, kv head) will read first: its K rows, V rows, then
 * its query rows in the order its chunks run (backward: with their dout and out rows), `per`
 * rows at each step (one step per key tile of the current one). At training sizes these rows
 * come from L3 or memory (every (b, h) has its own 1-2 KiB-strided rows, ~160 KiB in all);
 * requested while the previous (b, h) computes, most are in cache when packed and gathered
 * (measured: -7% forward time, 1 thread, B 8 H 8 T 256). "Next" is the next task: the napi
 * layer runs runs of consecutive tasks on one thread. (Prefetching the next chunk's rows
 * chunk by chunk instead measured no better.) */
typedef struct {
  int64_t b, g, kend, pos, per;
  int backward;
} pf_state;

static void pf_init(const dsv3_attn_ctx* c, pf_state* p, int64_t bg, int backward) {
  p->per = 0;
  if (bg >= c->batch * c->kv_heads) return;
  p->b = bg / c->kv_heads, p->g = bg % c->kv_heads, p->pos = 0, p->backward = backward;
  p->kend = min64(c->tk, chunk_of(c, bg, c->chunks - 1).maxlim + 1);
  int64_t tiles = 0; /* key tiles of a (batch, kv head): one step each */
  for (int64_t ch = 0; ch < c->chunks; ch++) tiles += (min64(c->tk, chunk_of(c, bg, ch).maxlim + 1) + BK - 1) / BK;
  const int64_t rows = 2 * p->kend + c->tq * c->group * (backward ? 3 : 1);
  p->per = tiles > 0 ? (rows + tiles - 1) / tiles : 0;
}

static inline void pf_row(const float* x, int64_t d) {
  for (int64_t o = 0; o < d * 4; o += 64) __builtin_prefetch((const char*)x + o);
}

static void pf_step(const dsv3_attn_ctx* c, pf_state* p) {
  const int64_t rows = c->tq * c->group;
  for (int64_t n = 0; n < p->per; n++, p->pos++) {
    const int64_t i = p->pos;
    if (i < p->kend) pf_row(c->k + off3(c->ks, kvb(c, p->b), i, p->g), c->dqk);
    else if (i < 2 * p->kend) pf_row(c->v + off3(c->vs, kvb(c, p->b), i - p->kend, p->g), c->dv);
    else {
      const int64_t u = i - 2 * p->kend, w = p->backward ? u % 3 : 0;
      const int64_t L = p->backward ? u / 3 : rows - 1 - u; /* forward: chunks run last first */
      if (L < 0 || L >= rows) return;
      const int64_t t = L / c->group, h = p->g * c->group + L % c->group;
      if (w == 0) pf_row(c->q + off3(c->qs, p->b, t, h), c->dqk);
      else pf_row((w == 1 ? c->dout : c->o) + off3(c->os, p->b, t, h), c->dv);
    }
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
  pf_state pf; /* the next task's rows (the napi layer runs runs of consecutive tasks on one thread) */
  pf.per = 0;
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
