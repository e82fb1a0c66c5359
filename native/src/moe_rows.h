/* The routed experts of several token rows in one call (isa/moe_rows.c, compiled once per ISA;
 * binding: moe_rows_napi.c). See isa/moe_rows.c for the computation. */
#ifndef DSV3_MOE_ROWS_H
#define DSV3_MOE_ROWS_H
#include <stdint.h>
#include "isa.h"

typedef struct {
  int64_t experts, D, I;
  const int32_t* off;     /* [experts + 1]: expert e's rows are off[e] .. off[e+1]-1 */
  int bf16;               /* weights are bf16 bits (uint16_t) instead of float32 */
  const float* x;         /* [rows, D] gathered by expert (bf16: already rounded to bf16 values) */
  const void* const* wg;  /* [experts] -> [I, D] gate_proj */
  const void* const* wu;  /* [experts] -> [I, D] up_proj */
  const void* const* wd;  /* [experts] -> [D, I] down_proj */
  float *g, *u, *act;     /* [rows, I] */
  const float* ain;       /* the down projection's input: act, or (bf16) act rounded to bf16 */
  float* y;               /* [rows, D] */
} moe_rows_prob;

/* Units u0 .. u1-1 of a phase (0: gate and up, ceil(I/4) units per expert; 1: down, ceil(D/4)). */
DECLARE_ISA(void, dsv3_moe_rows_units, (const moe_rows_prob* P, int phase, int64_t u0, int64_t u1))
/* act = silu(g) * u for n values (the siluMul kernel's formula). */
DECLARE_ISA(void, dsv3_moe_rows_silu, (const float* g, const float* u, float* act, int64_t n))
#endif
