/**
 * The FP8 training GEMM on operand codes (DeepSeek-V3 §3.3.2, Figure 7b; Kernels.fp8Gemm):
 * quantised operands (E4M3 codes + one float32 scale per 128 elements along the inner
 * dimension) multiplied without dequantising them first — the kernel multiplies the codes (bf16
 * dot products on CPUs with avx512_bf16) and promotes each 128-wide block's partial sum into the
 * float32 accumulator with its two scales (N_C = 128), so the FP8 GEMMs run at bf16 speed and
 * equal the exact FP8 oracle up to float32 summation order within a block.
 *
 * An operand is its codes and scales in one of the kernel's layouts (`Fp8GemmLayout`): as
 * quantised per 1x128 tile of the stored rows (`rowsTiles`, X in Fprop, dY in Dgrad), per 128x1
 * tile of the stored columns (`colsTiles`, the Wgrad operands dY^T and X^T read from the
 * untransposed dY and X), or a weight's 128x128 blocks as stored [out, in] (`rowsBlocks`,
 * Fprop) or read transposed (`colsBlocks`, W^T in Dgrad).
 */
import { activeArena } from '../active-arena.js';
import { kernels } from '../backend.js';
import { Fp8GemmLayout } from '../reference/fp8-gemm.js';
import { allocUninit } from '../ops/util.js';
import { groups128, quantTiles128x1, quantTiles1x128 } from './quant.js';

export { Fp8GemmLayout } from '../reference/fp8-gemm.js';

/** An FP8 GEMM operand: codes and scales in a layout of Kernels.fp8Gemm. */
export interface Fp8Operand {
  codes: Uint8Array;
  scales: Float32Array;
  layout: number;
}

/** Where operand buffers come from: the step arena (reused, `release` gives them back) or, `fresh`, their own memory (deferred closures keep them). */
export interface Fp8Alloc {
  fresh: boolean;
}

/** n bytes for E4M3 codes, carved from a float32 allocation so that the step arena applies. */
export function codeBytes(n: number, fresh = false): Uint8Array {
  if (fresh) return new Uint8Array(n);
  const f = allocUninit(Math.ceil(n / 4));
  return new Uint8Array(f.buffer, f.byteOffset, n);
}

function scaleFloats(n: number, fresh: boolean): Float32Array {
  return fresh ? new Float32Array(n) : allocUninit(n);
}

/** Gives the buffers of temporaries back to the active step arena at once (a no-op for buffers not from it). */
export function release(...xs: (Fp8Operand | Float32Array | Uint8Array | null)[]): void {
  const arena = activeArena();
  if (!arena) return;
  for (const x of xs) {
    if (!x) continue;
    if (x instanceof Float32Array || x instanceof Uint8Array) arena.release(x.buffer as ArrayBuffer);
    else {
      arena.release(x.codes.buffer as ArrayBuffer);
      arena.release(x.scales.buffer as ArrayBuffer);
    }
  }
}

/** The 1x128-tile operand of x [rows, cols] (row r at x[off + r * ld ..]): layout rowsTiles. */
export function tilesOperand(x: Float32Array, off: number, ld: number, rows: number, cols: number, fresh = false): Fp8Operand {
  const codes = codeBytes(rows * cols, fresh);
  const scales = scaleFloats(rows * groups128(cols), fresh);
  quantTiles1x128(x, off, ld, rows, cols, codes, scales, null);
  return { codes, scales, layout: Fp8GemmLayout.rowsTiles };
}

/**
 * The 128x1-tile operand of x [rows, cols] (contiguous), tiles restarting at every segment start
 * (segments [offsets[e], offsets[e+1]) of rows: one expert's tokens each; default one segment):
 * per segment, layout colsTiles — codes at x's positions, the segment's scales
 * [ceil(n_e/128), cols] at `scaleOffsets(offsets, cols)[e]`.
 */
export function colTilesOperand(x: Float32Array, rows: number, cols: number, offsets: Int32Array | null = null, fresh = false): Fp8Operand {
  const codes = codeBytes(rows * cols, fresh);
  const total = offsets ? scaleOffsets(offsets, cols)[offsets.length - 1]! : groups128(rows) * cols;
  const scales = scaleFloats(total, fresh);
  if (offsets) kernels().fp8QuantTiles128x1Segments(x, rows, cols, offsets, codes, scales); // every segment in one call
  else quantTiles128x1(x, 0, cols, rows, cols, codes, scales, null);
  return { codes, scales, layout: Fp8GemmLayout.colsTiles };
}

