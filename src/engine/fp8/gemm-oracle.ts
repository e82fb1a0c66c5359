/**
 * The exact FP8 block GEMM of the DeepSeek-V3 training recipe, in plain TypeScript: the ORACLE
 * of the FP8 training Linear (src/engine/ops/fp8-training-linear.ts; the tests build its
 * operands in test/helpers/fp8-gemm-oracle.ts) and the accumulator model of `dsv3 experiment
 * fp8`'s accumulation-precision ablation (src/experiments/fp8-ablations.ts). Slow loops on
 * purpose: nothing here is a kernel.
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
import { E4M3_TABLE, FP8_BLOCK } from './codec.js';
import { groups128 } from './quant.js';

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
