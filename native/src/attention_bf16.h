/* BF16 flash attention for mixed-precision training (isa/attention_bf16.c): the same tiles,
 * tasks and context (dsv3_attn_ctx, fused.h) as the float32 kernel, with every matrix product
 * of the core on bfloat16 operands and float32 accumulation:
 *   forward  S = scale * bf16(Q) bf16(K)^T,  O += bf16(P) bf16(V)
 *   backward dP = bf16(dO) bf16(V)^T, dV += bf16(P)^T bf16(dO), dQ += bf16(dS) bf16(K),
 *            dK += bf16(dS)^T bf16(Q)
 * (bf16(x): round to nearest even, subnormals kept). Softmax statistics, the online rescaling,
 * lse, D = rowsum(bf16(dO) * O) and all accumulators are float32. The forward's running max is
 * kept on the grid m = mq * ln2 (mq an integer), so the rescale factor exp(m_old - m_new) is a
 * power of two and rounding P to bf16 does not depend on the key tiling (or key splits): the
 * result equals bf16 rounding of exp(S - mq_final * ln2), the TypeScript oracle's definition
 * (src/engine/reference/attention-bf16.ts).
 *
 * Operand layouts (bf16 bits, uint16): a product's B operand is stored in pairs along the
 * reduction dimension, [k/2][n][2]; its A operand row-major with the reduction dim contiguous,
 * so one 32-bit load is a pair. VDPBF16PS consumes those pairs directly (c->dp, AVX-512 build
 * on avx512_bf16 CPUs); elsewhere each pair is widened in registers (two shifts) and the
 * float32 FMAs run, the same products and sums. */
#ifndef DSV3_ATTENTION_BF16_H
#define DSV3_ATTENTION_BF16_H
#include "fused.h"

static inline int64_t dsv3_even(int64_t n) { return (n + 1) & ~(int64_t)1; }

/* Per-thread floats: the tile work space (then a row of bf16 staging: tmp), then the K/V rows
 * packed in bf16 (indexed by key: room for all tk keys; a task packs the tiles it runs). */
static inline size_t dsv3_attn_bf16_tmp(const dsv3_attn_ctx* c) {
  return (size_t)((dsv3_even(c->dqk) + dsv3_even(c->dv)) / 2 + 32);
}
static inline size_t dsv3_attn_bf16_fwd_work(const dsv3_attn_ctx* c) {
  const int64_t R = c->rows_per_chunk, dqk2 = dsv3_even(c->dqk), dvp = dsv3_pad(c->dv), BK = DSV3_ATT_BK;
  return (size_t)(dqk2 * R / 2 + BK * R + BK * R / 2 + R * dvp + 6 * R + 64) + dsv3_attn_bf16_tmp(c);
}
static inline size_t dsv3_attn_bf16_fwd_scratch(const dsv3_attn_ctx* c) {
  const int64_t dqk2 = dsv3_even(c->dqk), dvp = dsv3_pad(c->dv);
  return dsv3_attn_bf16_fwd_work(c) + (size_t)((c->tk * dqk2 + dsv3_even(c->tk) * dvp) / 2 + 64);
}
static inline size_t dsv3_attn_bf16_bwd_work(const dsv3_attn_ctx* c) {
  const int64_t R = c->rows_per_chunk, dqk2 = dsv3_even(c->dqk), dv2 = dsv3_even(c->dv), BK = DSV3_ATT_BK;
  const int64_t dqkp = dsv3_pad(c->dqk), dvp = dsv3_pad(c->dv);
  return (size_t)((dqk2 * R + dv2 * R + R * dqkp + R * dvp) / 2 + R * dqkp + 2 * BK * R + 3 * BK * R / 2 + 6 * R + 64) +
         dsv3_attn_bf16_tmp(c);
}
static inline size_t dsv3_attn_bf16_bwd_scratch(const dsv3_attn_ctx* c) {
  const int64_t dqk2 = dsv3_even(c->dqk), dv2 = dsv3_even(c->dv), dqkp = dsv3_pad(c->dqk), dvp = dsv3_pad(c->dv);
  const int64_t tk = c->tk, tk2 = dsv3_even(c->tk);
  return dsv3_attn_bf16_bwd_work(c) + (size_t)((tk * dqk2 + tk2 * dqkp + tk * dv2) / 2 + tk * (dqkp + dvp) + 64);
}

/* Forward: task = ((b*kvHeads + g)*chunks + chunk)*splits + split, as dsv3_attn_fwd_task. */
DECLARE_ISA(void, dsv3_attn_bf16_fwd_task, (const dsv3_attn_ctx* c, int task, int thread))
/* The forward of a whole (batch, kv head) = task (splits 1): K/V packed once, then its chunks. */
DECLARE_ISA(void, dsv3_attn_bf16_fwd_bg_task, (const dsv3_attn_ctx* c, int task, int thread))
/* Merge of the key-split partials (running max on the mq grid: power-of-two weights). */
DECLARE_ISA(void, dsv3_attn_bf16_fwd_combine_task, (const dsv3_attn_ctx* c, int task, int thread))
/* Backward: task = (b*kvHeads + g)*splits + split, as dsv3_attn_bwd_task (the dq partials of
 * splits 1.. are summed by dsv3_attn_bwd_reduce_task). */
DECLARE_ISA(void, dsv3_attn_bf16_bwd_task, (const dsv3_attn_ctx* c, int task, int thread))
#endif
