/**
 * Linear-layer weights in the three storage formats a DeepSeek-V3 checkpoint can hold, behind
 * one `applyLinear(x, w)` (y = x W^T, W stored [out, in] as in Hugging Face checkpoints):
 *
 *   - `f32`:  a float32 parameter Tensor (trainable; the path every op differentiates);
 *   - `bf16`: raw bfloat16 bits, multiplied by `kernels().gemmBf16` through ops.linear (the
 *             activation is rounded to bfloat16 by that kernel; accumulation is float32);
 *   - `fp8`:  E4M3 codes [out, in] (one byte per weight, kept as is in memory) plus the float32
 *             `weight_scale_inv` [ceil(out/128), ceil(in/128)] of the paper's 128x128 block
 *             scaling (section 3.3.2): W[i, j] = float32(e4m3(code[i, j]) * scale_inv[i/128, j/128]).
 *
 * The FP8 GEMM lives in `linearFp8` only, so a native FP8 kernel can replace it in one place.
 * bf16/fp8 weights are frozen: gradients flow to the input x but never to the weight.
 */
import { attach, isGradEnabled } from '../engine/autograd.js';
import { kernels } from '../engine/backend.js';
import { bf16ArrayToF32 } from '../engine/dtype.js';
import { E4M3_TABLE, FP8_BLOCK } from '../engine/fp8/codec.js';
import { Tensor } from '../engine/tensor.js';
import { bf16Linear as bf16TrainingLinear, fp8TrainingLinear, linear } from '../engine/ops/index.js';
import { DsvError } from '../errors.js';
import { trainingPrecision } from './precision-mode.js';

interface LinearBase {
  /** Checkpoint name of the weight (e.g. `model.layers.0.self_attn.o_proj.weight`). */
  readonly name: string;
  readonly outFeatures: number;
  readonly inFeatures: number;
}

export interface F32Linear extends LinearBase {
  readonly kind: 'f32';
  /** [out, in] float32 parameter (requiresGrad when trainable). */
  readonly weight: Tensor;
}

export interface Bf16Linear extends LinearBase {
  readonly kind: 'bf16';
  /** [out, in] bfloat16 bit patterns. */
  readonly bits: Uint16Array;
}

export interface Fp8Linear extends LinearBase {
  readonly kind: 'fp8';
  /** [out, in] E4M3FN codes. */
  readonly codes: Uint8Array;
  /** [ceil(out/128), ceil(in/128)] block scales (the checkpoint's `<name>_scale_inv`). */
  readonly scaleInv: Float32Array;
}

export type LinearWeight = F32Linear | Bf16Linear | Fp8Linear;

export function f32Linear(name: string, weight: Tensor): F32Linear {
  if (weight.ndim !== 2) throw new DsvError(`${name}: a linear weight must be 2-D, got [${weight.shape.join(', ')}]`);
  return { kind: 'f32', name, outFeatures: weight.shape[0]!, inFeatures: weight.shape[1]!, weight };
}

export function bf16Linear(name: string, bits: Uint16Array, outFeatures: number, inFeatures: number): Bf16Linear {
  if (bits.length !== outFeatures * inFeatures) {
    throw new DsvError(`${name}: ${bits.length} bf16 values do not fill [${outFeatures}, ${inFeatures}]`);
  }
  return { kind: 'bf16', name, outFeatures, inFeatures, bits };
}

export function fp8Linear(name: string, codes: Uint8Array, scaleInv: Float32Array, outFeatures: number, inFeatures: number): Fp8Linear {
  const nbr = Math.ceil(outFeatures / FP8_BLOCK);
  const nbc = Math.ceil(inFeatures / FP8_BLOCK);
  if (codes.length !== outFeatures * inFeatures) {
    throw new DsvError(`${name}: ${codes.length} FP8 codes do not fill [${outFeatures}, ${inFeatures}]`);
  }
  if (scaleInv.length !== nbr * nbc) {
    throw new DsvError(`${name}_scale_inv: expected shape [${nbr}, ${nbc}] for a [${outFeatures}, ${inFeatures}] weight, found ${scaleInv.length} values`);
  }
  return { kind: 'fp8', name, outFeatures, inFeatures, codes, scaleInv };
}

/** Bytes the weight occupies in memory (codes + scales for FP8). */
export function linearBytes(w: LinearWeight): number {
  switch (w.kind) {
    case 'f32':
      return w.weight.size * 4;
    case 'bf16':
      return w.bits.length * 2;
    case 'fp8':
      return w.codes.length + w.scaleInv.length * 4;
  }
}

/**
 * Decodes rows [r0, r1) of an FP8 weight into `dst` ((r1 - r0) * in floats):
 * dst[i, j] = float32(e4m3(code) * scale_inv[row block, j / 128]).
 */
export function decodeFp8Rows(w: Fp8Linear, r0: number, r1: number, dst: Float32Array): void {
  const K = w.inFeatures;
  const nbc = Math.ceil(K / FP8_BLOCK);
  for (let r = r0; r < r1; r++) {
    const sRow = ((r / FP8_BLOCK) | 0) * nbc;
    const src = r * K;
    const o = (r - r0) * K;
    for (let b = 0; b < nbc; b++) {
      const s = w.scaleInv[sRow + b]!;
      const c1 = Math.min(K, (b + 1) * FP8_BLOCK);
      for (let c = b * FP8_BLOCK; c < c1; c++) dst[o + c] = E4M3_TABLE[w.codes[src + c]!]! * s;
    }
  }
}

