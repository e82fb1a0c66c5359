/**
 * `dsv3 experiment balance` (DeepSeek-V3 report §2.1.2 and §4.5.2, Table 5; the Loss-Free
 * Balancing paper, arXiv 2408.15664): the same model trained four ways — auxiliary-loss-free
 * (bias updates with the sign rule, γ from the recipe's γ/lr rule, no balance loss at all, as
 * the ablation removes every auxiliary loss), the classic auxiliary loss with α = 0.01 and
 * α = 0.001, and no balancing. Measured per run: validation LM loss over the whole validation
 * split, MaxVio_global (per MoE layer of the main model, the load summed over the validation
 * split, then averaged over the layers), MaxVio_batch (per step, averaged over the layers and
 * over the steps), with MaxVio = (max_i load_i − mean load) / mean load; and per-expert loads
 * over the steps (heatmaps).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { validationBatches, type PreparedData } from '../data/dataset.js';
import { noGrad } from '../engine/autograd.js';
import { moeLayerIndices, type ModelConfig } from '../model/config.js';
import { DeepseekV3 } from '../model/model.js';
import { maxVio, type BalanceMode } from '../objective/balance.js';
import { biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../train/recipe.js';
import { lossReport } from '../objective/losses.js';
import { escapeXml, heatmap } from '../train/svg.js';
import { forwardLosses } from '../train/train-step.js';
import { train } from '../train/trainer.js';
import { finalsOf, runsOf, type Arm, type Experiment, type Measured, type RunContext, type RunRecord } from './experiment.js';
import { experimentConfig, lazyExperimentData, runSize } from './training-setup.js';
import type { Claim } from './verdict.js';

/** The training size of an experiment's runs (the balance and bias-update experiments). */
export interface Size {
  config: string;
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  evalEvery: number;
  /** Validation batches for the final measurement (the whole split up to this many). */
  valBatches: number;
}

/**
 * The default: configs/train-small.json (bench-small's architecture, 16 experts top-4, 9.5M
 * parameters), 128 steps of 8x128 tokens: at ~2,200 tokens/s (2 cores) a run takes about a
 * minute with its evaluations, so the 12 runs of 4 arms x 3 seeds fit in ~15 minutes.
 */
const FULL: Size = { config: TRAIN.config, steps: 128, batch: 8, seq: 128, lr: TRAIN.lr, evalEvery: 32, valBatches: 64 };
const QUICK: Size = { config: 'tiny (built in)', steps: 12, batch: 2, seq: 16, lr: 5e-3, evalEvery: 4, valBatches: 16 };

const ARMS: Array<{ name: string; label: string; balance: BalanceMode; alpha: number }> = [
  { name: 'aux-free', label: 'aux-loss-free (sign bias update)', balance: 'aux-free', alpha: 0 },
  { name: 'aux-loss-0.01', label: 'auxiliary loss α = 0.01', balance: 'aux-loss', alpha: 0.01 },
  { name: 'aux-loss-0.001', label: 'auxiliary loss α = 0.001', balance: 'aux-loss', alpha: 0.001 },
  { name: 'none', label: 'no balancing', balance: 'none', alpha: 0 },
];

const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Relative load (load / mean load) per expert, in at most `cols` buckets of steps: [expert][column]. */
function loadHeat(loads: Int32Array[], cols: number): number[][] {
  const E = loads[0]?.length ?? 0;
  const n = Math.min(cols, loads.length);
  const out: number[][] = Array.from({ length: E }, () => []);
  for (let c = 0; c < n; c++) {
    const a = Math.floor((c * loads.length) / n);
    const b = Math.floor(((c + 1) * loads.length) / n);
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let i = a; i < b; i++) {
        const m = mean(Array.from(loads[i]!));
        s += m > 0 ? loads[i]![e]! / m : 1;
      }
      out[e]!.push(Number((s / (b - a)).toPrecision(4)));
    }
  }
  return out;
}

/** One pass over a validation split (up to `z.valBatches` batches): mean LM loss per sequence and
 * the expert loads of each MoE layer of the main model, summed. */
