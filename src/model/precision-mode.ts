/**
 * The training precision switch: which arithmetic the model's GEMMs use during a training
 * forward and its backward (docs/ARCHITECTURE.md "Training precision"; `dsv3 train --precision`).
 *   - `fp32`: every GEMM on float32 operands (the default);
 *   - `bf16`: standard BF16 mixed precision. The Linear layers with float32 master weights
 *     (`applyLinear`: MLA projections, dense FFNs, MTP eh_proj; ops/bf16-linear.ts), the
 *     shared and routed experts (`groupedExperts` with `bf16`) and the output head
 *     (`linearCrossEntropy` with `bf16`) run Fprop, Dgrad and Wgrad on bfloat16 operands with
 *     float32 accumulation; weights are rounded to bf16 once per optimizer step
 *     (engine/bf16-weights.ts) and activations saved for Wgrad (and the SwiGLU inputs G, U) are
 *     kept in bf16. The attention
 *     core's matrix products (QK^T, PV and the four of its backward) take bf16 operands with
 *     float32 accumulation (mla.ts -> Kernels.attentionBf16). Master weights, gradients, norms,
 *     the softmax statistics, the MoE gate (router), the losses and the optimizer stay float32
 *     (AdamW moments per --moment-dtype);
 *   - `fp8`: the FP8 recipe of paper §3.3 (fp8-mode.ts, `withFp8`); its attention core and output head run
 *     as under bf16 (the paper keeps attention's matmuls and the head in BF16).
 * bf16 / FP8 checkpoint weights (inference) are unaffected. The switch is read when an op runs
 * forward; its backward follows that choice.
 */

export type Precision = 'fp32' | 'bf16' | 'fp8';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16', 'fp8'];

let active: Precision = 'fp32';

/** The precision of the enclosing `withPrecision` scope ('fp32' outside any). */
export function trainingPrecision(): Precision {
  return active;
}

/** Runs fn with the given training precision; restores the previous one afterwards. */
export function withPrecision<T>(p: Precision, fn: () => T): T {
  if (!PRECISIONS.includes(p)) throw new Error(`withPrecision: unknown precision '${String(p)}' (expected fp32, bf16 or fp8)`);
  const prev = active;
  active = p;
  try {
    return fn();
  } finally {
    active = prev;
  }
}
