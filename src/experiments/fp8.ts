/**
 * `dsv3 experiment fp8` (DeepSeek-V3 report §3.3, Figure 10, appendix B): does FP8
 * mixed-precision training (`--fp8`: E4M3 operands with 1x128 / 128x128 scaling, FP32 master
 * weights) track higher-precision training, and what do its two design choices buy?
 *
 * Training arms (TRAIN_ARMS; each other precision is compared with FP8 the same way): the same
 * model, data and seeds, float32 vs BF16 mixed precision vs FP8 — the paper's baseline is BF16. Measured per run: validation LM loss over the whole validation split (float32 forward, as
 * the trainer evaluates), the validation curve, the train LM loss. The claim (Figure 10, appendix
 * B.1): the relative loss error of FP8 against the higher-precision baseline stays below 0.25% —
 * judged on the per-seed relative difference (FP8 − baseline) / baseline (same seed: same
 * initialisation and data order, so the pair differs only in precision), both ways (below +0.25%
 * and above −0.25%).
 *
 * Ablation arms, no training (fp8-ablations.ts; a "seed" draws other random matrices):
 * accumulation precision (unpromoted limited accumulator vs promotion every N_C = 128 vs exact
 * block sums) — relative GEMM error against K; scaling granularity (per tensor vs 1x128 tiles vs
 * 128x128 blocks) on activations with injected outliers — quantisation error against the outlier
 * magnitude. A training run per ablation is not made: the training path multiplies dequantised
 * operands with the float32 GEMM, so neither the 14-bit accumulator nor per-tensor scaling exists
 * in it (the accumulator model runs at ~10⁷ products/s, far too slow to train with).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ModelConfig } from '../model/config.js';
import type { PreparedData } from '../data/dataset.js';
import { balanceAlphaFor, biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../train/recipe.js';
import { escapeXml, fmtNum, lineChart, paletteColor } from '../train/svg.js';
import type { TrainOptions } from '../train/train-options.js';
import { train } from '../train/trainer.js';
import { measureValidation, type Size } from './balance.js';
import { experimentConfig, lazyExperimentData, runSize } from './training-setup.js';
import { runsOf, type Arm, type Experiment, type Measured, type RunContext, type RunRecord } from './experiment.js';
import { accumulationErrors, granularityErrors, type Accumulation, type Granularity } from './fp8-ablations.js';
import { stats } from './verdict.js';
import type { Claim } from './verdict.js';

/** The training arms: name, label and what they set in train()'s options. */
const TRAIN_ARMS: Array<{ name: string; label: string; train: Partial<TrainOptions> }> = [
  { name: 'fp32', label: 'float32 training', train: {} },
  { name: 'bf16', label: 'BF16 mixed-precision training (--precision bf16)', train: { precision: 'bf16' } },
  { name: 'fp8', label: 'FP8 training (--fp8: E4M3, 1x128 / 128x128 scales)', train: { fp8: true } },
];
/** The arm judged against every other training arm. */
const FP8_ARM = 'fp8';

const ACC_ARMS: Array<{ name: string; label: string; acc: Accumulation }> = [
  { name: 'acc-unpromoted', label: 'GEMM: 14-bit accumulator, no promotion', acc: 'unpromoted' },
  { name: 'acc-promoted', label: 'GEMM: 14-bit accumulator, FP32 promotion every 128', acc: 'promoted' },
  { name: 'acc-fp32', label: 'GEMM: exact block sums, FP32 promotion (our training path)', acc: 'fp32-acc' },
];
const GRAN_ARMS: Array<{ name: string; label: string; g: Granularity }> = [
  { name: 'scale-tensor', label: 'scaling: one scale per tensor', g: 'tensor' },
  { name: 'scale-tile', label: 'scaling: 1x128 tiles', g: 'tile' },
  { name: 'scale-block', label: 'scaling: 128x128 blocks', g: 'block' },
];

interface Fp8Size extends Size {
  /** Accumulation ablation: inner sizes and the output shape. */
  ks: number[];
  gemmRows: number;
  /** Granularity ablation: outlier magnitudes and the activation shape. */
  magnitudes: number[];
  actRows: number;
  actCols: number;
}

/**
 * The default: configs/train-small.json, 192 steps of 8x128 tokens. Sized from float32 at ~0.25 s
 * a step on 2 unshared cores (balance's runs) and FP8 at most twice that: 3 seeds of both in
 * under ~10 minutes with their evaluations, plus the ablations (16x16 outputs at K up to 16,384;
 * 256x1024 activations: ~20 s a seed). An estimate: the default has not been run to the end on
 * an unshared machine (docs/EXPERIMENTS.md records a 64-step run on a shared one).
 */
