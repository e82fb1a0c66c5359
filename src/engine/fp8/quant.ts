/**
 * Operand quantisation of the FP8 training GEMMs, the training role of FP8 (DeepSeek-V3
 * §3.3.2; fixtures README `fp8-linear/`): the block rule of codec.ts applied online to GEMM
 * operands, writing E4M3 codes + scales (the FP8 copy) and/or the dequantised float32 values
 * `float32(e4m3(code) * s)` (what the training fast path multiplies with the float32 GEMM). The
 * loops are kernels (`kernels()`: native/src/isa/fp8_quant.c, or the TypeScript reference
 * src/engine/reference/fp8-quant.ts, bit-identical); this module keeps the operand-level
 * signatures (offset + row stride) and the FP8 copy types used by ops/fp8-training-linear.ts
 * and ops/fp8-training-grouped.ts.
 *
 * Group orientations (groups always run along the GEMM's inner dimension, §3.3.2 / appendix B.2):
 *   - 1x128 tiles: 128 consecutive elements of a row (activations in Fprop, dY in Dgrad);
 *   - 128x1 tiles: 128 consecutive rows of one column, i.e. the 1x128 tiles of the transpose
 *     (dY^T and X^T in Wgrad), kept in the untransposed [rows, cols] layout so the GEMM can
 *     read them with a transpose flag instead of a transposed copy;
 *   - 128x128 blocks: weights (checkpoint-weights.ts `quantizeBlocks128` stays the independent
 *     oracle).
 * Rule (every group): `amax = max(max|x|, 1e-4)`, `s = float32(amax / 448)`,
 * `code = e4m3(float32(x / s))`, stored scale s. Bit-identical to the plain-loop quantisers
 * (tested). Without codes, dequantised values that round to zero are +0 (see
 * reference/fp8-quant.ts).
 */
import { kernels } from '../backend.js';
import { FP8_BLOCK } from './codec.js';

/** E4M3 codes [rows, cols] with one scale per 1x128 tile: scales [rows, ceil(cols/128)]. */
export interface Fp8Tiles {
  rows: number;
  cols: number;
  codes: Uint8Array;
  scales: Float32Array;
}

/** E4M3 codes [rows, cols] with one scale per 128x128 block: scaleInv [ceil(rows/128), ceil(cols/128)]. */
export interface Fp8Blocks {
  rows: number;
  cols: number;
  codes: Uint8Array;
  scaleInv: Float32Array;
}

/** Number of 128-groups along a dimension of length n. */
export function groups128(n: number): number {
  return Math.ceil(n / FP8_BLOCK);
}

type QuantKernel = (x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null) => void;

/** Calls a quantisation kernel on the operand at x[off ..] with row stride ld. */
function run(
  k: QuantKernel, x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  const both = codes !== null && scales !== null; // codes and scales go together
  k(off === 0 ? x : x.subarray(off), rows > 1 ? ld : Math.max(ld, cols), rows, cols, both ? codes : null, both ? scales : null, out);
}

/**
 * 1x128 tiles along the rows of x [rows, cols] (row r at x[off + r * ld ..]). Writes any of:
 * `codes` [rows, cols] and `scales` [rows, ceil(cols/128)] (both or neither), `out` [rows, cols]
 * = the dequantised values. `out` may alias x when off = 0 and ld = cols.
 */
export function quantTiles1x128(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  const k = kernels();
  run(k.fp8QuantTiles1x128, x, off, ld, rows, cols, codes, scales, out);
}

/**
 * 128x1 tiles (128 consecutive rows of one column) of x [rows, cols] (row r at x[off + r * ld ..]),
 * i.e. the 1x128 tiles of x^T, in x's own layout: `codes` [rows, cols] (codes[r, c] is the code
 * of x^T[c, r]), `scales` [ceil(rows/128), cols] (scale of the tile of column c holding row r at
 * [r/128, c]), `out` [rows, cols] dequantised. `out` may alias x when off = 0 and ld = cols.
 */
export function quantTiles128x1(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  const k = kernels();
  run(k.fp8QuantTiles128x1, x, off, ld, rows, cols, codes, scales, out);
}

/**
 * 128x128 blocks of a weight x [rows, cols] (row r at x[off + r * ld ..]): `codes` [rows, cols]
 * and `scaleInv` [ceil(rows/128), ceil(cols/128)] (both or neither), `out` [rows, cols]
 * dequantised. Bit-identical to checkpoint-weights.ts `quantizeBlocks128` (float scales).
 */
export function quantBlocks128(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scaleInv: Float32Array | null, out: Float32Array | null,
): void {
  const k = kernels();
  run(k.fp8QuantBlocks128, x, off, ld, rows, cols, codes, scaleInv, out);
}

/** out [rows, cols] = float32(e4m3(code) * scale[row, tile]) of 1x128 tiles. */
export function dequantTiles1x128Into(q: Fp8Tiles, out: Float32Array): void {
  kernels().fp8Dequant(q.codes, q.scales, q.rows, q.cols, 1, out);
}

/** out [rows, cols] = float32(e4m3(code) * scaleInv[row/128, col/128]) of 128x128 blocks. */
export function dequantBlocks128Into(q: Fp8Blocks, out: Float32Array): void {
  kernels().fp8Dequant(q.codes, q.scaleInv, q.rows, q.cols, FP8_BLOCK, out);
}

/**
 * The Wgrad X^T operand from the FP8 copy cached by the forward pass (§3.5.2 workflow, README
 * `wgrad_cached`): the 1x128-tile codes are dequantised, then re-quantised in 128x1 tiles
 * (= 1x128 tiles of X^T). Writes codes/scales (layout of quantTiles128x1) and/or the
 * dequantised values into `out` [rows, cols] (required: it holds the intermediate values).
 */
export function requantTiles128x1(q: Fp8Tiles, codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array): void {
  dequantTiles1x128Into(q, out);
  quantTiles128x1(out, 0, q.cols, q.rows, q.cols, codes, scales, out);
}
