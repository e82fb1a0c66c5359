// A chi-square goodness-of-fit check for the samplers' distribution tests: `got` holds counts of N
// draws, `want` the exact probabilities; tokens are grouped, by decreasing probability, into bins of
// about equal expected count (≈ N/10 each, so 5–10 bins), and the statistic must stay below 35
// (df <= 9: P(chi2 > 35) < 1e-4).
import assert from 'node:assert/strict';

export function assertChiSquareFit(want: Float64Array, got: Float64Array, N: number): void {
  const order = Array.from({ length: want.length }, (_, i) => i).sort((a, b) => want[b]! - want[a]!);
  const bins: Array<[number, number]> = [];
  let cur: [number, number] = [0, 0];
  for (const t of order) {
    cur = [cur[0] + want[t]! * N, cur[1] + got[t]!];
    if (cur[0] >= N / 10) {
      bins.push(cur);
      cur = [0, 0];
    }
  }
  if (bins.length > 0) bins[bins.length - 1] = [bins[bins.length - 1]![0] + cur[0], bins[bins.length - 1]![1] + cur[1]];
  const chi2 = bins.reduce((x, [e, g]) => x + ((g - e) * (g - e)) / e, 0);
  assert.ok(bins.length >= 5 && bins.length <= 10, `${bins.length} bins`);
  assert.ok(chi2 < 35, `chi-square ${chi2.toFixed(1)} over ${bins.length} bins: ${JSON.stringify(bins)}`);
}
