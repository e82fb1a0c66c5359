/**
 * The SwiGLU feed-forward network (Shazeer 2020) of the dense layers, of every routed expert and
 * of the shared experts: FFN(u) = W_down (silu(W_gate u) * W_up u).
 */
import { dropActivations } from '../engine/active-arena.js';
import { swigluWith } from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';
import type { ParamSource } from './params.js';
import { applyLinear, feedsBf16Linear, type LinearWeight } from './weights.js';
import { trainingPrecision } from './precision-mode.js';

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
    const h = swigluWith(g, u, { bf16: trainingPrecision() === 'bf16' }); // bf16: G, U kept in bf16
    const y = applyLinear(h, this.down);
    dropActivations(g, u, h); // what the backward needs is held by the ops that saved it
    return y;
  }
}
