/* The routed + shared experts of ONE token (batch-1 decode) in one call, DeepSeekMoE (paper
 * Eq. 12) for one row u:
 *     h += sum_e alpha_e * FFN_e(u),   FFN_e(u) = down_e( silu(gate_e u) * up_e u )
 * over the experts given, in the order given (the engine passes the chosen routed experts in
 * ascending expert index with their gates g_e as alpha, then the shared expert with alpha 1).
 *
 * The per-expert arithmetic is exactly that of the separate calls it replaces, so h comes out
 * bit-identical to them:
 *   - bf16 weights: gemmBf16(gate), gemmBf16(up), siluMul, gemmBf16(down, alpha_e, beta 1);
 *   - FP8 weights: linearFp8(gate), linearFp8(up), siluMul, act *= alpha_e (float32), linearFp8
 *     (down, beta 1) — the FP8 kernel has no alpha, so the gate scales the activations first.
 * What changes is the scheduling: the separate calls cost one pool barrier per GEMV (21 per
 * layer at the DeepSeek-V2-Lite shape); here phase 1 runs every expert's gate/up rows and
 * SwiGLU as tasks of 128 rows (claimed dynamically by the pool threads), phase 2 every 128
 * outputs of h (each task adds all experts' down rows for its outputs, in expert order), so a
 * token's MoE costs two barriers, and a thread descheduled by the OS delays one task, not
 * every GEMV.
 *
 * scratch: float32, at least dsv3_moe_row_scratch(D, S) elements (S = sum of the widths). */
#ifndef DSV3_MOE_ROW_H
#define DSV3_MOE_ROW_H
#include <stdint.h>
#include "isa.h"

#define MOE_ROW_MAX 64 /* most experts per call */

typedef void (*dsv3_silu_fn)(const float* g, const float* u, float* y, int64_t n);

typedef struct {
  int fp8;          /* 0: bf16 weights (gate/up/down bits), 1: FP8 codes + block scales */
  int dp;           /* bf16: VDPBF16PS path (as gemmBf16 decides) */
  int vbmi;         /* fp8: VBMI table decode (as linearFp8 decides) */
  int E;            /* experts */
  int64_t D;        /* hidden width */
  const int64_t* inter;  /* [E] intermediate widths */
  const float* alpha;    /* [E] */
  const uint16_t* const* bits; /* bf16: [3E] gate, up, down of expert 0, then 1, ... */
  const uint8_t* const* codes; /* fp8: [3E] */
  const float* const* scales;  /* fp8: [3E] */
  const float* x;   /* [D] */
  float* h;         /* [D], accumulated into */
  float* scratch;
  dsv3_silu_fn silu;
} dsv3_moe_row_args;

/* float32 elements of scratch a call needs */
static inline int64_t dsv3_moe_row_scratch(int64_t D, int64_t S) { return 5 * S + 2 * D + 64; }

DECLARE_ISA(int, dsv3_moe_row, (const dsv3_moe_row_args* a)) /* 0, or -1 when scratch memory ran out */
#endif
