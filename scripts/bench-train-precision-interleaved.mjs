// Step-by-step interleaved training-step timing of several builds and precisions in ONE process, for a shared machine:
//   node scripts/bench-train-precision-interleaved.mjs STEPS LABEL=ROOT:PREC[,PREC] ...
// ROOT: a built checkout of dsv3 (dist/ and build/Release/dsv3.node); PREC: fp32 | bf16 | fp8 (fp8 with BF16 AdamW
// moments, as `bench train --precision fp8`). configs/bench-small.json, 8x256 tokens, bench train's step; one step of
// each trainer in turn (the order rotating every round) after a warm-up step. Prints JSON: per trainer the median wall and CPU (process.cpuUsage, all
// threads) ms per step and the last loss; for each non-bf16 trainer the medians of its per-step CPU and wall ratios
// against the same ROOT's bf16 trainer, and for the trainers of every later LABEL the medians of their per-step
// ratios against the first LABEL's trainer of the same precision (e.g. base=../main:fp32,bf16,fp8 new=.:fp32,bf16,fp8:
// new vs base per precision, and fp8 vs bf16 within each build). The one step-timing script of the repository
// (it replaced bench-train-ab.mjs, bench-train-bf16-cpu.mjs and bench-train-interleaved.mjs).
import { benchSmallTrainer, loadBuild } from './lib/bench-small-trainer.mjs';
const steps = Number(process.argv[2]);
if (!(steps >= 1) || process.argv.length < 4) {
  console.error('usage: node scripts/bench-train-precision-interleaved.mjs STEPS LABEL=ROOT:PREC[,PREC] ... (labels without "-")');
  process.exit(2);
}
const runners = [];
for (const spec of process.argv.slice(3)) {
  const [label, rest] = spec.split('=');
  const [rootRel, precs] = rest.split(':');
  const build = await loadBuild(rootRel);
  for (const prec of precs.split(',')) {
    const trainer = benchSmallTrainer(build, prec);
    const ms = [], cpu = [];
    let loss = NaN;
    const step = () => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      loss = trainer.step();
      ms.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    };
    runners.push({ name: `${label}-${prec}`, step, ms, cpu, loss: () => loss });
  }
}
for (const r of runners) r.step();
for (const r of runners) { r.ms.length = 0; r.cpu.length = 0; }
// the order rotates every round (round s starts with trainer s mod n): a step pays for part of the
// previous step's background work (V8's concurrent GC and JIT threads count in process.cpuUsage),
// so a fixed order made whichever trainer ran second look several % slower (2026-12-08 A/B: the
// `other` CPU of profile-kernels-cpu followed the position, not the precision)
for (let s = 0; s < steps; s++) for (let j = 0; j < runners.length; j++) runners[(s + j) % runners.length].step();
const med = (a) => { const b = [...a].sort((x, y) => x - y); const n = b.length; return n % 2 ? b[(n - 1) / 2] : (b[n / 2 - 1] + b[n / 2]) / 2; };
const out = {};
for (const r of runners) out[r.name] = { wall_med: Math.round(med(r.ms)), wall_min: Math.round(Math.min(...r.ms)), cpu_med: Math.round(med(r.cpu)), loss_last: +r.loss().toFixed(5) };
// ratios against the bf16 trainer of the same label
for (const r of runners) {
  const base = runners.find((q) => q.name.split('-')[0] === r.name.split('-')[0] && q.name.endsWith('-bf16'));
  if (base && base !== r) {
    out[r.name].cpu_ratio_vs_bf16 = +med(r.cpu.map((c, k) => c / base.cpu[k])).toFixed(3);
    out[r.name].wall_ratio_vs_bf16 = +med(r.ms.map((c, k) => c / base.ms[k])).toFixed(3);
  }
}
// ratios against the first label's trainer of the same precision (base vs new builds)
const first = runners[0]?.name.split('-')[0];
for (const r of runners) {
  const [label, prec] = r.name.split('-');
  const base = runners.find((q) => q.name === `${first}-${prec}`);
  if (base && label !== first) {
    out[r.name][`cpu_ratio_vs_${first}`] = +med(r.cpu.map((c, k) => c / base.cpu[k])).toFixed(3);
    out[r.name][`wall_ratio_vs_${first}`] = +med(r.ms.map((c, k) => c / base.ms[k])).toFixed(3);
  }
}
console.log(JSON.stringify({ threads: process.env.DSV3_THREADS ?? 'all', steps, ...out }, null, 1));
