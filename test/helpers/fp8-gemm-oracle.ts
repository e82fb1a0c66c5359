/**
 * The FP8 GEMM oracle's test side: the operands of the three GEMMs of a Linear (Fprop, Dgrad,
 * Wgrad) built from the plain-loop quantisers at the end of this file (1x128 tiles) and
 * codec.ts / checkpoint-weights.ts (128x128 blocks), independent of the quantisation kernels,
 * and the reference Fprop / Dgrad / Wgrad on them. The exact block GEMM and the limited
 * accumulator themselves live in src/engine/fp8/gemm-oracle.ts (the fp8 experiment uses them
 * too) and are re-exported here, so the tests import everything from this one file.
 */
import { DsvError } from '../../src/errors.js';
import { E4M3_TABLE, FP8_BLOCK, e4m3FromBits, fp8Scale } from '../../src/engine/fp8/codec.js';
import { fp8GemmRef, transpose, type Fp8GemmOperand } from '../../src/engine/fp8/gemm-oracle.js';
import { dequantFp8Weight, quantizeBlocks128 } from '../../src/engine/fp8/checkpoint-weights.js';
import { groups128 } from '../../src/engine/fp8/quant.js';

export {
  fp8GemmIdeal, fp8GemmLimited, fp8GemmRef, LIMITED_ACC_BITS, limitedAdd, transpose, truncSignificant, type Fp8GemmOperand,
} from '../../src/engine/fp8/gemm-oracle.js';

// ---- the three GEMMs of a Linear (README `fp8-linear/` table; paper §3.3, Figure 6) ---------
// X [M, K] activations, W [N, K] weight (out x in), dY [M, N] output gradient, all float32.
// Built from the plain-loop quantisers (below, and checkpoint-weights.ts) and plain transposes,
// independently of src/engine/fp8/quant.ts.

export interface Fp8GemmPair {
  a: Fp8GemmOperand;
  b: Fp8GemmOperand;
}

function tiles(v: Float32Array, rows: number, inner: number): Fp8GemmOperand {
  const q = quantizeTiles1x128(v, rows, inner);
  return { rows, inner, codes: q.codes, scales: q.scales, rowGroup: 1 };
}

