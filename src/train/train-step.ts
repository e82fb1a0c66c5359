/**
 * One DeepSeek-V3 training step (report sections 2.1.2, 2.2, 4.2):
 *   1. forward of the main model on tokens[:, :S] and of the MTP modules;
 *   2. L = L_Main + L_MTP + L_Bal (losses.ts);
 *   3. backward (expert choices are constants; the MTP loss reaches the main model through h);
 *   4. global-norm clipping, AdamW (optimizer.ts);
 *   5. the auxiliary-loss-free bias update of every MoE layer from this step's loads
 *      (balance.ts), outside the loss and the optimizer.
 * A step whose loss or gradients are not finite changes nothing (no update, no bias move) and
 * is reported as skipped.
 *
 * `forwardLosses` and `applyUpdate` are exported separately so the trainer can accumulate
 * gradients over micro-batches (sum of micro-batch gradients / n) before one update.
 */
import { backward, noGrad } from '../engine/autograd.js';
import { dropActivations } from '../engine/active-arena.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import { withPrecision, type Precision } from '../model/precision-mode.js';
import type { DeepseekV3 } from '../model/model.js';
import type { Routing } from '../model/router.js';
import { type BalanceMode, type BiasEmaState, type BiasUpdateOptions, updateBalanceBias } from '../objective/balance.js';
import { batchShape, lossReport, type LossReport, type LossTerms } from '../objective/losses.js';
import { headObjective, tokenBatch, type ObjectiveOptions } from '../objective/objective.js';
import { AdamW, clipCoefficient, gradGlobalNorm } from './optimizer.js';

/** The objective's settings (objective.ts), plus the precision of the forward. */
export interface LossOptions extends ObjectiveOptions {
  /**
   * FP8 mixed precision (paper §3.3, Figure 6; docs/SPEC.md §2): every Linear covered by the recipe
   * (MLA projections, dense / shared / routed expert FFNs, MTP eh_proj) runs Fprop, Dgrad and
   * Wgrad on E4M3 operands (model/fp8-mode.ts); the output head runs on bf16 operands as under
   * 'bf16' (the paper's "original precision, e.g. BF16"); embedding, MoE gate, norms and
   * attention core stay float32, as do the master weights and gradients. Default off.
   * `fp8: true` is `precision: 'fp8'` (`fp8: false` is 'fp32' unless `precision` says otherwise).
   */
  fp8?: boolean;
  /**
   * The training precision of the forward and its backward (model/precision-mode.ts): 'fp32',
   * 'bf16' (BF16 mixed precision: bf16 GEMM operands, float32 accumulation, master weights,
   * norms, softmax, losses) or 'fp8' (the FP8 recipe above). Unset (and no `fp8`): whatever an
   * enclosing `withPrecision` scope says (fp32 by default).
   */
  precision?: Precision;
}

/** The precision LossOptions ask for, or null to keep the enclosing scope's. */
export function lossPrecision(o: Pick<LossOptions, 'fp8' | 'precision'>): Precision | null {
  if (o.precision !== undefined) {
    if (o.fp8 === true && o.precision !== 'fp8') throw new Error(`LossOptions: fp8: true contradicts precision '${o.precision}'`);
    return o.precision;
  }
  return o.fp8 === undefined ? null : o.fp8 ? 'fp8' : 'fp32';
}

export interface UpdateOptions {
  lr: number;
  /** Global-norm clipping threshold (the recipe: 1.0). */
  maxGradNorm: number;
  balance: BalanceMode;
  /** Bias update (aux-free mode only): γ, sign/proportional, EMA, bounds. */
  bias: BiasUpdateOptions;
}

export interface TrainStepOptions extends LossOptions, UpdateOptions {}

/** Routing of one MoE layer as the step saw it. */
export interface LayerRouting {
  /** [B, T, K] */
  topkIdx: Int32Array;
  shape: [number, number, number];
  /** [E] (token, slot) assignments per expert. */
  load: Int32Array;
}

export interface ForwardLosses {
  terms: LossTerms;
  /** [B, S, V] main logits (null unless LossOptions.logits, or for a non-float32 head). */
  logits: Tensor | null;
  routing: Map<number, LayerRouting>;
  B: number;
  S: number;
}

function layerRouting(r: Routing, B: number): LayerRouting {
  const T = r.tokens / B;
  return { topkIdx: r.topkIdx, shape: [B, T, r.topK], load: r.load };
}

/**
 * Forward of the main model and the MTP modules on tokens [B, S+1] and the loss terms, with the
 * autograd graph recorded (call `backward(terms.total)`).
 */
export function forwardLosses(model: DeepseekV3, tokens: Tensor | Int32Array, o: LossOptions, batch?: number): ForwardLosses {
  // unset: whatever an enclosing withPrecision / withFp8 scope says (fp32 by default)
  const p = lossPrecision(o);
  return p === null ? lossesOf(model, tokens, o, batch) : withPrecision(p, () => lossesOf(model, tokens, o, batch));
}

