/**
 * DIR/index.html of an experiment: one self-contained page (inline SVG from the training
 * report's charts, inline CSS, no scripts): the verdicts with the paper's claim next to what
 * we measured, a table of mean ± sd per arm, the curves of every arm with a band over the seeds
 * (min..max), and the experiment's own figures.
 */
import { DsvError } from '../errors.js';
import { escapeXml, fmtNum, lineChart, paletteColor } from '../train/svg.js';
import { runsOf, type Experiment, type ExperimentResults } from './experiment.js';

const COLORS: Record<string, string> = { reproduced: '#2ca02c', 'not reproduced': '#d62728', inconclusive: '#ff7f0e' };

/** Mean and min..max over the seeds, point by point (the x of the first run). */
function band(curves: Array<{ x: number[]; y: number[] }>): { xs: number[]; mean: number[]; lo: number[]; hi: number[] } {
  const xs = curves[0]?.x ?? [];
  const col = (i: number): number[] => curves.map((c) => c.y[i] ?? NaN).filter(Number.isFinite);
  const mean = xs.map((_, i) => {
    const v = col(i);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  });
  return { xs, mean, lo: xs.map((_, i) => Math.min(...col(i))), hi: xs.map((_, i) => Math.max(...col(i))) };
}

/** The chart of curve `key` of every arm: the mean over seeds with a min..max band. */
export function curveChart(exp: Experiment, r: ExperimentResults, key: string): string {
  const c = exp.curves[key];
  if (!c) throw new DsvError(`experiment ${exp.name} has no curve '${key}' (${Object.keys(exp.curves).join(', ')})`);
  return lineChart({
    title: `${c.title} (mean, band: min..max over seeds)`,
    xLabel: c.xLabel ?? 'step',
    yLabel: c.yLabel,
    ...(c.logY ? { logY: true } : {}),
    // arms without this curve (an experiment's non-training arms) are left out of the chart
    series: r.arms.filter((a) => r.runs.some((x) => x.arm === a.name && x.curves[key])).map((a, i) => {
      const b = band(runsOf(r.runs, a.name).map((x) => x.curves[key]).filter((x): x is { x: number[]; y: number[] } => x !== undefined));
      return { name: a.label, xs: b.xs, ys: b.mean, band: { lo: b.lo, hi: b.hi }, color: paletteColor(i) };
    }),
  });
}

/**
 * The experiment's key chart as a standalone SVG file (DIR/key.svg, `dsv3 experiment NAME --svg
 * FILE`): `exp.keySvg` when it has one, else the chart of `exp.keyCurve` (default: the first
 * curve), with a caption line naming the run (quick or full, seeds, commit, date).
 */
export function keySvg(exp: Experiment, r: ExperimentResults): string {
  const body = exp.keySvg ? exp.keySvg(r) : curveChart(exp, r, exp.keyCurve ?? Object.keys(exp.curves)[0] ?? '');
  const caption = `dsv3 experiment ${r.experiment}${r.quick ? ' --quick (a tiny size, not a result)' : ''}: ${r.seeds} seed(s) from ${r.first_seed ?? 0}, ${r.steps} steps, commit ${(r.commit ?? 'unknown').slice(0, 7)}, ${r.date.slice(0, 16).replace('T', ' ')} UTC, ${r.machine.cpu}`;
  // the chart inside one outer SVG with the caption beneath it
  const m = /^<svg [^>]*width="(\d+(?:\.\d+)?)" height="(\d+(?:\.\d+)?)"/.exec(body);
  const w = m ? Number(m[1]) : 800;
  const h = m ? Number(m[2]) : 400;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h + 22}" viewBox="0 0 ${w} ${h + 22}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#fff"/>
${body}
<text x="6" y="${h + 15}" fill="${r.quick ? '#d62728' : '#555'}">${escapeXml(caption)}</text>
</svg>
`;
}

export function buildExperimentHtml(exp: Experiment, r: ExperimentResults): string {
  const verdicts = r.verdicts
    .map((v) => `<div class="v"><span class="badge" style="background:${COLORS[v.outcome]}">${escapeXml(v.outcome)}</span>
<p><b>The paper:</b> ${escapeXml(v.paper)}</p><p><b>We measured:</b> ${escapeXml(v.measured)}</p></div>`)
    .join('\n');
  const cols = Object.entries(exp.metrics);
  const rows = r.arms
    .map((a) => {
      const s = r.summary_by_arm[a.name] ?? {};
      const cells = cols.map(([k]) => {
        const st = s[k];
        return `<td>${st && st.n ? `${fmtNum(st.mean)} ± ${fmtNum(st.sd)}` : '–'}</td>`;
      });
      return `<tr><th>${escapeXml(a.label)}</th><td>${Math.max(0, ...cols.map(([k]) => s[k]?.n ?? 0))}</td>${cells.join('')}</tr>`;
    })
    .join('');
  const table = `<table><tr><th>arm</th><th>seeds</th>${cols.map(([, l]) => `<th>${escapeXml(l)}</th>`).join('')}</tr>${rows}</table>`;
  const charts = Object.keys(exp.curves).map((key) => curveChart(exp, r, key)).join('');
  const facts: Array<[string, string]> = [
    ['command', r.command],
    ['commit', r.commit ?? 'unknown'],
    ['date', r.date],
    ['machine', `${r.machine.cpu} (${r.machine.cores} cores), ISA ${r.machine.isa}, ${r.machine.threads} threads, ${r.machine.platform}, Node ${r.machine.node}`],
    ['seeds × arms', `${r.seeds} × ${r.arms.length}${r.quick ? ' (--quick: a tiny size, not a result)' : ''}`],
    ['steps per run', String(r.steps)],
    ['settings', JSON.stringify(r.settings)],
    ...r.arms.map((a): [string, string] => [`arm ${a.name}`, JSON.stringify(a.settings)]),
  ];
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dsv3 experiment ${escapeXml(r.experiment)}</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1340px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;font-size:13px;vertical-align:top}
.row{display:flex;flex-wrap:wrap;gap:12px}.v{margin:10px 0;padding:6px 12px;border-left:4px solid #ddd}.v p{margin:4px 0}
.badge{color:#fff;padding:2px 8px;border-radius:3px;font-weight:bold}
</style></head><body>
<h1>dsv3 experiment ${escapeXml(r.experiment)}: ${escapeXml(r.summary)}</h1>
<p>${escapeXml(r.source)}</p>
<h2>Verdict</h2>
<p>Rule: a claim is <i>reproduced</i> when the difference goes the claimed way, <i>not reproduced</i> when it goes the other way,
and <i>inconclusive</i> when it is smaller than twice the pooled standard deviation of the seeds.</p>
${verdicts}
<h2>Results (mean ± sd over seeds)</h2>
${table}
<h2>Curves</h2><div class="row">${charts}</div>
${exp.extraHtml?.(r.runs, r.arms) ?? ''}
<h2>Provenance</h2>
<table>${facts.map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td>${escapeXml(v)}</td></tr>`).join('')}</table>
</body></html>
`;
}