const FULL: Fp8Size = {
  config: TRAIN.config, steps: 192, batch: 8, seq: 128, lr: TRAIN.lr, evalEvery: 24, valBatches: 64,
  ks: [128, 256, 512, 1024, 2048, 4096, 8192, 16384], gemmRows: 16, magnitudes: [1, 10, 100, 1e3, 1e4, 1e5], actRows: 256, actCols: 1024,
};
const QUICK: Fp8Size = {
  config: 'tiny (built in)', steps: 12, batch: 2, seq: 16, lr: 5e-3, evalEvery: 4, valBatches: 16,
  ks: [128, 1024, 4096], gemmRows: 4, magnitudes: [1, 100, 1e4], actRows: 128, actCols: 256,
};
/** Where the ablation claims are judged. */
const K_CLAIM = 4096;
const A_CLAIM = 1e4;

const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

function runTraining(arm: Arm, ctx: RunContext, cfg: ModelConfig, data: PreparedData, z: Fp8Size): Measured {
  const trainLm: number[] = [];
  const valX: number[] = [];
  const valY: number[] = [];
  const r = train({
    model: cfg, prepared: data, steps: z.steps, batch: z.batch, seq: z.seq, lr: z.lr, warmup: warmupFor(z.steps), seed: ctx.seed,
    balance: 'aux-free', balanceAlpha: balanceAlphaFor('aux-free'), bias: { gamma: biasGammaForLr(z.lr), mode: 'sign' },
    mtpLambda: PAPER.mtpLambda, mtpLambdaLate: PAPER.mtpLambdaLate, mtpSwitchStep: mtpSwitchStepFor(z.steps),
    evalEvery: z.evalEvery, evalBatches: 4, ckptEvery: 0, keepCheckpoints: 1, out: ctx.dir, quiet: true,
    ...(arm.settings['train'] as Partial<TrainOptions>),
    onRecord: (rec) => {
      if (rec.type === 'eval') {
        valX.push(rec.step);
        valY.push(rec.val_lm);
      }
      if (rec.type !== 'step') return;
      trainLm.push(rec.lm);
      ctx.tick(rec.step);
    },
  });
  const finals: Record<string, number> = { train_lm: mean(trainLm.slice(-Math.max(1, Math.round(z.steps / 10)))), val_lm: NaN };
  if (r.status === 'done' && r.lastCheckpoint) finals['val_lm'] = measureValidation(r.lastCheckpoint, cfg, data, z).val_lm;
  for (const f of fs.readdirSync(ctx.dir)) if (f.startsWith('checkpoint-')) fs.rmSync(path.join(ctx.dir, f), { recursive: true, force: true });
  return { finals, curves: { train_lm: { x: trainLm.map((_, i) => i + 1), y: trainLm }, val_lm: { x: valX, y: valY } }, extra: { status: r.status } };
}

function runAccumulation(arm: Arm, ctx: RunContext, z: Fp8Size, steps: number): Measured {
  const e = accumulationErrors(arm.settings['accumulation'] as Accumulation, ctx.seed, z.ks, z.gemmRows, z.gemmRows);
  ctx.tick(steps);
  const finals: Record<string, number> = {};
  z.ks.forEach((k, i) => {
    finals[`acc_maxrel_${k}`] = e[i]!.maxRel;
    finals[`acc_relfro_${k}`] = e[i]!.relFro;
  });
  return { finals, curves: { acc_maxrel: { x: [...z.ks], y: e.map((x) => x.maxRel) }, acc_relfro: { x: [...z.ks], y: e.map((x) => x.relFro) } } };
}

function runGranularity(arm: Arm, ctx: RunContext, z: Fp8Size, steps: number): Measured {
  const e = granularityErrors(arm.settings['granularity'] as Granularity, ctx.seed, z.magnitudes, z.actRows, z.actCols);
  ctx.tick(steps);
  const finals: Record<string, number> = {};
  z.magnitudes.forEach((a, i) => {
    const tag = a.toExponential(0).replace('+', '');
    finals[`gran_rel_${tag}`] = e[i]!.relOrdinary;
    finals[`gran_relall_${tag}`] = e[i]!.relAll;
    finals[`gran_underflow_${tag}`] = e[i]!.underflow;
  });
  const x = z.magnitudes.map((a) => Math.log10(a));
  return { finals, curves: { gran_rel: { x, y: e.map((q) => q.relOrdinary) }, gran_underflow: { x, y: e.map((q) => q.underflow) } } };
}

