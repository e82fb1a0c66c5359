/**
 * Reference of the one-token MoE kernels (Kernels.moeRowBf16 / moeRowFp8; native:
 * native/src/isa/moe_row.c): DeepSeekMoE (paper Eq. 12) for one row x,
 *   h += sum_e alpha_e FFN_e(x),  FFN_e(x) = down_e(silu(gate_e x) * up_e x),
 * expert by expert, in order, as the separate kernel calls the engine made before:
 *   bf16: gemmBf16 gate and up (x rounded to bf16), siluMul, gemmBf16 down with alpha_e, beta 1;
 *   FP8:  linearFp8 gate and up, siluMul, act *= alpha_e (float32), linearFp8 down with beta 1.
 */
import { gemmBf16 } from './gemm.js';
import { linearFp8 } from './fp8-weight.js';
import { siluMul } from './rows.js';

/** float32 elements of scratch the native kernel needs for hidden D and total width S. */
export function moeRowScratch(D: number, S: number): number {
  return 5 * S + 2 * D + 64;
}

function check(D: number, inters: Int32Array, alphas: Float32Array, nw: number, x: Float32Array, h: Float32Array,
  scratch: Float32Array): number {
  if (!(Number.isInteger(D) && D >= 1)) throw new RangeError(`moeRow: D must be an integer >= 1, got ${D}`);
  if (inters.length < 1 || inters.length > 64) throw new RangeError(`moeRow: inters must hold 1..64 widths, got ${inters.length}`);
  if (alphas.length < inters.length) throw new RangeError(`moeRow: alphas has ${alphas.length} elements, needs ${inters.length}`);
  if (nw < 3 * inters.length) throw new RangeError(`moeRow: weights hold ${nw} arrays, need ${3 * inters.length}`);
  if (x.length < D || h.length < D) throw new RangeError(`moeRow: x and h need ${D} elements`);
  let S = 0;
  for (const I of inters) {
    if (I < 1) throw new RangeError(`moeRow: an expert width is ${I}, expected >= 1`);
    S += I;
  }
  if (scratch.length < moeRowScratch(D, S)) throw new RangeError(`moeRow: scratch has ${scratch.length} elements, needs ${moeRowScratch(D, S)}`);
  return S;
}

export function moeRowBf16(D: number, inters: Int32Array, alphas: Float32Array, weights: readonly Uint16Array[],
  x: Float32Array, h: Float32Array, scratch: Float32Array): void {
  check(D, inters, alphas, weights.length, x, h, scratch);
  for (let e = 0; e < inters.length; e++) {
    const I = inters[e]!;
    const g = scratch.subarray(0, I);
    const u = scratch.subarray(I, 2 * I);
    const a = scratch.subarray(2 * I, 3 * I);
    gemmBf16(false, true, 1, I, D, 1, x, D, weights[3 * e]!, D, 0, g, I);
    gemmBf16(false, true, 1, I, D, 1, x, D, weights[3 * e + 1]!, D, 0, u, I);
    siluMul(g, u, a, I);
    gemmBf16(false, true, 1, D, I, alphas[e]!, a, I, weights[3 * e + 2]!, I, 1, h, D);
  }
}

export function moeRowFp8(D: number, inters: Int32Array, alphas: Float32Array, codes: readonly Uint8Array[],
  scales: readonly Float32Array[], x: Float32Array, h: Float32Array, scratch: Float32Array): void {
  check(D, inters, alphas, Math.min(codes.length, scales.length), x, h, scratch);
  for (let e = 0; e < inters.length; e++) {
    const I = inters[e]!;
    const g = scratch.subarray(0, I);
    const u = scratch.subarray(I, 2 * I);
    const a = scratch.subarray(2 * I, 3 * I);
    linearFp8(1, I, D, x, codes[3 * e]!, scales[3 * e]!, 0, g);
    linearFp8(1, I, D, x, codes[3 * e + 1]!, scales[3 * e + 1]!, 0, u);
    siluMul(g, u, a, I);
    const s = alphas[e]!;
    for (let j = 0; j < I; j++) a[j] = a[j]! * s;
    linearFp8(1, D, I, a, codes[3 * e + 2]!, scales[3 * e + 2]!, 1, h);
  }
}
