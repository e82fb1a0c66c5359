/** Reference batched GEMM: the GEMMs one after another with the reference gemm. */
import { gemm, gemmBf16, gemmBf16Ab } from './gemm.js';

export function gemmBatch(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Float32Array[], lda: number,
  bs: readonly Float32Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void {
  if (dims.length % 3 !== 0) throw new RangeError(`gemmBatch: dims must hold (m, n, k) triples, got ${dims.length} values`);
  const count = dims.length / 3;
  if (as.length < count || bs.length < count || cs.length < count) throw new RangeError('gemmBatch: as, bs and cs need one array per GEMM');
  for (let i = 0; i < count; i++) {
    gemm(transA, transB, dims[3 * i]!, dims[3 * i + 1]!, dims[3 * i + 2]!, alpha, as[i]!, lda, bs[i]!, ldb, beta, cs[i]!, ldc);
  }
}

/** Reference Kernels.gemmBatchBf16: the GEMMs one after another with the reference gemmBf16. */
export function gemmBatchBf16(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Float32Array[], lda: number,
  bs: readonly Uint16Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void {
  if (dims.length % 3 !== 0) throw new RangeError(`gemmBatchBf16: dims must hold (m, n, k) triples, got ${dims.length} values`);
  const count = dims.length / 3;
  if (as.length < count || bs.length < count || cs.length < count) throw new RangeError('gemmBatchBf16: as, bs and cs need one array per GEMM');
  for (let i = 0; i < count; i++) {
    gemmBf16(transA, transB, dims[3 * i]!, dims[3 * i + 1]!, dims[3 * i + 2]!, alpha, as[i]!, lda, bs[i]!, ldb, beta, cs[i]!, ldc);
  }
}

/** Reference Kernels.gemmBatchBf16Ab: the GEMMs one after another with the reference gemmBf16Ab. */
export function gemmBatchBf16Ab(transA: boolean, transB: boolean, dims: Int32Array, alpha: number, as: readonly Uint16Array[], lda: number,
  bs: readonly Uint16Array[], ldb: number, beta: number, cs: readonly Float32Array[], ldc: number): void {
  if (dims.length % 3 !== 0) throw new RangeError(`gemmBatchBf16Ab: dims must hold (m, n, k) triples, got ${dims.length} values`);
  const count = dims.length / 3;
  if (as.length < count || bs.length < count || cs.length < count) throw new RangeError('gemmBatchBf16Ab: as, bs and cs need one array per GEMM');
  for (let i = 0; i < count; i++) {
    gemmBf16Ab(transA, transB, dims[3 * i]!, dims[3 * i + 1]!, dims[3 * i + 2]!, alpha, as[i]!, lda, bs[i]!, ldb, beta, cs[i]!, ldc);
  }
}
