/**
 * The exact FP8 block GEMM of the DeepSeek-V3 training recipe, in plain TypeScript: the ORACLE
 * for the FP8 training Linear (src/engine/ops/fp8-training-linear.ts), used by tests only. Its
 * operands come from the plain-loop quantisers at the end of this file (1x128 tiles) and
 * codec.ts / checkpoint-weights.ts (128x128 blocks), independent of the quantisation kernels.
 *
 * Paper §3.3.2 ("increased accumulation precision", Figure 7b): operands are E4M3 codes with one
 * float32 scale per group of N_C = 128 elements along the inner dimension; the partial sum of
 * each N_C slice is promoted to an FP32 accumulator with the scales applied. Exactly as the
 * fixtures README (`fp8-linear/`, "Accumulation") specifies, per output element:
 *
 *     acc = +0 (float32)
 *     for b = 0 .. nb-1 (ascending):
 *         P = float32(exact sum over k in block b of e4m3(A[i,k]) * e4m3(B[j,k]))
 *         s = float32(sA[i,b] * sB[j,b])
 *         acc = float32(acc + float32(P * s))
 *
 * A product of two E4M3 values is exact, and the block sum (a multiple of 2^-18 below 2^25) is
 * exact in float64 in any order, so this reproduces the fixture bit for bit. Every float32
 * step here is one float64 operation on float32 values, then Math.fround: correctly rounded
 * (53 >= 2*24 + 2, so the double rounding is innocuous).
 *
 * Also the limited-precision accumulator of the H800 Tensor Cores the paper describes (§3.3.2:
 * "limited to retaining around 14 bits", nearly 2% error at K = 4096 without promotion), in the
 * README's model: 14 fraction bits (15 significant), truncated toward zero after each addition
 * of the exact sum; with promotion every N_C = 128 (`promoted`) or over all of K (`unpromoted`).
 */
import { DsvError } from '../../src/errors.js';
import { E4M3_TABLE, FP8_BLOCK, e4m3FromBits, fp8Scale } from '../../src/engine/fp8/codec.js';
import { dequantFp8Weight, quantizeBlocks128 } from '../../src/engine/fp8/checkpoint-weights.js';
import { groups128 } from '../../src/engine/fp8/quant.js';

/**
 * A GEMM operand [rows, inner]: E4M3 codes, row-major, and scales with groups of 128 along the
 * inner dimension; `rowGroup` rows share a scale row (1: 1x128 tiles, 128: 128x128 blocks).
 * The scale of (row r, inner block b) is scales[floor(r / rowGroup) * ceil(inner/128) + b].
 */
export interface Fp8GemmOperand {
  rows: number;
  inner: number;
  codes: Uint8Array;
  scales: Float32Array;
  rowGroup: 1 | 128;
}

