/**
 * Reference Kernels.fp8RequantTiles128x1: the Wgrad X^T operand re-quantised from the FP8 copy
 * the forward pass caches (DeepSeek-V3 §3.3.3 / §3.5.2 "cache the activations in FP8"; fixtures
 * README `wgrad_cached`): the 1x128-tile codes are dequantised (fp8Dequant) and the values
 * quantised again in 128x1 tiles (fp8QuantTiles128x1, codes and scales), per segment of rows
 * (one expert's tokens each: tiles restart at every segment start). Literally that composition:
 * the oracle of the fused native kernel (native/src/fp8_quant_napi.c), which never writes the
 * float32 values to memory. Kernels.fp8QuantTiles128x1Segments is the same per-segment 128x1
 * quantisation of float32 rows (every expert's Wgrad operand in one call).
 */
import { FP8_BLOCK } from '../fp8/codec.js';
import { fp8Dequant, fp8QuantTiles128x1, fp8QuantTiles1x128 } from './fp8-quant.js';
import { siluMul, siluMulBackward } from './rows.js';

/**
 * codes [rows, cols] + scales [rows, ceil(cols/128)] (1x128 tiles) -> outCodes [rows, cols] and,
 * for segment e = rows [offsets[e], offsets[e+1]) (offsets null: one segment [0, rows)),
 * outScales[so_e ..] = its 128x1-tile scales [ceil(n_e/128), cols], so_0 = 0 and
 * so_{e+1} = so_e + ceil(n_e/128) * cols.
 */
export function fp8RequantTiles128x1(
  codes: Uint8Array, scales: Float32Array, rows: number, cols: number, offsets: Int32Array | null,
  outCodes: Uint8Array, outScales: Float32Array,
): void {
  const segs = requantSegments('fp8RequantTiles128x1', rows, cols, offsets);
  const nt = Math.ceil(cols / FP8_BLOCK);
  if (codes.length < rows * cols || scales.length < rows * nt || outCodes.length < rows * cols || outScales.length < segs.scaleCount) {
    throw new RangeError(`fp8RequantTiles128x1: arrays too short for [${rows}, ${cols}] (codes ${codes.length}, scales ${scales.length}, outCodes ${outCodes.length}, outScales ${outScales.length}, need ${segs.scaleCount} scales)`);
  }
  for (let e = 0; e + 1 < segs.starts.length; e++) {
    const a = segs.starts[e]!;
    const n = segs.starts[e + 1]! - a;
    if (n === 0 || cols === 0) continue;
    const v = new Float32Array(n * cols);
    fp8Dequant(codes.subarray(a * cols), scales.subarray(a * nt), n, cols, 1, v);
    fp8QuantTiles128x1(v, cols, n, cols, outCodes.subarray(a * cols, (a + n) * cols), outScales.subarray(segs.scaleStart[e]!), null);
  }
}

/**
 * x [rows, cols] (contiguous) -> outCodes [rows, cols] and, per segment (as fp8RequantTiles128x1),
 * outScales: fp8QuantTiles128x1 (codes, scales) of each segment's rows.
 */
export function fp8QuantTiles128x1Segments(
  x: Float32Array, rows: number, cols: number, offsets: Int32Array | null, outCodes: Uint8Array, outScales: Float32Array,
): void {
  const segs = requantSegments('fp8QuantTiles128x1Segments', rows, cols, offsets);
  if (x.length < rows * cols || outCodes.length < rows * cols || outScales.length < segs.scaleCount) {
    throw new RangeError(`fp8QuantTiles128x1Segments: arrays too short for [${rows}, ${cols}] (x ${x.length}, outCodes ${outCodes.length}, outScales ${outScales.length}, need ${segs.scaleCount} scales)`);
  }
  for (let e = 0; e + 1 < segs.starts.length; e++) {
    const a = segs.starts[e]!;
    const n = segs.starts[e + 1]! - a;
    if (n === 0 || cols === 0) continue;
    fp8QuantTiles128x1(x.subarray(a * cols, (a + n) * cols), cols, n, cols, outCodes.subarray(a * cols, (a + n) * cols), outScales.subarray(segs.scaleStart[e]!), null);
  }
}

/**
 * Kernels.fp8QuantTilesDual: literally fp8QuantTiles1x128 (codes, scales) of x [rows, cols] and
 * fp8QuantTiles128x1Segments (colCodes, colScales): the oracle of the native kernel that takes
 * both from one read of x (native/src/isa/fp8_quant.c dsv3_fp8_quant_dual).
 */
