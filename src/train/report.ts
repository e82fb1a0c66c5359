/**
 * The training report: one self-contained HTML file (inline SVG, inline CSS, no scripts) built
 * from a run's metrics.jsonl: train / validation / MTP loss curves, learning rate and gradient
 * norm, per-layer expert-load heatmaps over steps, bias trajectories and MaxVio per layer.
 */
import type { EvalRecord, MetricRecord, SkipRecord, StepRecord } from './metrics.js';
import { escapeXml, fmtNum, heatmap, lineChart, paletteColor } from './svg.js';
import { median } from '../data/stats.js';

export interface ReportInfo {
  title: string;
  /** Extra key/value rows for the summary table (config, run directory, ...). */
  facts?: Record<string, string>;
}

/** Smoothing factor for n points: about n/10 points of memory, at most 0.95. */
export function smoothingBeta(n: number): number {
  return Math.max(0, Math.min(0.95, 1 - 10 / Math.max(n, 1)));
}

/** Exponential moving average (for a readable train-loss curve); default β from the length. */
export function smooth(ys: readonly number[], beta = smoothingBeta(ys.length)): number[] {
  const out: number[] = [];
  let acc = NaN;
  let n = 0;
  for (const y of ys) {
    if (!Number.isFinite(y)) {
      out.push(NaN);
      continue;
    }
    n++;
    acc = n === 1 ? y : beta * acc + (1 - beta) * y;
    out.push(acc);
  }
  return out;
}

/** Groups step indices into at most `maxCols` consecutive buckets. */
function buckets(n: number, maxCols: number): [number, number][] {
  const cols = Math.min(n, maxCols);
  const out: [number, number][] = [];
  for (let c = 0; c < cols; c++) out.push([Math.floor((c * n) / cols), Math.floor(((c + 1) * n) / cols)]);
  return out;
}

function layerSection(layer: string, steps: StepRecord[]): string {
  const recs = steps.filter((r) => r.layers?.[layer]);
  if (!recs.length) return '';
  const E = recs[0]!.layers[layer]!.load.length;
  const cols = buckets(recs.length, 160);
  // relative load (load / mean load) per expert, averaged within each bucket of steps
  const values: number[][] = [];
  for (let e = 0; e < E; e++) {
    values.push(
      cols.map(([a, b]) => {
        let s = 0;
        for (let i = a; i < b; i++) {
          const load = recs[i]!.layers[layer]!.load;
          const mean = load.reduce((x, y) => x + y, 0) / E;
          s += mean > 0 ? load[e]! / mean : 1;
        }
        return s / (b - a);
      }),
    );
  }
  const stepOf = (c: number): string => {
    const [a, b] = cols[c]!;
    const s0 = recs[a]!.step;
    const s1 = recs[b - 1]!.step;
    return s0 === s1 ? `step ${s0}` : `steps ${s0}–${s1}`;
  };
  const heat = heatmap({
    title: `Layer ${layer}: expert load / mean load`,
    values,
    rowLabel: (r) => `e${r}`,
    colLabel: stepOf,
    colTick: (c) => `step ${recs[cols[c]![0]]!.step}`,
    center: 1,
    halfRange: 1,
    legend: 'white = balanced (1.0), red = overloaded (≥ 2×), blue = underloaded (0×)',
  });
  const xs = recs.map((r) => r.step);
  const biasSeries = Array.from({ length: E }, (_, e) => ({
    name: `e${e}`,
    xs,
    ys: recs.map((r) => r.layers[layer]!.bias[e] ?? NaN),
    color: paletteColor(e),
  }));
  const bias = lineChart({ title: `Layer ${layer}: bias b_i trajectories`, series: biasSeries, xLabel: 'step', yLabel: 'bias' });
  return `<h3>MoE layer ${escapeXml(layer)}</h3><div class="row">${heat}${bias}</div>`;
}

