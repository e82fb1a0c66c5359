/**
 * Load balancing of the routed experts (DeepSeek-V3 report section 2.1.2).
 *
 * - Auxiliary-loss-free balancing: after each step, per MoE layer, the selection bias moves
 *   against the load: b_i ← b_i + γ·sign(mean_load − load_i) (`updateBalanceBias`, mode 'sign').
 *   Variants for when the bias jitters: 'proportional' (b_i ← b_i + γ·(1/E − share_i)), an EMA
 *   of the load (β) and bounds [bmin, bmax].
 * - Complementary sequence-wise balance loss, eqs. 17–20 (`sequenceBalanceLoss`):
 *   f_i = N_r/(K_r·T)·Σ_t 1[i ∈ TopK_t] (eq. 18, a constant), s'_{i,t} = s_{i,t}/Σ_j s_{j,t}
 *   (eq. 19), P_i = (1/T)·Σ_t s'_{i,t} (eq. 20), L_Bal = α·Σ_i f_i·P_i (eq. 17), averaged over
 *   the sequences of the batch.
 * - The classic auxiliary loss baseline (`auxBalanceLoss`): the same formula over the whole batch
 *   as one "sequence", with a large α and no bias.
 * - MaxVio = (max_i load_i − mean load)/mean load (section 4.5.2).
 */
import { customOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';

export type BalanceMode = 'aux-free' | 'aux-loss' | 'none';
export type BiasMode = 'sign' | 'proportional';

export interface BiasUpdateOptions {
  /** 'sign' (paper, default) or 'proportional'. */
  mode?: BiasMode;
  /** Bias update speed γ (paper: 0.001; the recipe scales it with the learning rate). */
  gamma: number;
  /** EMA factor β of the load (ema ← β·ema + (1 − β)·load); absent or 0: the step's load. */
  emaBeta?: number;
  /** Clamp the bias to [min, max] after the update. */
  bounds?: readonly [number, number];
}

/** Serialisable EMA state of one layer's load (null until the first update). */
export interface BiasEmaState {
  ema: number[] | null;
}

function sign(x: number): number {
  return x > 0 ? 1 : x < 0 ? -1 : 0;
}

/**
 * Aux-loss-free bias update for one MoE layer, in place on `bias` (float32 [E]); `load` is the
 * number of (token, slot) assignments per expert in this step. With `emaBeta`, `ema` carries the
 * smoothed load between calls. Returns `bias`.
 */
export function updateBalanceBias(
  bias: Float32Array,
  load: ArrayLike<number>,
  opts: BiasUpdateOptions,
  ema?: BiasEmaState,
): Float32Array {
  const E = bias.length;
  if (load.length !== E) throw new DsvError(`updateBalanceBias: load has ${load.length} entries for ${E} experts`);
  const gamma = opts.gamma;
  const mode = opts.mode ?? 'sign';
  const beta = opts.emaBeta ?? 0;
  if (!(beta >= 0 && beta < 1)) throw new DsvError(`updateBalanceBias: emaBeta must be in [0, 1), got ${beta}`);
  let eff: number[] = Array.from(load);
  if (beta > 0) {
    if (!ema) throw new DsvError('updateBalanceBias: emaBeta needs an EMA state');
    if (ema.ema && ema.ema.length === E) eff = ema.ema.map((e, i) => beta * e + (1 - beta) * eff[i]!);
    ema.ema = eff.slice();
  }
  let total = 0;
  for (const x of eff) total += x;
  const mean = total / E;
  for (let i = 0; i < E; i++) {
    let delta: number;
    if (mode === 'sign') delta = gamma * sign(mean - eff[i]!);
    else if (mode === 'proportional') delta = total > 0 ? gamma * (1 / E - eff[i]! / total) : 0;
    else throw new DsvError(`updateBalanceBias: unknown mode '${String(mode)}' (sign | proportional)`);
    let b = bias[i]! + delta;
    if (opts.bounds) b = Math.min(opts.bounds[1], Math.max(opts.bounds[0], b));
    bias[i] = b;
  }
  return bias;
}

/** MaxVio = (max load − mean load) / mean load; 0 for an empty load. */
export function maxVio(load: ArrayLike<number>): number {
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < load.length; i++) {
    max = Math.max(max, load[i]!);
    sum += load[i]!;
  }
  const mean = sum / load.length;
  return mean > 0 ? (max - mean) / mean : 0;
}

