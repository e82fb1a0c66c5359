/* What the forward and backward of tiled attention share (isa/attention.c, isa/attention_bwd.c):
 * the chunk of query rows a tile works on, the K/V row packing, the gather of a chunk's queries
 * into QT, and the prefetch of the next (batch, kv head)'s rows. Included once per ISA copy;
 * the layout and the algorithm are described at the top of isa/attention.c. */
#ifndef DSV3_ISA_ATTN_CHUNK_H
#define DSV3_ISA_ATTN_CHUNK_H
#include "../fused.h"
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

static inline chunk_t chunk_of(const dsv3_attn_ctx* c, int64_t bg, int64_t ch) {
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
static inline void pack_rows(float* restrict dst, int64_t dp, const float* restrict src, int64_t ld, int64_t n, int64_t d) {
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
static inline void gather_qt(const dsv3_attn_ctx* c, const chunk_t* k, float* restrict QT, float* restrict lim, float pad_lim) {
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

static inline void pf_init(const dsv3_attn_ctx* c, pf_state* p, int64_t bg, int backward) {
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

static inline void pf_step(const dsv3_attn_ctx* c, pf_state* p) {
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

#endif
