/* The block-scaled FP8 GEMM of the training recipe (DeepSeek-V3 §3.3.2, Figure 7b; the kernel
 * behind Kernels.fp8Gemm, src/engine/kernels.ts; TypeScript reference
 * src/engine/reference/fp8-gemm.ts):
 *
 *   C[i, j] (+)= sum over 128-blocks b of  P_b[i, j] * float32(sA(i, b) * sB(j, b)),
 *   P_b[i, j] = sum over k in block b of e4m3(A[i, k]) * e4m3(B[j, k])
 *
 * with A [m, k] and B [n, k] logical operands of E4M3 codes (C = A B^T), one float32 scale per
 * 128 elements along k. The block partial sum P_b is computed on the *codes* (every E4M3 value is
 * exact in bf16 and in float32, every product of two is exact in float32) and promoted into the
 * float32 accumulator with its two scales at the end of each 128-wide block — the paper's
 * N_C = 128 promotion, done the way DeepGEMM does it. Blocks are promoted in ascending order,
 * acc = float32(acc + float32(P_b * float32(sA * sB))), acc starting at +0: the order of the
 * exact oracle (test/helpers/fp8-gemm-oracle.ts); only P_b's float32 summation differs from the
 * oracle's exact block sum. beta 0 overwrites C, beta 1 adds the finished sum to C.
 *
 * Paths: AVX-512 with avx512_bf16: codes packed straight into bf16 pair panels, a VDPBF16PS
 * micro-kernel that promotes each block's sum in registers (kernel_dp_promote); AVX-512 without
 * bf16, AVX2 and scalar: codes decoded to float32, the fp32 GEMM's packers and float32
 * micro-kernel (gemm_kernel). Both with the fp32 GEMM's blocking (gemm_isa.h).
 *
 * Operand layouts (codes dense, no padding; nb = ceil(k / 128)):
 *   F8T_ROWS_TILES  codes [rows][k],  scales [rows][nb]              (1x128 tiles along k)
 *   F8T_COLS_TILES  codes [k][rows],  scales [nb][rows]              (128x1 tiles of the stored matrix)
 *   F8T_ROWS_BLOCKS codes [rows][k],  scales [ceil(rows/128)][nb]    (128x128 blocks)
 *   F8T_COLS_BLOCKS codes [k][rows],  scales [nb][ceil(rows/128)]    (blocks of the stored [k][rows])
 * where rows is m for A and n for B. */
#ifndef DSV3_FP8_TRAIN_H
#define DSV3_FP8_TRAIN_H
#include <stdint.h>
#include "isa.h"

enum { F8T_ROWS_TILES = 0, F8T_COLS_TILES = 1, F8T_ROWS_BLOCKS = 2, F8T_COLS_BLOCKS = 3 };

typedef struct {
  const uint8_t* codes;
  const float* scales;
  int layout; /* F8T_* */
} f8t_operand;

typedef struct {
  int64_t m, n, k;
  f8t_operand a, b;
  float beta; /* 0 or 1 */
  float* c;
  int64_t ldc;
  int dp;      /* use the VDPBF16PS kernels (AVX-512 build, CPU with avx512_bf16) */
  int threads; /* most pool threads to use (1: run on the calling thread) */
} f8t_prob;

/* Scale of (row r, k block blk) of an operand with `rows` rows and nb k blocks. */
static inline float f8t_scale(const f8t_operand* o, int64_t rows, int64_t nb, int64_t r, int64_t blk) {
  switch (o->layout) {
    case F8T_ROWS_TILES: return o->scales[r * nb + blk];
    case F8T_COLS_TILES: return o->scales[blk * rows + r];
    case F8T_ROWS_BLOCKS: return o->scales[(r >> 7) * nb + blk];
    default: return o->scales[blk * ((rows + 127) >> 7) + (r >> 7)];
  }
}

/* Number of scales an operand of `rows` rows and k columns needs. */
static inline int64_t f8t_scale_count(int layout, int64_t rows, int64_t k) {
  const int64_t nb = (k + 127) / 128;
  return (layout == F8T_ROWS_TILES || layout == F8T_COLS_TILES) ? rows * nb : ((rows + 127) / 128) * nb;
}

/* 0, or -1 when scratch memory ran out (C is then unspecified). */
DECLARE_ISA(int, dsv3_fp8_train_gemm, (const f8t_prob* P))
#endif
