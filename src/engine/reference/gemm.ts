/**
 * Reference GEMM: the oracle for the native kernels, and the fallback when the addon cannot
 * load. Simple loops with the exact semantics of Kernels.gemm / Kernels.gemmBf16:
 *   C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n], row-major,
 *   op(A) = A ([m,k], lda >= k) or A^T (A stored [k,m], lda >= m); likewise op(B).
 * Each dot product is accumulated in double and rounded to float32 once when stored, so the
 * reference is at least as accurate as any float32-accumulating kernel. beta == 0 overwrites C
 * without reading it (NaN in C is ignored); alpha == 0 or k == 0 leaves beta * C and does not
 * read A or B (BLAS convention), exactly like the native kernels.
 */
import { f32ToBf16 } from '../dtype.js';

function checkArgs(
  name: string, transA: boolean, transB: boolean, m: number, n: number, k: number,
  aLen: number, lda: number, bLen: number, ldb: number, cLen: number, ldc: number,
): void {
  for (const [v, label] of [[m, 'm'], [n, 'n'], [k, 'k']] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name}: ${label} must be a non-negative integer, got ${v}`);
  }
  const aCols = transA ? m : k, aRows = transA ? k : m;
  const bCols = transB ? k : n, bRows = transB ? n : k;
  const lds = [[lda, aCols, 'lda'], [ldb, bCols, 'ldb'], [ldc, n, 'ldc']] as const;
  for (const [ld, cols, label] of lds) {
    if (!Number.isInteger(ld) || ld < Math.max(1, cols)) throw new RangeError(`${name}: ${label} (${ld}) must be >= ${Math.max(1, cols)}`);
  }
  const extent = (rows: number, cols: number, ld: number): number => (rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0);
  const reads = m > 0 && n > 0 && k > 0;
  const needs = [
    [aLen, reads ? extent(aRows, aCols, lda) : 0, 'a'],
    [bLen, reads ? extent(bRows, bCols, ldb) : 0, 'b'],
    [cLen, extent(m, n, ldc), 'c'],
  ] as const;
  for (const [have, need, label] of needs) {
    if (have < need) throw new RangeError(`${name}: argument '${label}' has ${have} elements, the call needs ${need}`);
  }
}

/** C = beta * C (beta == 0: zero), for the alpha == 0 / k == 0 case. */
function scaleC(m: number, n: number, beta: number, c: Float32Array, ldc: number): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) c[i * ldc + j] = beta === 0 ? 0 : beta * c[i * ldc + j]!;
  }
}

/** The shared loop nest; `bAt(off)` reads element `off` of B as a number. */
function gemmLoops(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: ArrayLike<number>, lda: number, bAt: (off: number) => number, ldb: number,
  beta: number, c: Float32Array, ldc: number,
): void {
  if (m === 0 || n === 0) return;
  if (k === 0 || Math.fround(alpha) === 0) {
    scaleC(m, n, Math.fround(beta), c, ldc);
    return;
  }
  // op(A)(i,p) = a[ia*i + pa*p], op(B)(p,j) = b[pb*p + jb*j]
  const ia = transA ? 1 : lda, pa = transA ? lda : 1;
  const pb = transB ? 1 : ldb, jb = transB ? ldb : 1;
  const al = Math.fround(alpha), be = Math.fround(beta);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ia * i + pa * p]! * bAt(pb * p + jb * j);
      const o = i * ldc + j;
      c[o] = be === 0 ? al * s : al * s + be * c[o]!;
    }
  }
}

/** Reference Kernels.gemm (float32 A and B). */
export function gemm(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number,
): void {
  checkArgs('gemm', transA, transB, m, n, k, a.length, lda, b.length, ldb, c.length, ldc);
  gemmLoops(transA, transB, m, n, k, alpha, a, lda, (off) => b[off]!, ldb, beta, c, ldc);
}

/**
 * Reference Kernels.gemmBf16: B holds bfloat16 bits; A is rounded to bfloat16 (round to nearest
 * even) first. Products of two bf16 values are exact in float32, so the only differences from
 * a native kernel are in the order (and precision) of the summation.
 */
export function gemmBf16(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Float32Array, lda: number, b: Uint16Array, ldb: number, beta: number, c: Float32Array, ldc: number,
): void {
  checkArgs('gemmBf16', transA, transB, m, n, k, a.length, lda, b.length, ldb, c.length, ldc);
  if (m === 0 || n === 0) return;
  // Round the part of A that is read to bf16 (kept as float32 values).
  const aRows = transA ? k : m, aCols = transA ? m : k;
  const ar = new Float32Array(a.length);
  const ar32 = new Uint32Array(ar.buffer);
  for (let r = 0; r < aRows; r++) {
    for (let q = 0; q < aCols; q++) ar32[r * lda + q] = f32ToBf16(a[r * lda + q]!) << 16;
  }
  // B: bf16 bits -> float32 values through a shared scratch word.
  const w32 = new Uint32Array(1);
  const wf = new Float32Array(w32.buffer);
  const bAt = (off: number): number => {
    w32[0] = b[off]! << 16;
    return wf[0]!;
  };
  gemmLoops(transA, transB, m, n, k, alpha, ar, lda, bAt, ldb, beta, c, ldc);
}

/**
 * Reference Kernels.gemmBf16Ab: A and B hold bfloat16 bits; C is gemmBf16 of A widened to
 * float32 (exact, so its rounding changes nothing).
 */
export function gemmBf16Ab(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Uint16Array, lda: number, b: Uint16Array, ldb: number, beta: number, c: Float32Array, ldc: number,
): void {
  checkArgs('gemmBf16Ab', transA, transB, m, n, k, a.length, lda, b.length, ldb, c.length, ldc);
  const af = new Float32Array(a.length);
  const a32 = new Uint32Array(af.buffer);
  for (let i = 0; i < a.length; i++) a32[i] = a[i]! << 16;
  gemmBf16(transA, transB, m, n, k, alpha, af, lda, b, ldb, beta, c, ldc);
}
