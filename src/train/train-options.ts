/**
 * The options of a training run, shared by both trainers (trainer.ts, pipeline-trainer.ts) and
 * the run they share (train-run.ts), and the plan derived from them: the learning-rate, MTP λ
 * and bias-speed γ schedules of the report's §4.2 recipe (recipe.ts holds the defaults).
 */
import type { PreparedData } from '../data/dataset.js';
import type { ModelConfig } from '../model/config.js';
import type { Precision } from '../model/precision-mode.js';
import type { BalanceMode, BiasUpdateOptions } from '../objective/balance.js';
import type { MetricRecord } from './metrics.js';
import type { OpTiming } from '../parallel/pipeline-worker.js';
import { biasGammaAt, lrAt, mtpLambdaAt } from './lr-schedule.js';
import type { WithRecipe } from './recipe.js';

/** Pipeline-parallel training (pipeline-trainer.ts; DUALPIPE.md; paper §3.2.1). */
export interface PipelineTrainOptions {
  algo: 'dualpipe' | 'dualpipev' | '1f1b' | 'zb1p';
  /** Pipeline ranks (worker threads). */
  ranks: number;
  /** Micro-batches per step (default: the smallest the schedule allows). */
  microbatches?: number;
  /** Size of the process-wide native thread pool during a step, shared by all ranks (default 1). */
  threads?: number;
  /** Called after every step with each rank's measured op timeline ([start, end, label] in ms). */
  onTimeline?: (timeline: OpTiming[][], step: number) => void;
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
   * Same as `precision: 'fp8'`.
   */
  fp8?: boolean;
  /**
   * Training precision (model/precision-mode.ts; `--precision`): 'fp32' (default), 'bf16' (BF16
   * mixed precision: bf16 GEMM operands with float32 accumulation for every Linear, the grouped
   * experts and the output head; float32 master weights, gradients, norms, softmax, losses and
   * optimizer) or 'fp8' (the `fp8` recipe). Validation runs the float32 forward either way.
   */
  precision?: Precision;
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
  /** Called with every record appended to metrics.jsonl (a caller's own progress: dsv3 experiment). */
  onRecord?: (r: MetricRecord) => void;
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

/** The run's training precision: `precision`, else 'fp8' with `fp8`, else 'fp32'. */
export function runPrecision(o: Pick<TrainOptions, 'fp8' | 'precision'>): Precision {
  if (o.precision !== undefined && o.fp8 && o.precision !== 'fp8') throw new Error(`TrainOptions: fp8 contradicts precision '${o.precision}'`);
  return o.precision ?? (o.fp8 ? 'fp8' : 'fp32');
}
