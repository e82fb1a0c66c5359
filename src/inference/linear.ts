/**
 * Linear layers for the inference engine: y[m, n] = x[m, k] W^T straight on the kernels, for
 * the three storages of `LinearWeight` (src/model/weights.ts), with no Tensor, no autograd and
 * no allocation per call:
 *   - f32:  kernels().gemm (NT);
 *   - bf16: kernels().gemmBf16 (x rounded to bf16, float32 accumulation: what the model's
 *           `linearBf16` computes);
 *   - fp8:  kernels().linearFp8 (E4M3 codes with 128x128 block scales, decoded inside the
 *           kernel; paper section 3.3.2).
 * x and y are dense row-major ([m, k] and [m, n]); y is overwritten (beta 0) or accumulated
 * into (beta 1), which the engine uses to add a projection straight into the residual stream.
 */
import type { Kernels } from '../engine/kernels.js';
import type { LinearWeight } from '../model/weights.js';

export interface PreparedLinear {
  readonly name: string;
  readonly kind: LinearWeight['kind'];
  /** out_features */
  readonly n: number;
  /** in_features */
  readonly k: number;
  readonly f32: Float32Array | null;
  readonly bits: Uint16Array | null;
  readonly codes: Uint8Array | null;
  readonly scaleInv: Float32Array | null;
}

/** The raw arrays of a weight, resolved once (f32 weights are shared, never copied when contiguous). */
export function prepareLinear(w: LinearWeight): PreparedLinear {
  const base = { name: w.name, kind: w.kind, n: w.outFeatures, k: w.inFeatures };
  switch (w.kind) {
    case 'f32':
      return { ...base, f32: w.weight.contiguous().f32(), bits: null, codes: null, scaleInv: null };
    case 'bf16':
      return { ...base, f32: null, bits: w.bits, codes: null, scaleInv: null };
    case 'fp8':
      return { ...base, f32: null, bits: null, codes: w.codes, scaleInv: w.scaleInv };
  }
}

/** y[m, n] = x[m, k] W^T (+ y when beta is 1). */
export function runLinear(kern: Kernels, w: PreparedLinear, m: number, x: Float32Array, y: Float32Array, beta: 0 | 1): void {
  if (m === 0) return;
  const { n, k } = w;
  if (w.f32) kern.gemm(false, true, m, n, k, 1, x, k, w.f32, k, beta, y, n);
  else if (w.bits) kern.gemmBf16(false, true, m, n, k, 1, x, k, w.bits, k, beta, y, n);
  else kern.linearFp8(m, n, k, x, w.codes!, w.scaleInv!, beta, y);
}

/**
 * y[1, n] += alpha * x[1, k] W^T for one row (a routed expert's gated output). The FP8 kernel
 * has no alpha: x (a scratch row, float32 activations) is scaled in place first, which for a
 * linear map is the same product. bf16 keeps alpha in the GEMM so x is rounded to bf16 as is,
 * as the model's linearBf16 does before its gate multiply.
 */
export function addScaledRow(kern: Kernels, w: PreparedLinear, alpha: number, x: Float32Array, y: Float32Array): void {
  const { n, k } = w;
  if (w.f32) kern.gemm(false, true, 1, n, k, alpha, x, k, w.f32, k, 1, y, n);
  else if (w.bits) kern.gemmBf16(false, true, 1, n, k, alpha, x, k, w.bits, k, 1, y, n);
  else {
    for (let i = 0; i < k; i++) x[i] = x[i]! * alpha;
    kern.linearFp8(1, n, k, x, w.codes!, w.scaleInv!, 1, y);
  }
}

/** Bytes of weight data one application of w reads (codes + scales for FP8). */
export function preparedBytes(w: PreparedLinear): number {
  if (w.f32) return w.f32.length * 4;
  if (w.bits) return w.bits.length * 2;
  return w.codes!.length + w.scaleInv!.length * 4;
}
