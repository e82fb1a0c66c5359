// Development tool (not part of the package): CPU time per kernel of training steps at several
// precisions, interleaved in ONE process (a step of each precision in turn, after one warm-up
// step each), for a built checkout ROOT: configs/bench-small.json, 8 x 256 tokens, bench train's
// step. Every Kernels call is timed with process.cpuUsage (so run it with DSV3_THREADS=1: the
// pool's other threads would count too). Unlike `bench train`'s kernels_ms (wall time) it stays
// meaningful on a loaded machine.
//   DSV3_THREADS=1 node scripts/profile-kernels-cpu.mjs ROOT STEPS [fp32,bf16,fp8] [detail]
//   (DSV3_ISA=avx2 in front for the AVX2 copy of the kernels)
// stdout: JSON per precision (median and mean CPU ms per step, `other` = CPU outside kernel calls:
// JS, autograd; the last loss; CPU ms per step by kernel). stderr: the precisions side by side,
// kernel ms per step and calls per step, and each precision's CPU per step over the first's.
// `detail` splits the GEMM and FP8 quantiser entries by shape and layout.
import { benchSmallTrainer, loadBuild } from './lib/bench-small-trainer.mjs';
if (!(Number(process.argv[3]) >= 1)) { console.error('usage: DSV3_THREADS=1 node scripts/profile-kernels-cpu.mjs ROOT STEPS [fp32,bf16,fp8] [detail]'); process.exit(2); }
const steps = Number(process.argv[3]);
const precs = (process.argv[4] ?? 'fp32,bf16,fp8').split(','); const detail = process.argv[5] === 'detail';
const build = await loadBuild(process.argv[2]);
const { kernels, useBackend } = build;
const base = kernels();
let acc = null;
/** the entry a call is counted under: the kernel, or (detail) the kernel with its shape */
const entry = (key, args) => {
  if (!detail) return key;
  const T = (t) => (t ? 'T' : 'N');
  const batch = (d) => { let s = 0; for (let i = 0; i < d.length; i += 3) s += d[i]; return `x${d.length / 3} M${s} n${d[1]} k${d[2]}`; };
  if (key === 'fp8Gemm') return `${key} ${args[0]}x${args[1]}x${args[2]} L${args[5]}${args[8]} b${args[9]}`;
  if (key === 'gemmBf16Ab' || key === 'gemmBf16') return `${key} ${T(args[0])}${T(args[1])} ${args[2]}x${args[3]}x${args[4]} b${args[10]}`;
  if (key.startsWith('fp8Quant')) return `${key} ${args[2]}x${args[3]}${args[4] ? ' c' : ''}${args[6] ? ' o' : ''}`;
  if (key === 'fp8GemmBatch') return `${key} ${batch(args[0])} L${args[3]}${args[6]} b${args[7]}`;
  if (key === 'gemmBatchBf16Ab' || key === 'gemmBatchBf16') return `${key} ${T(args[0])}${T(args[1])} ${batch(args[2])} b${args[8]}`;
  return key;
};
const wrapped = { name: base.name };
for (const key of Object.keys(base)) {
  const f = base[key]; if (typeof f !== 'function') continue;
  wrapped[key] = (...args) => {
    if (!acc) return f.apply(base, args);
    const c0 = process.cpuUsage();
    try { return f.apply(base, args); } finally {
      const c = process.cpuUsage(c0); const k = entry(key, args); const e = acc.get(k) ?? [0, 0];
      e[0] += (c.user + c.system) / 1000; e[1]++; acc.set(k, e);
    }
  };
}
useBackend(wrapped);
const R = precs.map((prec) => ({ prec, trainer: benchSmallTrainer(build, prec), k: new Map(), cpu: [], loss: NaN }));
const step = (r, timed) => {
  acc = timed ? r.k : null;
  const c0 = process.cpuUsage();
  r.loss = r.trainer.step();
  const c = process.cpuUsage(c0); if (timed) r.cpu.push((c.user + c.system) / 1000);
  acc = null;
};
for (const r of R) step(r, false);
// the order rotates every round (see bench-train-precision-interleaved.mjs): with a fixed order the
// second precision's `other` carried the first's background GC / JIT work (+35 ms/step)
for (let s = 0; s < steps; s++) for (let j = 0; j < R.length; j++) step(R[(s + j) % R.length], true);
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b[b.length >> 1]; };
const ms = (r, k) => (r.k.get(k)?.[0] ?? 0) / steps;
const out = {};
for (const r of R) { const tot = r.cpu.reduce((a, b) => a + b, 0) / steps; let ks = 0; const k = {}; for (const [n, [v]] of [...r.k].sort((a, b) => b[1][0] - a[1][0])) { k[n] = Math.round(v / steps * 10) / 10; ks += v / steps; }
  out[r.prec] = { cpu_med: Math.round(med(r.cpu)), cpu_mean: Math.round(tot), other: Math.round(tot - ks), loss: r.loss, k }; }
console.log(JSON.stringify(out, null, 1));
// side by side on stderr
const keys = [...new Set(R.flatMap((r) => [...r.k.keys()]))].sort((x, y) => Math.max(...R.map((r) => ms(r, y))) - Math.max(...R.map((r) => ms(r, x))));
console.error(`cpu ms/step (median): ${R.map((r) => `${r.prec} ${med(r.cpu).toFixed(1)} (${(med(r.cpu) / med(R[0].cpu)).toFixed(3)}x ${R[0].prec})`).join(', ')}`);
console.error(`${'kernel'.padEnd(50)} ${R.map((r) => r.prec.padStart(8)).join(' ')}  calls/step`);
for (const k of keys) if (Math.max(...R.map((r) => ms(r, k))) > 0.5) console.error(`${k.padEnd(50)} ${R.map((r) => ms(r, k).toFixed(1).padStart(8)).join(' ')}  ${R.map((r) => (r.k.get(k)?.[1] ?? 0) / steps).join('/')}`);
