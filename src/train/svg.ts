/**
 * Hand-written inline SVG charts for the training report (no external scripts or styles):
 * a multi-series line chart and a heatmap. Output is a self-contained `<svg>` string.
 */

export interface Series {
  name: string;
  xs: readonly number[];
  ys: readonly number[];
  color?: string;
  /** Draw points only (e.g. sparse validation losses). */
  markers?: boolean;
  /** A shaded band lo[i]..hi[i] around the line (e.g. the spread over seeds). */
  band?: { lo: readonly number[]; hi: readonly number[] };
}

export interface LineChartOptions {
  title: string;
  series: readonly Series[];
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  logY?: boolean;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function paletteColor(i: number): string {
  if (i < PALETTE.length) return PALETTE[i]!;
  return `hsl(${(i * 137.508) % 360}, 60%, 45%)`;
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function fmtNum(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(4)).toString();
}

/** A line chart with axes, ticks, grid and a legend. Non-finite points are skipped. */
export function lineChart(o: LineChartOptions): string {
  const W = o.width ?? 640;
  const shown = o.series.length <= 16;
  // legend columns as wide as the longest name (~6 px a character at the 11 px font)
  const colW = Math.max(130, 26 + 6 * Math.max(0, ...o.series.map((s) => s.name.length)));
  const perRow = Math.max(1, Math.min(4, Math.floor((W - 88) / colW)));
  const legendRows = shown ? Math.ceil(o.series.length / perRow) : 0;
  const H = (o.height ?? 300) + legendRows * 14;
  const m = { l: 64, r: 16, t: 28 + legendRows * 14 + (legendRows ? 4 : 0), b: 40 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const tf = (y: number): number => (o.logY ? Math.log10(y) : y);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of o.series) {
    s.xs.forEach((x, i) => {
      for (const y of s.band ? [s.ys[i]!, s.band.lo[i]!, s.band.hi[i]!] : [s.ys[i]!]) {
        if (!Number.isFinite(x) || !Number.isFinite(y) || (o.logY && y <= 0)) continue;
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, tf(y));
        y1 = Math.max(y1, tf(y));
      }
    });
  }
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(o.title)}</text>`);
  if (!Number.isFinite(x0)) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no data</text></svg>`);
    return parts.join('');
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    const pad = Math.abs(y0) * 0.05 || 1;
    y0 -= pad;
    y1 += pad;
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const sx = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number): number => m.t + ph - ((tf(y) - y0) / (y1 - y0)) * ph;
  const syRaw = (t: number): number => m.t + ph - ((t - y0) / (y1 - y0)) * ph;
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="#fff" stroke="#ccc"/>`);
  for (const t of niceTicks(y0, y1)) {
    const y = syRaw(t).toFixed(1);
    const label = o.logY ? fmtNum(10 ** t) : fmtNum(t);
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${m.l - 4}" y="${y}" text-anchor="end" dominant-baseline="middle">${label}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + ph}" stroke="#f3f3f3"/><text x="${x}" y="${m.t + ph + 14}" text-anchor="middle">${fmtNum(t)}</text>`);
  }
  if (o.xLabel) parts.push(`<text x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  if (o.yLabel) parts.push(`<text transform="translate(12 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  o.series.forEach((s, si) => {
    if (!s.band) return;
    const ok = (i: number): boolean => Number.isFinite(s.xs[i]!) && Number.isFinite(s.band!.lo[i]!) && Number.isFinite(s.band!.hi[i]!) && (!o.logY || s.band!.lo[i]! > 0);
    const idx = s.xs.map((_, i) => i).filter(ok);
    const up = idx.map((i) => `${sx(s.xs[i]!).toFixed(1)},${sy(s.band!.hi[i]!).toFixed(1)}`);
    const down = idx.reverse().map((i) => `${sx(s.xs[i]!).toFixed(1)},${sy(s.band!.lo[i]!).toFixed(1)}`);
    if (up.length) parts.push(`<polygon fill="${s.color ?? paletteColor(si)}" fill-opacity="0.2" stroke="none" points="${[...up, ...down].join(' ')}"/>`);
  });
  o.series.forEach((s, si) => {
    const color = s.color ?? paletteColor(si);
    const pts: string[] = [];
    s.xs.forEach((x, i) => {
      const y = s.ys[i]!;
      if (!Number.isFinite(x) || !Number.isFinite(y) || (o.logY && y <= 0)) return;
      pts.push(`${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    });
    if (s.markers) {
      for (const p of pts) {
        const [cx, cy] = p.split(',');
        parts.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${color}"/>`);
      }
    } else if (pts.length) {
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(' ')}"/>`);
    }
  });
  if (shown) {
    o.series.forEach((s, si) => {
      const color = s.color ?? paletteColor(si);
      const col = si % perRow;
      const row = Math.floor(si / perRow);
      const lx = m.l + 8 + col * colW;
      const ly = 32 + row * 14;
      parts.push(`<rect x="${lx}" y="${ly - 5}" width="10" height="10" fill="${color}"/><text x="${lx + 14}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
    });
  }
  parts.push('</svg>');
  return parts.join('');
}

export interface HeatmapOptions {
  title: string;
  /** values[r][c]; r = row (e.g. expert), c = column (e.g. step bucket). */
  values: readonly (readonly number[])[];
  rowLabel: (r: number) => string;
  colLabel: (c: number) => string;
  /** Short axis label of column c (default colLabel). */
  colTick?: (c: number) => string;
  /** Colour scale: value at the centre (white) and the half-range (saturated). */
  center: number;
  halfRange: number;
  width?: number;
  cellHeight?: number;
  legend?: string;
}

/** Diverging blue (below centre) / white / red (above centre) heatmap. */
export function heatmap(o: HeatmapOptions): string {
  const rows = o.values.length;
  const cols = rows ? o.values[0]!.length : 0;
  const W = o.width ?? 640;
  const ch = o.cellHeight ?? Math.max(6, Math.min(18, Math.floor(240 / Math.max(rows, 1))));
  const m = { l: 64, r: 16, t: 28, b: 44 };
  const pw = W - m.l - m.r;
  const H = m.t + rows * ch + m.b;
  const cw = cols ? pw / cols : pw;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(o.title)}</text>`);
  const color = (v: number): string => {
    if (!Number.isFinite(v)) return '#ccc';
    const t = Math.max(-1, Math.min(1, (v - o.center) / (o.halfRange || 1)));
    const k = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${k},${k})` : `rgb(${k},${k},255)`;
  };
  for (let r = 0; r < rows; r++) {
    const y = m.t + r * ch;
    for (let c = 0; c < cols; c++) {
      const v = o.values[r]![c]!;
      parts.push(`<rect x="${(m.l + c * cw).toFixed(2)}" y="${y}" width="${(cw + 0.3).toFixed(2)}" height="${ch}" fill="${color(v)}"><title>${escapeXml(`${o.rowLabel(r)}, ${o.colLabel(c)}: ${fmtNum(v)}`)}</title></rect>`);
    }
    if (ch >= 8 || r % Math.ceil(8 / ch) === 0) {
      parts.push(`<text x="${m.l - 4}" y="${y + ch / 2}" text-anchor="end" dominant-baseline="middle">${escapeXml(o.rowLabel(r))}</text>`);
    }
  }
  const nLabels = Math.min(cols, 6);
  for (let i = 0; i < nLabels; i++) {
    const c = nLabels === 1 ? 0 : Math.round((i * (cols - 1)) / (nLabels - 1));
    const anchor = nLabels > 1 && i === 0 ? 'start' : nLabels > 1 && i === nLabels - 1 ? 'end' : 'middle';
    const x = anchor === 'start' ? m.l : anchor === 'end' ? m.l + pw : m.l + (c + 0.5) * cw;
    parts.push(`<text x="${x.toFixed(1)}" y="${m.t + rows * ch + 14}" text-anchor="${anchor}">${escapeXml((o.colTick ?? o.colLabel)(c))}</text>`);
  }
  if (o.legend) parts.push(`<text x="${m.l}" y="${H - 8}" fill="#555">${escapeXml(o.legend)}</text>`);
  parts.push('</svg>');
  return parts.join('');
}
