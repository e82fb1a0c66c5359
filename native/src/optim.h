/* Optimizer kernels (isa/optim.c, compiled once per ISA) and their bindings (optim_napi.c):
 * the AdamW update and the sum of squares of the global gradient norm. */
#ifndef DSV3_OPTIM_H
#define DSV3_OPTIM_H
#include <stddef.h>
#include <stdint.h>
#include "isa.h"

typedef struct {
  double grad_scale, decay, b1, b2, c1, c2, step_size, inv_bc2, eps;
} dsv3_adamw_args;

/* Elements [i0, i1): g' = g*grad_scale; m = b1*m + c1*g'; v = b2*v + (c2*g')*g';
 * w = w*decay - (step_size*m)/(sqrt(v*inv_bc2) + eps), in float64 (no fused multiply-add),
 * the new m and v (used unrounded in the w update) and w each rounded once to float32. */
DECLARE_ISA(void, dsv3_adamw, (float* w, const float* g, float* m, float* v, int64_t i0, int64_t i1,
                               const dsv3_adamw_args* a))
/* The same update with BF16 moments (m, v: bfloat16 bit patterns, paper §3.3.3): read widened,
 * the new m and v computed in float64 as above and stored rounded float64 -> float32 -> bf16
 * (round to nearest even each time; NaN stays a quiet NaN), the w update using them unrounded. */
DECLARE_ISA(void, dsv3_adamw_bf16, (float* w, const float* g, uint16_t* m, uint16_t* v, int64_t i0, int64_t i1,
                                    const dsv3_adamw_args* a))
/* sum of x[i]^2 over [i0, i1), accumulated in float64 */
DECLARE_ISA(double, dsv3_sum_squares, (const float* x, int64_t i0, int64_t i1))
#endif
