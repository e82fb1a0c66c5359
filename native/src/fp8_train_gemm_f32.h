/* The FP8 training GEMM's float32 path on AVX2 (isa/fp8_train_gemm_f32.c): E4M3 codes decoded
 * while packing the micro-panels and each 128-block's sum promoted in registers; the same bits as
 * fp8_train_gemm.c's decode-then-multiply float32 path. Defined in the AVX2 copy only; called by
 * the AVX2 copy of dsv3_fp8_train_gemm for m, n, k > 0 (beta 0, or beta 1 with k <= 256).
 * 0, or -1 when scratch memory ran out. */
#ifndef DSV3_FP8_TRAIN_GEMM_F32_H
#define DSV3_FP8_TRAIN_GEMM_F32_H
#include "fp8_train.h"

int fp8_train_gemm_f32_avx2(const f8t_prob* P);
#endif
