/* bfloat16 conversion of contiguous buffers, for BF16 mixed-precision training (the weights'
 * bf16 copies, activations saved for backward in bf16, SwiGLU inputs restored to float32):
 *   dsv3_bf16_round: out[i] = bf16 bits of x[i], round to nearest even, NaN kept a quiet NaN
 *                    (the rule of gemm_round_bf16 in gemm_isa.h and f32ToBf16 in
 *                    src/engine/dtype.ts; subnormals are kept, not flushed, which is why the
 *                    AVX-512 copy does not use VCVTNEPS2BF16: it flushes them to zero);
 *   dsv3_bf16_widen: out[i] = the float32 value of the bf16 bits h[i] (exact).
 * Three compiled copies (isa/bf16_convert.c), picked by SELECT_ISA in bf16_napi.c. */
#ifndef DSV3_BF16_CONVERT_H
#define DSV3_BF16_CONVERT_H
#include <stdint.h>
#include "isa.h"

DECLARE_ISA(void, dsv3_bf16_round, (const float* x, uint16_t* out, int64_t n))
DECLARE_ISA(void, dsv3_bf16_widen, (const uint16_t* h, float* out, int64_t n))
#endif
