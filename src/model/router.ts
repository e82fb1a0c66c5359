/**
 * DeepSeekMoE routing (paper Eqs. 13-16 and section 2.1.2's auxiliary-loss-free balancing).
 *
 *   s_{i,t} = sigmoid(u_t^T e_i)                            (15)  (softmax for V2-style configs)
 *   g'_{i,t} = s_{i,t} if s_{i,t} + b_i in Topk(s_{j,t} + b_j, K_r), else 0      (16)
 *   g_{i,t} = g'_{i,t} / sum_j g'_{j,t}                     (13)  (norm_topk_prob)
 *
 * The bias b (`e_score_correction_bias`) only decides which experts are chosen; gate values use
 * the unbiased s. Node-limited routing: experts are split into n_group contiguous groups, only
 * the topk_group best groups are eligible; a group's score is the sum of its top-2 biased
 * scores (`noaux_tc`) or its largest score (V2 `group_limited_greedy`); `greedy` has no group
 * limit. Gates are finally multiplied by routed_scaling_factor. No token is ever dropped.
 *
 * Expert choice is discrete (no gradient); gate weights and scores are differentiable w.r.t. the
 * router weight and the input.
 */
import { add, div, gather, linearWith, mul, sigmoid, softmax, sum, type LinearRecompute } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import type { ModelConfig, ScoringFunc, TopkMethod } from './config.js';

export interface RouterConfig {
  experts: number;
  topK: number;
  nGroup: number;
  topkGroup: number;
  scoring: ScoringFunc;
  method: TopkMethod;
  normTopkProb: boolean;
  scalingFactor: number;
}

export function routerConfig(cfg: ModelConfig): RouterConfig {
  return {
    experts: cfg.n_routed_experts,
    topK: cfg.num_experts_per_tok,
    nGroup: cfg.n_group,
    topkGroup: cfg.topk_group,
    scoring: cfg.scoring_func,
    method: cfg.topk_method,
    normTopkProb: cfg.norm_topk_prob,
    scalingFactor: cfg.routed_scaling_factor,
  };
}

/** The routing decision for N tokens. */
export interface Routing {
  tokens: number;
  topK: number;
  experts: number;
  /** [N, K] chosen experts per token, in descending biased score. */
  topkIdx: Int32Array;
  /** [N, K] gate values g (normalised when norm_topk_prob, times routed_scaling_factor). */
  weights: Tensor;
  /** [N, E] unbiased affinities s (sigmoid or softmax). */
  scores: Tensor;
  /** [E] number of (token, slot) assignments per expert. */
  load: Int32Array;
}

/** Indices of the k largest values of v[0..n) among allowed ones, descending (ties: lower index). */
function topIndices(v: Float64Array, n: number, k: number, allowed: Uint8Array | null, out: Int32Array, outOff: number, best: Float64Array): void {
  // one pass: the best k so far kept sorted by (value descending, index ascending) in out / best;
  // a later index goes after every kept value >= its own, so ties keep the lower index first
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (allowed && !allowed[i]) continue;
    const x = v[i]!;
    if (x !== x) return topIndicesNaN(v, n, k, allowed, out, outOff); // NaN: the selection-rounds rule below
    if (count === k && !(x > best[k - 1]!)) continue;
    let p = count < k ? count++ : k - 1;
    while (p > 0 && best[p - 1]! < x) {
      best[p] = best[p - 1]!;
      out[outOff + p] = out[outOff + p - 1]!;
      p--;
    }
    best[p] = x;
    out[outOff + p] = i;
  }
  for (let j = count; j < k; j++) out[outOff + j] = -1;
}

/** topIndices by k selection rounds (each takes the first allowed, untaken index unless a later one is strictly larger): the rule NaN scores follow. */
function topIndicesNaN(v: Float64Array, n: number, k: number, allowed: Uint8Array | null, out: Int32Array, outOff: number): void {
  for (let j = 0; j < k; j++) {
    let best = -1;
    let bestV = -Infinity;
    for (let i = 0; i < n; i++) {
      if (allowed && !allowed[i]) continue;
      let taken = false;
      for (let p = 0; p < j; p++) if (out[outOff + p] === i) taken = true;
      if (taken) continue;
      if (best < 0 || v[i]! > bestV) {
        best = i;
        bestV = v[i]!;
      }
    }
    out[outOff + j] = best;
  }
}

