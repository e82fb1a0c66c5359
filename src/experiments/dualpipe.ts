/**
 * `dsv3 experiment dualpipe` (DeepSeek-V3 report §3.2.1, Table 2, Figure 5; docs/DUALPIPE.md §8,
 * §10): real `dsv3 train --pipeline` runs (trainPipelined: one worker thread per rank, the same
 * model, data and recipe) of DualPipe, DualPipeV, 1F1B and ZB1P, each step's executed ops timed
 * on every rank (pipeline-worker.ts records [start, end] per op on one clock shared by the
 * threads). Per measured step (after `warm` untimed steps):
 * - measured: makespan (first op start to last op end over the ranks), per-rank busy time and
 *   idle = makespan − busy (the bubble, plus any messaging and scheduling cost);
 * - replay: the project's simulator (simulate.ts, dataflow, no latency) replaying the schedule
 *   with every op's own measured duration: what the step would take if messages cost nothing;
 * - uniform simulation and Table 2: one F, B, W, F&B per schedule (the medians of the measured
 *   ops) through `simulateSchedule` and Table 2's bubble formula (bubble.ts).
 * Every arm runs the same number of micro-batches per step on the same number of ranks.
 * Timings are wall-clock: on a shared machine they carry its noise (docs/EXPERIMENTS.md).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ModelConfig } from '../model/config.js';
import type { PreparedData } from '../data/dataset.js';
import { table2Bubble } from '../parallel/bubble.js';
import type { OpTiming } from '../parallel/pipeline-worker.js';
import type { PipelineAlgo, PipelineSchedule } from '../parallel/schedule-types.js';
import { buildSchedule } from '../parallel/schedules.js';
import { replaySchedule, simulateSchedule, type TimelineEntry } from '../parallel/simulate.js';
import { trainPipelined } from '../train/pipeline-trainer.js';
import { biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../train/recipe.js';
import { escapeXml, fmtNum } from '../train/svg.js';
import { experimentConfig, lazyExperimentData, runSize } from './training-setup.js';
import { finalsOf, runsOf, type Arm, type Experiment, type ExperimentResults, type Measured, type RunContext, type RunRecord } from './experiment.js';
import { timelineChart, type TimelineBox } from './timeline-chart.js';
import type { Claim } from './verdict.js';

interface PipeSize {
  config: string;
  ranks: number;
  /** Micro-batches per step, the same for every schedule. */
  microbatches: number;
  /** Sequences per micro-batch. */
  batch: number;
  seq: number;
  steps: number;
  /** First steps not measured (worker start-up, first-touch allocation). */
  warm: number;
  lr: number;
}

/**
 * The default: configs/train-small.json (4 layers: DualPipeV's 4 stages have one each) on 2 ranks
 * (the machine's 2 cores, one rank each), 8 micro-batches of 2×128 tokens a step, 20 steps of
 * which the last 16 are measured: ~30 s a run, 12 runs in ~7 minutes on 2 unshared cores.
 */
const FULL: PipeSize = { config: TRAIN.config, ranks: 2, microbatches: 8, batch: 2, seq: 128, steps: 20, warm: 4, lr: TRAIN.lr };
const QUICK: PipeSize = { config: 'tiny (built in, 4 layers)', ranks: 2, microbatches: 4, batch: 1, seq: 16, steps: 4, warm: 1, lr: 5e-3 };

const ARMS: Array<{ algo: PipelineAlgo; label: string }> = [
  { algo: 'dualpipe', label: 'DualPipe' },
  { algo: 'dualpipev', label: 'DualPipeV' },
  { algo: '1f1b', label: '1F1B' },
  { algo: 'zb1p', label: 'ZB1P (ZB-H1)' },
];

const median = (xs: readonly number[]): number => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const h = v.length >> 1;
  return v.length % 2 ? v[h]! : (v[h - 1]! + v[h]!) / 2;
};
const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const US = 1000; // ticks per ms of the simulator's integer grid: microseconds

/** What one measured step gives. */
export interface StepTiming {
  /** ms */
  makespan: number;
  busy: number[];
  idle: number[];
  /** The ops relative to the step's first op start (ms). */
  ranks: TimelineBox[][];
  /** Dataflow replay of the measured op durations, no latency (ms). */
  replayMakespan: number;
  replayIdle: number[];
  replay: TimelineBox[][];
}

