/**
 * Reference FP8 (E4M3) operand quantisation of the FP8 training GEMMs (DeepSeek-V3 §3.3.2;
 * fixtures README `fp8-linear/`, rule of `e4m3/`): Kernels.fp8QuantTiles1x128 /
 * fp8QuantTiles128x1 / fp8QuantBlocks128 / fp8Dequant as tight loops over typed arrays. The
 * oracle of the native kernels (native/src/isa/fp8_quant.c), which must match it bit for bit.
 *
 * Rule (every group): `amax = max(max|x|, 1e-4)` (NaN ignored), `s = float32(amax / 448)`,
 * `code = e4m3(float32(x / s))`, stored scale s, dequantised value `float32(e4m3(code) * s)`.
 * Bit-identical to the plain-loop quantisers (fp8/checkpoint-weights.ts `quantizeBlocks128`, and
 * the 1x128 tiles of test/helpers/fp8-gemm-oracle.ts; tested on the fixtures).
 *
 * x / s is computed as x * (1 / s) in float64 and then rounded to float32: for float32 x and s
 * this equals the float32 division exactly (|x*inv - x/s| <= 2^-52 |x/s|, while a float32
 * rounding midpoint is never closer than ~2^-49 |x/s| to a quotient of two float32 values),
 * except for results in the float32 subnormal range, which are far below E4M3's smallest step
 * and encode to +-0 either way. A multiplication is much cheaper than a division in the loops.
 * Where codes are wanted, the float32 quotient is read back as bits through a one-element
 * scratch (no allocation) and encoded by fp8/codec.ts; where only the dequantised value is wanted,
 * e4m3Round does the rounding in float64 arithmetic, which avoids that round trip (values that
 * round to zero then come out +0, whatever the sign of x: part of the kernels' contract).
 */
import { E4M3_TABLE, FP8_BLOCK, e4m3FromBits, fp8Scale } from '../fp8/codec.js';

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

const ceil128 = (n: number): number => Math.ceil(n / FP8_BLOCK);

function checkPair(op: string, codes: Uint8Array | null, scales: Float32Array | null): void {
  if ((codes === null) !== (scales === null)) throw new TypeError(`${op}: codes and scales must be given both or neither`);
}

/** Reference Kernels.fp8QuantTiles1x128: 1x128 tiles along the rows of x (row r at x[r * ld]). */
export function fp8QuantTiles1x128(
  x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  checkPair('fp8QuantTiles1x128', codes, scales);
  // two workers, so that each inner loop stays monomorphic for the JIT
  if (codes && scales) encodeRows(x, ld, rows, cols, codes, scales, out);
  else if (out) qdqRows(x, ld, rows, cols, out);
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
  x: Float32Array, ld: number, rows: number, cols: number, codes: Uint8Array, scales: Float32Array, out: Float32Array | null,
): void {
  const nt = ceil128(cols);
  const f = one;
  const bits = oneBits;
  const table = E4M3_TABLE;
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const c0 = t * FP8_BLOCK;
      const src = r * ld + c0;
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

function qdqRows(x: Float32Array, ld: number, rows: number, cols: number, out: Float32Array): void {
  const nt = ceil128(cols);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const c0 = t * FP8_BLOCK;
      const src = r * ld + c0;
      const end = src + Math.min(FP8_BLOCK, cols - c0);
      const s = fp8Scale(absMax(x, src, end));
      const inv = 1 / s;
      const d = r * cols + c0 - src;
      for (let i = src; i < end; i++) out[i + d] = e4m3Round(Math.fround(x[i]! * inv)) * s;
    }
  }
}

// Per-column scales and their float64 inverses for one 128-row group (grown on demand).
let colScale = new Float32Array(FP8_BLOCK);
let colInv = new Float64Array(FP8_BLOCK);

/**
 * Reference Kernels.fp8QuantTiles128x1 (block false) and fp8QuantBlocks128 (block true): 128x1
 * tiles (scales [ceil(rows/128), cols]) or 128x128 blocks (scales [ceil(rows/128),
 * ceil(cols/128)]) of x, by 128-row groups of row-major passes.
 */
