/**
 * `dsv3 experiment balance-scope` (DeepSeek-V3 report §4.5.3, Figure 9): the scope of the
 * balance constraint. The same model trained on a two-domain corpus (domains.ts: prose and
 * code) three ways:
 * - sequence-wise auxiliary loss: eqs. 17–20 per sequence (`sequenceBalanceLoss`) with α = 0.01
 *   and no bias (the 'aux-free' balance mode with γ = 0: its biases stay 0, so the selection is
 *   the plain top-K and only the sequence-wise loss balances);
 * - batch-wise auxiliary loss: the same eqs. 17–20 over all B·T tokens of the batch as one
 *   "sequence" (`auxBalanceLoss`, the 'aux-loss' mode), α = 0.01;
 * - auxiliary-loss-free: sign bias update with the recipe's γ, no balance loss (α = 0, as in the
 *   `balance` experiment).
 * Measured on each domain's validation split with the final model: LM loss, the load of every
 * expert of every MoE layer as relative load (load / mean load, Figure 9's quantity), and a
 * specialisation score: the mutual information I(domain; expert) in bits between the domain of
 * a token and the experts it is routed to, domains weighted equally, averaged over the layers
 * (0: every domain uses the experts alike; at most log2(2) = 1 bit for two domains).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moeLayerIndices, type ModelConfig } from '../model/config.js';
import { DeepseekV3 } from '../model/model.js';
import { maxVio, type BalanceMode } from '../objective/balance.js';
import { biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../train/recipe.js';
import { escapeXml, heatmap } from '../train/svg.js';
import { train } from '../train/trainer.js';
import { type Size, validationPass } from './balance.js';
import { experimentConfig, runSize } from './training-setup.js';
import { prepareDomains, proseAndCode, type MultiDomainData } from './domains.js';
import { finalsOf, runsOf, type Arm, type Experiment, type ExperimentResults, type Measured, type RunContext, type RunRecord } from './experiment.js';
import type { Claim } from './verdict.js';

/** As `balance`: configs/train-small.json, 128 steps of 8×128 tokens (~35 s a run on 2 cores; 9 runs). */
const FULL: Size = { config: TRAIN.config, steps: 128, batch: 8, seq: 128, lr: TRAIN.lr, evalEvery: 32, valBatches: 64 };
const QUICK: Size = { config: 'tiny (built in)', steps: 12, batch: 2, seq: 16, lr: 5e-3, evalEvery: 4, valBatches: 16 };
const ALPHA = 0.01;

const ARMS: Array<{ name: string; label: string; balance: BalanceMode; alpha: number; gamma: 'recipe' | 0; scope: string }> = [
  { name: 'seq-aux', label: `sequence-wise auxiliary loss α = ${ALPHA}`, balance: 'aux-free', alpha: ALPHA, gamma: 0, scope: 'sequence' },
  { name: 'batch-aux', label: `batch-wise auxiliary loss α = ${ALPHA}`, balance: 'aux-loss', alpha: ALPHA, gamma: 0, scope: 'batch' },
  { name: 'aux-free', label: 'auxiliary-loss-free (sign bias update)', balance: 'aux-free', alpha: 0, gamma: 'recipe', scope: 'none (bias)' },
];

const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Relative load (load / mean load) of each expert. */
export function relativeLoad(load: ArrayLike<number>): number[] {
  const m = mean(Array.from(load));
  return Array.from(load, (x) => (m > 0 ? x / m : NaN));
}

/**
 * Mutual information I(D; E) in bits between the domain (equal weights) and the routed expert,
 * from per-domain expert loads [domain][expert]: Σ_d p(d) Σ_e p(e|d) log2(p(e|d) / p(e)) with
 * p(e) = Σ_d p(d) p(e|d). 0 when every domain routes alike; log2(#domains) when they share none.
 */
export function domainExpertInformation(loads: readonly (ArrayLike<number>)[]): number {
  const D = loads.length;
  if (D === 0) return NaN;
  const cond = loads.map((l) => {
    const s = Array.from(l).reduce((a, b) => a + b, 0);
    return Array.from(l, (x) => (s > 0 ? x / s : NaN));
  });
  const E = cond[0]!.length;
  let mi = 0;
  for (let e = 0; e < E; e++) {
    const pe = mean(cond.map((c) => c[e]!));
    for (const c of cond) if (c[e]! > 0) mi += (c[e]! / D) * Math.log2(c[e]! / pe);
  }
  return mi;
}

/** Per domain: LM loss and the expert loads of every MoE layer of the main model over its validation split. */
function measureDomains(checkpoint: string, cfg: ModelConfig, d: MultiDomainData, z: Size): Array<{ lm: number; rows: number; loads: Map<number, Float64Array> }> {
  const model = DeepseekV3.load(checkpoint, { weights: 'f32' });
  return d.domains.map((dom) => validationPass(model, cfg, dom.val, z));
}