/** A measured step's timeline (ms since the epoch per op) against the replay of its own op times. */
export function analyseStep(schedule: PipelineSchedule, timeline: readonly (readonly OpTiming[])[]): StepTiming {
  const t0 = Math.min(...timeline.map((r) => r[0]?.[0] ?? Infinity));
  const t1 = Math.max(...timeline.map((r) => r[r.length - 1]?.[1] ?? -Infinity));
  const makespan = t1 - t0;
  const ranks = timeline.map((r) => r.map(([a, b, l]): TimelineBox => [a - t0, b - t0, l]));
  const busy = ranks.map((r) => r.reduce((s, [a, b]) => s + (b - a), 0));
  const rep = replaySchedule(schedule, ranks.map((r) => r.map(([a, b]) => Math.max(0, Math.round((b - a) * US)))));
  const ms = (t: number): number => t / US;
  return {
    makespan, busy, idle: busy.map((b) => makespan - b), ranks,
    replayMakespan: ms(rep.makespan), replayIdle: rep.busy.map((b) => ms(rep.makespan - b)),
    replay: rep.timeline.map((r) => r.map(([a, b, l]: TimelineEntry): TimelineBox => [ms(a), ms(b), l])),
  };
}

/** Median duration (ms) of each op kind over steps: F, B (full), b (input backward), W, FB. */
export function opTimes(steps: readonly StepTiming[]): Record<'F' | 'B' | 'b' | 'W' | 'FB', number> {
  const by: Record<string, number[]> = { F: [], B: [], b: [], W: [], FB: [] };
  for (const s of steps) for (const r of s.ranks) for (const [a, b, l] of r) by[l.includes('&') ? 'FB' : l[0]!]?.push(b - a);
  return { F: median(by['F']!), B: median(by['B']!), b: median(by['b']!), W: median(by['W']!), FB: median(by['FB']!) };
}

/**
 * One F, B, W, F&B (integer µs) for the uniform simulation and Table 2: the medians of the ops;
 * B is the measured full backward, or b + W where a schedule only splits; W is 0 where it never
 * splits; F&B is the measured pair, or F + B where a schedule has none (no overlap on a CPU).
 */
export function uniformTimes(t: Record<'F' | 'B' | 'b' | 'W' | 'FB', number>): { F: number; B: number; W: number; FB: number } {
  const us = (x: number): number => Math.max(1, Math.round(x * US));
  const F = us(t.F);
  const W = Number.isFinite(t.W) ? us(t.W) : 0;
  const B = Number.isFinite(t.B) ? Math.max(us(t.B), W) : us(t.b) + W;
  const FB = Number.isFinite(t.FB) ? us(t.FB) : F + B;
  return { F, B, W, FB };
}

