/**
 * The DeepSeekMoE layer (paper Eq. 12):
 *   h'_t = u_t + sum_{i<=N_s} FFN^(s)_i(u_t) + sum_{i<=N_r} g_{i,t} FFN^(r)_i(u_t)
 * (the residual add is the decoder layer's). The N_s shared experts are one SwiGLU MLP with
 * intermediate size n_shared_experts * moe_intermediate_size, as in the checkpoints.
 *
 * Sparse dispatch: the (token, slot) pairs are grouped per expert, each expert runs one SwiGLU
 * over exactly its tokens, outputs are scaled by their gates and scattered back. With float32
 * experts (training) the shared and routed experts are one fused op, `groupedExperts` (one
 * gather, per-expert GEMMs on contiguous slices, one SwiGLU, one gate-scaled scatter-add, and
 * the matching fused backward); bf16/FP8 checkpoint experts run per expert through
 * indexSelect / indexAdd.
 * No capacity factor and no token dropping.
 */
import { add, cat, expertPlan, fp8GroupedExperts, groupedExperts, indexAdd, indexSelect, mul, type LinearRecompute } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import type { ModelConfig } from './config.js';
import { trainingPrecision } from './precision-mode.js';
import { SwiGluMlp } from './mlp.js';
import type { ParamSource } from './params.js';
import { type RouterConfig, type Routing, routeTokens, routerConfig } from './router.js';
import type { F32Linear, LinearWeight } from './weights.js';

/** For each expert, its (token, slot) pairs in token order: rows[k] is a token, slots[k] = token*K + j. */
export function dispatchPlan(r: Routing): { offsets: Int32Array; rows: Int32Array; slots: Int32Array } {
  return expertPlan(r.topkIdx, r.topK, r.experts);
}

export class MoE {
  readonly router: RouterConfig;
  /** Router weight e_i of Eq. 15, [E, D] (`mlp.gate.weight`), kept in float32. */
  readonly gateWeight: Tensor;
  /** Balance bias b_i of Eq. 16 ([E], not trained by gradients), or null (V2 routing). */
  readonly bias: Tensor | null;
  readonly experts: SwiGluMlp[];
  readonly shared: SwiGluMlp | null;

  constructor(cfg: ModelConfig, src: ParamSource, prefix: string) {
    const D = cfg.hidden_size;
    const E = cfg.n_routed_experts;
    this.router = routerConfig(cfg);
    this.gateWeight = src.tensor(`${prefix}.gate.weight`, [E, D], 'normal');
    this.bias = cfg.topk_method === 'noaux_tc' ? src.tensor(`${prefix}.gate.e_score_correction_bias`, [E], 'zeros', false) : null;
    this.experts = [];
    for (let e = 0; e < E; e++) this.experts.push(new SwiGluMlp(src, `${prefix}.experts.${e}`, D, cfg.moe_intermediate_size));
    this.shared = cfg.n_shared_experts > 0 ? new SwiGluMlp(src, `${prefix}.shared_experts`, D, cfg.n_shared_experts * cfg.moe_intermediate_size) : null;
  }

  /**
   * x [B, T, D] -> (FFN output [B, T, D], routing of the B*T tokens). `inputAgain` (x again,
   * for the router gate's Wgrad: see routeTokens; under bf16 also for the fused experts'
   * backward: see groupedExperts' GroupedOptions).
   */
  forward(x: Tensor, inputAgain?: LinearRecompute | null): { out: Tensor; routing: Routing } {
    const D = x.shape[x.ndim - 1]!;
    const flat = x.reshape([-1, D]);
    const routing = routeTokens(flat, this.gateWeight, this.bias, this.router, inputAgain);
    let out = this.fusedF32(flat, routing, inputAgain ?? null);
    if (!out) {
      out = this.routedPerExpert(flat, routing);
      if (this.shared) out = add(this.shared.forward(flat), out);
    }
    return { out: out.reshape(x.shape), routing };
  }

  /**
   * Shared + routed experts as one fused op, when every expert weight is float32; else null.
   * Inside `withFp8` (training, paper §3.3) the op's expert GEMMs run on FP8 operands
   * (`fp8GroupedExperts`), under `bf16` on bf16 operands (`groupedExperts` with `bf16`); the
   * router gate stays float32 either way.
   */
  private fusedF32(flat: Tensor, routing: Routing, inputAgain: LinearRecompute | null): Tensor | null {
    const f32 = (m: SwiGluMlp): boolean => m.gate.kind === 'f32' && m.up.kind === 'f32' && m.down.kind === 'f32';
    const weight = (w: LinearWeight): Tensor => (w as F32Linear).weight;
    if (!this.experts.every(f32) || (this.shared && !f32(this.shared))) return null;
    const sh = this.shared;
    const p = trainingPrecision();
    const ws = {
      gate: this.experts.map((m) => weight(m.gate)),
      up: this.experts.map((m) => weight(m.up)),
      down: this.experts.map((m) => weight(m.down)),
      shared: sh ? { gate: weight(sh.gate), up: weight(sh.up), down: weight(sh.down) } : null,
    };
    if (p === 'fp8') return fp8GroupedExperts(flat, routing.weights, routing.topkIdx, ws);
    return groupedExperts(flat, routing.weights, routing.topkIdx, ws, { bf16: p === 'bf16', inputAgain });
  }

  /** The routed experts one by one (any weight format): gather, SwiGLU, gate, scatter-add. */
  private routedPerExpert(flat: Tensor, routing: Routing): Tensor {
    const [N, D] = flat.shape as [number, number];
    const { offsets, rows, slots } = dispatchPlan(routing);
    const outs: Tensor[] = [];
    for (let e = 0; e < this.experts.length; e++) {
      const a = offsets[e]!;
      const b = offsets[e + 1]!;
      if (a === b) continue;
      outs.push(this.experts[e]!.forward(indexSelect(flat, 0, rows.subarray(a, b))));
    }
    const out = Tensor.zeros([N, D]);
    if (outs.length === 0) return out;
    const gates = indexSelect(routing.weights.reshape([N * routing.topK]), 0, slots).reshape([N * routing.topK, 1]);
    return indexAdd(out, 0, rows, mul(cat(outs, 0), gates));
  }
}