/** Dense float32 rows [r0, r1) of any weight, as a new array (small slices: absorbed MLA, tests). */
export function denseRows(w: LinearWeight, r0 = 0, r1 = w.outFeatures): Float32Array {
  const K = w.inFeatures;
  switch (w.kind) {
    case 'f32':
      return w.weight.contiguous().f32().slice(r0 * K, r1 * K);
    case 'bf16':
      return bf16ArrayToF32(w.bits.subarray(r0 * K, r1 * K));
    case 'fp8': {
      const out = new Float32Array((r1 - r0) * K);
      decodeFp8Rows(w, r0, r1, out);
      return out;
    }
  }
}

/**
 * Rows [r0, r1) of the weight as a float32 Tensor [r1 - r0, in]: a differentiable view of the
 * parameter for f32 weights, a decoded (frozen) copy otherwise.
 */
export function weightRows(w: LinearWeight, r0 = 0, r1 = w.outFeatures): Tensor {
  if (w.kind === 'f32') return r0 === 0 && r1 === w.outFeatures ? w.weight : w.weight.slice(0, r0, r1);
  return Tensor.fromF32(denseRows(w, r0, r1), [r1 - r0, w.inFeatures]);
}

function checkInput(x: Tensor, w: LinearWeight): void {
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.inFeatures) {
    throw new DsvError(`${w.name}: input of shape [${x.shape.join(', ')}] does not end in in_features ${w.inFeatures}`);
  }
}

/** Rows of x flattened to [M, in] (contiguous float32). */
function rowsOf(x: Tensor): { m: number; data: Float32Array } {
  const c = x.contiguous();
  return { m: c.size / c.shape[c.ndim - 1]!, data: c.f32() };
}

function outShape(x: Tensor, n: number): number[] {
  const s = x.shape.slice();
  s[s.length - 1] = n;
  return s;
}

/** y = x W^T for bf16 weight bits (ops.linear runs gemmBf16); differentiable w.r.t. x only. */
export function linearBf16(x: Tensor, w: Bf16Linear): Tensor {
  checkInput(x, w);
  return linear(x, new Tensor(w.bits, [w.outFeatures, w.inFeatures], 'bf16'));
}

/**
 * y = x W^T for an FP8 block-scaled weight, on `kernels().linearFp8`: the weights are decoded
 * inside the kernel (float32(e4m3(code) * scale_inv) per 128x128 block, never a dequantised
 * copy of the matrix), so the weight stays one byte per element in memory and the result
 * equals a float32 matmul with the dequantised weight. Differentiable w.r.t. x only (dx = dy W,
 * decoded one 128-row block-row at a time into a scratch buffer).
 */
export function linearFp8(x: Tensor, w: Fp8Linear): Tensor {
  checkInput(x, w);
  const { m, data } = rowsOf(x);
  const N = w.outFeatures;
  const K = w.inFeatures;
  const y = new Float32Array(m * N);
  if (m > 0 && N > 0 && K > 0) kernels().linearFp8(m, N, K, data, w.codes, w.scaleInv, 0, y);
  const out = Tensor.fromF32(y, outShape(x, N));
  return attach(out, 'linearFp8', [x], (g) => {
    const gy = g.contiguous().f32();
    const dx = new Float32Array(m * K);
    if (m > 0) {
      const scratch = new Float32Array(Math.min(FP8_BLOCK, N) * K);
      for (let r0 = 0; r0 < N; r0 += FP8_BLOCK) {
        const r1 = Math.min(N, r0 + FP8_BLOCK);
        decodeFp8Rows(w, r0, r1, scratch);
        // dx += dy[:, r0:r1] · W[r0:r1, :]
        kernels().gemm(false, false, m, K, r1 - r0, 1, gy.subarray(r0), N, scratch, K, r0 === 0 ? 0 : 1, dx, K);
      }
    }
    return [Tensor.fromF32(dx, x.shape)];
  });
}

/**
 * Whether `applyLinear(x, w)` here records a BF16 Linear that saves x's bf16 bits for Wgrad
 * (the `bf16` precision, a trainable float32 weight, gradients recorded): then the RMSNorm that
 * writes x can write those bits in the same pass (ops/norm.ts `bf16Out`).
 */
export function feedsBf16Linear(w: LinearWeight): boolean {
  return w.kind === 'f32' && w.weight.requiresGrad && trainingPrecision() === 'bf16' && isGradEnabled();
}

/**
 * y = x W^T for any weight format (the one entry point the model uses). Inside `withFp8`
 * (fp8-mode.ts), a float32 weight runs through the FP8 training Linear (`fp8Linear`: FP8
 * Fprop, Dgrad and Wgrad, paper §3.3 / Figure 6, docs/SPEC.md §2) unless `highPrecision` is set, which
 * the output head passes (the recipe keeps it in its original precision, "BF16 or FP32": here it
 * runs as in BF16 training, `bf16Linear`). Under the `bf16` precision
 * (precision-mode.ts) a float32 weight runs through ops' `bf16Linear` (bf16 operands, float32
 * accumulation), the output head included.
 */
export function applyLinear(x: Tensor, w: LinearWeight, opts: { highPrecision?: boolean } = {}): Tensor {
  switch (w.kind) {
    case 'f32':
      checkInput(x, w);
    {
      const p = trainingPrecision();
      if (p === 'bf16' || (p === 'fp8' && opts.highPrecision)) return bf16TrainingLinear(x, w.weight);
      return p === 'fp8' ? fp8TrainingLinear(x, w.weight) : linear(x, w.weight);
    }
    case 'bf16':
      return linearBf16(x, w);
    case 'fp8':
      return linearFp8(x, w);
  }
}
