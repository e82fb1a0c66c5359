/**
 * What an experiment is (src/experiments/): arms (configurations) run over seeds, each run
 * measuring final values and curves; the paper's claims about them, judged by verdict.ts.
 * The runner (runner.ts) runs the pairs, writes results.json and the page (page.ts).
 */
import type { Machine } from './provenance.js';
import type { Claim, Stats, Verdict } from './verdict.js';

/** How big a run: --quick (a tiny size in seconds) and --steps (overrides the plan's steps). */
export interface ExperimentSize {
  quick: boolean;
  steps?: number;
}

/** One configuration of an experiment. */
export interface Arm {
  name: string;
  label: string;
  /** The exact settings of the arm (JSON), recorded in results.json; --resume reuses a run only if they match. */
  settings: Record<string, unknown>;
}

export interface Curve {
  x: number[];
  y: number[];
}

/** What one (arm, seed) run measured. */
export interface Measured {
  finals: Record<string, number>;
  curves: Record<string, Curve>;
  /** Anything else the page draws (heatmaps ...). */
  extra?: Record<string, unknown>;
}

export interface RunRecord extends Measured {
  arm: string;
  seed: number;
  steps: number;
  settings: Record<string, unknown>;
  seconds: number;
  date: string;
}

export interface RunContext {
  seed: number;
  /** A directory this run may create and write to (inside --out; removed before the run). */
  dir: string;
  /** Reports progress: `step` of the plan's steps done. */
  tick(step: number): void;
}

/** The arms and size of one invocation, and how to run a pair. */
export interface Plan {
  arms: Arm[];
  /** Steps per run (for the progress bar and results.json). */
  steps: number;
  /** Settings shared by every arm (model, data, schedule). */
  settings: Record<string, unknown>;
  /** One (arm, seed) run; a promise for runs that need the event loop (worker threads: dualpipe). */
  run(arm: Arm, ctx: RunContext): Measured | Promise<Measured>;
}

export interface Experiment {
  name: string;
  summary: string;
  /** The paper's section, table or figure. */
  source: string;
  plan(size: ExperimentSize): Plan;
  /** Final values shown in the table (key in Measured.finals → label). */
  metrics: Record<string, string>;
  /** Curves drawn with a band over seeds (key in Measured.curves → title and axis). */
  curves: Record<string, { title: string; yLabel: string; logY?: boolean; xLabel?: string }>;
  /** The paper's claims as comparisons of the measured numbers. */
  claims(runs: readonly RunRecord[], arms: readonly Arm[]): Claim[];
  /** More of the page (heatmaps, tables), built from the runs. */
  extraHtml?(runs: readonly RunRecord[], arms: readonly Arm[]): string;
  /** The curve drawn as the key chart (DIR/key.svg, `--svg`; default: the first of `curves`). */
  keyCurve?: string;
  /** The key chart as a standalone SVG, when it is not a curve (a timeline, heatmaps). */
  keySvg?(r: ExperimentResults): string;
}

/** The runs of `arm`, in seed order. */
export function runsOf(runs: readonly RunRecord[], arm: string): RunRecord[] {
  return runs.filter((r) => r.arm === arm).sort((a, b) => a.seed - b.seed);
}

/** One final value of `arm` over its seeds. */
export function finalsOf(runs: readonly RunRecord[], arm: string, key: string): number[] {
  return runsOf(runs, arm).map((r) => r.finals[key] ?? NaN);
}

/** What DIR/results.json holds. */
export interface ExperimentResults {
  experiment: string;
  summary: string;
  source: string;
  command: string;
  commit: string | null;
  machine: Machine;
  date: string;
  quick: boolean;
  seeds: number;
  /** The first seed (`--seed-offset`; absent in files written before it existed: 0). */
  first_seed?: number;
  steps: number;
  settings: Record<string, unknown>;
  arms: Arm[];
  runs: RunRecord[];
  /** Mean, sd, min, max over the seeds of every final value, per arm. */
  summary_by_arm: Record<string, Record<string, Stats>>;
  verdicts: Verdict[];
}
