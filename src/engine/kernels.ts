/**
 * The kernel interface: math on flat buffers, nothing else. Two implementations exist with
 * exactly this interface:
 *   - `reference` (src/engine/reference/): pure TypeScript, simple loops, the oracle in tests
 *     and the fallback when the native addon cannot load;
 *   - `native` (src/engine/native.ts -> native/src/): the Node-API addon, AVX-512/AVX2/scalar
 *     chosen at run time, multi-threaded.
 * Autograd, tensors and the model live above this line and never touch SIMD or threads.
 *
 * Conventions: all matrices are row-major. A typed array argument starts at element 0 of the
 * operand (callers pass `subarray` views for offsets). Leading dimensions (lda, ldb, ldc) are
 * in elements. Outputs are written, never resized. Sizes are validated by the callers in TS;
 * the native bindings check them again and throw RangeError before touching memory.
 */
export interface Kernels {
  readonly name: 'native' | 'reference';

  // ---- GEMM -------------------------------------------------------------------------------
  /**
   * C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n].
   * op(A) = A ([m,k], lda >= k) or A^T (A stored [k,m], lda >= m); likewise B ([k,n] or [n,k]).
   * beta is 0 (C overwritten; its old contents, even NaN, are ignored) or any other value.
   */
  gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  /**
   * Same as gemm but B holds bfloat16 bit patterns (Uint16Array). A is float32 and is rounded
   * to bfloat16 (round-to-nearest-even) before multiplying; accumulation is float32.
   */
  gemmBf16(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Uint16Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
}

/** The flop count of one GEMM call (2·m·n·k), for benchmarks. */
export function gemmFlops(m: number, n: number, k: number): number {
  return 2 * m * n * k;
}
