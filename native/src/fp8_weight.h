/* FP8-weight linear layer (DeepSeek-V3 checkpoints): y[m,n] = x[m,k] * W^T with W [n,k] stored
 * as E4M3FN codes, one byte per weight, and float32 block scales scale_inv [ceil(n/128),
 * ceil(k/128)]:  W[i,j] = float32(e4m3(code[i,j]) * scale_inv[i/128][j/128]).
 * The weights are decoded inside the kernel (never a dequantised copy of the matrix) and
 * accumulation is float32. Rounding, compared with the reference (which rounds each weight
 * float32(e4m3 * scale) and sums in double):
 *   - packed GEMM path: each weight is bit-identical to that formula (decode-then-use);
 *   - GEMV path: the block scale multiplies x instead of the weight, so each term is
 *     float32(x * scale) * e4m3 (exact product inside the FMA) rather than x * float32(e4m3 *
 *     scale): one float32 rounding per term either way.
 * The linear-output tolerance (1e-5 of the row's largest output) holds for both with a >10x
 * margin on the tests. beta == 0 overwrites y without reading it; otherwise
 * y = beta*y + x W^T. y must not overlap x, codes or scale_inv. Any float32 scale works (0,
 * huge, tiny); MXCSR DAZ/FTZ are cleared while the kernel runs and restored afterwards.
 *
 * NaN codes (0x7F, 0xFF; never present in real checkpoints) decode to NaN like the reference:
 * every output that depends on such a weight, i.e. the whole column y[:, i] of its W row i,
 * is NaN. NaN / infinite scales give NaN / infinite outputs, as in the reference.
 *
 * Two regimes (isa/fp8_weight_gemv.c, isa/fp8_weight_gemm.c):
 *   m <= dsv3_fp8_gemv_max_m (default 8): streaming GEMV, codes read once and decoded in
 *     registers, n split across the pool threads;
 *   larger m: W decoded in L2-sized chunks into the packed-B layout of the fp32 GEMM
 *     (gemm_isa.h) and multiplied with its micro-kernel. */
#ifndef DSV3_FP8_WEIGHT_H
#define DSV3_FP8_WEIGHT_H
#include <stdint.h>
#include "isa.h"

DECLARE_ISA(int, dsv3_linear_fp8, (int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes,
                                    const float* scale_inv, float beta, float* y))

/* y[m,n] = x[m,k] W with W [k,n] as codes [k][n] and scale_inv [ceil(k/128), ceil(n/128)]
 * (isa/fp8_weight_gemv_t.c: MLA's absorbed W^UK on an FP8 kv_b_proj); y overwritten. */
DECLARE_ISA(int, dsv3_linear_fp8_t, (int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes,
                                      const float* scale_inv, float* y))

/* Dispatched entry point (fp8_weight_napi.c): 0, or -1 if scratch memory could not be allocated. */
int dsv3_linear_fp8(int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes, const float* scale_inv,
                    float beta, float* y);

/* Test / tuning hooks (defined in fp8_weight_napi.c). m <= dsv3_fp8_gemv_max_m (clamped to 8) takes the
 * GEMV path; 0 forces the packed GEMM path for every m. dsv3_fp8_allow_vbmi = 0 makes the
 * AVX-512 build use the arithmetic decode even on CPUs with AVX-512 VBMI. */
extern int dsv3_fp8_gemv_max_m;
extern int dsv3_fp8_allow_vbmi;
#endif