async function runArm(arm: Arm, ctx: RunContext, cfg: ModelConfig, data: PreparedData, z: PipeSize): Promise<Measured> {
  const algo = arm.settings['algo'] as PipelineAlgo;
  const schedule = buildSchedule(algo, z.ranks, z.microbatches);
  const steps: StepTiming[] = [];
  const r = await trainPipelined({
    model: cfg, prepared: data, steps: z.steps, batch: z.batch, seq: z.seq, lr: z.lr, warmup: warmupFor(z.steps), seed: ctx.seed,
    balance: 'aux-free', balanceAlpha: 0, bias: { gamma: biasGammaForLr(z.lr), mode: 'sign' },
    mtpLambda: PAPER.mtpLambda, mtpLambdaLate: PAPER.mtpLambdaLate, mtpSwitchStep: mtpSwitchStepFor(z.steps),
    evalEvery: 0, ckptEvery: 0, keepCheckpoints: 1, out: ctx.dir, quiet: true,
    pipeline: {
      algo, ranks: z.ranks, microbatches: z.microbatches, threads: 1,
      onTimeline: (tl, step) => {
        if (step >= z.warm) steps.push(analyseStep(schedule, tl));
        ctx.tick(step + 1);
      },
    },
  });
  for (const f of fs.readdirSync(ctx.dir)) if (f.startsWith('checkpoint-')) fs.rmSync(path.join(ctx.dir, f), { recursive: true, force: true });
  const t = opTimes(steps);
  const u = uniformTimes(t);
  const sim = simulateSchedule(schedule, { ...u, latency: 0 }, 'dataflow');
  const ms = (x: number): number => x / US;
  const stepMs = steps.map((s) => s.makespan);
  const idleFrac = steps.map((s) => mean(s.idle) / s.makespan);
  // the step shown: the one with the median makespan
  const shown = [...steps].sort((a, b) => a.makespan - b.makespan)[steps.length >> 1];
  const finals: Record<string, number> = {
    step_ms: median(stepMs),
    idle_frac: median(idleFrac),
    idle_ms: median(steps.map((s) => mean(s.idle))),
    idle_max_ms: median(steps.map((s) => Math.max(...s.idle))),
    replay_ms: median(steps.map((s) => s.replayMakespan)),
    replay_idle_frac: median(steps.map((s) => mean(s.replayIdle) / s.replayMakespan)),
    overhead: median(steps.map((s) => s.makespan / s.replayMakespan)),
    sim_ms: sim.makespan / US,
    sim_idle_ms: mean(sim.bubble) / US,
    table2_ms: ms(table2Bubble(algo, schedule.stages, u)),
    F_ms: ms(u.F), B_ms: ms(u.B), W_ms: ms(u.W), FB_ms: ms(u.FB),
  };
  const xs = steps.map((_, i) => z.warm + i + 1);
  return {
    finals,
    curves: { step_ms: { x: xs, y: stepMs }, idle_frac: { x: xs, y: idleFrac } },
    extra: {
      status: r.status, stages: schedule.stages,
      measured_step: shown?.ranks ?? [], replay_step: shown?.replay ?? [],
      sim_step: sim.timeline.map((rr) => rr.map(([a, b, l]): TimelineBox => [ms(a), ms(b), l])),
    },
  };
}

function claims(runs: readonly RunRecord[]): Claim[] {
  const v = (arm: string, key: string): number[] => finalsOf(runs, arm, key);
  const idle = (a: string, b: string, paper: string): Claim => ({
    paper, direction: 'lower',
    a: { label: `${a} idle fraction (measured)`, values: v(a, 'idle_frac') },
    b: { label: `${b} idle fraction (measured)`, values: v(b, 'idle_frac') },
  });
  return [
    idle('dualpipe', '1f1b', 'Table 2 (§3.2.1): DualPipe\'s bubble (PP/2−1)(F&B+B−3W) is smaller than 1F1B\'s (PP−1)(F+B); at 2 ranks 0 against F+B.'),
    idle('dualpipe', 'zb1p', 'Table 2 (§3.2.1): DualPipe\'s bubble is smaller than ZB1P\'s (PP−1)(F+B−2W).'),
    idle('dualpipev', '1f1b', 'Table 2 with the DualPipe README\'s DualPipeV row: the V-shaped schedule\'s bubble is smaller than 1F1B\'s on the same ranks.'),
    {
      // paired per run (measured / replay of the same steps): the machine's load moves both alike
      paper: 'DUALPIPE.md §10 (the simulator against a real run): replaying the measured op times through the schedule (dataflow, no message cost) predicts the measured DualPipe step within 15%.',
      direction: 'lower', margin: 0.15,
      a: { label: 'DualPipe measured step / its replay', values: v('dualpipe', 'overhead') },
      b: { label: 'a replay that is exact (1)', values: v('dualpipe', 'overhead').map(() => 1) },
    },
  ];
}

/** Measured, replayed and uniformly simulated step of one run, on one time axis. */
function stepChart(r: RunRecord, label: string, width = 900): string {
  const e = r.extra ?? {};
  const get = (k: string): TimelineBox[][] => (e[k] as TimelineBox[][] | undefined) ?? [];
  const f = r.finals;
  return timelineChart({
    title: `${label}: one step (${r.settings['ranks']} ranks, ${r.settings['microbatches']} micro-batches, seed ${r.seed})`,
    unit: 'ms', width,
    panels: [
      { title: `measured (the median step): ${fmtNum(f['step_ms']!)} ms, idle ${Math.round(100 * f['idle_frac']!)}%`, ranks: get('measured_step') },
      { title: `simulator, replaying these op times (no message cost): ${fmtNum(f['replay_ms']!)} ms`, ranks: get('replay_step') },
      { title: `simulator, uniform F ${fmtNum(f['F_ms']!)} B ${fmtNum(f['B_ms']!)} W ${fmtNum(f['W_ms']!)} F&B ${fmtNum(f['FB_ms']!)} ms: ${fmtNum(f['sim_ms']!)} ms; Table 2 bubble ${fmtNum(f['table2_ms']!)} ms`, ranks: get('sim_step') },
    ],
  });
}

