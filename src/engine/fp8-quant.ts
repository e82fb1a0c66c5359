/**
 * Operand quantisation of the FP8 training GEMMs (DeepSeek-V3 §3.3.2; fixtures README
 * `fp8-linear/`): the block rule of fp8.ts applied to GEMM operands as tight loops over typed
 * arrays, writing E4M3 codes + scales (the FP8 copy) and/or the dequantised float32 values
 * `float32(e4m3(code) * s)` (what the training fast path multiplies with the float32 GEMM).
 *
 * Group orientations (groups always run along the GEMM's inner dimension, §3.3.2 / appendix B.2):
 *   - 1x128 tiles: 128 consecutive elements of a row (activations in Fprop, dY in Dgrad);
 *   - 128x1 tiles: 128 consecutive rows of one column, i.e. the 1x128 tiles of the transpose
 *     (dY^T and X^T in Wgrad), kept in the untransposed [rows, cols] layout so the GEMM can
 *     read them with a transpose flag instead of a transposed copy;
 *   - 128x128 blocks: weights (fp8.ts `quantizeBlocks128`; dequantised here).
 * Rule (every group): `amax = max(max|x|, 1e-4)`, `s = float32(amax / 448)`,
 * `code = e4m3(float32(x / s))`, stored scale s. Bit-identical to fp8.ts (tested).
 */
import { E4M3_TABLE, FP8_BLOCK, e4m3FromBits, fp8Scale } from './fp8.js';

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

// x / s is computed as x * (1 / s) in float64 and then rounded to float32: for float32 x and s
// this equals the float32 division exactly (|x*inv - x/s| <= 2^-52 |x/s|, while a float32 rounding
// midpoint is never closer than ~2^-49 |x/s| to a quotient of two float32 values), except for
// results in the float32 subnormal range, which are far below E4M3's smallest step and encode to
// +-0 either way. A multiplication is much cheaper than a division in the inner loops.
// Where codes are wanted, the float32 quotient is read back as bits through a one-element
// scratch (no allocation) and encoded by fp8.ts; where only the dequantised value is wanted,
// e4m3Round does the rounding in float64 arithmetic, which avoids that round trip.
const one = new Float32Array(1);
const oneBits = new Uint32Array(one.buffer);
const VELTKAMP = 2 ** 49 + 1; // splits a double into its leading 53 - 49 = 4 significant bits
const SUBNORMAL_MAGIC = 1.5 * 2 ** 43; // x + M - M rounds x to a multiple of 2^-9 (RNE)
const MIN_NORMAL = 2 ** -6;

/**
 * The E4M3 value nearest to a float32 q (ties to even, saturating at +-448), i.e.
 * E4M3_TABLE[e4m3FromBits(bits of q)] (NaN for NaN), up to the sign of zero (results that
 * round to zero are +0). Normal range: Veltkamp's split of q with 4 significant bits (checked
 * equal to the codec on every float32 in [0, 480]; test/fp8-gemm.test.ts samples it); subnormal
 * range (|q| < 2^-6): rounding to the fixed 2^-9 grid; |q| >= 448 (infinities too): +-448.
 */
export function e4m3Round(q: number): number {
  const a = Math.abs(q);
  if (a < MIN_NORMAL) return q + SUBNORMAL_MAGIC - SUBNORMAL_MAGIC;
  if (a >= 448) return q > 0 ? 448 : -448;
  const c = q * VELTKAMP;
  return c - (c - q);
}

// Per-column scales and their float64 inverses for 128x1 tiles (grown on demand).
let colScale = new Float32Array(FP8_BLOCK);
let colInv = new Float64Array(FP8_BLOCK);

/**
 * 1x128 tiles along the rows of x [rows, cols] (row r at x[off + r * ld ..]). Writes any of:
 * `codes` [rows, cols] and `scales` [rows, ceil(cols/128)] (both or neither), `out` [rows, cols]
 * = the dequantised values. `out` may alias x when off = 0 and ld = cols.
 */
export function quantTiles1x128(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  // two workers, so that each inner loop stays monomorphic for the JIT
  if (codes && scales) encodeRows(x, off, ld, rows, cols, codes, scales, out);
  else if (out) qdqRows(x, off, ld, rows, cols, out);
}

/** max(|x[i]|) for i in [from, to) (NaN ignored). */
function absMax(x: Float32Array, from: number, to: number): number {
  let amax = 0;
  for (let i = from; i < to; i++) {
    const v = Math.abs(x[i]!);
    if (v > amax) amax = v;
  }
  return amax;
}

function encodeRows(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array, scales: Float32Array, out: Float32Array | null,
): void {
  const nt = groups128(cols);
  const f = one;
  const bits = oneBits;
  const table = E4M3_TABLE;
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const c0 = t * FP8_BLOCK;
      const src = off + r * ld + c0;
      const end = src + Math.min(FP8_BLOCK, cols - c0);
      const s = fp8Scale(absMax(x, src, end));
      const inv = 1 / s;
      scales[r * nt + t] = s;
      const d = r * cols + c0 - src; // dst index = src index + d
      for (let i = src; i < end; i++) {
        f[0] = x[i]! * inv;
        const c = e4m3FromBits(bits[0]!);
        codes[i + d] = c;
        if (out) out[i + d] = table[c]! * s;
      }
    }
  }
}

