/**
 * Reference Kernels.moeRows: the routed experts of several token rows (paper Eq. 12's routed
 * sum, SwiGLU experts), one expert after another with the reference GEMM and SiLU-multiply:
 * for expert e with rows offsets[e] .. offsets[e+1]-1 of x [rows, D],
 *   g = x W_gate^T, u = x W_up^T (each [cnt, I]); act = silu(g) * u; y = act W_down^T ([cnt, D]).
 * moeRowsBf16: the same with bf16 weights (Uint16Array bits) through gemmBf16 (x and act rounded
 * to bf16, float32 accumulation).
 */
import { gemm, gemmBf16 } from './gemm.js';
import { siluMul } from './rows.js';

export function moeRows(x: Float32Array, offsets: Int32Array, gates: readonly Float32Array[], ups: readonly Float32Array[],
  downs: readonly Float32Array[], D: number, I: number, g: Float32Array, u: Float32Array, act: Float32Array, y: Float32Array): void {
  run(x, offsets, gates, ups, downs, D, I, g, u, act, y, gemm);
}

export function moeRowsBf16(x: Float32Array, offsets: Int32Array, gates: readonly Uint16Array[], ups: readonly Uint16Array[],
  downs: readonly Uint16Array[], D: number, I: number, g: Float32Array, u: Float32Array, act: Float32Array, y: Float32Array): void {
  run(x, offsets, gates, ups, downs, D, I, g, u, act, y, gemmBf16);
}

type Gemm<W> = (transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: Float32Array, lda: number,
  b: W, ldb: number, beta: number, c: Float32Array, ldc: number) => void;

function run<W extends Float32Array | Uint16Array>(x: Float32Array, offsets: Int32Array, gates: readonly W[], ups: readonly W[],
  downs: readonly W[], D: number, I: number, g: Float32Array, u: Float32Array, act: Float32Array, y: Float32Array, gemm: Gemm<W>): void {
  const E = offsets.length - 1;
  if (E < 0 || offsets[0] !== 0) throw new RangeError('moeRows: offsets must hold experts + 1 entries starting at 0');
  for (let e = 0; e < E; e++) if (offsets[e + 1]! < offsets[e]!) throw new RangeError('moeRows: offsets must be non-decreasing');
  if (gates.length < E || ups.length < E || downs.length < E) throw new RangeError(`moeRows: gates, ups and downs need ${E} weights each`);
  const rows = offsets[E]!;
  for (const [name, a, n] of [['x', x, D], ['g', g, I], ['u', u, I], ['act', act, I], ['y', y, D]] as const) {
    if (a.length < rows * n) throw new RangeError(`moeRows: '${name}' holds ${a.length} values, needs ${rows * n}`);
  }
  for (let e = 0; e < E; e++) {
    const r0 = offsets[e]!;
    const cnt = offsets[e + 1]! - r0;
    if (cnt === 0) continue;
    const xe = x.subarray(r0 * D);
    gemm(false, true, cnt, I, D, 1, xe, D, gates[e]!, D, 0, g.subarray(r0 * I), I);
    gemm(false, true, cnt, I, D, 1, xe, D, ups[e]!, D, 0, u.subarray(r0 * I), I);
  }
  siluMul(g, u, act, rows * I);
  for (let e = 0; e < E; e++) {
    const r0 = offsets[e]!;
    const cnt = offsets[e + 1]! - r0;
    if (cnt > 0) gemm(false, true, cnt, D, I, 1, act.subarray(r0 * I), I, downs[e]!, I, 0, y.subarray(r0 * D), D);
  }
}
