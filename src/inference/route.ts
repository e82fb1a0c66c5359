/**
 * DeepSeekMoE routing for the engine (paper Eqs. 13-16 and section 2.1.2's auxiliary-loss-free
 * bias), on preallocated buffers: the same decisions and gates as the model's `routeTokens` /
 * `selectExperts` (src/model/router.ts), without a Tensor or an allocation per call.
 *
 *   s = sigmoid(u W_gate^T)  (or softmax for V2-style configs)            (15)
 *   chosen = Topk(s + b) among the topk_group best groups (node-limited)   (16)
 *   g = s_chosen / sum(s_chosen)  (norm_topk_prob), times routed_scaling_factor   (13)
 *
 * Group scores: top-2 sum of biased scores (noaux_tc) or the max (group_limited_greedy);
 * 'greedy' has no group limit. Ties go to the lower index, exactly as in the model.
 */
import type { Kernels } from '../engine/kernels.js';
import type { MoePlan } from './plan.js';
import type { Workspace } from './workspace.js';

/**
 * Routes rows x [m, D] of one MoE layer: fills ws.scores [m, E], ws.topIdx / ws.topW [m, K]
 * and the per-expert dispatch lists (ws.offsets, ws.byExpertRow, ws.byExpertSlot).
 */
export function routeRows(kern: Kernels, p: MoePlan, ws: Workspace, x: Float32Array, m: number, D: number): void {
  const rc = p.rc;
  const E = rc.experts;
  const K = rc.topK;
  const s = ws.scores;
  kern.gemm(false, true, m, E, D, 1, x, D, p.gateW, D, 0, ws.rlogits, E);
  if (rc.scoring === 'sigmoid') {
    const l = ws.rlogits;
    for (let i = 0; i < m * E; i++) s[i] = 1 / (1 + Math.exp(-l[i]!));
  } else {
    kern.softmax(ws.rlogits, s, m, E);
  }
  const selector = p.selector;
  const counts = ws.fill;
  counts.fill(0);
  for (let t = 0; t < m; t++) {
    selector.select(s, t * E, p.bias, ws.topIdx, t * K);
    // gates from the unbiased scores, float32 steps as the model's ops (gather, sum, div, mul)
    let sum = 0;
    for (let j = 0; j < K; j++) sum += s[t * E + ws.topIdx[t * K + j]!]!;
    const denom = Math.fround(Math.fround(sum) + 1e-20);
    for (let j = 0; j < K; j++) {
      const e = ws.topIdx[t * K + j]!;
      let w = s[t * E + e]!;
      if (rc.normTopkProb) w = Math.fround(w / denom);
      ws.topW[t * K + j] = w * rc.scalingFactor;
      counts[e]!++;
    }
  }
  // dispatch plan: per expert, its (row, slot) pairs in row order
  const off = ws.offsets;
  off[0] = 0;
  for (let e = 0; e < E; e++) off[e + 1] = off[e]! + counts[e]!;
  for (let e = 0; e < E; e++) counts[e] = off[e]!;
  for (let t = 0; t < m; t++) {
    for (let j = 0; j < K; j++) {
      const e = ws.topIdx[t * K + j]!;
      const q = counts[e]!++;
      ws.byExpertRow[q] = t;
      ws.byExpertSlot[q] = t * K + j;
    }
  }
}
