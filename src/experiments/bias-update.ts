/**
 * `dsv3 experiment bias-update` (DeepSeek-V3 report §2.1.2, eq. 16; the Loss-Free Balancing
 * paper, arXiv 2408.15664, §4 and its update-rate and update-rule ablations): the pitfalls and
 * variants of the aux-loss-free bias update, all on the balance experiment's model and data with
 * no balance loss at all. Arms: the sign rule with γ at 0.1×, 1× and 10× the recipe's γ (its
 * γ/lr rule), the proportional rule, the sign rule on an EMA-smoothed load (β = 0.9), and the
 * sign rule with the biases clamped to [−0.1, 0.1].
 *
 * The proportional rule of objective/balance.ts is Δb_i = γ_p·(1/E − load_i/Σload); its γ_p is
 * the recipe's γ × E, so Δb_i = γ·(mean − load_i)/mean: a relative violation of 1 moves the bias
 * by γ, as one step of the sign rule does (the loss-free paper's "additive" update, u = 0.001).
 *
 * Measured per run: bias jitter — the fraction of (expert, step) pairs, over the MoE layers of
 * the main model, where Δb_t = b_t − b_(t−1) has the sign opposite to Δb_(t−1) (from the biases
 * the trainer records after every step); MaxVio_batch averaged over the steps, and MaxVio_global
 * and the LM loss over the validation split (as balance.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moeLayerIndices, type ModelConfig } from '../model/config.js';
import type { BiasUpdateOptions } from '../objective/balance.js';
import type { PreparedData } from '../data/dataset.js';
import { biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../train/recipe.js';
import { train } from '../train/trainer.js';
import { measureValidation, type Size } from './balance.js';
import { experimentConfig, lazyExperimentData, runSize } from './training-setup.js';
import { finalsOf, type Arm, type Experiment, type Measured, type RunContext, type RunRecord } from './experiment.js';
import type { Claim } from './verdict.js';

/**
 * The default: the balance experiment's model and batches (configs/train-small.json, 8×128
 * tokens), 96 steps instead of 128: 6 arms × 3 seeds = 18 runs of ~25 s at ~2,200 tokens/s.
 */
const FULL: Size = { config: TRAIN.config, steps: 96, batch: 8, seq: 128, lr: TRAIN.lr, evalEvery: 32, valBatches: 64 };
const QUICK: Size = { config: 'tiny (built in)', steps: 12, batch: 2, seq: 16, lr: 5e-3, evalEvery: 4, valBatches: 16 };

interface ArmDef {
  name: string;
  label: string;
  /** Multiple of the recipe's γ. */
  gammaX: number;
  mode: 'sign' | 'proportional';
  emaBeta?: number;
  bounds?: [number, number];
}

const ARMS: ArmDef[] = [
  { name: 'sign-0.1x', label: 'sign rule, γ × 0.1', gammaX: 0.1, mode: 'sign' },
  { name: 'sign-1x', label: "sign rule, the recipe's γ", gammaX: 1, mode: 'sign' },
  { name: 'sign-10x', label: 'sign rule, γ × 10', gammaX: 10, mode: 'sign' },
  { name: 'proportional', label: 'proportional rule, Δb = γ·(mean − load)/mean', gammaX: 1, mode: 'proportional' },
  { name: 'ema', label: 'sign rule on the EMA of the load (β = 0.9)', gammaX: 1, mode: 'sign', emaBeta: 0.9 },
  { name: 'bounded', label: 'sign rule, biases clamped to [−0.1, 0.1]', gammaX: 1, mode: 'sign', bounds: [-0.1, 0.1] },
];

const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/**
 * Sign flips of Δb: `biases[t]` is the layer's bias after step t + 1 (before step 1 all zero).
 * Returns per step t ≥ 2 the fraction of experts where Δb_t·Δb_(t−1) < 0.
 */
export function flipFractions(biases: readonly (readonly number[])[]): number[] {
  const out: number[] = [];
  const E = biases[0]?.length ?? 0;
  let prev = biases[0] ? biases[0].slice() : []; // Δb_1 = b_1 − 0
  for (let t = 1; t < biases.length; t++) {
    let flips = 0;
    const d = biases[t]!.map((b, e) => b - biases[t - 1]![e]!);
    for (let e = 0; e < E; e++) if (d[e]! * prev[e]! < 0) flips++;
    out.push(E ? flips / E : NaN);
    prev = d;
  }
  return out;
}