export function validationPass(
  model: DeepseekV3,
  cfg: ModelConfig,
  val: Int32Array,
  z: { batch: number; seq: number; valBatches: number },
): { lm: number; rows: number; loads: Map<number, Float64Array> } {
  const layers = moeLayerIndices(cfg, false);
  const loads = new Map<number, Float64Array>(layers.map((l) => [l, new Float64Array(cfg.n_routed_experts)]));
  let nll = 0;
  let rows = 0;
  let k = 0;
  for (const b of validationBatches(val, z.batch, z.seq)) {
    if (k++ >= z.valBatches) break;
    const f = noGrad(() => forwardLosses(model, b.tokens, { mtpLambda: 0, balanceAlpha: 0, balance: 'none' }, b.batchSize));
    nll += lossReport(f.terms).lm * b.batchSize;
    rows += b.batchSize;
    for (const l of layers) {
      const load = f.routing.get(l)?.load;
      if (load) loads.get(l)!.forEach((_, e, acc) => (acc[e] = acc[e]! + load[e]!));
    }
  }
  return { lm: rows ? nll / rows : NaN, rows, loads };
}

/**
 * The final measurement of a finished run: LM loss and MaxVio_global (per MoE layer of the main
 * model, the load summed over the validation split up to `z.valBatches` batches, then averaged
 * over the layers).
 */
export function measureValidation(checkpoint: string, cfg: ModelConfig, data: PreparedData, z: { batch: number; seq: number; valBatches: number }): { val_lm: number; maxvio_global: number } {
  const model = DeepseekV3.load(checkpoint, { weights: 'f32' });
  const v = validationPass(model, cfg, data.val, z);
  return { val_lm: v.lm, maxvio_global: mean([...v.loads.values()].map((l) => maxVio(l))) };
}

function runArm(arm: Arm, ctx: RunContext, cfg: ModelConfig, data: PreparedData, z: Size): Measured {
  const balance = arm.settings['balance'] as BalanceMode;
  const layers = moeLayerIndices(cfg, false);
  const trainLm: number[] = [];
  const vioBatch: number[] = [];
  const valX: number[] = [];
  const valY: number[] = [];
  const loads = new Map<number, Int32Array[]>(layers.map((l) => [l, []]));
  const r = train({
    model: cfg, prepared: data, steps: z.steps, batch: z.batch, seq: z.seq, lr: z.lr, warmup: warmupFor(z.steps), seed: ctx.seed,
    balance, balanceAlpha: arm.settings['alpha'] as number, bias: { gamma: biasGammaForLr(z.lr), mode: 'sign' },
    mtpLambda: PAPER.mtpLambda, mtpLambdaLate: PAPER.mtpLambdaLate, mtpSwitchStep: mtpSwitchStepFor(z.steps),
    evalEvery: z.evalEvery, evalBatches: 4, ckptEvery: 0, keepCheckpoints: 1, out: ctx.dir, quiet: true,
    onRecord: (rec) => {
      if (rec.type === 'eval') {
        valX.push(rec.step);
        valY.push(rec.val_lm);
      }
      if (rec.type !== 'step') return;
      trainLm.push(rec.lm);
      vioBatch.push(mean(layers.map((l) => rec.layers[String(l)]?.maxvio ?? NaN)));
      for (const l of layers) loads.get(l)!.push(Int32Array.from(rec.layers[String(l)]?.load ?? []));
      ctx.tick(rec.step);
    },
  });
  const finals: Record<string, number> = { train_lm: mean(trainLm.slice(-Math.max(1, Math.round(z.steps / 10)))), maxvio_batch: mean(vioBatch), val_lm: NaN, maxvio_global: NaN };
  if (r.status === 'done' && r.lastCheckpoint) Object.assign(finals, measureValidation(r.lastCheckpoint, cfg, data, z));
  // keep the run's metrics.jsonl and run.json (dsv3 report works on them), not its checkpoint
  for (const f of fs.readdirSync(ctx.dir)) if (f.startsWith('checkpoint-')) fs.rmSync(path.join(ctx.dir, f), { recursive: true, force: true });
  const xs = trainLm.map((_, i) => i + 1);
  return {
    finals,
    curves: { train_lm: { x: xs, y: trainLm }, val_lm: { x: valX, y: valY }, maxvio_batch: { x: xs, y: vioBatch } },
    extra: { status: r.status, load_heat: Object.fromEntries(layers.map((l) => [String(l), loadHeat(loads.get(l)!, 40)])) },
  };
}

