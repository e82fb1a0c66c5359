/**
 * The training recipe: every constant of the DeepSeek-V3 report (arXiv 2412.19437, §4.2
 * "Hyper-Parameters") that dsv3 uses, and every default of `dsv3 train` and `dsv3 train-step`,
 * in one place. The CLI parses and validates flags and takes what a flag leaves unset from here;
 * `withRecipe` fills what a caller of train() leaves unset.
 */
import type { BalanceMode, BiasMode, BiasUpdateOptions } from '../objective/balance.js';

/** The paper's numbers (§4.2, a 14.8T-token run of the 671B model). */
export const PAPER = {
  /** AdamW "β1 = 0.9, β2 = 0.95, and weight_decay = 0.1". */
  beta1: 0.9,
  beta2: 0.95,
  weightDecay: 0.1,
  /** "The gradient clipping norm is set to 1.0." */
  maxGradNorm: 1.0,
  /** Peak learning rate 2.2e-4 after a 2K-step warmup, constant, then cosine to 2.2e-5 = peak/10. */
  peakLr: 2.2e-4,
  lrFloorDivisor: 10,
  /** Bias update speed γ = 0.001 for the first 14.3T tokens, 0 for the last 500B. */
  biasGamma: 0.001,
  /** α of the complementary sequence-wise balance loss (eq. 17): 0.0001. */
  balanceAlpha: 1e-4,
  /** MTP loss weight λ = 0.3 for the first 10T tokens, 0.1 for the remaining 4.8T (the switch at 10/14.8). */
  mtpLambda: 0.3,
  mtpLambdaLate: 0.1,
  mtpSwitchTokensT: 10,
  totalTokensT: 14.8,
} as const;

/** Defaults of `dsv3 train` at laptop scale: this repository's choices except where PAPER is used. */
export const TRAIN = {
  steps: 1000,
  batch: 8,
  seq: 128,
  /** Peak lr for a 9.5M-parameter model and 8x128-token batches (the paper's 2.2e-4 is for 671B). */
  lr: 3e-3,
  /** Linear warmup over this share of the steps, at least one step. */
  warmupFraction: 0.05,
  seed: 0,
  gradAccum: 1,
  evalEvery: 50,
  evalBatches: 4,
  ckptEvery: 100,
  keepCheckpoints: 2,
  maxNonFinite: 5,
  momentDtype: 'f32' as 'f32' | 'bf16',
  /** The paper's balancing: bias updates (sign rule) + the sequence-wise loss. */
  balance: 'aux-free' as BalanceMode,
  biasMode: 'sign' as BiasMode,
  /** α of the classic auxiliary loss (`--balance aux-loss`, the baseline): a usual value, not the paper's. */
  auxLossAlpha: 0.01,
  /** AdamW ε (not given in the paper). */
  adamEps: 1e-8,
  /**
   * The default model (relative to the package): configs/bench-small.json's architecture (4
   * layers, the first dense; MLA with 8 heads; 16 routed experts in 4 groups, top-4 from 2
   * groups, 1 shared; one MTP module; 9.5M parameters) with a 2048-token vocabulary, so that
   * 1000 steps of 8x128 tokens (~0.4 s each, plus validation) fit in about eight minutes on two
   * cores.
   */
  config: 'configs/train-small.json',
  /** `--pipeline`: ranks, and the size of the process-wide native pool during a step. */
  pipelineRanks: 2,
  pipelineThreads: 1,
};

/** The paper's bias speed per unit of learning rate: γ = 0.001 at peak lr 2.2e-4, so γ(lr) = 0.001·lr/2.2e-4. */
export function biasGammaForLr(lr: number): number {
  return (PAPER.biasGamma * lr) / PAPER.peakLr;
}

/** α by balance mode: the sequence-wise loss's 1e-4 (aux-free), the auxiliary loss's 0.01, 0 for none. */
export function balanceAlphaFor(mode: BalanceMode): number {
  return mode === 'aux-loss' ? TRAIN.auxLossAlpha : mode === 'none' ? 0 : PAPER.balanceAlpha;
}

/** Warmup steps of a run of `steps` steps. */
export function warmupFor(steps: number): number {
  return Math.max(1, Math.round(steps * TRAIN.warmupFraction));
}

/** The step at which λ drops: the paper's 10T of 14.8T tokens, as the same share of the steps. */
export function mtpSwitchStepFor(steps: number): number {
  return Math.round((steps * PAPER.mtpSwitchTokensT) / PAPER.totalTokensT);
}

/** The optional settings of train() that the recipe fills in. */
export interface RecipeOptions {
  gradAccum?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  momentDtype?: 'f32' | 'bf16';
  evalBatches?: number;
  keepCheckpoints?: number;
  maxNonFinite?: number;
  lr: number;
  bias: BiasUpdateOptions;
}

export type WithRecipe<T> = T & Required<Omit<RecipeOptions, 'bias'>> & { bias: BiasUpdateOptions & { gamma: number; mode: BiasMode } };

/**
 * AdamW moment storage when the caller leaves it unset: BF16 under FP8 training, as the paper
 * trains (§3.3.3: "we adopt the BF16 data format instead of FP32 to track the first and second
 * moments in the AdamW optimizer"), and under BF16 mixed precision too (issue 13, round 5: the
 * peak-RSS bar bf16 <= 0.85x fp32 is out of reach with 84 MB of float32 moments at bench-small;
 * `--moment-dtype f32` restores float32 moments); TRAIN.momentDtype (float32) for fp32.
 * `precision` is a training precision, or (the older form) whether FP8 training is on.
 */
export function defaultMomentDtype(precision: boolean | 'fp32' | 'bf16' | 'fp8'): 'f32' | 'bf16' {
  return precision === true || precision === 'fp8' || precision === 'bf16' ? 'bf16' : TRAIN.momentDtype;
}

/** `o` with every recipe setting it leaves unset taken from the recipe. */
export function withRecipe<T extends RecipeOptions>(o: T): WithRecipe<T> {
  return {
    ...o,
    gradAccum: o.gradAccum ?? TRAIN.gradAccum,
    weightDecay: o.weightDecay ?? PAPER.weightDecay,
    maxGradNorm: o.maxGradNorm ?? PAPER.maxGradNorm,
    momentDtype: o.momentDtype ?? defaultMomentDtype((o as { fp8?: boolean }).fp8 === true ? 'fp8' : ((o as { precision?: 'fp32' | 'bf16' | 'fp8' }).precision ?? 'fp32')),
    evalBatches: o.evalBatches ?? TRAIN.evalBatches,
    keepCheckpoints: o.keepCheckpoints ?? TRAIN.keepCheckpoints,
    maxNonFinite: o.maxNonFinite ?? TRAIN.maxNonFinite,
    bias: { ...o.bias, gamma: o.bias.gamma ?? biasGammaForLr(o.lr), mode: o.bias.mode ?? TRAIN.biasMode },
  };
}