/** Transpose of a row-major [rows, cols] array (codes or scales). */
export function transpose<T extends Uint8Array | Float32Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as { new (n: number): T })(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

function decode(codes: Uint8Array): Float64Array {
  const v = new Float64Array(codes.length);
  for (let i = 0; i < codes.length; i++) v[i] = E4M3_TABLE[codes[i]!]!;
  return v;
}

function checkOperands(a: Fp8GemmOperand, b: Fp8GemmOperand): void {
  if (a.inner !== b.inner) throw new RangeError(`fp8 GEMM: inner dims differ (${a.inner} vs ${b.inner})`);
  for (const [o, name] of [[a, 'A'], [b, 'B']] as const) {
    const need = Math.ceil(o.rows / o.rowGroup) * groups128(o.inner);
    if (o.codes.length !== o.rows * o.inner) throw new RangeError(`fp8 GEMM: ${name} has ${o.codes.length} codes, expected ${o.rows}x${o.inner}`);
    if (o.scales.length !== need) throw new RangeError(`fp8 GEMM: ${name} has ${o.scales.length} scales, expected ${need}`);
  }
}

/**
 * C[i, j] = value(...) for i < A.rows, j < B.rows: `value` gets the decoded codes, the offsets of
 * A's row i and B's row j, and of their scale rows (each row has ceil(inner/128) scales).
 */
function eachElement(
  a: Fp8GemmOperand, b: Fp8GemmOperand,
  value: (av: Float64Array, ai: number, bv: Float64Array, bj: number, sa: number, sb: number) => number,
): Float32Array {
  checkOperands(a, b);
  const { inner } = a;
  const nb = groups128(inner);
  const av = decode(a.codes);
  const bv = decode(b.codes);
  const out = new Float32Array(a.rows * b.rows);
  for (let i = 0; i < a.rows; i++) {
    const sa = ((i / a.rowGroup) | 0) * nb;
    for (let j = 0; j < b.rows; j++) {
      out[i * b.rows + j] = value(av, i * inner, bv, j * inner, sa, ((j / b.rowGroup) | 0) * nb); // the store rounds
    }
  }
  return out;
}

/**
 * Runs the block loop of C[i, j] for every element, ascending blocks: `block(aOff, bOff, n)`
 * gives the block's partial sum P (unscaled), `promote(acc, P, sA, sB)` folds it into the
 * accumulator, whose value is stored (a float32 rounding, a no-op where acc already is one).
 */
function blockGemm(
  a: Fp8GemmOperand, b: Fp8GemmOperand,
  block: (av: Float64Array, ao: number, bv: Float64Array, bo: number, n: number) => number,
  promote: (acc: number, p: number, sa: number, sb: number) => number,
): Float32Array {
  const { inner } = a;
  const nb = groups128(inner);
  return eachElement(a, b, (av, ai, bv, bj, sa, sb) => {
    let acc = 0;
    for (let k = 0; k < nb; k++) {
      const k0 = k * FP8_BLOCK;
      acc = promote(acc, block(av, ai + k0, bv, bj + k0, Math.min(FP8_BLOCK, inner - k0)), a.scales[sa + k]!, b.scales[sb + k]!);
    }
    return acc;
  });
}

/** Exact sum of n products of E4M3 values (float64 is exact here, see the file comment). */
function exactBlock(av: Float64Array, ao: number, bv: Float64Array, bo: number, n: number): number {
  let p = 0;
  for (let k = 0; k < n; k++) p += av[ao + k]! * bv[bo + k]!;
  return p;
}

/** The N_C promotion of Figure 7b: acc = float32(acc + float32(float32(P) * float32(sA * sB))). */
function promoteF32(acc: number, p: number, sa: number, sb: number): number {
  return Math.fround(acc + Math.fround(Math.fround(p) * Math.fround(sa * sb)));
}

/** C = A B^T [A.rows, B.rows] with exact block sums and float32 promotion every N_C = 128. */
export function fp8GemmRef(a: Fp8GemmOperand, b: Fp8GemmOperand): Float32Array {
  return blockGemm(a, b, exactBlock, promoteF32);
}

/**
 * The ideal accumulator (README `y_fp8_exact`): sum_b P_exact * sA * sB evaluated in float64
 * (exact block sums and scale products), rounded to float32 once.
 */
export function fp8GemmIdeal(a: Fp8GemmOperand, b: Fp8GemmOperand): Float32Array {
  return blockGemm(a, b, exactBlock, (acc, p, sa, sb) => acc + p * (sa * sb));
}

/** x truncated toward zero to `bits` significant bits (x finite, normal). */
export function truncSignificant(x: number, bits: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const q = 2 ** (exponentOf(a) - bits + 1);
  const t = Math.floor(a / q) * q;
  return x < 0 ? -t : t;
}

/** floor(log2(a)) for a positive finite a, exactly. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * One step of the limited accumulator: trunc(acc + p) to `bits` significant bits, truncating
 * the EXACT sum (README): the float64 sum s is corrected with its rounding error (TwoSum) when s
 * itself lies on the coarse grid and the exact value is just inside it.
 */
export function limitedAdd(acc: number, p: number, bits: number): number {
  const s = acc + p;
  const bb = s - acc;
  const err = acc - (s - bb) + (p - bb);
  if (s === 0) return truncSignificant(err, bits);
  const t = truncSignificant(s, bits);
  if (err === 0 || t !== s || Math.sign(err) === Math.sign(s)) return t;
  // exact value = s minus a tiny amount toward zero: one unit of the grid just below |s|
  const a = Math.abs(s);
  const e = exponentOf(a);
  const unit = 2 ** (e - bits + (a === 2 ** e ? 0 : 1));
  return s > 0 ? s - unit : s + unit;
}

/** Significant bits of the limited accumulator (14 fraction bits + the leading one). */
export const LIMITED_ACC_BITS = 15;

/**
 * C = A B^T through the limited-precision accumulator (README `limited_accumulation`):
 *   - promoted: within each block of N_C = 128 the unscaled products e4m3(a) * e4m3(b) are added
 *     in ascending k, truncating after every addition (starting from 0); the block result
 *     replaces P in the float32 promotion of fp8GemmRef (`y_limited_promoted`);
 *   - unpromoted: one limited accumulator over all K products, each scaled first,
 *     p = e4m3(a) * e4m3(b) * float32(sA * sB) (exact in float64); result float32(acc)
 *     (`y_limited_unpromoted`).
 */
export function fp8GemmLimited(a: Fp8GemmOperand, b: Fp8GemmOperand, promoted: boolean, bits = LIMITED_ACC_BITS): Float32Array {
  if (promoted) {
    const block = (av: Float64Array, ao: number, bv: Float64Array, bo: number, n: number): number => {
      let acc = 0;
      for (let k = 0; k < n; k++) acc = limitedAdd(acc, av[ao + k]! * bv[bo + k]!, bits);
      return acc;
    };
    return blockGemm(a, b, block, promoteF32);
  }
  const { inner } = a;
  return eachElement(a, b, (av, ai, bv, bj, sa, sb) => {
    let acc = 0;
    for (let k = 0; k < inner; k++) {
      const blk = (k / FP8_BLOCK) | 0;
      const s = Math.fround(a.scales[sa + blk]! * b.scales[sb + blk]!);
      acc = limitedAdd(acc, av[ai + k]! * bv[bj + k]! * s, bits);
    }
    return acc;
  });
}

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
