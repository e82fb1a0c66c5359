/**
 * `dsv3 train`: pre-training of a DeepSeek-V3-architecture model from scratch on a text corpus,
 * following the report's recipe (section 4.2) at laptop scale: AdamW (0.9, 0.95, wd 0.1),
 * clipping at 1.0, warmup → constant → cosine LR, MTP with λ 0.3 → 0.1, aux-loss-free balancing
 * (bias γ 0.001) with the complementary sequence-wise loss (α 1e-4), gradient accumulation.
 * The numbers, and what a caller may leave out, are in recipe.ts.
 *
 * Every step appends to RUN_DIR/metrics.jsonl; every `ckptEvery` steps (and at the end) a
 * checkpoint is written atomically (run-checkpoints.ts). `resume` restores weights, biases, AdamW
 * moments, the data position, the RNG and the bias EMA, and continues bit-exactly. A step whose
 * loss or gradients are not finite is skipped and reported; after `maxNonFinite` consecutive
 * ones training stops, leaving the last good checkpoint as it was.
 */
import { stepArena, withArena } from '../engine/arena.js';
import type { PreparedData } from '../data/dataset.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { BalanceMode, BiasUpdateOptions } from '../objective/balance.js';
import { lossReport } from '../objective/losses.js';
import { batchSizeAt, biasGammaAt, lrAt, mtpLambdaAt } from './lr-schedule.js';
import { withRecipe, type WithRecipe } from './recipe.js';
import { applyUpdate, forwardLosses } from './train-step.js';
import { TrainRun, type StepPart } from './train-run.js';
import { backward } from '../engine/autograd.js';

/** Pipeline-parallel training (pipeline-trainer.ts; DUALPIPE.md; paper §3.2.1). */
export interface PipelineTrainOptions {
  algo: 'dualpipe' | 'dualpipev' | '1f1b' | 'zb1p';
  /** Pipeline ranks (worker threads). */
  ranks: number;
  /** Micro-batches per step (default: the smallest the schedule allows). */
  microbatches?: number;
  /** Size of the process-wide native thread pool during a step, shared by all ranks (default 1). */
  threads?: number;
}

export interface TrainOptions {
  model: ModelConfig;
  /** Corpus file or directory (default: the embedded Moby-Dick). */
  data?: string;
  /** Token cache directory (null: no cache; default: the data module's). */
  cacheDir?: string | null;
  steps: number;
  batch: number;
  seq: number;
  gradAccum?: number;
  /** Batch-size warmup: micro-batches per step grow linearly from 1 to gradAccum over this many steps. */
  batchWarmup?: number;
  lr: number;
  warmup: number;
  /** First step of the cosine decay (default: end of warmup); decay runs to the last step. */
  decayStart?: number;
  minLr?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  momentDtype?: 'f32' | 'bf16';
  /**
   * FP8 mixed-precision training (paper §3.3, Figure 6; SPEC §2; LossOptions.fp8): the covered
   * Linears' Fprop, Dgrad and Wgrad on E4M3 operands, float32 master weights. Validation runs
   * the float32 forward, so FP8 and float32 runs are evaluated alike. Default off.
   */
  fp8?: boolean;
  seed: number;
  balance: BalanceMode;
  balanceAlpha: number;
  bias: BiasUpdateOptions;
  /** From this step on the bias is frozen (γ = 0), as at the end of the paper's run. */
  biasFreezeStep?: number;
  mtpLambda: number;
  /** λ after `mtpSwitchStep` (paper: 0.1); default: `mtpLambda` (constant). */
  mtpLambdaLate?: number;
  mtpSwitchStep?: number;
  evalEvery: number;
  evalBatches?: number;
  ckptEvery: number;
  keepCheckpoints?: number;
  out: string;
  /** true: continue from the latest checkpoint in `out`; a string: from that checkpoint dir. */
  resume?: boolean | string;
  /** Stop after this many consecutive non-finite steps (default 5). */
  maxNonFinite?: number;
  quiet?: boolean;
  /** Test hook: poison step `step` ('loss' or 'grad') to exercise the non-finite path. */
  inject?: (step: number) => 'loss' | 'grad' | null;
  /** Pre-loaded data (tests, benchmarks). */
  prepared?: PreparedData;
  /**
   * Pipeline-parallel training (run with `trainPipelined`, pipeline-trainer.ts): each step's
   * micro-batches (of `batch` sequences each) go through the schedule instead of `gradAccum`.
   */
  pipeline?: PipelineTrainOptions;
}