/** Per seed, (a − b) / b of a final value, over the seeds both arms have. */
export function pairedRelDiff(runs: readonly RunRecord[], a: string, b: string, key: string): number[] {
  const bs = new Map(runsOf(runs, b).map((r) => [r.seed, r.finals[key] ?? NaN]));
  return runsOf(runs, a).filter((r) => bs.has(r.seed)).map((r) => ((r.finals[key] ?? NaN) - bs.get(r.seed)!) / bs.get(r.seed)!);
}

const tagOf = (a: number): string => a.toExponential(0).replace('+', '');

function claims(runs: readonly RunRecord[]): Claim[] {
  const out: Claim[] = [];
  const bound = 0.0025;
  for (const base of TRAIN_ARMS.filter((t) => t.name !== FP8_ARM)) {
    const rel = pairedRelDiff(runs, FP8_ARM, base.name, 'val_lm');
    const paper = `Figure 10 / appendix B.1: FP8 training's relative loss error against BF16 stays below 0.25% (16B and 230B models, ~1T tokens); here validation LM loss, FP8 against ${base.label}, per seed`;
    out.push({ paper: `${paper}: not more than 0.25% above.`, a: { label: `(FP8 − ${base.name}) / ${base.name}`, values: rel }, b: { label: 'the bound +0.25%', values: rel.map(() => bound) }, direction: 'lower' });
    out.push({ paper: `${paper}: not more than 0.25% below.`, a: { label: `(FP8 − ${base.name}) / ${base.name}`, values: rel }, b: { label: 'the bound −0.25%', values: rel.map(() => -bound) }, direction: 'higher' });
  }
  const f = (arm: string, key: string): number[] => runsOf(runs, arm).map((r) => r.finals[key] ?? NaN);
  const ks = (runs.find((r) => r.arm === 'acc-unpromoted')?.settings['ks'] as number[] | undefined) ?? FULL.ks;
  const kMax = ks[ks.length - 1]!;
  out.push(
    {
      paper: `§3.3.2: the H800's FP8 GEMM accumulator keeps ~14 bits; without promotion a K = ${K_CLAIM} GEMM of random matrices has a maximum relative error of nearly 2% — here at least 1% (half of it) in the accumulator model.`,
      a: { label: `unpromoted max relative error at K = ${K_CLAIM}`, values: f('acc-unpromoted', `acc_maxrel_${K_CLAIM}`) },
      b: { label: '1%', values: f('acc-unpromoted', `acc_maxrel_${K_CLAIM}`).map(() => 0.01) },
      direction: 'higher',
    },
    {
      paper: `§3.3.2, Figure 7b: promoting the partial sums to FP32 every N_C = 128 elements fixes it — here the promoted error at K = ${K_CLAIM} more than 10× below the unpromoted one.`,
      a: { label: `promoted max relative error × 10`, values: f('acc-promoted', `acc_maxrel_${K_CLAIM}`).map((x) => 10 * x) },
      b: { label: 'unpromoted', values: f('acc-unpromoted', `acc_maxrel_${K_CLAIM}`) },
      direction: 'lower',
    },
    {
      paper: `§3.3.2: "this problem will become more pronounced as the inner dimension K grows" — unpromoted error at K = ${kMax} above that at K = ${ks[0]}.`,
      a: { label: `unpromoted at K = ${kMax}`, values: f('acc-unpromoted', `acc_maxrel_${kMax}`) },
      b: { label: `at K = ${ks[0]}`, values: f('acc-unpromoted', `acc_maxrel_${ks[0]}`) },
      direction: 'higher',
    },
  );
  const key = `gran_rel_${tagOf(A_CLAIM)}`;
  for (const [arm, what] of [['scale-tile', '1x128 tiles'], ['scale-block', '128x128 blocks']] as const) {
    out.push({
      paper: `§3.3.2, Figure 7a: per-tensor scaling makes FP8 sensitive to activation outliers; fine-grained scaling (${what}) isolates them — quantisation error of the ordinary elements with outliers ${A_CLAIM.toExponential(0)}× the typical value, ${what} below per tensor.`,
      a: { label: `${what} relative error`, values: f(arm, key) },
      b: { label: 'per-tensor relative error', values: f('scale-tensor', key) },
      direction: 'lower',
    });
  }
  return out;
}