/**
 * Both operands of an output gradient dY [rows, cols] (contiguous) from one read of it
 * (Kernels.fp8QuantTilesDual): `tiles` = tilesOperand(dY) (Dgrad), `cols` =
 * colTilesOperand(dY, offsets) (Wgrad's dY^T; `freshCols`: in its own memory, for a deferred
 * weight-gradient closure). The same codes and scales as the two separate quantisations.
 */
export function dualOperands(x: Float32Array, rows: number, cols: number, offsets: Int32Array | null = null, freshCols = false): { tiles: Fp8Operand; cols: Fp8Operand } {
  const codes = codeBytes(rows * cols);
  const scales = scaleFloats(rows * groups128(cols), false);
  const colCodes = codeBytes(rows * cols, freshCols);
  const total = offsets ? scaleOffsets(offsets, cols)[offsets.length - 1]! : groups128(rows) * cols;
  const colScales = scaleFloats(total, freshCols);
  kernels().fp8QuantTilesDual(x, rows, cols, offsets, codes, scales, colCodes, colScales);
  return { tiles: { codes, scales, layout: Fp8GemmLayout.rowsTiles }, cols: { codes: colCodes, scales: colScales, layout: Fp8GemmLayout.colsTiles } };
}

/**
 * The SwiGLU forward of the FP8 experts with its operands (Kernels.fp8SiluMulQuant): `h` =
 * tilesOperand(siluMul(g, u)) for g, u [rows, cols] (contiguous), and with `cache` the FP8
 * copies tilesOperand(g), tilesOperand(u) kept for the backward (§3.3.3) — the same bits as
 * siluMul and those quantisations, without H in float32.
 */
export function siluMulOperands(g: Float32Array, u: Float32Array, rows: number, cols: number, cache: boolean): { h: Fp8Operand; g: Fp8Operand | null; u: Fp8Operand | null } {
  const op = (): Fp8Operand => ({ codes: codeBytes(rows * cols), scales: scaleFloats(rows * groups128(cols), false), layout: Fp8GemmLayout.rowsTiles });
  const h = op();
  const gq = cache ? op() : null;
  const uq = cache ? op() : null;
  kernels().fp8SiluMulQuant(g, u, rows, cols, h.codes, h.scales, gq?.codes ?? null, gq?.scales ?? null, uq?.codes ?? null, uq?.scales ?? null);
  return { h, g: gq, u: uq };
}

/**
 * The SwiGLU backward of the FP8 experts with its output operands (Kernels.fp8SwigluBackwardDual):
 * dG, dU = SwiGLU backward at the dequantised FP8 copies gq, uq of G and U (1x128 tiles) and dH
 * [rows, cols], returned as dualOperands(dG) and dualOperands(dU) (`freshCols` as there),
 * without float32 copies of G, U, dG or dU in memory. The same bits as fp8Dequant,
 * siluMulBackward and dualOperands.
 */
export function swigluBackwardOperands(gq: Fp8Operand, uq: Fp8Operand, dh: Float32Array, rows: number, cols: number, offsets: Int32Array | null, freshCols = false): { dG: { tiles: Fp8Operand; cols: Fp8Operand }; dU: { tiles: Fp8Operand; cols: Fp8Operand } } {
  const total = offsets ? scaleOffsets(offsets, cols)[offsets.length - 1]! : groups128(rows) * cols;
  const make = (): { tiles: Fp8Operand; cols: Fp8Operand } => ({
    tiles: { codes: codeBytes(rows * cols), scales: scaleFloats(rows * groups128(cols), false), layout: Fp8GemmLayout.rowsTiles },
    cols: { codes: codeBytes(rows * cols, freshCols), scales: scaleFloats(total, freshCols), layout: Fp8GemmLayout.colsTiles },
  });
  const dG = make();
  const dU = make();
  kernels().fp8SwigluBackwardDual(gq.codes, gq.scales, uq.codes, uq.scales, dh, rows, cols, offsets,
    dG.tiles.codes, dG.tiles.scales, dG.cols.codes, dG.cols.scales, dU.tiles.codes, dU.tiles.scales, dU.cols.codes, dU.cols.scales);
  return { dG, dU };
}

