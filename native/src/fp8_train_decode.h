/* The FP8 training GEMM's decode step (isa/fp8_train_decode.c): A's E4M3 codes to float32
 * [m][k] (af), B's to float32 in their stored layout (bd), on up to T pool threads. Used by the
 * float32 path of dsv3_fp8_train_gemm (isa/fp8_train_gemm.c). */
#ifndef DSV3_FP8_TRAIN_DECODE_H
#define DSV3_FP8_TRAIN_DECODE_H
#include "fp8_train.h"

DECLARE_ISA(void, fp8_train_decode, (const f8t_prob* P, int T, float* af, void* bd))
#endif