export function fp8QuantTilesDual(
  x: Float32Array, rows: number, cols: number, offsets: Int32Array | null,
  codes: Uint8Array, scales: Float32Array, colCodes: Uint8Array, colScales: Float32Array,
): void {
  const nt = Math.ceil(cols / FP8_BLOCK);
  if (codes.length < rows * cols || scales.length < rows * nt) {
    throw new RangeError(`fp8QuantTilesDual: arrays too short for [${rows}, ${cols}] (codes ${codes.length}, scales ${scales.length}, need ${rows * nt} scales)`);
  }
  fp8QuantTiles128x1Segments(x, rows, cols, offsets, colCodes, colScales);
  if (rows > 0 && cols > 0) fp8QuantTiles1x128(x, cols, rows, cols, codes, scales, null);
}

/**
 * Kernels.fp8SwigluBackwardDual: literally fp8Dequant of the cached G and U copies,
 * siluMulBackward, and fp8QuantTilesDual of dG and of dU.
 */
export function fp8SwigluBackwardDual(
  gCodes: Uint8Array, gScales: Float32Array, uCodes: Uint8Array, uScales: Float32Array, dh: Float32Array,
  rows: number, cols: number, offsets: Int32Array | null,
  dgCodes: Uint8Array, dgScales: Float32Array, dgColCodes: Uint8Array, dgColScales: Float32Array,
  duCodes: Uint8Array, duScales: Float32Array, duColCodes: Uint8Array, duColScales: Float32Array,
): void {
  const n = rows * cols;
  const nt = Math.ceil(cols / FP8_BLOCK);
  if (gCodes.length < n || uCodes.length < n || gScales.length < rows * nt || uScales.length < rows * nt || dh.length < n) {
    throw new RangeError(`fp8SwigluBackwardDual: inputs too short for [${rows}, ${cols}] (gCodes ${gCodes.length}, gScales ${gScales.length}, uCodes ${uCodes.length}, uScales ${uScales.length}, dh ${dh.length})`);
  }
  const g = new Float32Array(n), u = new Float32Array(n), dg = new Float32Array(n), du = new Float32Array(n);
  if (n > 0) {
    fp8Dequant(gCodes, gScales, rows, cols, 1, g);
    fp8Dequant(uCodes, uScales, rows, cols, 1, u);
    siluMulBackward(g, u, dh, dg, du, n);
  }
  fp8QuantTilesDual(dg, rows, cols, offsets, dgCodes, dgScales, dgColCodes, dgColScales);
  fp8QuantTilesDual(du, rows, cols, offsets, duCodes, duScales, duColCodes, duColScales);
}

/** Kernels.fp8SiluMulQuant: literally siluMul, then fp8QuantTiles1x128 of H (and of g, u when their outputs are given). */
export function fp8SiluMulQuant(
  g: Float32Array, u: Float32Array, rows: number, cols: number, hCodes: Uint8Array, hScales: Float32Array,
  gCodes: Uint8Array | null, gScales: Float32Array | null, uCodes: Uint8Array | null, uScales: Float32Array | null,
): void {
  const n = rows * cols;
  if (g.length < n || u.length < n) throw new RangeError(`fp8SiluMulQuant: g (${g.length}) or u (${u.length}) shorter than [${rows}, ${cols}]`);
  if (!gCodes !== !gScales || !uCodes !== !uScales) throw new TypeError('fp8SiluMulQuant: codes and scales must be given both or neither');
  if (n === 0) return;
  const h = new Float32Array(n);
  siluMul(g, u, h, n);
  fp8QuantTiles1x128(h, cols, rows, cols, hCodes, hScales, null);
  if (gCodes) fp8QuantTiles1x128(g, cols, rows, cols, gCodes, gScales, null);
  if (uCodes) fp8QuantTiles1x128(u, cols, rows, cols, uCodes, uScales, null);
}

/** Segment starts (offsets, or [0, rows]) checked non-decreasing within [0, rows], and where each segment's scales start. */
export function requantSegments(op: string, rows: number, cols: number, offsets: Int32Array | null): { starts: Int32Array; scaleStart: Float64Array; scaleCount: number } {
  const starts = offsets ?? Int32Array.of(0, rows);
  if (starts.length < 2 || starts[0] !== 0 || starts[starts.length - 1] !== rows) {
    throw new RangeError(`${op}: offsets must run from 0 to rows (${rows}), got [${Array.from(starts.subarray(0, 4)).join(', ')}${starts.length > 4 ? ', ...' : ''}] (${starts.length} entries)`);
  }
  const scaleStart = new Float64Array(starts.length);
  for (let e = 0; e + 1 < starts.length; e++) {
    const n = starts[e + 1]! - starts[e]!;
    if (n < 0) throw new RangeError(`${op}: offsets must not decrease (offsets[${e}] = ${starts[e]}, offsets[${e + 1}] = ${starts[e + 1]})`);
    scaleStart[e + 1] = scaleStart[e]! + Math.ceil(n / FP8_BLOCK) * cols;
  }
  return { starts, scaleStart, scaleCount: scaleStart[starts.length - 1]! };
}