/** The experiment's own charts (the training arms' relative difference; the ablations), SVG by title. */
export function fp8Figures(runs: readonly RunRecord[], arms: readonly Arm[]): Record<string, string> {
  const figs: Record<string, string> = {};
  const series: Array<{ name: string; xs: number[]; ys: number[]; band: { lo: number[]; hi: number[] }; color: string }> = [];
  TRAIN_ARMS.filter((t) => t.name !== FP8_ARM && arms.some((a) => a.name === t.name)).forEach((base, i) => {
    const bs = new Map(runsOf(runs, base.name).map((r) => [r.seed, r.curves['val_lm']]));
    const per = runsOf(runs, FP8_ARM).filter((r) => bs.get(r.seed)).map((r) => {
      const b = bs.get(r.seed)!;
      return { x: r.curves['val_lm']!.x, y: r.curves['val_lm']!.y.map((v, j) => (100 * (v - b.y[j]!)) / b.y[j]!) };
    });
    if (!per.length) return;
    const xs = per[0]!.x;
    const col = (j: number): number[] => per.map((p) => p.y[j] ?? NaN).filter(Number.isFinite);
    series.push({
      name: `FP8 vs ${base.label}`, xs, ys: xs.map((_, j) => mean(col(j))),
      band: { lo: xs.map((_, j) => Math.min(...col(j))), hi: xs.map((_, j) => Math.max(...col(j))) }, color: paletteColor(i),
    });
  });
  if (series.length) {
    const xs = series[0]!.xs;
    for (const s of [0.25, -0.25]) series.push({ name: `paper's bound ${s > 0 ? '+' : ''}${s}%`, xs, ys: xs.map(() => s), band: { lo: xs.map(() => s), hi: xs.map(() => s) }, color: '#999' });
    figs['fp8-relative-difference'] = lineChart({ title: 'Relative difference of validation LM loss, FP8 vs baseline (mean, band: min..max over seeds)', xLabel: 'step', yLabel: '%', series });
  }
  const ablation = (key: string, names: readonly string[], title: string, xLabel: string, yLabel: string, logY: boolean): string =>
    lineChart({
      title, xLabel, yLabel, logY,
      series: arms.filter((a) => names.includes(a.name)).map((a, i) => {
        const cs = runsOf(runs, a.name).map((r) => r.curves[key]).filter((c): c is { x: number[]; y: number[] } => c !== undefined);
        const xs = cs[0]?.x ?? [];
        const col = (j: number): number[] => cs.map((c) => c.y[j] ?? NaN).filter(Number.isFinite);
        return { name: a.label, xs, ys: xs.map((_, j) => mean(col(j))), band: { lo: xs.map((_, j) => Math.min(...col(j))), hi: xs.map((_, j) => Math.max(...col(j))) }, color: paletteColor(i) };
      }),
    });
  figs['fp8-accumulation'] = ablation('acc_maxrel', ACC_ARMS.map((a) => a.name), 'FP8 GEMM: max relative error against K (uniform [0,1) operands)', 'inner dimension K', 'max relative error', true);
  figs['fp8-granularity'] = ablation('gran_rel', GRAN_ARMS.map((a) => a.name), 'E4M3 quantisation error of ordinary activations against outlier magnitude', 'log10 outlier magnitude', 'relative error (ordinary elements)', true);
  return figs;
}