function claims(runs: readonly RunRecord[]): Claim[] {
  const v = (arm: string, key: string): number[] => finalsOf(runs, arm, key);
  const lm = (b: string, alpha: string): Claim => ({
    paper: `Table 5 (§4.5.2): the aux-loss-free model reaches a lower LM loss than the auxiliary-loss baseline (Pile BPB 0.727 → 0.724 small MoE, 0.656 → 0.652 large); here against α = ${alpha}.`,
    a: { label: 'aux-free validation LM loss', values: v('aux-free', 'val_lm') },
    b: { label: `aux-loss α = ${alpha} validation LM loss`, values: v(b, 'val_lm') },
    direction: 'lower',
  });
  return [
    lm('aux-loss-0.01', '0.01'),
    lm('aux-loss-0.001', '0.001'),
    {
      paper: 'Loss-Free Balancing (arXiv 2408.15664, Table 2, 1B): MaxVio_global 0.04 loss-free vs 0.72 with an α = 0.001 auxiliary loss.',
      a: { label: 'aux-free MaxVio_global', values: v('aux-free', 'maxvio_global') },
      b: { label: 'aux-loss α = 0.001 MaxVio_global', values: v('aux-loss-0.001', 'maxvio_global') },
      direction: 'lower',
    },
    {
      paper: '§2.1.2: without balancing, routing collapses onto few experts; the bias keeps the load balanced — MaxVio_global far below no balancing.',
      a: { label: 'aux-free MaxVio_global', values: v('aux-free', 'maxvio_global') },
      b: { label: 'no-balancing MaxVio_global', values: v('none', 'maxvio_global') },
      direction: 'lower',
    },
  ];
}

function extraHtml(runs: readonly RunRecord[], arms: readonly Arm[]): string {
  const parts: string[] = ['<h2>Per-expert load over training (seed 0; load / mean load: white balanced, red ≥ 2×, blue 0)</h2>'];
  for (const a of arms) {
    const r = runsOf(runs, a.name)[0];
    const heat = r?.extra?.['load_heat'] as Record<string, number[][]> | undefined;
    if (!heat) continue;
    const charts = Object.entries(heat).map(([l, values]) => heatmap({
      title: `${a.label}: layer ${l}`, values, rowLabel: (e) => `e${e}`, colLabel: (c) => `bucket ${c + 1} of ${values[0]?.length ?? 0}`,
      colTick: (c) => `${Math.round(((c + 1) * r!.steps) / (values[0]?.length ?? 1))}`, center: 1, halfRange: 1, width: 420,
    }));
    parts.push(`<h3>${escapeXml(a.label)}</h3><div class="row">${charts.join('')}</div>`);
  }
  return parts.join('');
}

export const balanceExperiment: Experiment = {
  name: 'balance',
  summary: 'aux-loss-free balancing vs auxiliary loss (α 0.01, 0.001) vs none: LM loss and MaxVio',
  source: 'DeepSeek-V3 report §2.1.2 and §4.5.2 (Table 5); Loss-Free Balancing, arXiv 2408.15664 (MaxVio).',
  plan(size) {
    const z = runSize(size, QUICK, FULL);
    const cfg = experimentConfig(size.quick, z.config);
    const getData = lazyExperimentData(size.quick, cfg, z.seq);
    return {
      arms: ARMS.map((a) => ({ name: a.name, label: a.label, settings: { balance: a.balance, alpha: a.alpha, ...(a.balance === 'aux-free' ? { bias_mode: 'sign', bias_gamma: biasGammaForLr(z.lr) } : {}) } })),
      steps: z.steps,
      settings: { ...z, model: size.quick ? 'tiny' : z.config, data: size.quick ? 'moby-dick, 2 chapters' : 'moby-dick', mtp_lambda: PAPER.mtpLambda, warmup: warmupFor(z.steps) },
      run: (arm, ctx) => runArm(arm, ctx, cfg, getData(), z),
    };
  },
  metrics: { val_lm: 'validation LM loss', maxvio_global: 'MaxVio_global (validation)', maxvio_batch: 'MaxVio_batch (mean over steps)', train_lm: 'train LM loss (last tenth)' },
  curves: {
    train_lm: { title: 'Train LM loss', yLabel: 'nats' },
    val_lm: { title: 'Validation LM loss', yLabel: 'nats' },
    maxvio_batch: { title: 'MaxVio_batch (mean over MoE layers)', yLabel: 'MaxVio' },
  },
  claims: (runs) => claims(runs),
  extraHtml,
  keyCurve: 'maxvio_batch',
};