/** Fprop Y = X W^T: A = X in 1x128 tiles along K, B = W in 128x128 blocks. */
export function fpropOperands(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Fp8GemmPair {
  const q = quantizeBlocks128(w, n, k);
  return { a: tiles(x, m, k), b: { rows: n, inner: k, codes: q.codes, scales: q.scaleInv, rowGroup: 128 } };
}

/**
 * Dgrad dX = dY W: A = dY in 1x128 tiles along N; B = W^T [K, N], the Fprop block codes and
 * scales transposed, not re-quantised (appendix B.2: sB[k, b] = w_scale_inv[b, k / 128]).
 */
export function dgradOperands(dy: Float32Array, w: Float32Array, m: number, k: number, n: number): Fp8GemmPair {
  const q = quantizeBlocks128(w, n, k);
  const wt = { rows: k, inner: n, codes: transpose(q.codes, n, k), scales: transpose(q.scaleInv, groups128(n), groups128(k)), rowGroup: 128 as const };
  return { a: tiles(dy, m, n), b: wt };
}

/**
 * Wgrad dW = dY^T X: A = dY^T [N, M] and B = X^T [K, M], both in 1x128 tiles along M (the 128x1
 * tiles of dY and X). `cached` (README `wgrad_cached`, paper §3.5.2): X^T is re-quantised from
 * the FP8 copy the forward pass caches, float32(e4m3(x_codes) * x_scales), transposed.
 */
export function wgradOperands(dy: Float32Array, x: Float32Array, m: number, k: number, n: number, cached: boolean): Fp8GemmPair {
  let xs = x;
  if (cached) {
    const q = quantizeTiles1x128(x, m, k);
    xs = dequantizeTiles1x128(q.codes, q.scales, m, k);
  }
  return { a: tiles(transpose(dy, m, n), n, m), b: tiles(transpose(xs, m, k), k, m) };
}

/** Reference Fprop Y [M, N]. */
export function refFprop(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Float32Array {
  const p = fpropOperands(x, w, m, k, n);
  return fp8GemmRef(p.a, p.b);
}

/** Reference Dgrad dX [M, K]. */
export function refDgrad(dy: Float32Array, w: Float32Array, m: number, k: number, n: number): Float32Array {
  const p = dgradOperands(dy, w, m, k, n);
  return fp8GemmRef(p.a, p.b);
}

/** Reference Wgrad dW [N, K] (from float32 X, or with `cached` from its FP8 copy). */
export function refWgrad(dy: Float32Array, x: Float32Array, m: number, k: number, n: number, cached: boolean): Float32Array {
  const p = wgradOperands(dy, x, m, k, n, cached);
  return fp8GemmRef(p.a, p.b);
}

// ---- plain-loop 1x128 tile quantisers (the oracle of Kernels.fp8QuantTiles1x128 / fp8Dequant) ----

/** Per-row 1x128 tiles: codes [rows, cols] and scales [rows, ceil(cols/128)]. */
export interface TileQuant {
  codes: Uint8Array;
  scales: Float32Array;
}

function checkLen(what: string, len: number, expected: number): void {
  if (len !== expected) throw new DsvError(`${what}: length ${len} does not match the shape (expected ${expected})`);
}

// Reused between calls: one 128-element row segment, scaled, read back as float32 bits.
const segF32 = new Float32Array(FP8_BLOCK);
const segU32 = new Uint32Array(segF32.buffer);

/** Encodes x[off .. off+n) divided by s into codes[off ..) (float32 division, then E4M3). */
function encodeScaled(x: Float32Array, off: number, n: number, s: number, codes: Uint8Array): void {
  for (let j = 0; j < n; j++) segF32[j] = x[off + j]! / s;
  for (let j = 0; j < n; j++) codes[off + j] = e4m3FromBits(segU32[j]!);
}

/**
 * Quantises activations per 1x128 tile (128 consecutive elements of a row; the last tile of a
 * row is shorter when cols is not a multiple of 128).
 */
export function quantizeTiles1x128(x: Float32Array, rows: number, cols: number, ue8m0 = false): TileQuant {
  checkLen('quantizeTiles1x128 input', x.length, rows * cols);
  const nt = Math.ceil(cols / FP8_BLOCK);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * nt);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < nt; t++) {
      const off = r * cols + t * FP8_BLOCK;
      const n = Math.min(FP8_BLOCK, cols - t * FP8_BLOCK);
      let amax = 0;
      for (let j = 0; j < n; j++) {
        const v = Math.abs(x[off + j]!);
        if (v > amax) amax = v;
      }
      const s = fp8Scale(amax, ue8m0);
      scales[r * nt + t] = s;
      encodeScaled(x, off, n, s, codes);
    }
  }
  return { codes, scales };
}

/** Inverse of quantizeTiles1x128: float32(e4m3(code) * scale[row, tile]). */
export function dequantizeTiles1x128(codes: Uint8Array, scales: Float32Array, rows: number, cols: number): Float32Array {
  const nt = Math.ceil(cols / FP8_BLOCK);
  checkLen('dequantizeTiles1x128 codes', codes.length, rows * cols);
  checkLen('dequantizeTiles1x128 scales', scales.length, rows * nt);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out[r * cols + c] = E4M3_TABLE[codes[r * cols + c]!]! * scales[r * nt + ((c / FP8_BLOCK) | 0)]!;
    }
  }
  return out;
}

/** Inverse of quantizeBlocks128 (same arithmetic as dequantFp8Weight). */
export function dequantizeBlocks128(codes: Uint8Array, scaleInv: Float32Array, rows: number, cols: number): Float32Array {
  return dequantFp8Weight(codes, scaleInv, rows, cols, 'dequantizeBlocks128');
}
