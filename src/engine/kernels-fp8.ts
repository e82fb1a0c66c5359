/**
 * The FP8 training kernels of the kernel interface (src/engine/kernels.ts, which extends this):
 * the operand quantisers of the paper's §3.3.2 recipe (1x128 activation tiles, 128x1 tiles for
 * Wgrad, 128x128 weight blocks), their fused forms, and the GEMMs on E4M3 codes with N_C = 128
 * promotion. Same conventions as `Kernels`; both backends implement them.
 */
export interface Fp8TrainingKernels {
  // ---- FP8 operand quantisation (training recipe, paper §3.3.2) ---------------------------
  /**
   * E4M3 quantisation of x (row r at x[r * ld ..], ld >= cols) per 1x128 tile (128 consecutive
   * elements of a row; the last tile of a row may be shorter). Rule (fixtures README `e4m3/`,
   * `fp8-linear/`): amax = max|x| over the tile (NaN ignored), s = float32(max(amax, 1e-4) / 448),
   * code = e4m3(float32(x / s)) (round to nearest even, saturating to ±448, NaN -> 0x7F, sign of
   * zero kept). Writes `codes` [rows, cols] and `scales` [rows, ceil(cols/128)] (both or neither;
   * exactly one is a TypeError) and/or `out` [rows, cols] = float32(e4m3(code) * s), where
   * without codes a value that rounds to zero is +0. out may alias x when ld = cols.
   */
  fp8QuantTiles1x128(x: Float32Array, ld: number, rows: number, cols: number,
    codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null): void;
  /**
   * fp8QuantTiles1x128's rule per 128x1 tile (128 consecutive rows of one column: the 1x128
   * tiles of x^T) in x's own layout: codes/out [rows, cols], scales [ceil(rows/128), cols].
   */
  fp8QuantTiles128x1(x: Float32Array, ld: number, rows: number, cols: number,
    codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null): void;
  /** The same rule per 128x128 block (weights): codes/out [rows, cols], scales [ceil(rows/128), ceil(cols/128)]. */
  fp8QuantBlocks128(x: Float32Array, ld: number, rows: number, cols: number,
    codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null): void;
  /**
   * out[r, c] = float32(e4m3(codes[r, c]) * scales[floor(r / blockRows), floor(c / 128)])
   * (scales [ceil(rows / blockRows), ceil(cols / 128)]: blockRows 1 for 1x128 tiles, 128 for
   * 128x128 blocks); NaN codes give NaN.
   */
  fp8Dequant(codes: Uint8Array, scales: Float32Array, rows: number, cols: number, blockRows: number, out: Float32Array): void;
  /**
   * The Wgrad X^T operand from a cached 1x128-tile FP8 copy (codes [rows, cols], scales
   * [rows, ceil(cols/128)]): fp8Dequant, then fp8QuantTiles128x1 (codes, scales) of each segment
   * of rows [offsets[e], offsets[e+1]) (tiles restart at each segment start; offsets null: one
   * segment). outCodes [rows, cols]; outScales: segment e's [ceil(n_e/128), cols] scales after
   * those of the segments before it. The native kernel keeps the float32 values in cache.
   */
  fp8RequantTiles128x1(codes: Uint8Array, scales: Float32Array, rows: number, cols: number, offsets: Int32Array | null,
    outCodes: Uint8Array, outScales: Float32Array): void;
  /**
   * fp8QuantTiles128x1 (codes, scales) of each segment of rows [offsets[e], offsets[e+1]) of a
   * contiguous x [rows, cols] (tiles restart at each segment start; offsets null: one segment):
   * outCodes [rows, cols], outScales laid out as fp8RequantTiles128x1's. One call for every
   * expert's Wgrad operand.
   */
  fp8QuantTiles128x1Segments(x: Float32Array, rows: number, cols: number, offsets: Int32Array | null,
    outCodes: Uint8Array, outScales: Float32Array): void;
  /**
   * Both FP8 operands of an output gradient dY [rows, cols] (contiguous) from one read of it:
   * fp8QuantTiles1x128 (codes, scales: Dgrad's dY) and fp8QuantTiles128x1Segments (colCodes,
   * colScales: Wgrad's dY^T, tiles restarting at each segment start) — the same bits as the two
   * calls.
   */
  fp8QuantTilesDual(x: Float32Array, rows: number, cols: number, offsets: Int32Array | null,
    codes: Uint8Array, scales: Float32Array, colCodes: Uint8Array, colScales: Float32Array): void;
  /**
   * The FP8 experts' SwiGLU backward with its operands (paper §3.3.3: the SwiGLU inputs cached
   * in FP8): G, U = fp8Dequant of the 1x128-tile copies (gCodes, gScales), (uCodes, uScales);
   * dG, dU = siluMulBackward(G, U, dh); then fp8QuantTilesDual of dG (dgCodes, dgScales,
   * dgColCodes, dgColScales) and of dU (du...), segments as there. The same bits as those
   * calls; the native kernel keeps G, U, dG and dU in cache.
   */
  fp8SwigluBackwardDual(gCodes: Uint8Array, gScales: Float32Array, uCodes: Uint8Array, uScales: Float32Array, dh: Float32Array,
    rows: number, cols: number, offsets: Int32Array | null,
    dgCodes: Uint8Array, dgScales: Float32Array, dgColCodes: Uint8Array, dgColScales: Float32Array,
    duCodes: Uint8Array, duScales: Float32Array, duColCodes: Uint8Array, duColScales: Float32Array): void;
  /**
   * The FP8 experts' SwiGLU forward with its operands: hCodes/hScales = fp8QuantTiles1x128 of
   * H = siluMul(g, u) [rows, cols] (the down projection's Fprop operand), and gCodes/gScales,
   * uCodes/uScales (each pair both or neither) = fp8QuantTiles1x128 of g and u (their FP8 cache,
   * §3.3.3). The same bits as those calls; the native kernel never writes H out.
   */
  fp8SiluMulQuant(g: Float32Array, u: Float32Array, rows: number, cols: number, hCodes: Uint8Array, hScales: Float32Array,
    gCodes: Uint8Array | null, gScales: Float32Array | null, uCodes: Uint8Array | null, uScales: Float32Array | null): void;
  /**
   * The block-scaled FP8 GEMM of the training recipe (paper §3.3.2, Figure 7b; native
   * native/src/fp8_train.h): C[i, j] (+)= sum over 128-blocks b of
   * float32(P_b[i, j] * float32(sA(i, b) * sB(j, b))), P_b = sum over k in block b of
   * e4m3(A[i, k]) * e4m3(B[j, k]), blocks promoted in ascending order into a float32 accumulator
   * starting at +0 (A [m, k], B [n, k] logical operands of E4M3 codes: C = A B^T). The native
   * kernel sums P_b in float32 on the codes (bf16 dot products where the CPU has them); the
   * reference sums it exactly. beta 0 overwrites C [m, ldc], beta 1 adds the finished sum.
   * Operand layouts (`Fp8GemmLayout`, nb = ceil(k / 128)): 0 codes [rows][k] + scales
   * [rows][nb] (1x128 tiles); 1 codes [k][rows] + scales [nb][rows] (128x1 tiles of the stored
   * matrix); 2 codes [rows][k] + scales [ceil(rows/128)][nb] (128x128 blocks); 3 codes
   * [k][rows] + scales [nb][ceil(rows/128)].
   */
  fp8Gemm(m: number, n: number, k: number, aCodes: Uint8Array, aScales: Float32Array, aLayout: number,
    bCodes: Uint8Array, bScales: Float32Array, bLayout: number, beta: 0 | 1, c: Float32Array, ldc: number): void;
  /**
   * A batch of independent fp8Gemm problems (the grouped experts' per-expert GEMMs): problem i
   * (dims[3i..3i+2] = m, n, k) is fp8Gemm(m, n, k, aCodes[i], aScales[i], aLayout, bCodes[i],
   * bScales[i], bLayout, beta, cs[i], ldc), with the same result. The native kernel runs the
   * problems concurrently, one pool thread each, largest first (one parallel region instead
   * of one per problem); overlapping C regions run in order.
   */
  fp8GemmBatch(dims: Int32Array, aCodes: readonly Uint8Array[], aScales: readonly Float32Array[], aLayout: number,
    bCodes: readonly Uint8Array[], bScales: readonly Float32Array[], bLayout: number, beta: 0 | 1,
    cs: readonly Float32Array[], ldc: number): void;
}