function lossesOf(model: DeepseekV3, tokens: Tensor | Int32Array, o: LossOptions, batch?: number): ForwardLosses {
  const { data, B, S } = batchShape(tokens, batch);
  const V = model.cfg.vocab_size;
  for (let i = 0; i < data.length; i++) {
    const t = data[i]!;
    if (t < 0 || t >= V) throw new DsvError(`tokens: id ${t} at position ${i} is out of range for vocab_size ${V}`);
  }
  const tb = tokenBatch(data, B, S);
  const fwd = model.forwardHidden(tb.ids);
  const routing = new Map<number, Routing>(fwd.routing);
  const { terms, logits } = headObjective(model, fwd.hidden, tb, routing, o);
  if (!o.logits) dropActivations(fwd.hidden); // read by the head and the MTP modules (arena.ts)
  const lr = new Map<number, LayerRouting>();
  for (const [l, r] of [...routing].sort((a, b) => a[0] - b[0])) lr.set(l, layerRouting(r, B));
  return { terms, logits, routing: lr, B, S };
}

/** Loss values of a forward pass without recording a graph (validation). */
export function evalLosses(model: DeepseekV3, tokens: Tensor | Int32Array, o: LossOptions, batch?: number): LossReport {
  return noGrad(() => lossReport(forwardLosses(model, tokens, o, batch).terms));
}

/** Serialisable per-layer EMA states of the bias update. */
export type BiasEmaStates = Record<string, BiasEmaState>;

export interface UpdateResult {
  /** False when the gradients were not finite (nothing was changed). */
  applied: boolean;
  gradNorm: number;
  clipCoef: number;
}

/**
 * Clipping, AdamW and (aux-free mode) the bias update from the per-layer loads. Gradients must
 * already be in the parameters' `.grad`; they are cleared afterwards. With gradient
 * accumulation, `.grad` holds the sum over `gradDivisor` micro-batches and the update uses
 * sum / gradDivisor. Non-finite gradients skip the update.
 */
export function applyUpdate(
  model: DeepseekV3,
  opt: AdamW,
  loads: ReadonlyMap<number, Int32Array>,
  o: UpdateOptions,
  ema: BiasEmaStates = {},
  gradDivisor = 1,
): UpdateResult {
  const params = opt.params;
  // a NaN or Inf anywhere makes the norm non-finite: one pass checks and measures
  const gradNorm = gradGlobalNorm(params) / gradDivisor;
  if (!Number.isFinite(gradNorm)) {
    opt.zeroGrad();
    return { applied: false, gradNorm, clipCoef: NaN };
  }
  const clipCoef = clipCoefficient(gradNorm, o.maxGradNorm);
  opt.step(o.lr, undefined, clipCoef / gradDivisor); // clipping (and 1/n) folded into the update
  opt.zeroGrad();
  if (o.balance === 'aux-free') {
    const biases = model.balanceBiases();
    for (const [l, load] of loads) {
      const b = biases.get(l);
      if (!b) continue;
      const key = String(l);
      ema[key] ??= { ema: null };
      updateBalanceBias(b.f32(), load, o.bias, ema[key]);
    }
  }
  return { applied: true, gradNorm, clipCoef };
}

export interface TrainStepResult {
  losses: LossReport;
  logits: Tensor;
  lmNll: Tensor;
  mtpNll: Tensor[];
  /** Gradients of the total loss before clipping, by parameter name (copies). */
  grads: Map<string, Float32Array>;
  gradNorm: number;
  clipCoef: number;
  routing: Map<number, LayerRouting>;
  /** False when the step was skipped (non-finite loss or gradients). */
  applied: boolean;
  skipReason?: string;
}

/** One full training step on tokens [B, S+1] (see the module comment). */
export function trainStep(
  model: DeepseekV3,
  opt: AdamW,
  tokens: Tensor | Int32Array,
  o: TrainStepOptions,
  ema: BiasEmaStates = {},
  batch?: number,
): TrainStepResult {
  opt.zeroGrad();
  const f = forwardLosses(model, tokens, { ...o, logits: true }, batch);
  const losses = lossReport(f.terms);
  const base = { losses, logits: f.logits!.detach(), lmNll: f.terms.lmNll.detach(), mtpNll: f.terms.mtpNll.map((t) => t.detach()), routing: f.routing };
  if (!Number.isFinite(losses.total)) {
    return { ...base, grads: new Map(), gradNorm: NaN, clipCoef: NaN, applied: false, skipReason: `non-finite loss (${losses.total})` };
  }
  backward(f.terms.total);
  const grads = new Map<string, Float32Array>();
  for (const p of opt.params) grads.set(p.name!, p.grad ? p.grad.contiguous().f32().slice() : new Float32Array(p.size));
  const loads = new Map<number, Int32Array>();
  for (const [l, r] of f.routing) loads.set(l, r.load);
  const u = applyUpdate(model, opt, loads, o, ema);
  return {
    ...base,
    grads,
    gradNorm: u.gradNorm,
    clipCoef: u.clipCoef,
    applied: u.applied,
    ...(u.applied ? {} : { skipReason: 'non-finite gradients' }),
  };
}
