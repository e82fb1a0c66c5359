/**
 * Schedules of the DeepSeek-V3 pre-training recipe (report section 4.2), indexed by optimizer
 * step (0-based: the value used by step `step`).
 *
 * - Learning rate: linear warmup from 0 to `peak` over `warmup` steps, constant until
 *   `decayStart`, cosine decay to `floor` over `decaySteps`, then `floor`
 *   (paper: 2.2e-4 after 2K warmup steps, constant, cosine to 2.2e-5).
 * - MTP weight λ: 0.3 early, 0.1 later (paper: 0.3 for the first 10T tokens).
 * - Bias update speed γ: 0.001, then 0 for the last part of training.
 * - Batch size warmup: grows linearly from `start` to `end` over `rampSteps` (paper: 3072 →
 *   15360 sequences over the first 469B tokens); used as a number of micro-batches.
 */
import { DsvError } from '../errors.js';
import { PAPER } from './recipe.js';

export interface LrScheduleOptions {
  peak: number;
  /** Warmup steps (linear from 0 to peak); 0 disables warmup. */
  warmup: number;
  /** First step of the cosine decay (default: right after warmup). */
  decayStart?: number;
  /** Length of the cosine decay in steps (0: no decay, constant after warmup). */
  decaySteps: number;
  /** Value at the end of the decay (default peak / 10, as in the paper). */
  floor?: number;
}

function checkNonNeg(name: string, x: number): void {
  if (!Number.isFinite(x) || x < 0) throw new DsvError(`learning-rate schedule: ${name} must be a finite number >= 0, got ${x}`);
}

/** Learning rate for step `step` (0-based). */
export function lrAt(step: number, o: LrScheduleOptions): number {
  checkNonNeg('peak', o.peak);
  checkNonNeg('warmup', o.warmup);
  checkNonNeg('decaySteps', o.decaySteps);
  const floor = o.floor ?? o.peak / PAPER.lrFloorDivisor;
  const decayStart = o.decayStart ?? o.warmup;
  if (o.warmup > 0 && step < o.warmup) return (o.peak * (step + 1)) / o.warmup;
  if (o.decaySteps <= 0 || step < decayStart) return o.peak;
  const progress = Math.min(1, (step - decayStart) / o.decaySteps);
  return floor + 0.5 * (o.peak - floor) * (1 + Math.cos(Math.PI * progress));
}

/** A two-phase value: `early` before step `switchStep`, `late` from it on. */
export interface StepSchedule {
  early: number;
  late: number;
  /** First step that uses `late`; Infinity (or absent) keeps `early` for the whole run. */
  switchStep?: number;
}

/** The value of a two-phase schedule at `step` (MTP λ 0.3 → 0.1; bias γ 0.001 → 0). */
export function phaseValue(step: number, s: StepSchedule): number {
  return step < (s.switchStep ?? Infinity) ? s.early : s.late;
}

/** MTP loss weight λ at `step` (paper: 0.3, then 0.1). */
export function mtpLambdaAt(step: number, s: StepSchedule = { early: PAPER.mtpLambda, late: PAPER.mtpLambdaLate }): number {
  return phaseValue(step, s);
}

/** Bias update speed γ at `step` (paper: 0.001, then 0 at the end of training). */
export function biasGammaAt(step: number, s: StepSchedule = { early: PAPER.biasGamma, late: 0 }): number {
  return phaseValue(step, s);
}

export interface BatchWarmup {
  start: number;
  end: number;
  rampSteps: number;
}

/** Batch size (in micro-batches or sequences) at `step`: linear ramp, rounded down, >= 1. */
export function batchSizeAt(step: number, w: BatchWarmup): number {
  if (w.rampSteps <= 0 || step >= w.rampSteps) return Math.max(1, Math.floor(w.end));
  return Math.max(1, Math.floor(w.start + ((w.end - w.start) * step) / w.rampSteps));
}