function qdqRows(x: Float32Array, off: number, ld: number, rows: number, cols: number, out: Float32Array): void {
  const nt = groups128(cols);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const c0 = t * FP8_BLOCK;
      const src = off + r * ld + c0;
      const end = src + Math.min(FP8_BLOCK, cols - c0);
      const s = fp8Scale(absMax(x, src, end));
      const inv = 1 / s;
      const d = r * cols + c0 - src;
      for (let i = src; i < end; i++) out[i + d] = e4m3Round(Math.fround(x[i]! * inv)) * s;
    }
  }
}

/**
 * 128x1 tiles (128 consecutive rows of one column) of x [rows, cols] (row r at x[off + r * ld ..]),
 * i.e. the 1x128 tiles of x^T, in x's own layout: `codes` [rows, cols] (codes[r, c] is the code
 * of x^T[c, r]), `scales` [ceil(rows/128), cols] (scale of the tile of column c holding row r at
 * [r/128, c]), `out` [rows, cols] dequantised. Works on whole rows (row-major passes). `out` may
 * alias x when off = 0 and ld = cols.
 */
export function quantTiles128x1(
  x: Float32Array, off: number, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  if (colScale.length < cols) {
    colScale = new Float32Array(cols);
    colInv = new Float64Array(cols);
  }
  for (let r0 = 0; r0 < rows; r0 += FP8_BLOCK) {
    const r1 = Math.min(rows, r0 + FP8_BLOCK);
    columnScales(x, off, ld, r0, r1, cols, colScale, colInv);
    if (scales) scales.set(colScale.subarray(0, cols), (r0 / FP8_BLOCK) * cols);
    if (codes) encodeCols(x, off, ld, r0, r1, cols, colScale, colInv, codes, out);
    else if (out) qdqCols(x, off, ld, r0, r1, cols, colScale, colInv, out);
  }
}

/** Scales (and float64 inverses) of the 128x1 tiles of rows [r0, r1) of every column. */
function columnScales(x: Float32Array, off: number, ld: number, r0: number, r1: number, cols: number, sc: Float32Array, inv: Float64Array): void {
  sc.fill(0, 0, cols); // column amax first
  for (let r = r0; r < r1; r++) {
    const src = off + r * ld;
    for (let c = 0; c < cols; c++) {
      const v = Math.abs(x[src + c]!);
      if (v > sc[c]!) sc[c] = v;
    }
  }
  for (let c = 0; c < cols; c++) {
    const s = fp8Scale(sc[c]!);
    sc[c] = s;
    inv[c] = 1 / s;
  }
}

function encodeCols(
  x: Float32Array, off: number, ld: number, r0: number, r1: number, cols: number,
  sc: Float32Array, inv: Float64Array, codes: Uint8Array, out: Float32Array | null,
): void {
  const f = one;
  const bits = oneBits;
  const table = E4M3_TABLE;
  for (let r = r0; r < r1; r++) {
    const src = off + r * ld;
    const dst = r * cols;
    for (let c = 0; c < cols; c++) {
      f[0] = x[src + c]! * inv[c]!;
      const code = e4m3FromBits(bits[0]!);
      codes[dst + c] = code;
      if (out) out[dst + c] = table[code]! * sc[c]!;
    }
  }
}

function qdqCols(
  x: Float32Array, off: number, ld: number, r0: number, r1: number, cols: number,
  sc: Float32Array, inv: Float64Array, out: Float32Array,
): void {
  for (let r = r0; r < r1; r++) {
    const src = off + r * ld;
    const dst = r * cols;
    for (let c = 0; c < cols; c++) out[dst + c] = e4m3Round(Math.fround(x[src + c]! * inv[c]!)) * sc[c]!;
  }
}

/** out [rows, cols] = float32(e4m3(code) * scale[row, tile]) of 1x128 tiles. */
export function dequantTiles1x128Into(q: Fp8Tiles, out: Float32Array): void {
  const { rows, cols, codes, scales } = q;
  const nt = groups128(cols);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const s = scales[r * nt + t]!;
      const o = r * cols + t * FP8_BLOCK;
      const e = r * cols + Math.min(cols, (t + 1) * FP8_BLOCK);
      for (let i = o; i < e; i++) out[i] = E4M3_TABLE[codes[i]!]! * s;
    }
  }
}

/** out [rows, cols] = float32(e4m3(code) * scaleInv[row/128, col/128]) of 128x128 blocks. */
export function dequantBlocks128Into(q: Fp8Blocks, out: Float32Array): void {
  const { rows, cols, codes, scaleInv } = q;
  const nb = groups128(cols);
  for (let r = 0; r < rows; r++) {
    const sRow = ((r / FP8_BLOCK) | 0) * nb;
    for (let b = 0; b < nb; b++) {
      const s = scaleInv[sRow + b]!;
      const o = r * cols + b * FP8_BLOCK;
      const e = r * cols + Math.min(cols, (b + 1) * FP8_BLOCK);
      for (let i = o; i < e; i++) out[i] = E4M3_TABLE[codes[i]!]! * s;
    }
  }
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