function runArm(arm: Arm, ctx: RunContext, cfg: ModelConfig, data: MultiDomainData, z: Size): Measured {
  const layers = moeLayerIndices(cfg, false);
  const trainLm: number[] = [];
  const vioBatch: number[] = [];
  const valX: number[] = [];
  const valY: number[] = [];
  const r = train({
    model: cfg, prepared: data.prepared, steps: z.steps, batch: z.batch, seq: z.seq, lr: z.lr, warmup: warmupFor(z.steps), seed: ctx.seed,
    balance: arm.settings['balance'] as BalanceMode, balanceAlpha: arm.settings['alpha'] as number, bias: { gamma: arm.settings['bias_gamma'] as number, mode: 'sign' },
    mtpLambda: PAPER.mtpLambda, mtpLambdaLate: PAPER.mtpLambdaLate, mtpSwitchStep: mtpSwitchStepFor(z.steps),
    evalEvery: z.evalEvery, evalBatches: 4, ckptEvery: 0, keepCheckpoints: 1, out: ctx.dir, quiet: true,
    onRecord: (rec) => {
      if (rec.type === 'eval') (valX.push(rec.step), valY.push(rec.val_lm));
      if (rec.type !== 'step') return;
      trainLm.push(rec.lm);
      vioBatch.push(mean(layers.map((l) => rec.layers[String(l)]?.maxvio ?? NaN)));
      ctx.tick(rec.step);
    },
  });
  const finals: Record<string, number> = { val_lm: NaN, specialisation: NaN, maxvio_global: NaN, maxvio_batch: mean(vioBatch), train_lm: mean(trainLm.slice(-Math.max(1, Math.round(z.steps / 10)))) };
  const relLoad: Record<string, number[][]> = {};
  const spec: Record<string, number> = {};
  if (r.status === 'done' && r.lastCheckpoint) {
    const doms = measureDomains(r.lastCheckpoint, cfg, data, z);
    const rows = doms.reduce((n, x) => n + x.rows, 0);
    finals['val_lm'] = doms.reduce((s, x) => s + x.lm * x.rows, 0) / rows;
    doms.forEach((x, i) => (finals[`val_lm_${i}`] = x.lm));
    for (const l of layers) {
      const per = doms.map((x) => x.loads.get(l)!);
      relLoad[String(l)] = per.map((x) => relativeLoad(x).map((v) => Number(v.toPrecision(4))));
      spec[String(l)] = domainExpertInformation(per);
    }
    finals['specialisation'] = mean(Object.values(spec));
    finals['maxvio_global'] = mean(layers.map((l) => maxVio(doms.reduce((acc, x) => acc.map((v, e) => v + x.loads.get(l)![e]!), new Array<number>(cfg.n_routed_experts).fill(0)))));
  }
  for (const f of fs.readdirSync(ctx.dir)) if (f.startsWith('checkpoint-')) fs.rmSync(path.join(ctx.dir, f), { recursive: true, force: true });
  const xs = trainLm.map((_, i) => i + 1);
  return {
    finals,
    curves: { train_lm: { x: xs, y: trainLm }, val_lm: { x: valX, y: valY }, maxvio_batch: { x: xs, y: vioBatch } },
    extra: { status: r.status, rel_load: relLoad, specialisation_by_layer: spec, domains: data.domains.map((x) => x.name) },
  };
}

function claims(runs: readonly RunRecord[]): Claim[] {
  const v = (arm: string, key: string): number[] => finalsOf(runs, arm, key);
  const spec = (a: string, label: string, paper: string): Claim => ({
    paper, direction: 'higher',
    a: { label: `${label} specialisation I(domain; expert)`, values: v(a, 'specialisation') },
    b: { label: 'sequence-wise aux loss specialisation', values: v('seq-aux', 'specialisation') },
  });
  const lm = (a: string, label: string, paper: string): Claim => ({
    paper, direction: 'lower',
    a: { label: `${label} validation LM loss`, values: v(a, 'val_lm') },
    b: { label: 'sequence-wise aux loss validation LM loss', values: v('seq-aux', 'val_lm') },
  });
  return [
    spec('aux-free', 'aux-free', 'Figure 9 (§4.5.3): the aux-loss-free model shows greater expert specialisation patterns across domains than the sequence-wise auxiliary-loss model.'),
    spec('batch-aux', 'batch-wise aux loss', '§4.5.3: batch-wise balancing, being more flexible than a sequence-wise constraint, lets experts specialise by domain.'),
    lm('aux-free', 'aux-free', '§4.5.3 (1B MoE): validation loss 2.253 aux-loss-free vs 2.258 with the sequence-wise auxiliary loss.'),
    lm('batch-aux', 'batch-wise aux loss', '§4.5.3 (1B MoE): validation loss 2.253 with the batch-wise auxiliary loss vs 2.258 sequence-wise.'),
  ];
}