export interface TrainResult {
  status: 'done' | 'diverged';
  message: string;
  step: number;
  /** Total training loss (L_Main + λ·L_MTP + α·L_Bal) of every step run in this call (NaN for skipped steps). */
  losses: number[];
  /** L_Main of the last step that was not skipped (null: none in this call). */
  finalLmLoss: number | null;
  lastCheckpoint: string | null;
  /** Validation L_Main of the last evaluation (null: none in this call). */
  finalValLoss: number | null;
}

/** TrainOptions with the recipe's value (recipe.ts) in every setting the caller left out. */
export type RunOptions = WithRecipe<TrainOptions>;

export function trainerPlan(o: RunOptions): { lr: (s: number) => number; lambda: (s: number) => number; gamma: (s: number) => number } {
  const decayStart = o.decayStart ?? o.warmup;
  const sched = { peak: o.lr, warmup: o.warmup, decayStart, decaySteps: Math.max(0, o.steps - decayStart), floor: o.minLr };
  // no late λ or freeze step: one value for the whole run
  const lam = { early: o.mtpLambda, late: o.mtpLambdaLate ?? o.mtpLambda, switchStep: o.mtpSwitchStep };
  const gam = { early: o.bias.gamma, late: 0, switchStep: o.biasFreezeStep };
  return { lr: (s) => lrAt(s, sched), lambda: (s) => mtpLambdaAt(s, lam), gamma: (s) => biasGammaAt(s, gam) };
}

/** Runs (or resumes) a training run; see the module comment. */
export function train(opts: TrainOptions): TrainResult {
  if (opts.pipeline) throw new DsvError('pipeline-parallel training runs through trainPipelined (src/train/pipeline-trainer.ts), which is asynchronous');
  const o = withRecipe(opts);
  const accum = o.gradAccum;
  if (!Number.isInteger(accum) || accum < 1) throw new DsvError(`--grad-accum must be a positive integer, got ${accum}`);
  const run = new TrainRun(o);
  const { model, opt, it, plan } = run;
  const arena = stepArena();
  while (run.step < o.steps) {
    const t0 = performance.now();
    const step = run.step;
    const lambda = plan.lambda(step);
    const lr = plan.lr(step);
    const lossOpts = { mtpLambda: lambda, balanceAlpha: o.balanceAlpha, balance: o.balance, fp8: o.fp8 === true };
    const loads = new Map<number, Int32Array>();
    const parts: StepPart[] = [];
    let bad: string | null = null;
    opt.zeroGrad();
    const nMicro = o.batchWarmup ? batchSizeAt(step, { start: 1, end: accum, rampSteps: o.batchWarmup }) : accum;
    // the step's activations and gradients live in the arena until the reset below
    let gradNorm = NaN;
    withArena(arena, () => {
      for (let micro = 0; micro < nMicro; micro++) {
        const batch = it.next();
        if (bad) continue; // keep the data position consistent, skip the work
        const f = forwardLosses(model, batch.tokens, lossOpts, batch.batchSize);
        const r = lossReport(f.terms);
        const inj = o.inject?.(step) ?? null;
        if (inj === 'loss') r.total = NaN;
        parts.push({ total: r.total, lm: r.lm, mtp: r.mtp_weighted, bal: r.balance_total });
        for (const [l, lr2] of f.routing) {
          const acc = loads.get(l) ?? new Int32Array(lr2.load.length);
          for (let e = 0; e < acc.length; e++) acc[e]! += lr2.load[e]!;
          loads.set(l, acc);
        }
        if (!Number.isFinite(r.total)) {
          bad = `non-finite loss (${r.total})`;
          continue;
        }
        backward(f.terms.total);
        if (inj === 'grad') {
          const g = opt.params[0]!.grad;
          if (g) g.f32()[0] = NaN;
        }
      }
      if (!bad) {
        const u = applyUpdate(model, opt, loads, { lr, maxGradNorm: o.maxGradNorm, balance: o.balance, bias: { ...o.bias, gamma: plan.gamma(step) } }, run.ema, nMicro);
        gradNorm = u.gradNorm;
        if (!u.applied) bad = `non-finite gradients (norm ${u.gradNorm})`;
      } else {
        opt.zeroGrad();
      }
    });
    arena?.reset(); // gradients are applied and cleared; losses and loads were copied out
    const stop = run.finishStep({ bad, parts, loads, lambda, lr, gradNorm, nMicro, t0 }, arena);
    if (stop) return stop;
  }
  return run.done(arena);
}
