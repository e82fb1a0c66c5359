/**
 * The FP8 mixed-precision training switch (DeepSeek-V3 §3.3, Figure 6; docs/SPEC.md §2). Inside
 * `withFp8(fn)`, the model's Linear layers with float32 (master) weights run their Fprop, Dgrad
 * and Wgrad GEMMs on E4M3 operands: `applyLinear` uses `fp8TrainingLinear` (ops/fp8-training-linear.ts) for the
 * MLA projections (q_a/q_b or q, kv_a, kv_b, o), the dense FFNs and the MTP eh_proj, and the MoE
 * layer uses `fp8GroupedExperts` (ops/fp8-training-grouped.ts) for the shared and routed experts.
 * Kept in their original precision, as the paper does ("e.g., BF16 or FP32"): the output head
 * (fused `linearCrossEntropy`, or `applyLinear(..., { highPrecision: true })`) runs on bf16
 * operands with float32 accumulation exactly as under the `bf16` precision (its weight rounded
 * once per optimizer step); the embedding, the MoE gate (router), the normalisations and the
 * attention core stay float32. bf16 / FP8 checkpoint weights (inference) are
 * unaffected. The switch is read when an op runs forward; its backward follows that choice.
 */

import { trainingPrecision, withPrecision } from './precision-mode.js';

// FP8 is one value of the training precision (precision-mode.ts); these are its historical names.

/** True inside `withFp8` (with enabled = true), i.e. while the training precision is 'fp8'. */
export function fp8Enabled(): boolean {
  return trainingPrecision() === 'fp8';
}

/**
 * Runs fn with FP8 training GEMMs on (precision 'fp8') or, with enabled = false, off
 * (precision 'fp32'); restores the previous precision.
 */
export function withFp8<T>(fn: () => T, enabled = true): T {
  return withPrecision(enabled ? 'fp8' : 'fp32', fn);
}
