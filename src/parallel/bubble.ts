/**
 * DeepSeek-V3 report §3.2.1, Table 2 ("Comparison of pipeline bubbles and memory usage across
 * different pipeline parallel methods"), plus the DualPipeV row of the DualPipe README, as
 * specified in docs/DUALPIPE.md §8.1, and the exact-regime refinements of §8.3.
 *
 * `PP` is always the number of pipeline STAGES (docs/DUALPIPE.md §8.1): the rank count for 1F1B, ZB1P
 * and DualPipe, twice the rank count for DualPipeV. `B` is a FULL backward chunk (input and
 * weight gradients; Table 2 caption, docs/DUALPIPE.md §9 note 4), `W` its weight part, `FB` the
 * mutually overlapped forward-and-backward pair ("F&B").
 *
 * All functions are plain arithmetic on their arguments: given integer ticks (see time-grid.ts)
 * they return exact integers.
 */
import { DsvError } from '../errors.js';
import type { PipelineAlgo } from './schedule-types.js';

export interface BubbleTimes {
  F: number;
  B: number;
  W: number;
  FB: number;
}

function checkStages(algo: PipelineAlgo, stages: number): void {
  if (!Number.isInteger(stages) || stages < 1) throw new DsvError(`Table 2: ${algo} needs an integer number of stages >= 1, got ${stages}`);
  if ((algo === 'dualpipe' || algo === 'dualpipev') && stages % 2 !== 0) {
    throw new DsvError(`Table 2: ${algo} needs an even number of stages (PP), got ${stages}`);
  }
}

/**
 * Table 2 bubble with PP = `stages`:
 * 1F1B `(PP−1)(F+B)`, ZB1P `(PP−1)(F+B−2W)`, DualPipe and DualPipeV `(PP/2−1)(F&B+B−3W)`.
 */
export function table2Bubble(algo: PipelineAlgo, stages: number, t: BubbleTimes): number {
  checkStages(algo, stages);
  switch (algo) {
    case '1f1b':
      return (stages - 1) * (t.F + t.B);
    case 'zb1p':
      return (stages - 1) * (t.F + t.B - 2 * t.W);
    case 'dualpipe':
    case 'dualpipev':
      return (stages / 2 - 1) * (t.FB + t.B - 3 * t.W);
  }
}

/** Table 2 memory columns (docs/DUALPIPE.md §8.1, §8.4, §8.5). */
export interface Table2Memory {
  /** parameters per device, in multiples of one 1F1B device's (one stage of a PP-stage model) */
  parametersPerDevice: number;
  /** peak activations per device, in chunk-activations of one micro-batch */
  activationsPerDevice: number;
  /** number of devices (pipeline ranks) */
  devices: number;
  /** parameters of the whole pipeline, in multiples of the model (DualPipe keeps two copies, §2.2) */
  totalParameters: number;
}

export function table2Memory(algo: PipelineAlgo, stages: number): Table2Memory {
  checkStages(algo, stages);
  switch (algo) {
    case '1f1b':
    case 'zb1p':
      return { parametersPerDevice: 1, activationsPerDevice: stages, devices: stages, totalParameters: 1 };
    case 'dualpipe':
      return { parametersPerDevice: 2, activationsPerDevice: stages + 1, devices: stages, totalParameters: 2 };
    case 'dualpipev':
      return { parametersPerDevice: 2, activationsPerDevice: stages + 1, devices: stages / 2, totalParameters: 1 };
  }
}

/**
 * Whether Table 2's bubble is exact for these times (docs/DUALPIPE.md §8.3; dataflow execution, no
 * latency): always for 1F1B; for ZB1P when `N >= PP` and `W <= min(F, B−W)`; for DualPipe and
 * DualPipeV when `F = B−W` and `W <= F` (with `max(F,B) <= F&B <= F+B`). `microbatches` is the
 * schedule's N (all streams together).
 */
export function table2IsExact(algo: PipelineAlgo, stages: number, microbatches: number, t: BubbleTimes): boolean {
  checkStages(algo, stages);
  switch (algo) {
    case '1f1b':
      return true;
    case 'zb1p':
      return microbatches >= stages && t.W <= Math.min(t.F, t.B - t.W);
    case 'dualpipe':
    case 'dualpipev':
      return t.F === t.B - t.W && t.W <= t.F && Math.max(t.F, t.B) <= t.FB && t.FB <= t.F + t.B;
  }
}

/**
 * Per-rank bubble in the exact regime (docs/DUALPIPE.md §8.3). 1F1B and ZB1P: the Table 2 value on
 * every rank. DualPipe / DualPipeV: `(PP/2−1)(F&B+B−3W) − max(0, H−2−h)·(F+B−F&B)` with `H` the
 * ranks from an end to the turn and `h` the rank's distance from its end (§6.1).
 */
export function exactRankBubble(algo: PipelineAlgo, stages: number, rank: number, t: BubbleTimes): number {
  const base = table2Bubble(algo, stages, t);
  if (algo === '1f1b' || algo === 'zb1p') return base;
  const ranks = algo === 'dualpipe' ? stages : stages / 2;
  const H = algo === 'dualpipe' ? stages / 2 : ranks;
  const h = algo === 'dualpipe' ? Math.min(rank, ranks - 1 - rank) : rank;
  return base - Math.max(0, H - 2 - h) * (t.F + t.B - t.FB);
}

/**
 * Makespan in the exact regime (docs/DUALPIPE.md §8.3), N = `microbatches`:
 * 1F1B `(N+PP−1)(F+B)`; ZB1P `N(F+B) + (PP−1)(F+B−2W)`;
 * DualPipe `N(F+B) − (N−PP−1)(F+B−F&B) + (PP/2−1)(F&B+B−3W)`;
 * DualPipeV (R = PP/2 ranks) `2N(F+B) − (2N−2R−1)(F+B−F&B) + (R−1)(F&B+B−3W)`.
 */
export function exactMakespan(algo: PipelineAlgo, stages: number, microbatches: number, t: BubbleTimes): number {
  const N = microbatches;
  const bubble = table2Bubble(algo, stages, t);
  const saved = t.F + t.B - t.FB;
  switch (algo) {
    case '1f1b':
      return (N + stages - 1) * (t.F + t.B);
    case 'zb1p':
      return N * (t.F + t.B) + bubble;
    case 'dualpipe':
      return N * (t.F + t.B) - (N - stages - 1) * saved + bubble;
    case 'dualpipev':
      return 2 * N * (t.F + t.B) - (2 * N - stages - 1) * saved + bubble;
  }
}