function runArm(arm: Arm, ctx: RunContext, cfg: ModelConfig, data: PreparedData, z: Size): Measured {
  const layers = moeLayerIndices(cfg, false);
  const s = arm.settings;
  const bias: BiasUpdateOptions = {
    gamma: s['bias_gamma'] as number,
    mode: s['bias_mode'] as 'sign' | 'proportional',
    ...(s['ema_beta'] !== undefined ? { emaBeta: s['ema_beta'] as number } : {}),
    ...(s['bounds'] !== undefined ? { bounds: s['bounds'] as [number, number] } : {}),
  };
  const trainLm: number[] = [];
  const vioBatch: number[] = [];
  const biasAbs: number[] = [];
  const valX: number[] = [];
  const valY: number[] = [];
  const biases = new Map<number, number[][]>(layers.map((l) => [l, []]));
  const r = train({
    model: cfg, prepared: data, steps: z.steps, batch: z.batch, seq: z.seq, lr: z.lr, warmup: warmupFor(z.steps), seed: ctx.seed,
    balance: 'aux-free', balanceAlpha: 0, bias,
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
      biasAbs.push(mean(layers.map((l) => Math.max(0, ...(rec.layers[String(l)]?.bias ?? []).map(Math.abs)))));
      for (const l of layers) biases.get(l)!.push(rec.layers[String(l)]?.bias ?? []);
      ctx.tick(rec.step);
    },
  });
  // per step (from step 2), the flip fraction averaged over the MoE layers
  const perLayer = layers.map((l) => flipFractions(biases.get(l)!));
  const flips = (perLayer[0] ?? []).map((_, t) => mean(perLayer.map((f) => f[t]!)));
  const finals: Record<string, number> = {
    val_lm: NaN, maxvio_global: NaN, maxvio_batch: mean(vioBatch),
    jitter: mean(flips),
    maxvio_batch_late: mean(vioBatch.slice(-Math.max(1, Math.round(z.steps / 4)))),
    max_abs_bias: biasAbs[biasAbs.length - 1] ?? NaN,
    train_lm: mean(trainLm.slice(-Math.max(1, Math.round(z.steps / 10)))),
  };
  if (r.status === 'done' && r.lastCheckpoint) Object.assign(finals, measureValidation(r.lastCheckpoint, cfg, data, z));
  for (const f of fs.readdirSync(ctx.dir)) if (f.startsWith('checkpoint-')) fs.rmSync(path.join(ctx.dir, f), { recursive: true, force: true });
  const xs = trainLm.map((_, i) => i + 1);
  return {
    finals,
    curves: {
      train_lm: { x: xs, y: trainLm }, val_lm: { x: valX, y: valY }, maxvio_batch: { x: xs, y: vioBatch },
      jitter: { x: flips.map((_, i) => i + 2), y: flips }, max_abs_bias: { x: xs, y: biasAbs },
    },
    extra: { status: r.status },
  };
}

