/**
 * A pipeline timeline (Gantt) chart as a self-contained SVG, in the style of the training
 * report's charts (train/svg.ts): panels of one row per rank, each op a box from its start to its
 * end (DeepSeek-V3 report Figure 5's notation: F forward, B full backward, b input backward,
 * W weight backward, F&B an overlapped pair; a trailing ' marks chunk 1), idle time blank.
 * Used by `dsv3 experiment dualpipe` to put a measured step beside the simulator's (DUALPIPE.md §10).
 */
import { escapeXml, fmtNum, niceTicks } from '../train/svg.js';

/** [start, end, label] in the panel's unit, relative to the step's start. */
export type TimelineBox = readonly [number, number, string];

export interface TimelinePanel {
  title: string;
  /** ranks[r]: the ops of rank r. */
  ranks: readonly (readonly TimelineBox[])[];
}

export interface TimelineChartOptions {
  title: string;
  panels: readonly TimelinePanel[];
  /** Axis label ("ms"). */
  unit: string;
  width?: number;
  /** Common x range of every panel (default: the longest panel). */
  xMax?: number;
}

/** Fill of an op by kind: F blue, B green, b light green, W orange, F&B purple. */
export function opColor(label: string): string {
  if (label.includes('&')) return '#9467bd';
  switch (label[0]) {
    case 'F':
      return '#6baed6';
    case 'B':
      return '#2ca02c';
    case 'b':
      return '#98df8a';
    case 'W':
      return '#ff9f40';
    default:
      return '#aaa';
  }
}

/** One SVG: the panels stacked, all on the same time axis, with a legend of the op kinds. */
export function timelineChart(o: TimelineChartOptions): string {
  const W = o.width ?? 900;
  const m = { l: 64, r: 16 };
  const rowH = 18;
  const pw = W - m.l - m.r;
  const xMax = o.xMax ?? Math.max(1e-9, ...o.panels.flatMap((p) => p.ranks.flatMap((r) => r.map((b) => b[1]))));
  const sx = (t: number): number => m.l + (Math.max(0, t) / xMax) * pw;
  const ticks = niceTicks(0, xMax, 8).filter((t) => t >= 0 && t <= xMax * 1.0001);
  const parts: string[] = [];
  let y = 22;
  parts.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(o.title)}</text>`);
  // legend
  const kinds: Array<[string, string]> = [['F', 'forward'], ['B', 'backward (full)'], ['b', 'input backward'], ['W', 'weight backward'], ['F&B', 'overlapped pair']];
  let lx = m.l;
  y += 6;
  for (const [k, name] of kinds) {
    parts.push(`<rect x="${lx}" y="${y}" width="12" height="10" fill="${opColor(k)}"/><text x="${lx + 16}" y="${y + 9}">${escapeXml(`${k} ${name}`)}</text>`);
    lx += 34 + 6 * (k.length + name.length);
  }
  y += 18;
  for (const p of o.panels) {
    parts.push(`<text x="${m.l}" y="${y + 10}" font-weight="bold">${escapeXml(p.title)}</text>`);
    y += 16;
    const top = y;
    p.ranks.forEach((ops, r) => {
      parts.push(`<text x="${m.l - 4}" y="${y + rowH / 2}" text-anchor="end" dominant-baseline="middle">rank ${r}</text>`);
      parts.push(`<rect x="${m.l}" y="${y}" width="${pw}" height="${rowH - 2}" fill="#f7f7f7"/>`);
      for (const [a, b, label] of ops) {
        const x0 = sx(a);
        const w = Math.max(0.5, sx(b) - x0);
        parts.push(`<rect x="${x0.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${rowH - 2}" fill="${opColor(label)}" stroke="#fff" stroke-width="0.5"><title>${escapeXml(`rank ${r} ${label}: ${fmtNum(a)}–${fmtNum(b)} ${o.unit}`)}</title></rect>`);
        if (w >= 6.5 * label.length + 2) parts.push(`<text x="${(x0 + w / 2).toFixed(2)}" y="${y + rowH / 2}" text-anchor="middle" dominant-baseline="middle" font-size="10">${escapeXml(label)}</text>`);
      }
      y += rowH;
    });
    for (const t of ticks) parts.push(`<line x1="${sx(t).toFixed(2)}" x2="${sx(t).toFixed(2)}" y1="${top}" y2="${y}" stroke="#000" stroke-opacity="0.12"/>`);
    y += 4;
  }
  parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#888"/>`);
  for (const t of ticks) parts.push(`<text x="${sx(t).toFixed(2)}" y="${y + 13}" text-anchor="middle">${escapeXml(fmtNum(t))}</text>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${y + 28}" text-anchor="middle">${escapeXml(o.unit)}</text>`);
  const H = y + 36;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">${parts.join('')}</svg>`;
}
