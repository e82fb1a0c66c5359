/**
 * The DeepSeek-V3 training objective (report sections 2.1.2, 2.2):
 *   L = L_Main + L_MTP + L_Bal
 * - L_Main: mean next-token cross-entropy over the B·S positions.
 * - L_MTP = (λ/D) · Σ_k L^k_MTP (eq. 25), L^k_MTP the mean cross-entropy of depth k over its
 *   B·(S−k) positions (eq. 24 with the mean over the positions that have a target).
 * - L_Bal: the complementary sequence-wise balance loss (eqs. 17–20) summed over every MoE layer
 *   (main and MTP layers), or the classic auxiliary loss for the `aux-loss` baseline, or nothing.
 */
import { add, crossEntropy, mean, scale } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { Routing } from '../model/router.js';
import { auxBalanceLoss, sequenceBalanceLoss, type BalanceMode } from './balance.js';

/** Per-position cross-entropy of logits [B, T, V] against targets [B·T] → [B, T]. */
export function tokenNll(logits: Tensor, targets: Int32Array): Tensor {
  if (logits.ndim !== 3) throw new DsvError(`tokenNll: logits must be [B, T, V], got [${logits.shape.join(', ')}]`);
  return crossEntropy(logits, targets, 'none');
}

/**
 * L_MTP = (λ/D) · Σ_k CE_k (eq. 25), from the mean cross-entropy of each depth. Returns null
 * when there is no depth.
 */
export function mtpLoss(ceByDepth: readonly Tensor[], lambda: number): Tensor | null {
  if (ceByDepth.length === 0) return null;
  let s = ceByDepth[0]!;
  for (const ce of ceByDepth.slice(1)) s = add(s, ce);
  return scale(s, lambda / ceByDepth.length);
}

/** Targets of MTP depth k for tokens [B, S+1]: token i + k + 1 for positions i = 0 .. S−k−1. */
export function mtpTargets(tokens: Int32Array, B: number, S: number, k: number): Int32Array {
  const T = S - k;
  const out = new Int32Array(B * T);
  for (let b = 0; b < B; b++) out.set(tokens.subarray(b * (S + 1) + k + 1, b * (S + 1) + S + 1), b * T);
  return out;
}

/** Next-token targets for tokens [B, S+1]: tokens[:, 1:]. */
export function mainTargets(tokens: Int32Array, B: number, S: number): Int32Array {
  return mtpTargets(tokens, B, S, 0);
}

/**
 * Balance loss of one MoE layer from its routing of B·T tokens: the sequence-wise loss
 * (aux-free mode, complementary, tiny α) or the batch-wise auxiliary loss (aux-loss baseline).
 */
export function layerBalanceLoss(r: Routing, B: number, mode: BalanceMode, alpha: number): Tensor | null {
  if (mode === 'none' || alpha === 0) return null;
  if (r.tokens % B !== 0) throw new DsvError(`balance loss: ${r.tokens} routed tokens do not split into ${B} sequences`);
  const scores = r.scores.reshape([B, r.tokens / B, r.experts]);
  return mode === 'aux-loss' ? auxBalanceLoss(scores, r.topkIdx, alpha) : sequenceBalanceLoss(scores, r.topkIdx, alpha);
}

/** The loss terms of one forward pass, as differentiable scalars. */
export interface LossTerms {
  total: Tensor;
  lm: Tensor;
  /** [B, S] per-position main cross-entropy. */
  lmNll: Tensor;
  /** Per depth: [B, S−k] per-position cross-entropy and its mean. */
  mtpNll: Tensor[];
  mtpCe: Tensor[];
  /** (λ/D)·Σ_k CE_k, or null without MTP. */
  mtpWeighted: Tensor | null;
  /** Balance loss per MoE layer index (absent for `none`). */
  balancePerLayer: Map<number, Tensor>;
  balanceTotal: Tensor | null;
}

/** L = L_Main + L_MTP + L_Bal from the parts (eq. 26 plus the balance term). */
export function assembleLoss(
  lmNll: Tensor,
  mtpNll: readonly Tensor[],
  lambda: number,
  balancePerLayer: Map<number, Tensor>,
): LossTerms {
  const lm = mean(lmNll);
  const mtpCe = mtpNll.map((n) => mean(n));
  const mtpWeighted = mtpLoss(mtpCe, lambda);
  let balanceTotal: Tensor | null = null;
  for (const l of [...balancePerLayer.keys()].sort((a, b) => a - b)) {
    const t = balancePerLayer.get(l)!;
    balanceTotal = balanceTotal ? add(balanceTotal, t) : t;
  }
  let total = lm;
  if (mtpWeighted) total = add(total, mtpWeighted);
  if (balanceTotal) total = add(total, balanceTotal);
  return { total, lm, lmNll, mtpNll: mtpNll.slice(), mtpCe, mtpWeighted, balancePerLayer, balanceTotal };
}

/** Loss values with the fixture's keys (meta.json `losses`). */
export interface LossReport {
  total: number;
  lm: number;
  mtp_weighted: number;
  mtp_depth_mean_ce: number[];
  balance_total: number;
  balance_per_layer: Record<string, number>;
}

export function lossReport(t: LossTerms): LossReport {
  const per: Record<string, number> = {};
  for (const [l, v] of t.balancePerLayer) per[String(l)] = v.item();
  return {
    total: t.total.item(),
    lm: t.lm.item(),
    mtp_weighted: t.mtpWeighted ? t.mtpWeighted.item() : 0,
    mtp_depth_mean_ce: t.mtpCe.map((c) => c.item()),
    balance_total: t.balanceTotal ? t.balanceTotal.item() : 0,
    balance_per_layer: per,
  };
}

/** Tokens [B, S+1] as an int32 array with its B and S (from a Tensor or a flat array). */
export function batchShape(tokens: Tensor | Int32Array, B?: number): { data: Int32Array; B: number; S: number } {
  if (tokens instanceof Tensor) {
    if (tokens.dtype !== 'i32' || tokens.ndim !== 2) throw new DsvError(`tokens must be an int32 tensor [B, S+1], got ${tokens.dtype} [${tokens.shape.join(', ')}]`);
    const [b, s1] = tokens.shape as [number, number];
    if (s1 < 2) throw new DsvError(`tokens [${b}, ${s1}]: need at least 2 tokens per row (S+1 with S >= 1)`);
    return { data: tokens.contiguous().i32(), B: b, S: s1 - 1 };
  }
  if (!B || tokens.length % B !== 0) throw new DsvError(`tokens: ${tokens.length} ids do not form ${B} rows`);
  return { data: tokens, B, S: tokens.length / B - 1 };
}