/**
 * The 128x1-tile operand re-quantised from a 1x128-tile FP8 copy (codes + scales of [rows, cols],
 * e.g. the forward's cached X for the Wgrad X^T operand, §3.3.3 / README `wgrad_cached`): what
 * colTilesOperand makes of the dequantised values, segments as there (offsets null: one), in one
 * fused kernel call (Kernels.fp8RequantTiles128x1) that never writes the float32 values out.
 */
export function requantOperand(codes: Uint8Array, scales: Float32Array, rows: number, cols: number, offsets: Int32Array | null = null, fresh = false): Fp8Operand {
  const out = codeBytes(rows * cols, fresh);
  const total = offsets ? scaleOffsets(offsets, cols)[offsets.length - 1]! : groups128(rows) * cols;
  const sc = scaleFloats(total, fresh);
  kernels().fp8RequantTiles128x1(codes, scales, rows, cols, offsets, out, sc);
  return { codes: out, scales: sc, layout: Fp8GemmLayout.colsTiles };
}

/** Start of each segment's 128x1 scales in a colTilesOperand (and the total at the end). */
export function scaleOffsets(offsets: ArrayLike<number>, cols: number): Int32Array {
  const out = new Int32Array(offsets.length);
  for (let e = 0; e + 1 < offsets.length; e++) out[e + 1] = out[e]! + groups128(offsets[e + 1]! - offsets[e]!) * cols;
  return out;
}

/** Rows [r0, r0 + n) of a rowsTiles operand with `cols` columns (the scales of those rows). */
export function rowsOf(o: Fp8Operand, r0: number, n: number, cols: number): Fp8Operand {
  const g = groups128(cols);
  return { codes: o.codes.subarray(r0 * cols, (r0 + n) * cols), scales: o.scales.subarray(r0 * g, (r0 + n) * g), layout: o.layout };
}

/**
 * C [m, n] (row stride ldc) = A B^T (beta 0) or C + A B^T (beta 1) for A [m, k], B [n, k] FP8
 * operands (Kernels.fp8Gemm).
 */
export function fp8Matmul(m: number, n: number, k: number, a: Fp8Operand, b: Fp8Operand, beta: 0 | 1, c: Float32Array, ldc = n): void {
  if (m === 0 || n === 0) return;
  kernels().fp8Gemm(m, n, k, a.codes, a.scales, a.layout, b.codes, b.scales, b.layout, beta, c, ldc);
}

/** One FP8 GEMM of a batch: C [m, n] (row stride ldc) = A B^T (beta 0) or C + A B^T (beta 1). */
export interface Fp8Problem {
  m: number;
  n: number;
  k: number;
  a: Fp8Operand;
  b: Fp8Operand;
  beta: 0 | 1;
  c: Float32Array;
  ldc: number;
}

/**
 * Runs independent FP8 GEMMs (the MoE experts' per-expert GEMMs) with the result of
 * `fp8Matmul` on each, in order: each run of consecutive problems with the same layouts, beta
 * and ldc is one Kernels.fp8GemmBatch call (one parallel region, one problem per thread).
 */
export function fp8MatmulBatch(ps: readonly Fp8Problem[]): void {
  const live = ps.filter((p) => p.m > 0 && p.n > 0);
  for (let s = 0; s < live.length;) {
    const p0 = live[s]!;
    let e = s + 1;
    while (e < live.length && live[e]!.a.layout === p0.a.layout && live[e]!.b.layout === p0.b.layout && live[e]!.beta === p0.beta && live[e]!.ldc === p0.ldc) e++;
    const run = live.slice(s, e);
    const dims = new Int32Array(3 * run.length);
    run.forEach((p, i) => dims.set([p.m, p.n, p.k], 3 * i));
    kernels().fp8GemmBatch(dims, run.map((p) => p.a.codes), run.map((p) => p.a.scales), p0.a.layout,
      run.map((p) => p.b.codes), run.map((p) => p.b.scales), p0.b.layout, p0.beta, run.map((p) => p.c), p0.ldc);
    s = e;
  }
}
