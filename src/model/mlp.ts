/**
 * The SwiGLU feed-forward network (Shazeer 2020) of the dense layers, of every routed expert and
 * of the shared experts: FFN(u) = W_down (silu(W_gate u) * W_up u).
 */
import { dropActivations } from '../engine/active-arena.js';
import { isGradEnabled } from '../engine/autograd.js';
import { fp8FpropBuffers, fp8LinearFromOperands, pendingFp8Fprop, swigluWith, type Fp8Fprop, type SwigluRecompute } from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';
import type { ParamSource } from './params.js';
import { applyLinear, feedsBf16Linear, type LinearWeight } from './weights.js';
import { trainingPrecision } from './precision-mode.js';
import { mlaRecomputeEnabled } from './mla.js';

export class SwiGluMlp {
  readonly gate: LinearWeight;
  readonly up: LinearWeight;
  readonly down: LinearWeight;

  constructor(src: ParamSource, prefix: string, hidden: number, intermediate: number) {
    this.gate = src.linear(`${prefix}.gate_proj.weight`, intermediate, hidden);
    this.up = src.linear(`${prefix}.up_proj.weight`, intermediate, hidden);
    this.down = src.linear(`${prefix}.down_proj.weight`, hidden, intermediate);
  }

  /** Whether forward's input is read first by a BF16 Linear that saves its bf16 bits (the gate and up projections). */
  inputFeedsBf16(): boolean {
    return feedsBf16Linear(this.gate);
  }

  forward(x: Tensor): Tensor {
    const g = applyLinear(x, this.gate);
    const u = applyLinear(x, this.up);
    const rc = this.recompute(x);
    const h = swigluWith(g, u, { bf16: trainingPrecision() === 'bf16', ...(rc ? { recompute: rc } : {}) }); // bf16: G, U kept in bf16
    const y = applyLinear(h, this.down);
    dropActivations(g, u, h); // what the backward needs is held by the ops that saved it
    return y;
  }

  /**
   * Under fp8 (after the gate and up Linears of x were recorded): the SwiGLU backward's g and u
   * recomputed from the FP8 operands those Linears keep for Wgrad and Dgrad anyway (x's 1x128-tile
   * copy, shared, and each W's block copy; their Fprop GEMM again: the same bits), instead of
   * float32 g and u kept through the step (§3.2.3's recomputation; §3.3.3: the backward keeps the
   * FP8 cache). Follows DSV3_RECOMPUTE (withMlaRecompute) like MLA's up-projections. Else null.
   */
  private recompute(x: Tensor): SwigluRecompute | null {
    if (trainingPrecision() !== 'fp8' || !isGradEnabled() || !mlaRecomputeEnabled()) return null;
    if (this.gate.kind !== 'f32' || this.up.kind !== 'f32') return null;
    const fg = pendingFp8Fprop(x, this.gate.weight);
    const fu = pendingFp8Fprop(x, this.up.weight);
    return fg && fu ? gateUpAgain(fg, fu, x.shape) : null;
  }
}

/** g and u again from their Linears' FP8 operands (a function of its own: the closures hold no x). */
function gateUpAgain(fg: Fp8Fprop, fu: Fp8Fprop, shape: readonly number[]): SwigluRecompute {
  return {
    from: [...new Set([...fp8FpropBuffers(fg), ...fp8FpropBuffers(fu)])],
    g: () => fp8LinearFromOperands(fg, shape).f32(),
    u: () => fp8LinearFromOperands(fu, shape).f32(),
  };
}
