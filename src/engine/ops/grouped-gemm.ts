/**
 * The buffers and GEMM batching of the grouped-experts ops (grouped.ts, fp8-training-grouped.ts):
 * named scratch of the step arena, bf16 slots, and the per-expert GEMMs collected and run as one
 * `gemmBatch` call (float32, or bf16 operands with float32 accumulation).
 */
import { scratchF32, scratchFree, scratchU16 } from '../scratch.js';
import { kernels } from '../backend.js';
import { allocUninit } from './util.js';

// Scratch buffers of the op (never handed out: they hold values only between two statements of
// one forward or one backward); from the step arena within the op's scratchScope (scratch.ts).
export const scratchBuf = (name: string, n: number): Float32Array => scratchF32(`grouped.${name}`, n);
/** scratchBuf for bf16 bits. */
export const scratchBuf16 = (name: string, n: number): Uint16Array => scratchU16(`grouped.${name}`, n);
/** Scratch of these names is read no more in this call: back to the arena now (scratch.ts). */
export const scratchDone = (...names: string[]): void => scratchFree(...names.map((n) => `grouped.${n}`));

/** n bf16 slots carved from a float32 allocation (the step arena applies). */
export function allocBf16(n: number): Uint16Array {
  const f = allocUninit(Math.ceil(n / 2));
  return new Uint16Array(f.buffer, f.byteOffset, n);
}

/** A GEMM B operand: float32, or bf16 bits (then A is rounded to bf16: Kernels.gemmBf16). */
export type Operand = Float32Array | Uint16Array;

/** One GEMM on either operand type (B decides; A in bf16 bits needs B in bf16 bits). */
export function gemmAny(ta: boolean, tb: boolean, m: number, n: number, kk: number, a: Operand, lda: number, b: Operand, ldb: number,
  beta: number, c: Float32Array, ldc: number): void {
  if (a instanceof Uint16Array) kernels().gemmBf16Ab(ta, tb, m, n, kk, 1, a, lda, b as Uint16Array, ldb, beta, c, ldc);
  else if (b instanceof Uint16Array) kernels().gemmBf16(ta, tb, m, n, kk, 1, a, lda, b, ldb, beta, c, ldc);
  else kernels().gemm(ta, tb, m, n, kk, 1, a, lda, b, ldb, beta, c, ldc);
}

/**
 * GEMMs collected per expert and run as `gemmBatch` calls (concurrently, one per thread): one
 * call per beta, for the caller's beta and, for weight gradients, beta 0 (fresh .grad) / 1.
 */
export class GemmBatch {
  private readonly parts = [0, 1].map(() => ({ dims: [] as number[], as: [] as Operand[], bs: [] as Operand[], cs: [] as Float32Array[] }));
  /** b: float32, or bf16 bits (gemmBatchBf16); a too (gemmBatchBf16Ab); one batch holds one kind. */
  add(m: number, n: number, k: number, a: Operand, b: Operand, c: Float32Array, beta: 0 | 1 = 0): void {
    if (m === 0 || n === 0) return;
    const p = this.parts[beta]!;
    p.dims.push(m, n, k);
    p.as.push(a);
    p.bs.push(b);
    p.cs.push(c);
  }
  /** Runs the GEMMs; those added with beta 0 use `beta0` (the caller's beta). */
  run(transA: boolean, transB: boolean, lda: number, ldb: number, beta0: number, ldc: number): void {
    this.parts.forEach((p, i) => {
      if (p.as.length === 0) return;
      const beta = i === 0 ? beta0 : 1;
      const bf16 = p.bs[0] instanceof Uint16Array;
      const ab = p.as[0] instanceof Uint16Array;
      if (p.bs.some((b) => b instanceof Uint16Array !== bf16) || p.as.some((a) => a instanceof Uint16Array !== ab) || (ab && !bf16)) {
        throw new Error('GemmBatch: mixed float32 and bf16 operands in one batch');
      }
      const dims = Int32Array.from(p.dims);
      if (ab) kernels().gemmBatchBf16Ab(transA, transB, dims, 1, p.as as Uint16Array[], lda, p.bs as Uint16Array[], ldb, beta, p.cs, ldc);
      else if (bf16) kernels().gemmBatchBf16(transA, transB, dims, 1, p.as as Float32Array[], lda, p.bs as Uint16Array[], ldb, beta, p.cs, ldc);
      else kernels().gemmBatch(transA, transB, dims, 1, p.as as Float32Array[], lda, p.bs as Float32Array[], ldb, beta, p.cs, ldc);
    });
  }
}