function claims(runs: readonly RunRecord[]): Claim[] {
  const v = (arm: string, key: string): number[] => finalsOf(runs, arm, key);
  return [
    {
      paper: 'Loss-Free Balancing (arXiv 2408.15664, update-rate ablation): too large an update rate (u = 0.01) makes the biases oscillate — here the sign rule at 10× γ flips Δb more often than at 1×.',
      a: { label: '10× γ bias jitter', values: v('sign-10x', 'jitter') },
      b: { label: '1× γ bias jitter', values: v('sign-1x', 'jitter') },
      direction: 'higher',
    },
    {
      paper: 'Loss-Free Balancing (update-rate ablation): too small an update rate (u = 0.0001) balances slowly — here 0.1× γ has a higher MaxVio_batch (mean over steps) than 1×.',
      a: { label: '0.1× γ MaxVio_batch', values: v('sign-0.1x', 'maxvio_batch') },
      b: { label: '1× γ MaxVio_batch', values: v('sign-1x', 'maxvio_batch') },
      direction: 'higher',
    },
    {
      paper: 'Loss-Free Balancing (update-rule ablation): the additive (proportional) update and the sign update reach similar LM quality (ppl 9.51 vs 9.50) — here the proportional rule\'s validation LM loss is at most 1% above the sign rule\'s …',
      a: { label: 'proportional validation LM loss', values: v('proportional', 'val_lm') },
      b: { label: 'sign validation LM loss', values: v('sign-1x', 'val_lm') },
      direction: 'lower',
      margin: 0.01,
    },
    {
      paper: '… and at most 1% below it (the two verdicts together: within ±1%).',
      a: { label: 'proportional validation LM loss', values: v('proportional', 'val_lm') },
      b: { label: 'sign validation LM loss', values: v('sign-1x', 'val_lm') },
      direction: 'higher',
      margin: -0.01,
    },
    {
      paper: 'Loss-Free Balancing (update-rule ablation): the additive update balances about as well as the sign update (MaxVio_global 0.036 vs 0.044) — here the proportional rule\'s MaxVio_global at most 1.25× the sign rule\'s.',
      a: { label: 'proportional MaxVio_global', values: v('proportional', 'maxvio_global') },
      b: { label: 'sign MaxVio_global', values: v('sign-1x', 'maxvio_global') },
      direction: 'lower',
      margin: 0.25,
    },
    {
      paper: 'Not a paper claim (our expectation): the sign rule on an EMA-smoothed load (β = 0.9) jitters less than on the step\'s load.',
      a: { label: 'EMA bias jitter', values: v('ema', 'jitter') },
      b: { label: 'step-load bias jitter', values: v('sign-1x', 'jitter') },
      direction: 'lower',
    },
  ];
}

export const biasUpdateExperiment: Experiment = {
  name: 'bias-update',
  summary: 'the aux-free bias update: γ 0.1×/1×/10×, sign vs proportional, EMA load, bounded biases',
  source: 'DeepSeek-V3 report §2.1.2 (eq. 16); Loss-Free Balancing, arXiv 2408.15664 (its update-rate and update-rule ablations).',
  plan(size) {
    const z = runSize(size, QUICK, FULL);
    const cfg = experimentConfig(size.quick, z.config);
    const gamma = biasGammaForLr(z.lr);
    const getData = lazyExperimentData(size.quick, cfg, z.seq);
    return {
      arms: ARMS.map((a) => ({
        name: a.name, label: a.label,
        settings: {
          bias_mode: a.mode, bias_gamma: a.mode === 'proportional' ? gamma * cfg.n_routed_experts : gamma * a.gammaX,
          ...(a.emaBeta !== undefined ? { ema_beta: a.emaBeta } : {}), ...(a.bounds ? { bounds: a.bounds } : {}),
        },
      })),
      steps: z.steps,
      settings: { ...z, model: size.quick ? 'tiny' : z.config, data: size.quick ? 'moby-dick, 2 chapters' : 'moby-dick', balance: 'aux-free', alpha: 0, recipe_gamma: gamma, mtp_lambda: PAPER.mtpLambda, warmup: warmupFor(z.steps) },
      run: (arm, ctx) => runArm(arm, ctx, cfg, getData(), z),
    };
  },
  metrics: {
    jitter: 'bias jitter (Δb sign flips per expert-step)',
    maxvio_batch: 'MaxVio_batch (mean over steps)',
    maxvio_batch_late: 'MaxVio_batch (last quarter)',
    maxvio_global: 'MaxVio_global (validation)',
    val_lm: 'validation LM loss',
    max_abs_bias: 'final max |b| (mean over layers)',
  },
  curves: {
    maxvio_batch: { title: 'MaxVio_batch (mean over MoE layers)', yLabel: 'MaxVio' },
    jitter: { title: 'Bias jitter: fraction of experts whose Δb changed sign', yLabel: 'fraction' },
    max_abs_bias: { title: 'max |bias| (mean over MoE layers)', yLabel: '|b|' },
    val_lm: { title: 'Validation LM loss', yLabel: 'nats' },
  },
  claims: (runs) => claims(runs),
};