/** Per-expert load (count of (token, slot) assignments) from chosen indices [.., K]. */
export function expertLoad(topkIdx: Int32Array | Tensor, nExperts: number): Int32Array {
  const idx = topkIdx instanceof Tensor ? topkIdx.contiguous().i32() : topkIdx;
  const load = new Int32Array(nExperts);
  for (let i = 0; i < idx.length; i++) {
    const e = idx[i]!;
    if (e < 0 || e >= nExperts) throw new DsvError(`expertLoad: expert index ${e} out of range [0, ${nExperts})`);
    load[e]!++;
  }
  return load;
}

/**
 * Complementary sequence-wise balance loss (eqs. 17–20), differentiable through the unbiased
 * affinities `scores` [B, T, E]; `topkIdx` [B, T, K] are the chosen experts (constants).
 * Returns the scalar α · mean_b Σ_i f_{b,i}·P_{b,i}.
 */
export function sequenceBalanceLoss(scores: Tensor, topkIdx: Tensor | Int32Array, alpha: number): Tensor {
  if (scores.ndim !== 3) throw new DsvError(`sequenceBalanceLoss: scores must be [B, T, E], got [${scores.shape.join(', ')}]`);
  const [B, T, E] = scores.shape as [number, number, number];
  const idx = topkIdx instanceof Tensor ? topkIdx.contiguous().i32() : topkIdx;
  if (B * T === 0 || idx.length % (B * T) !== 0) throw new DsvError(`sequenceBalanceLoss: ${idx.length} expert indices for ${B}x${T} tokens`);
  const K = idx.length / (B * T);
  // f_{b,i} = E/(K·T) · count (eq. 18): constants of the loss
  const f = new Float64Array(B * E);
  for (let b = 0; b < B; b++) {
    for (let j = b * T * K; j < (b + 1) * T * K; j++) {
      const e = idx[j]!;
      if (e < 0 || e >= E) throw new DsvError(`sequenceBalanceLoss: expert index ${e} out of range [0, ${E})`);
      f[b * E + e]! += E / (K * T);
    }
  }
  // per token t of sequence b: S_t = Σ_i s_{i,t} and Σ_i f_i s'_{i,t} (eq. 19), kept for backward
  const denom = new Float64Array(B * T);
  const fs = new Float64Array(B * T);
  return customOp(
    'sequenceBalanceLoss',
    [scores],
    (s) => {
      const x = s.contiguous().f32();
      let total = 0;
      for (let bt = 0; bt < B * T; bt++) {
        const row = bt * E;
        const fb = Math.floor(bt / T) * E;
        let d = 0;
        let acc = 0;
        for (let i = 0; i < E; i++) d += x[row + i]!;
        for (let i = 0; i < E; i++) acc += f[fb + i]! * x[row + i]!;
        denom[bt] = d;
        total += fs[bt] = acc / d;
      }
      return Tensor.scalar((alpha * total) / (T * B)); // eq. 20 (1/T), eq. 17 (α), mean over b
    },
    (g) => {
      // ∂L/∂s_{j,t} = α/(B·T·S_t) · (f_j − Σ_i f_i s'_{i,t})
      const gs = g.item();
      const dx = new Float32Array(B * T * E);
      for (let bt = 0; bt < B * T; bt++) {
        const fb = Math.floor(bt / T) * E;
        const c = (gs * alpha) / (B * T * denom[bt]!);
        for (let j = 0; j < E; j++) dx[bt * E + j] = c * (f[fb + j]! - fs[bt]!);
      }
      return [Tensor.fromF32(dx, scores.shape)];
    },
  );
}

/**
 * The classic auxiliary balance loss (baseline `--balance aux-loss`): eqs. 17–20 with the whole
 * batch treated as one sequence of B·T tokens, with a large α (e.g. 0.01) and no bias.
 */
export function auxBalanceLoss(scores: Tensor, topkIdx: Tensor | Int32Array, alpha: number): Tensor {
  if (scores.ndim !== 3) throw new DsvError(`auxBalanceLoss: scores must be [B, T, E], got [${scores.shape.join(', ')}]`);
  const [B, T, E] = scores.shape as [number, number, number];
  return sequenceBalanceLoss(scores.reshape([1, B * T, E]), topkIdx, alpha);
}
