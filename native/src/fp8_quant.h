/* FP8 (E4M3) operand quantisation of the FP8 training GEMMs (DeepSeek-V3 paper §3.3.2, fixtures
 * README `fp8-linear/` and `e4m3/`): the kernels behind Kernels.fp8QuantTiles1x128 /
 * fp8QuantTiles128x1 / fp8QuantBlocks128 / fp8Dequant (src/engine/kernels.ts), bit-identical to
 * the TypeScript reference (src/engine/reference/fp8-quant.ts).
 *
 * Rule, per group (1x128 tile of a row, 128x1 tile of a column, 128x128 block; edge groups
 * shorter): amax = max|x| over the group (NaN ignored), s = float32(max(amax, 1e-4) / 448) with
 * 1e-4 the double constant (computed in double, as Math.max / Math.fround do), q = float32(x / s),
 * code = e4m3(q) (round to nearest even, saturate to +-448 (infinities too), subnormals m * 2^-9,
 * NaN -> 0x7F, sign of zero kept), dequantised value float32(e4m3(code) * s).
 * Without codes (dequantised output only) a value that rounds to zero is +0, as the reference's
 * float64 rounding gives it; with codes it keeps the sign of its code (-0 for 0x80).
 *
 * The reference divides as x * (1/s) in float64 and rounds to float32; that equals the float32
 * division used here for every quotient in the float32 normal range (src/engine/fp8/quant.ts
 * explains why), and quotients in the subnormal range encode to +-0 either way.
 *
 * Layouts: x row r starts at x + r * ld; codes / out are dense [rows][cols]; scales:
 *   1x128 tiles  [rows][ceil(cols/128)],   128x1 tiles [ceil(rows/128)][cols],
 *   128x128 blocks [ceil(rows/128)][ceil(cols/128)].
 * out may alias x when ld == cols (each element is read before it is written). */
#ifndef DSV3_FP8_QUANT_H
#define DSV3_FP8_QUANT_H
#include <stdint.h>
#include "isa.h"

/* 1x128 tiles of rows [r0, r1). codes and scales both or neither; out optional. */
DECLARE_ISA(void, dsv3_fp8_quant_rows, (const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t cols, uint8_t* codes,
                                   float* scales, float* out))
/* Rows [r0, r1) (inside one 128-row group) and columns [c0, c1) (c1 - c0 <= FP8_QUANT_CHUNK; c0 a
 * multiple of 128 for blocks). block 0: 128x1 tiles, scale of column c at scales[c] (the row of
 * the scale grid for this row group); block 1: 128x128 blocks, scale at scales[c / 128].
 * scales may be NULL (not stored). */
DECLARE_ISA(void, dsv3_fp8_quant_cols, (const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                                   int64_t cols, int block, uint8_t* codes, float* scales, float* out))
/* out[r][c] = float32(e4m3(codes[r][c]) * scales[(r / block_rows) * ceil(cols/128) + c / 128]) for
 * rows [r0, r1); NaN codes (0x7F, 0xFF) give NaN. */
DECLARE_ISA(void, dsv3_fp8_quant_dequant, (const uint8_t* codes, const float* scales, int64_t r0, int64_t r1, int64_t cols,
                                      int64_t block_rows, float* out))

/* Both operands of an output gradient dY from ONE read of it (DeepSeek-V3 §3.3.2: Dgrad takes dY in
 * 1x128 tiles, Wgrad dY^T in 1x128 tiles along the tokens = 128x1 tiles of dY): rows [0, n) of a
 * group of n <= 128 rows starting at x (row stride cols), columns [c0, c1) (c0 a multiple of 128,
 * c1 - c0 <= FP8_QUANT_CHUNK). Writes what dsv3_fp8_quant_rows writes for these rows (rcodes /
 * rscales point at the group's first row, scales [n][ceil(cols/128)]) and what
 * dsv3_fp8_quant_cols (block 0) writes for the group (ccodes at its first row, cscales its row of
 * the 128x1 scale grid, indexed by column): the same bits, the amax of both tilings taken in one
 * pass and both encodings in a second pass over the group while it is in cache. */
DECLARE_ISA(void, dsv3_fp8_quant_dual, (const float* x, int64_t n, int64_t c0, int64_t c1, int64_t cols, uint8_t* rcodes,
                                   float* rscales, uint8_t* ccodes, float* cscales))

/* The 128x1 tiles of a group of n <= 128 rows of a 1x128-tile operand (codes / scales at the
 * group's first row, scales [n][ceil(cols/128)]), columns [c0, c1) (c0 a multiple of 128,
 * c1 - c0 <= FP8_QUANT_CHUNK): what dsv3_fp8_quant_dequant into buf (row stride cols, at the
 * group's first row) followed by dsv3_fp8_quant_cols (block 0, codes ocodes at the group's first
 * row, scales oscales indexed by column) writes, the dequantisation and the column amax in one pass. */
DECLARE_ISA(void, dsv3_fp8_requant_cols, (const uint8_t* codes, const float* scales, int64_t n, int64_t c0, int64_t c1,
                                     int64_t cols, float* buf, uint8_t* ocodes, float* oscales))

#define FP8_QUANT_CHUNK 1024 /* most columns one dsv3_fp8_quant_cols call handles (a multiple of 128) */
#endif