function extraHtml(runs: readonly RunRecord[], arms: readonly Arm[]): string {
  const parts = ['<h2>One step per schedule (seed shown: the first): measured, replayed and simulated</h2>'];
  const rows = arms.map((a) => {
    const rs = runsOf(runs, a.name);
    const m = (k: string): string => fmtNum(mean(rs.map((x) => x.finals[k] ?? NaN)));
    return `<tr><th>${escapeXml(a.label)}</th><td>${rs[0]?.extra?.['stages'] ?? ''}</td><td>${m('F_ms')}</td><td>${m('B_ms')}</td><td>${m('W_ms')}</td><td>${m('FB_ms')}</td><td>${m('step_ms')}</td><td>${m('replay_ms')}</td><td>${m('sim_ms')}</td><td>${m('idle_ms')}</td><td>${m('sim_idle_ms')}</td><td>${m('table2_ms')}</td></tr>`;
  });
  parts.push(`<table><tr><th>schedule</th><th>stages</th><th>F</th><th>B</th><th>W</th><th>F&amp;B</th><th>step measured</th><th>replay</th><th>uniform sim</th><th>idle/rank measured</th><th>idle/rank sim</th><th>Table 2 bubble</th></tr>${rows.join('')}</table><p>ms, means over seeds of the per-run medians.</p>`);
  for (const a of arms) {
    const r = runsOf(runs, a.name)[0];
    if (r) parts.push(stepChart(r, a.label));
  }
  return parts.join('');
}

/** The key chart: DualPipe's measured step beside the simulator's (first seed). */
function keySvg(res: ExperimentResults): string {
  const r = runsOf(res.runs, 'dualpipe')[0];
  return r ? stepChart(r, 'DualPipe') : timelineChart({ title: 'DualPipe: no run', unit: 'ms', panels: [] });
}

export const dualpipeExperiment: Experiment = {
  name: 'dualpipe',
  summary: 'DualPipe vs DualPipeV vs 1F1B vs ZB1P: measured per-op times and idle against the simulator and Table 2',
  source: 'DeepSeek-V3 report §3.2.1 (Table 2, Figure 5); docs/DUALPIPE.md §8 and §10.',
  plan(size) {
    const z = runSize(size, QUICK, FULL);
    if (z.warm >= z.steps) z.warm = Math.max(0, z.steps - 1);
    const cfg = experimentConfig(size.quick, z.config, { num_hidden_layers: 4 });
    const getData = lazyExperimentData(size.quick, cfg, z.seq);
    return {
      arms: ARMS.map((a) => ({ name: a.algo, label: a.label, settings: { algo: a.algo } })),
      steps: z.steps,
      settings: { ...z, model: size.quick ? 'tiny-4-layers' : z.config, data: size.quick ? 'moby-dick, 2 chapters' : 'moby-dick', threads_per_rank: 1 },
      run: (arm, ctx) => runArm(arm, ctx, cfg, getData(), z),
    };
  },
  metrics: {
    idle_frac: 'idle fraction (measured)', step_ms: 'step ms (measured)', replay_ms: 'step ms (replay)', sim_ms: 'step ms (uniform sim)',
    idle_ms: 'idle ms per rank (measured)', sim_idle_ms: 'idle ms per rank (uniform sim)', table2_ms: 'Table 2 bubble ms', overhead: 'measured / replay',
  },
  curves: {
    step_ms: { title: 'Step time (first op start to last op end)', yLabel: 'ms' },
    idle_frac: { title: 'Idle fraction (mean over ranks)', yLabel: 'idle / step' },
  },
  claims: (runs) => claims(runs),
  extraHtml,
  keySvg,
};