/** Figure 9's heatmap of one run: rows (layer, domain), columns experts, relative load. */
function loadHeatmap(r: RunRecord, label: string, width = 640): string {
  const rel = (r.extra?.['rel_load'] as Record<string, number[][]> | undefined) ?? {};
  const doms = (r.extra?.['domains'] as string[] | undefined) ?? [];
  const short = doms.map((d) => d.split(' ')[0] ?? d);
  const rows: number[][] = [];
  const names: string[] = [];
  for (const [l, per] of Object.entries(rel)) per.forEach((x, i) => (rows.push(x), names.push(`L${l} ${short[i] ?? i}`)));
  const spec = r.finals['specialisation'];
  return heatmap({
    title: `${label} (seed ${r.seed}): relative expert load by domain; I(domain; expert) ${Number.isFinite(spec) ? spec!.toFixed(3) : '–'} bits`,
    values: rows, rowLabel: (i) => names[i] ?? '', colLabel: (e) => `expert ${e}`, colTick: (e) => String(e),
    center: 1, halfRange: 1, width, cellHeight: 14,
  });
}

function extraHtml(runs: readonly RunRecord[], arms: readonly Arm[]): string {
  const parts = ['<h2>Relative expert load per domain (Figure 9; load / mean load over the domain\'s validation split: white 1, red ≥ 2, blue 0)</h2><div class="row">'];
  for (const a of arms) {
    const r = runsOf(runs, a.name)[0];
    if (r) parts.push(loadHeatmap(r, a.label, 420));
  }
  parts.push('</div>');
  const doms = (runs[0]?.extra?.['domains'] as string[] | undefined) ?? [];
  const rows = arms.map((a) => {
    const m = (k: string): string => mean(finalsOf(runs, a.name, k)).toFixed(4);
    return `<tr><th>${escapeXml(a.label)}</th>${doms.map((_, i) => `<td>${m(`val_lm_${i}`)}</td>`).join('')}</tr>`;
  });
  parts.push(`<h2>Validation LM loss per domain (mean over seeds)</h2><table><tr><th>arm</th>${doms.map((d) => `<th>${escapeXml(d)}</th>`).join('')}</tr>${rows.join('')}</table>`);
  return parts.join('');
}

/** The key chart: the three arms' heatmaps (first seed) stacked in one SVG. */
function keySvg(res: ExperimentResults): string {
  const charts = res.arms.flatMap((a) => {
    const r = runsOf(res.runs, a.name)[0];
    return r ? [loadHeatmap(r, a.label, 760)] : [];
  });
  let y = 0;
  const placed = charts.map((c) => {
    const h = Number(/height="(\d+(?:\.\d+)?)"/.exec(c)?.[1] ?? 300);
    const s = c.replace('<svg ', `<svg y="${y}" `);
    y += h;
    return s;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="760" height="${Math.max(y, 20)}" viewBox="0 0 760 ${Math.max(y, 20)}" font-family="sans-serif" font-size="11">${placed.join('')}</svg>`;
}

export const balanceScopeExperiment: Experiment = {
  name: 'balance-scope',
  summary: 'sequence-wise vs batch-wise auxiliary loss vs aux-loss-free on prose + code: expert specialisation by domain, LM loss',
  source: 'DeepSeek-V3 report §4.5.3 (Figure 9; 1B validation losses 2.258 / 2.253 / 2.253); balance losses eqs. 17–20.',
  plan(size) {
    const z = runSize(size, QUICK, FULL);
    const cfg = experimentConfig(size.quick, z.config);
    let data: MultiDomainData | null = null;
    const corpora = proseAndCode(size.quick);
    const gamma = biasGammaForLr(z.lr);
    return {
      arms: ARMS.map((a) => ({ name: a.name, label: a.label, settings: { balance: a.balance, alpha: a.alpha, bias_gamma: a.gamma === 'recipe' ? gamma : 0, scope: a.scope } })),
      steps: z.steps,
      settings: {
        ...z, model: size.quick ? 'tiny' : z.config, mtp_lambda: PAPER.mtpLambda, warmup: warmupFor(z.steps),
        domains: corpora.map((c) => ({ name: c.name, documents: c.documents.length, chars: c.documents.reduce((n, d) => n + d.length, 0) })),
      },
      run: (arm, ctx) => runArm(arm, ctx, cfg, (data ??= prepareDomains(corpora, { vocabSize: cfg.vocab_size, seqLen: z.seq, ...(size.quick ? { cacheDir: null } : {}) })), z),
    };
  },
  metrics: {
    specialisation: 'I(domain; expert), bits', val_lm: 'validation LM loss (both domains)', val_lm_0: 'val LM loss, prose', val_lm_1: 'val LM loss, code',
    maxvio_global: 'MaxVio_global (validation)', maxvio_batch: 'MaxVio_batch (mean over steps)',
  },
  curves: {
    train_lm: { title: 'Train LM loss', yLabel: 'nats' },
    val_lm: { title: 'Validation LM loss (both domains)', yLabel: 'nats' },
    maxvio_batch: { title: 'MaxVio_batch (mean over MoE layers)', yLabel: 'MaxVio' },
  },
  claims: (runs) => claims(runs),
  extraHtml,
  keySvg,
};
