/**
 * The verdict of an experiment, computed from the numbers: a claim "A's metric is lower than
 * B's" (or higher) is *reproduced* when the measured difference goes the claimed way, *not
 * reproduced* when it goes the other way, and *inconclusive* when it is smaller than twice the
 * pooled standard deviation of the seeds (one seed in all: no spread to judge by, inconclusive).
 */

export type Outcome = 'reproduced' | 'not reproduced' | 'inconclusive';

export interface Stats {
  mean: number;
  /** Sample standard deviation (n − 1); 0 for one value. */
  sd: number;
  min: number;
  max: number;
  n: number;
}

export function stats(xs: readonly number[]): Stats {
  const v = xs.filter(Number.isFinite);
  const n = v.length;
  if (n === 0) return { mean: NaN, sd: NaN, min: NaN, max: NaN, n: 0 };
  const mean = v.reduce((a, b) => a + b, 0) / n;
  const ss = v.reduce((a, b) => a + (b - mean) ** 2, 0);
  return { mean, sd: n > 1 ? Math.sqrt(ss / (n - 1)) : 0, min: Math.min(...v), max: Math.max(...v), n };
}

/** Pooled standard deviation of two samples: √(((na−1)·sa² + (nb−1)·sb²) / (na + nb − 2)); NaN without degrees of freedom. */
export function pooledSd(a: Stats, b: Stats): number {
  const dof = a.n + b.n - 2;
  if (dof <= 0) return NaN;
  return Math.sqrt(((a.n - 1) * a.sd ** 2 + (b.n - 1) * b.sd ** 2) / dof);
}

/** A claim about two measured samples (e.g. one metric of two arms over the seeds). */
export interface Claim {
  /** One sentence: what the paper claims, with its table or figure. */
  paper: string;
  /** The two sides and their names ("aux-free val LM loss"). */
  a: { label: string; values: readonly number[] };
  b: { label: string; values: readonly number[] };
  /** 'lower': the paper claims mean(a) < mean(b)·(1 + margin); 'higher': mean(a) > mean(b)·(1 + margin). */
  direction: 'lower' | 'higher';
  /** Relative slack on b (default 0): "a at most 10% above b" is lower with margin 0.1. */
  margin?: number;
}

export interface Verdict {
  paper: string;
  outcome: Outcome;
  /** One sentence of what we measured. */
  measured: string;
  a: Stats & { label: string };
  b: Stats & { label: string };
  /** Signed difference in the claimed direction (positive: as claimed) and the threshold 2·pooled sd. */
  difference: number;
  threshold: number;
}

const fmt = (x: number): string => (!Number.isFinite(x) ? String(x) : Math.abs(x) >= 100 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toPrecision(4));

/** The verdict of `c` by the rule of the module comment. */
export function verdict(c: Claim): Verdict {
  const a = stats(c.a.values);
  const b = stats(c.b.values);
  const target = b.mean * (1 + (c.margin ?? 0));
  const difference = c.direction === 'lower' ? target - a.mean : a.mean - target;
  const pooled = pooledSd(a, b);
  const threshold = Number.isFinite(pooled) ? 2 * pooled : Infinity; // one seed in all: no spread to judge by
  const outcome: Outcome = !Number.isFinite(difference) || !(Math.abs(difference) >= threshold) || difference === 0 ? 'inconclusive' : difference > 0 ? 'reproduced' : 'not reproduced';
  const rel = c.margin ? ` (${c.direction === 'lower' ? 'at most' : 'more than'} ${fmt(1 + c.margin)}× of it)` : '';
  const measured =
    `${c.a.label} ${fmt(a.mean)} ± ${fmt(a.sd)} vs ${c.b.label} ${fmt(b.mean)} ± ${fmt(b.sd)}${rel} ` +
    `(mean ± sd over ${a.n} and ${b.n} seeds): difference ${fmt(Math.abs(difference))} ${difference >= 0 ? 'in' : 'against'} the claimed direction, ` +
    `${Number.isFinite(threshold) ? `2 × pooled sd = ${fmt(threshold)}` : 'no spread to judge by'}.`;
  return { paper: c.paper, outcome, measured, a: { ...a, label: c.a.label }, b: { ...b, label: c.b.label }, difference, threshold };
}