function quantColumns(
  op: string, block: boolean, x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  checkPair(op, codes, scales);
  if (!codes && !out) return;
  if (colScale.length < cols) {
    colScale = new Float32Array(cols);
    colInv = new Float64Array(cols);
  }
  const nb = ceil128(cols);
  for (let r0 = 0; r0 < rows; r0 += FP8_BLOCK) {
    const r1 = Math.min(rows, r0 + FP8_BLOCK);
    columnScales(x, ld, r0, r1, cols, block, colScale, colInv);
    const g = r0 / FP8_BLOCK;
    if (scales && !block) scales.set(colScale.subarray(0, cols), g * cols);
    if (scales && block) for (let b = 0; b < nb; b++) scales[g * nb + b] = colScale[b * FP8_BLOCK]!;
    if (codes) encodeCols(x, ld, r0, r1, cols, colScale, colInv, codes, out);
    else if (out) qdqCols(x, ld, r0, r1, cols, colScale, colInv, out);
  }
}

export function fp8QuantTiles128x1(
  x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  quantColumns('fp8QuantTiles128x1', false, x, ld, rows, cols, codes, scales, out);
}

export function fp8QuantBlocks128(
  x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null,
): void {
  quantColumns('fp8QuantBlocks128', true, x, ld, rows, cols, codes, scales, out);
}

/**
 * Scales (and float64 inverses) of rows [r0, r1) of every column: per column (128x1 tiles) or
 * shared by each 128 columns (blocks: the max of their column amaxes).
 */
function columnScales(
  x: Float32Array, ld: number, r0: number, r1: number, cols: number, block: boolean, sc: Float32Array, inv: Float64Array,
): void {
  sc.fill(0, 0, cols); // column amax first
  for (let r = r0; r < r1; r++) {
    const src = r * ld;
    for (let c = 0; c < cols; c++) {
      const v = Math.abs(x[src + c]!);
      if (v > sc[c]!) sc[c] = v;
    }
  }
  if (block) {
    for (let c0 = 0; c0 < cols; c0 += FP8_BLOCK) {
      const c1 = Math.min(cols, c0 + FP8_BLOCK);
      const s = fp8Scale(absMax(sc, c0, c1));
      sc.fill(s, c0, c1);
      inv.fill(1 / s, c0, c1);
    }
    return;
  }
  for (let c = 0; c < cols; c++) {
    const s = fp8Scale(sc[c]!);
    sc[c] = s;
    inv[c] = 1 / s;
  }
}

function encodeCols(
  x: Float32Array, ld: number, r0: number, r1: number, cols: number,
  sc: Float32Array, inv: Float64Array, codes: Uint8Array, out: Float32Array | null,
): void {
  const f = one;
  const bits = oneBits;
  const table = E4M3_TABLE;
  for (let r = r0; r < r1; r++) {
    const src = r * ld;
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
  x: Float32Array, ld: number, r0: number, r1: number, cols: number, sc: Float32Array, inv: Float64Array, out: Float32Array,
): void {
  for (let r = r0; r < r1; r++) {
    const src = r * ld;
    const dst = r * cols;
    for (let c = 0; c < cols; c++) out[dst + c] = e4m3Round(Math.fround(x[src + c]! * inv[c]!)) * sc[c]!;
  }
}

/**
 * Reference Kernels.fp8Dequant: out[r, c] = float32(e4m3(codes[r, c]) * scales[floor(r /
 * blockRows), floor(c / 128)]) (scales [ceil(rows/blockRows), ceil(cols/128)]).
 */
export function fp8Dequant(codes: Uint8Array, scales: Float32Array, rows: number, cols: number, blockRows: number, out: Float32Array): void {
  const nt = ceil128(cols);
  for (let r = 0; r < rows; r++) {
    const sRow = Math.floor(r / blockRows) * nt;
    for (let t = 0; t < nt; t++) {
      const s = scales[sRow + t]!;
      const o = r * cols + t * FP8_BLOCK;
      const e = r * cols + Math.min(cols, (t + 1) * FP8_BLOCK);
      for (let i = o; i < e; i++) out[i] = E4M3_TABLE[codes[i]!]! * s;
    }
  }
}
