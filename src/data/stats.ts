/** Order statistics of measurements (benchmarks, reports); non-finite values are ignored. */

/** The median of the finite values of xs (the mean of the middle two for an even count; NaN if none). */
export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** The q-quantile (0..1) of the finite values of xs, interpolated between neighbours (NaN if none). */
export function quantile(xs: readonly number[], q: number): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const at = q * (s.length - 1);
  const lo = Math.floor(at);
  return lo + 1 < s.length ? s[lo]! + (s[lo + 1]! - s[lo]!) * (at - lo) : s[lo]!;
}