/** Group scores of one token's biased scores c: top-2 sum (noaux_tc) or max (group_limited_greedy). */
function groupScores(c: Float64Array, rc: RouterConfig, out: Float64Array): void {
  const per = rc.experts / rc.nGroup;
  const top2 = rc.method === 'noaux_tc';
  for (let g = 0; g < rc.nGroup; g++) {
    let m1 = -Infinity;
    let m2 = -Infinity;
    for (let i = g * per; i < (g + 1) * per; i++) {
      const x = c[i]!;
      if (x > m1) {
        m2 = m1;
        m1 = x;
      } else if (x > m2) m2 = x;
    }
    out[g] = top2 ? m1 + m2 : m1;
  }
}

/**
 * Expert selection for one token at a time on preallocated scratch (paper Eq. 16 and the
 * node-limited routing of section 2.1.2): the biased scores c = s + b, the group limit (keep the
 * topk_group best groups), then the K largest c among the kept experts. Shared by the training
 * path (`selectExperts`) and the allocation-free decode engine (src/inference/route.ts).
 */
export class ExpertSelector {
  private readonly c: Float64Array;
  private readonly gScore: Float64Array;
  private readonly gKeep: Int32Array;
  private readonly allowed: Uint8Array | null;
  private readonly best: Float64Array;

  constructor(readonly rc: RouterConfig) {
    this.c = new Float64Array(rc.experts);
    this.best = new Float64Array(Math.max(rc.topK, rc.topkGroup, 1));
    this.gScore = new Float64Array(rc.nGroup);
    this.gKeep = new Int32Array(rc.topkGroup);
    const grouped = rc.method !== 'greedy' && rc.nGroup > 1 && rc.topkGroup < rc.nGroup;
    this.allowed = grouped ? new Uint8Array(rc.experts) : null;
  }

  /** Writes the K chosen experts of the token whose scores start at s[sOff] into out[outOff..]. */
  select(s: Float32Array, sOff: number, bias: Float32Array | null, out: Int32Array, outOff: number): void {
    const { rc, c, allowed } = this;
    const E = rc.experts;
    for (let e = 0; e < E; e++) c[e] = s[sOff + e]! + (bias ? bias[e]! : 0);
    if (allowed) {
      const per = E / rc.nGroup;
      groupScores(c, rc, this.gScore);
      topIndices(this.gScore, rc.nGroup, rc.topkGroup, null, this.gKeep, 0, this.best);
      // (plain loops: fill() and for-of cost more than the 16-64 stores at this size)
      for (let e = 0; e < E; e++) allowed[e] = 0;
      const keep = this.gKeep;
      for (let j = 0; j < keep.length; j++) {
        const g = keep[j]!;
        if (g < 0) continue;
        for (let e = Math.trunc(g * per), end = Math.trunc((g + 1) * per); e < end; e++) allowed[e] = 1;
      }
    }
    topIndices(c, E, rc.topK, allowed, out, outOff, this.best);
  }
}

/**
 * Chooses K experts per token from scores s [N, E] (float32 data) and the optional bias [E]:
 * returns topkIdx [N, K] (descending biased score) and the per-expert load.
 */
export function selectExperts(s: Float32Array, bias: Float32Array | null, tokens: number, rc: RouterConfig): { topkIdx: Int32Array; load: Int32Array } {
  const K = rc.topK;
  const topkIdx = new Int32Array(tokens * K);
  const load = new Int32Array(rc.experts);
  const selector = new ExpertSelector(rc);
  for (let t = 0; t < tokens; t++) {
    selector.select(s, t * rc.experts, bias, topkIdx, t * K);
    for (let j = 0; j < K; j++) load[topkIdx[t * K + j]!]!++;
  }
  return { topkIdx, load };
}

/**
 * Routes the tokens x [N, D] with the router weight [E, D] (`mlp.gate.weight`) and the
 * optional balance bias [E] (`mlp.gate.e_score_correction_bias`). `inputAgain`: the router
 * gate's backward recomputes x for its Wgrad instead of keeping it (ops/linear.ts).
 */
export function routeTokens(x: Tensor, gateWeight: Tensor, bias: Tensor | null, rc: RouterConfig, inputAgain?: LinearRecompute | null): Routing {
  const N = x.shape[0]!;
  const logits = linearWith(x, gateWeight, inputAgain ?? null); // [N, E]
  const scores = rc.scoring === 'sigmoid' ? sigmoid(logits) : softmax(logits, -1);
  const { topkIdx, load } = selectExperts(scores.detach().contiguous().f32(), bias ? bias.detach().contiguous().f32() : null, N, rc);
  let weights = gather(scores, 1, Tensor.fromI32(topkIdx, [N, rc.topK]));
  if (rc.normTopkProb) weights = div(weights, add(sum(weights, -1, true), 1e-20));
  weights = mul(weights, rc.scalingFactor);
  return { tokens: N, topK: rc.topK, experts: rc.experts, topkIdx, weights, scores, load };
}