/** Builds the HTML report from parsed metrics records. */
export function buildReportHtml(records: readonly MetricRecord[], info: ReportInfo): string {
  const steps = records.filter((r): r is StepRecord => r.type === 'step');
  const evals = records.filter((r): r is EvalRecord => r.type === 'eval');
  const skips = records.filter((r): r is SkipRecord => r.type === 'skip');
  const xs = steps.map((r) => r.step);
  const layers = [...new Set(steps.flatMap((r) => Object.keys(r.layers ?? {})))].sort((a, b) => Number(a) - Number(b));

  const best = (xs: number[]): string => (xs.length ? fmtNum(Math.min(...xs)) : '–');
  const facts: Record<string, string> = {
    'optimizer steps': String(steps.length ? steps[steps.length - 1]!.step : 0),
    'final train LM loss': steps.length ? fmtNum(steps[steps.length - 1]!.lm) : '–',
    'best validation LM loss': best(evals.map((e) => e.val_lm)),
    'final train total loss (LM + λ·MTP + balance)': steps.length ? fmtNum(steps[steps.length - 1]!.loss) : '–',
    'best validation total loss (LM + λ·MTP)': best(evals.map((e) => e.val_loss)),
    'median tokens/s': fmtNum(median(steps.map((r) => r.tokens_per_s))),
    'skipped steps (non-finite)': String(skips.length),
    ...info.facts,
  };
  const table = Object.entries(facts)
    .map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td>${escapeXml(v)}</td></tr>`)
    .join('');

  const loss = lineChart({
    title: 'Loss',
    xLabel: 'step',
    yLabel: 'cross-entropy (nats)',
    series: [
      { name: 'train LM (EMA)', xs, ys: smooth(steps.map((r) => r.lm)), color: '#2ca02c' },
      { name: 'train total', xs, ys: steps.map((r) => r.loss), color: '#aec7e8' },
      { name: 'train total (EMA)', xs, ys: smooth(steps.map((r) => r.loss)), color: '#1f77b4' },
      { name: 'MTP CE (mean)', xs, ys: smooth(steps.map((r) => (r.mtp_lambda > 0 ? r.mtp / r.mtp_lambda : NaN))), color: '#ff7f0e' },
      { name: 'validation LM', xs: evals.map((e) => e.step), ys: evals.map((e) => e.val_lm), color: '#d62728', markers: true },
    ],
  });
  const valChart = lineChart({
    title: 'Validation',
    xLabel: 'step',
    series: [
      { name: 'val LM', xs: evals.map((e) => e.step), ys: evals.map((e) => e.val_lm), color: '#d62728' },
      { name: 'val MTP CE', xs: evals.map((e) => e.step), ys: evals.map((e) => e.val_mtp), color: '#ff7f0e' },
    ],
  });
  const lr = lineChart({ title: 'Learning rate', xLabel: 'step', series: [{ name: 'lr', xs, ys: steps.map((r) => r.lr) }] });
  const gn = lineChart({ title: 'Gradient norm (before clipping)', xLabel: 'step', logY: true, series: [{ name: 'grad norm', xs, ys: steps.map((r) => r.grad_norm) }] });
  const bal = lineChart({ title: 'Balance loss', xLabel: 'step', series: [{ name: 'L_Bal', xs, ys: steps.map((r) => r.balance) }] });
  const tps = lineChart({ title: 'Throughput', xLabel: 'step', yLabel: 'tokens/s', series: [{ name: 'tokens/s', xs, ys: steps.map((r) => r.tokens_per_s) }] });
  const maxvio = lineChart({
    title: 'MaxVio per MoE layer ((max load − mean) / mean)',
    xLabel: 'step',
    series: layers.map((l, i) => ({ name: `layer ${l}`, xs, ys: smooth(steps.map((r) => r.layers?.[l]?.maxvio ?? NaN)), color: paletteColor(i) })),
  });
  const skipList = skips.length
    ? `<h2>Skipped steps</h2><ul>${skips.map((s) => `<li>step ${s.step}: ${escapeXml(s.reason)}</li>`).join('')}</ul>`
    : '';

  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeXml(info.title)}</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1340px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px}
table{border-collapse:collapse}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:12px}
</style></head><body>
<h1>${escapeXml(info.title)}</h1>
<table>${table}</table>
<h2>Losses</h2><div class="row">${loss}${valChart}</div>
<h2>Optimisation</h2><div class="row">${lr}${gn}${bal}${tps}</div>
<h2>Load balance</h2><div class="row">${maxvio}</div>
${layers.map((l) => layerSection(l, steps)).join('\n')}
${skipList}
</body></html>
`;
}
