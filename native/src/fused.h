/* Declarations shared by the fused (non-GEMM) kernels in isa/ (compiled once per ISA) and
 * their Node-API bindings (compiled once): the row kernels (softmax, log-softmax, RMSNorm,
 * cross-entropy), the elementwise kernels (binary, axpy, SwiGLU) and flash attention. */
#ifndef DSV3_FUSED_H
#define DSV3_FUSED_H
#include <stddef.h>
#include <stdint.h>
#include "isa.h"

/* ---- row kernels ---------------------------------------------------------------------------
 * One argument block for every row kernel; each kernel reads the fields its doc names and
 * processes rows [r0, r1). The bindings split rows into tasks on the thread pool. */
typedef struct {
  int64_t rows, cols;
  const float* x;      /* input rows (x, logits)                          */
  const float* y;      /* forward output read by a backward (softmax, log-softmax) */
  const float* dy;     /* upstream gradient rows                           */
  const float* w;      /* RMSNorm weight [cols]                            */
  const float* rstd;   /* RMSNorm 1/rms per row (backward)                 */
  const float* lse;    /* cross-entropy log-sum-exp per row (backward)     */
  const float* dloss;  /* cross-entropy upstream gradient per row          */
  const int32_t* targets;
  float* out;          /* y / dx / dlogits rows                            */
  float* rstd_out;     /* RMSNorm forward                                  */
  float* loss_out;     /* cross-entropy forward                            */
  float* lse_out;      /* cross-entropy forward                            */
  uint16_t* out16;     /* rmsNormBf16: bf16 bits of each y row (NULL: none); crossEntropyGradBf16: P - Y */
  int64_t ld16;        /* crossEntropyGradBf16: out16 rows this many elements apart (>= cols) */
  float eps;
} dsv3_rows_args;

/* part: rmsNormBackward only: receives sum over rows [r0, r1) of dy*x*rstd ([cols], overwritten). */
typedef void (*dsv3_rows_fn)(const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part);

DECLARE_ISA(void, dsv3_softmax_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_softmax_bwd_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_log_softmax_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_log_softmax_bwd_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_rms_norm_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_rms_norm_bwd_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_cross_entropy_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_cross_entropy_bwd_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))
DECLARE_ISA(void, dsv3_cross_entropy_grad_bf16_rows, (const dsv3_rows_args* a, int64_t r0, int64_t r1, float* part))

/* ---- elementwise (n contiguous elements; outputs may alias inputs) ------------------------ */
DECLARE_ISA(void, dsv3_binary, (int op, const float* a, const float* b, float* out, int64_t n))
DECLARE_ISA(void, dsv3_axpy, (float alpha, const float* x, float* y, int64_t n))
DECLARE_ISA(void, dsv3_silu_mul, (const float* g, const float* u, float* y, int64_t n))
DECLARE_ISA(void, dsv3_silu_mul_bwd, (const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n))

/* ---- flash attention ------------------------------------------------------------------------
 * Query rows are processed in "chunks" of up to `R` rows that share one key/value head: the
 * rows of (batch b, kv head g) are the pairs (i, h) for query position i and the G = heads /
 * kvHeads query heads h of that kv head, linearised as L = i*G + (h - g*G) (so MLA's absorbed
 * form, kvHeads 1, puts all heads of a decode step into one chunk that reads K/V once). */
#define DSV3_ATT_BK 64   /* keys per tile                                       */
#define DSV3_ATT_PAD 16  /* scratch rows are padded to this many floats (>= VL) */

typedef struct {
  int64_t batch, heads, kv_heads, group; /* group = heads / kv_heads */
  int64_t tq, tk, dqk, dv, causal_offset;
  const int32_t* coffs;                  /* per-batch causal offsets, or NULL (causal_offset for all) */
  const int32_t* kvb;                    /* per-batch key/value batch index, or NULL (b itself; forward only) */
  float scale;
  int64_t qs[3], ks[3], vs[3], os[3];    /* [batch, token, head] strides */
  const float *q, *k, *v, *o, *dout, *lse_in;
  float *out, *lse, *dq, *dk, *dv_out;
  int64_t rows_per_chunk;                /* R, a multiple of DSV3_ATT_PAD      */
  int64_t chunks;                        /* per (b, kv head): ceil(tq*G / R)  */
  int64_t splits;                        /* key-range splits per chunk (fwd) / per (b, kv head) (bwd) */
  float* part;                           /* split partials (see attention.c)  */
  float* scratch;                        /* per-thread work space              */
  size_t scratch_floats;                 /* per thread                         */
  int dp;                                /* bf16 kernel (attention_bf16.h): use VDPBF16PS */
} dsv3_attn_ctx;

static inline int64_t dsv3_pad(int64_t n) { return (n + DSV3_ATT_PAD - 1) / DSV3_ATT_PAD * DSV3_ATT_PAD; }

/* Floats of per-thread scratch and of split partials each pass needs. */
static inline size_t dsv3_attn_fwd_scratch(const dsv3_attn_ctx* c) {
  int64_t R = c->rows_per_chunk;
  return (size_t)(c->dqk * R + DSV3_ATT_BK * R + R * dsv3_pad(c->dv) + 6 * R + dsv3_pad(c->dqk) + 64);
}
static inline size_t dsv3_attn_fwd_part(const dsv3_attn_ctx* c) {
  return (size_t)(c->rows_per_chunk * (dsv3_pad(c->dv) + 2));
}
static inline size_t dsv3_attn_bwd_scratch(const dsv3_attn_ctx* c) {
  int64_t R = c->rows_per_chunk, dqkp = dsv3_pad(c->dqk), dvp = dsv3_pad(c->dv);
  return (size_t)(c->dqk * R + c->dv * R + 2 * R * dqkp + R * dvp + 2 * DSV3_ATT_BK * R + 6 * R + 64);
}

/* Forward: task = ((b*kvHeads + g)*chunks + chunk)*splits + split (chunks in reverse order, so
 * the longest causal rows start first). With splits == 1 the task writes out/lse; otherwise it
 * writes its partial (O unnormalised, running max m, sum l) and a combine pass merges them. */
DECLARE_ISA(void, dsv3_attn_fwd_task, (const dsv3_attn_ctx* c, int task, int thread))
/* task = (b*kvHeads + g)*chunks + chunk */
DECLARE_ISA(void, dsv3_attn_fwd_combine_task, (const dsv3_attn_ctx* c, int task, int thread))
/* the forward of a whole (batch, kv head) from K/V packed once (attention.c, scratch: see there) */
DECLARE_ISA(void, dsv3_attn_fwd_bg_task, (const dsv3_attn_ctx* c, int task, int thread))
/* Backward: task = (b*kvHeads + g)*splits + split; split s owns key tiles s, s+splits, ...:
 * it overwrites their dk/dv rows and writes its dq contribution (split 0 into dq, split s>0
 * into part); a reduce pass (task = b*kvHeads + g) adds the partials into dq. */
DECLARE_ISA(void, dsv3_attn_bwd_task, (const dsv3_attn_ctx* c, int task, int thread))
DECLARE_ISA(void, dsv3_attn_bwd_reduce_task, (const dsv3_attn_ctx* c, int task, int thread))
#endif
