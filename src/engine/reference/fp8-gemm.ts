/**
 * Reference block-scaled FP8 GEMM (Kernels.fp8Gemm; DeepSeek-V3 §3.3.2, Figure 7b, N_C = 128):
 * C[i, j] (+)= the ascending-block float32 promotion of the exact block sums
 *
 *     acc = +0;  for b: acc = float32(acc + float32(float32(P_b) * float32(sA(i, b) * sB(j, b))))
 *     P_b = sum over k in block b of e4m3(A[i, k]) * e4m3(B[j, k])     (exact, see below)
 *
 * then C = acc (beta 0) or float32(C + acc) (beta 1). A product of two E4M3 values is exact and a
 * block sum (a multiple of 2^-18 below 2^25) is exact in float64 in any order, so this is the
 * promotion of the exact FP8 oracle (test/helpers/fp8-gemm-oracle.ts `fp8GemmRef`) on the
 * kernel's operand layouts. The native kernel (native/src/isa/fp8_train_gemm.c) sums P_b in
 * float32 instead (bf16 dot products on the codes), which differs from this by float32
 * summation order only.
 *
 * Layouts (kernels.ts `fp8Gemm`; rows = m for A, n for B; nb = ceil(k / 128)):
 *   0 codes [rows][k], scales [rows][nb];   1 codes [k][rows], scales [nb][rows];
 *   2 codes [rows][k], scales [ceil(rows/128)][nb];   3 codes [k][rows], scales [nb][ceil(rows/128)].
 */
import { E4M3_TABLE, FP8_BLOCK } from '../fp8/codec.js';

/** The operand layouts of Kernels.fp8Gemm. */
export const Fp8GemmLayout = { rowsTiles: 0, colsTiles: 1, rowsBlocks: 2, colsBlocks: 3 } as const;

/** Number of scales an operand of `rows` rows needs in `layout`. */
export function fp8GemmScaleCount(layout: number, rows: number, k: number): number {
  const nb = Math.ceil(k / FP8_BLOCK);
  return layout <= 1 ? rows * nb : Math.ceil(rows / FP8_BLOCK) * nb;
}

function check(name: string, codes: Uint8Array, scales: Float32Array, layout: number, rows: number, k: number): void {
  if (!(layout >= 0 && layout <= 3 && Number.isInteger(layout))) throw new RangeError(`fp8Gemm: ${name} layout ${layout} is not 0..3`);
  if (codes.length < rows * k) throw new RangeError(`fp8Gemm: ${name} has ${codes.length} codes, the call needs ${rows * k}`);
  const ns = fp8GemmScaleCount(layout, rows, k);
  if (scales.length < ns) throw new RangeError(`fp8Gemm: ${name} has ${scales.length} scales, the call needs ${ns}`);
}

/** Accessors (code index of (r, p), scale index of (r, block)) for an operand layout. */
function accessors(layout: number, rows: number, k: number): { code: (r: number, p: number) => number; scale: (r: number, b: number) => number } {
  const nb = Math.ceil(k / FP8_BLOCK);
  const rb = Math.ceil(rows / FP8_BLOCK);
  const code = layout & 1 ? (r: number, p: number): number => p * rows + r : (r: number, p: number): number => r * k + p;
  const scale = [
    (r: number, b: number): number => r * nb + b,
    (r: number, b: number): number => b * rows + r,
    (r: number, b: number): number => ((r / FP8_BLOCK) | 0) * nb + b,
    (r: number, b: number): number => b * rb + ((r / FP8_BLOCK) | 0),
  ][layout]!;
  return { code, scale };
}

export function fp8Gemm(
  m: number, n: number, k: number, aCodes: Uint8Array, aScales: Float32Array, aLayout: number,
  bCodes: Uint8Array, bScales: Float32Array, bLayout: number, beta: 0 | 1, c: Float32Array, ldc: number,
): void {
  check('A', aCodes, aScales, aLayout, m, k);
  check('B', bCodes, bScales, bLayout, n, k);
  if (beta !== 0 && beta !== 1) throw new RangeError(`fp8Gemm: beta must be 0 or 1, got ${beta}`);
  if (m > 0 && n > 0 && (ldc < n || c.length < (m - 1) * ldc + n)) throw new RangeError(`fp8Gemm: C [${m}, ${n}] does not fit ldc ${ldc} and ${c.length} elements`);
  const A = accessors(aLayout, m, k);
  const B = accessors(bLayout, n, k);
  const nb = Math.ceil(k / FP8_BLOCK);
  // decoded rows (float64 values of the codes), one row of A at a time and all of B
  const bv = new Float64Array(n * k);
  for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) bv[j * k + p] = E4M3_TABLE[bCodes[B.code(j, p)]!]!;
  const av = new Float64Array(k);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) av[p] = E4M3_TABLE[aCodes[A.code(i, p)]!]!;
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        const p0 = b * FP8_BLOCK;
        const p1 = Math.min(k, p0 + FP8_BLOCK);
        let s = 0;
        for (let p = p0; p < p1; p++) s += av[p]! * bv[j * k + p]!;
        const sc = Math.fround(aScales[A.scale(i, b)]! * bScales[B.scale(j, b)]!);
        acc = Math.fround(acc + Math.fround(Math.fround(s) * sc));
      }
      const o = i * ldc + j;
      c[o] = beta === 0 ? acc : c[o]! + acc;
    }
  }
}

/**
 * Kernels.fp8GemmBatch: problem i (dims[3i..3i+2] = m, n, k) is fp8Gemm(m, n, k, aCodes[i],
 * aScales[i], aLayout, bCodes[i], bScales[i], bLayout, beta, cs[i], ldc), in order.
 */
export function fp8GemmBatch(
  dims: Int32Array, aCodes: readonly Uint8Array[], aScales: readonly Float32Array[], aLayout: number,
  bCodes: readonly Uint8Array[], bScales: readonly Float32Array[], bLayout: number, beta: 0 | 1, cs: readonly Float32Array[], ldc: number,
): void {
  if (dims.length % 3 !== 0) throw new RangeError(`fp8GemmBatch: dims holds ${dims.length} values, not (m, n, k) triples`);
  const count = dims.length / 3;
  if (aCodes.length < count || aScales.length < count || bCodes.length < count || bScales.length < count || cs.length < count) {
    throw new RangeError('fp8GemmBatch: aCodes, aScales, bCodes, bScales and cs need one array per problem');
  }
  for (let i = 0; i < count; i++) {
    fp8Gemm(dims[3 * i]!, dims[3 * i + 1]!, dims[3 * i + 2]!, aCodes[i]!, aScales[i]!, aLayout, bCodes[i]!, bScales[i]!, bLayout, beta, cs[i]!, ldc);
  }
}
