/**
 * The training objective of the part of the model that holds the output head — the whole model
 * in sequential training, the last stage in pipeline-parallel training — from its final-norm
 * hidden state (report §2.2, eq. 26, plus the balance term of §2.1.2):
 *   L = L_Main + (λ/D)·Σ_k L^k_MTP + Σ_layers L_Bal
 * Both trainers call this one function, so they optimise the same objective.
 */
import { dropActivations } from '../engine/active-arena.js';
import { linearCrossEntropy } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import type { ModelPart } from '../model/model-part.js';
import type { Routing } from '../model/router.js';
import { trainingPrecision } from '../model/precision-mode.js';
import { applyLinear } from '../model/weights.js';
import type { BalanceMode } from './balance.js';
import { assembleLoss, layerBalanceLoss, mainTargets, mtpTargets, tokenNll, type LossTerms } from './losses.js';

export interface ObjectiveOptions {
  /** MTP weight λ (paper: 0.3 then 0.1). */
  mtpLambda: number;
  /** α of the balance loss. */
  balanceAlpha: number;
  /** 'aux-free' (bias update + complementary sequence-wise loss), 'aux-loss' or 'none'. */
  balance: BalanceMode;
  /**
   * Materialise the main logits (returned as `logits`). Without it the output head and the
   * cross-entropy run fused in row chunks (linearCrossEntropy): no [B, S, V] logits or logit
   * gradients, same losses and gradients up to float rounding.
   */
  logits?: boolean;
}

/** A batch of tokens [B, S+1]: the model reads ids = tokens[:, :S], targets are shifted. */
export interface TokenBatch {
  tokens: Int32Array;
  B: number;
  S: number;
  /** [B, S] int32: the first S columns. */
  ids: Tensor;
}

/** tokens [B, S+1] → the batch with its input ids [B, S]. */
export function tokenBatch(tokens: Int32Array, B: number, S: number): TokenBatch {
  const ids = new Int32Array(B * S);
  for (let b = 0; b < B; b++) ids.set(tokens.subarray(b * (S + 1), b * (S + 1) + S), b * S);
  return { tokens, B, S, ids: Tensor.fromI32(ids, [B, S]) };
}

/** The balance term of each MoE layer in `routing` (sorted by layer index; none for 'none'). */
export function balanceTerms(routing: ReadonlyMap<number, Routing>, B: number, o: ObjectiveOptions): Map<number, Tensor> {
  const out = new Map<number, Tensor>();
  for (const [l, r] of [...routing].sort((a, b) => a[0] - b[0])) {
    const t = layerBalanceLoss(r, B, o.balance, o.balanceAlpha);
    if (t) out.set(l, t);
  }
  return out;
}

/**
 * L from the final-norm hidden state [B, S, D] of `part` (which holds the head and the MTP
 * modules) and the routing of the MoE layers whose balance terms belong to it; the MTP layers'
 * routing is added to `routing`.
 */
export function headObjective(part: ModelPart, hidden: Tensor, batch: TokenBatch, routing: Map<number, Routing>, o: ObjectiveOptions): { terms: LossTerms; logits: Tensor | null } {
  const { tokens, B, S } = batch;
  const head = part.lmHead!;
  // fused head + cross-entropy unless the logits are wanted (or the head is not a float32 weight)
  const fused = head.kind === 'f32' && !o.logits ? head.weight : null;
  let logits: Tensor | null = null;
  const nll = (x: Tensor, targets: Int32Array): Tensor => {
    // bf16 operands under bf16 and fp8 (the head is not one of §3.3's FP8 GEMMs; it runs as in BF16 training)
    if (fused) return linearCrossEntropy(x, fused, targets, { bf16: trainingPrecision() !== 'fp32' });
    const l = applyLinear(x, head, { highPrecision: true }); // never FP8 (§3.3)
    logits ??= l; // the first call is the main head
    return tokenNll(l, targets);
  };
  const lmNll = nll(hidden, mainTargets(tokens, B, S));
  const mtpNll: Tensor[] = [];
  if (part.mtp.length > 0 && o.mtpLambda !== 0) {
    for (const out of part.mtpForward(hidden, batch.ids, { head: false })) {
      mtpNll.push(nll(out.headInput, mtpTargets(tokens, B, S, out.depth)));
      dropActivations(out.headInput, out.hidden); // read by now (the next module ran already); arena.ts
      if (out.routing) routing.set(part.cfg.num_hidden_layers + out.depth - 1, out.routing);
    }
  }
  return { terms: assembleLoss(lmNll, mtpNll, o.mtpLambda, balanceTerms(routing, B, o)), logits };
}