function extraHtml(runs: readonly RunRecord[], arms: readonly Arm[]): string {
  const figs = fp8Figures(runs, arms);
  const cell = (arm: string, key: string): string => {
    const s = stats(runsOf(runs, arm).map((r) => r.finals[key] ?? NaN));
    return `<td>${s.n ? `${fmtNum(s.mean)} ± ${fmtNum(s.sd)}` : '–'}</td>`;
  };
  const ks = (runs.find((r) => r.arm === 'acc-unpromoted')?.settings['ks'] as number[] | undefined) ?? [];
  const mags = (runs.find((r) => r.arm === 'scale-tensor')?.settings['magnitudes'] as number[] | undefined) ?? [];
  const accTable = `<table><tr><th>accumulation</th>${ks.map((k) => `<th>K = ${k}</th>`).join('')}</tr>` +
    ACC_ARMS.map((a) => `<tr><th>${escapeXml(a.label)}</th>${ks.map((k) => cell(a.name, `acc_maxrel_${k}`)).join('')}</tr>`).join('') + '</table>';
  const granTable = `<table><tr><th>scaling</th>${mags.map((m) => `<th>A = ${m.toExponential(0)}: error</th><th>underflow</th>`).join('')}</tr>` +
    GRAN_ARMS.map((a) => `<tr><th>${escapeXml(a.label)}</th>${mags.map((m) => cell(a.name, `gran_rel_${tagOf(m)}`) + cell(a.name, `gran_underflow_${tagOf(m)}`)).join('')}</tr>`).join('') + '</table>';
  const rel = TRAIN_ARMS.filter((t) => t.name !== FP8_ARM).map((b) => {
    const v = stats(pairedRelDiff(runs, FP8_ARM, b.name, 'val_lm').map((x) => 100 * x));
    const t = stats(pairedRelDiff(runs, FP8_ARM, b.name, 'train_lm').map((x) => 100 * x));
    return `<tr><th>FP8 vs ${escapeXml(b.label)}</th><td>${v.n ? `${fmtNum(v.mean)}% ± ${fmtNum(v.sd)}% (min ${fmtNum(v.min)}%, max ${fmtNum(v.max)}%)` : '–'}</td><td>${t.n ? `${fmtNum(t.mean)}% ± ${fmtNum(t.sd)}%` : '–'}</td></tr>`;
  });
  return `<h2>FP8 against the baseline: relative difference per seed (paper: below 0.25%)</h2>
<table><tr><th>pair</th><th>validation LM loss</th><th>train LM loss (last tenth)</th></tr>${rel.join('')}</table>
<div class="row">${figs['fp8-relative-difference'] ?? ''}</div>
<h2>Ablation (i): accumulation precision — max relative error against the ideal accumulator, mean ± sd over seeds</h2>${accTable}
<div class="row">${figs['fp8-accumulation']}</div>
<h2>Ablation (ii): scaling granularity — relative error of the ordinary elements and their share quantised to 0</h2>${granTable}
<div class="row">${figs['fp8-granularity']}</div>`;
}

export const fp8Experiment: Experiment = {
  name: 'fp8',
  summary: 'FP8 vs BF16 and float32 training (loss within 0.25%?); ablations: accumulation promotion, scaling granularity',
  source: 'DeepSeek-V3 report §3.3 (FP8 training; Figure 7: fine-grained quantisation and N_C = 128 promotion), Figure 10 and appendix B.',
  plan(size) {
    const z = runSize(size, QUICK, FULL, 8);
    const cfg = experimentConfig(size.quick, z.config);
    const getData = lazyExperimentData(size.quick, cfg, z.seq);
    const { ks, gemmRows, magnitudes, actRows, actCols, ...training } = z;
    const arms: Arm[] = [
      ...TRAIN_ARMS.map((t) => ({ name: t.name, label: t.label, settings: { kind: 'training', train: t.train } })),
      ...ACC_ARMS.map((a) => ({ name: a.name, label: a.label, settings: { kind: 'accumulation', accumulation: a.acc, ks, gemm_rows: gemmRows } })),
      ...GRAN_ARMS.map((a) => ({ name: a.name, label: a.label, settings: { kind: 'granularity', granularity: a.g, magnitudes, act_rows: actRows, act_cols: actCols } })),
    ];
    return {
      arms,
      steps: z.steps,
      settings: { ...training, model: size.quick ? 'tiny' : z.config, data: size.quick ? 'moby-dick, 2 chapters' : 'moby-dick', balance: 'aux-free', mtp_lambda: PAPER.mtpLambda, warmup: warmupFor(z.steps) },
      run: (arm, ctx) => {
        const kind = arm.settings['kind'];
        if (kind === 'accumulation') return runAccumulation(arm, ctx, z, z.steps);
        if (kind === 'granularity') return runGranularity(arm, ctx, z, z.steps);
        return runTraining(arm, ctx, cfg, getData(), z);
      },
    };
  },
  metrics: {
    val_lm: 'validation LM loss',
    train_lm: 'train LM loss (last tenth)',
    [`acc_maxrel_${K_CLAIM}`]: `GEMM max relative error, K = ${K_CLAIM}`,
    [`acc_relfro_${K_CLAIM}`]: `GEMM relative Frobenius error, K = ${K_CLAIM}`,
    [`gran_rel_${tagOf(A_CLAIM)}`]: `quantisation error, outliers ${A_CLAIM.toExponential(0)}×`,
    [`gran_underflow_${tagOf(A_CLAIM)}`]: `share underflowing to 0, outliers ${A_CLAIM.toExponential(0)}×`,
  },
  curves: {
    val_lm: { title: 'Validation LM loss (training arms)', yLabel: 'nats' },
    train_lm: { title: 'Train LM loss (training arms)', yLabel: 'nats' },
  },
  claims: (runs) => claims(runs),
  extraHtml,
};
