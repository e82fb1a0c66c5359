// Development tool (not part of the package): interleaved CPU-time A/B of one MoE layer's routed
// + shared experts (ops.groupedExperts, forward and backward) of two built checkouts in ONE
// process, at bench-small's shape (N = 8 x 256 tokens, D 256, 16 experts of I 128, top-4, one
// shared expert of 128), for a shared machine:
//   node scripts/bench-experts-ab.mjs BASE_ROOT NEW_ROOT [--precision bf16|fp32] [--reps N]
// BASE_ROOT / NEW_ROOT: checkouts with dist/ and build/Release/dsv3.node. After a warm-up each,
// one forward + backward of each in turn; per call the process CPU time (DSV3_THREADS=1 makes
// it the work). Prints one JSON line: per checkout the median CPU ms, the median of the paired
// ratios new/base, and whether the outputs and gradients of the two are bit-identical.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { precision: { type: 'string', default: 'bf16' }, reps: { type: 'string', default: '15' } },
});
const [baseRoot, newRoot] = positionals;
if (!baseRoot || !newRoot) {
  console.error('usage: node scripts/bench-experts-ab.mjs BASE_ROOT NEW_ROOT [--precision bf16|fp32] [--reps N]');
  process.exit(2);
}
const bf16 = values.precision === 'bf16';
const reps = Number(values.reps);
const N = 2048, D = 256, E = 16, K = 4, I = 128;
let seed = 1;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const xv = Float32Array.from({ length: N * D }, rand);
const gv = Float32Array.from({ length: N * K }, () => Math.abs(rand()));
const idx = new Int32Array(N * K);
for (let t = 0; t < N; t++) {
  const used = new Set();
  for (let j = 0; j < K; j++) {
    let e;
    do e = Math.floor(((rand() + 1) / 2) * E) % E; while (used.has(e));
    used.add(e);
    idx[t * K + j] = e;
  }
}
const wv = (r, c) => Float32Array.from({ length: r * c }, () => rand() * 0.05);
const shapes = [...Array(2 * E).fill([I, D]), ...Array(E).fill([D, I]), [I, D], [I, D], [D, I]];
const wvals = shapes.map(([r, c]) => wv(r, c));
const dyv = Float32Array.from({ length: N * D }, rand);

const runners = [];
for (const [v, root] of [['base', resolve(baseRoot)], ['new', resolve(newRoot)]]) {
  const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
  process.env.DSV3_ADDON = root + '/build/Release/dsv3.node';
  const { nativeAddon } = await imp('engine/native.js');
  if (!nativeAddon()) throw new Error(`no native addon in ${root}`);
  const ops = await imp('engine/ops/index.js');
  const { Tensor } = await imp('engine/tensor.js');
  const { backward } = await imp('engine/autograd.js');
  const { stepArena, withArena } = { ...(await imp('engine/arena.js')), ...(await imp('engine/active-arena.js').catch(() => ({}))) }; // active-arena.js: builds after 2026-12-07
  const { invalidateBf16Weights } = await imp('engine/bf16-weights.js').catch(() => ({}));
  const ps = wvals.map((w, i) => Tensor.param(w.slice(), shapes[i]));
  const w = { gate: ps.slice(0, E), up: ps.slice(E, 2 * E), down: ps.slice(2 * E, 3 * E), shared: { gate: ps[3 * E], up: ps[3 * E + 1], down: ps[3 * E + 2] } };
  const arena = stepArena();
  const cpu = [];
  let out = null;
  const run = () => {
    const x = Tensor.param(xv.slice(), [N, D]);
    const gates = Tensor.param(gv.slice(), [N, K]);
    for (const p of ps) p.grad = null;
    const c0 = process.cpuUsage();
    withArena(arena, () => {
      const y = ops.groupedExperts(x, gates, idx, w, { bf16 });
      backward(y, Tensor.fromF32(dyv, [N, D]));
      out = [y.toF32Array(), x.grad.toF32Array(), gates.grad.toF32Array(), ...ps.map((p) => p.grad.toF32Array())];
    });
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    void invalidateBf16Weights;
  };
  runners.push({ v, run, cpu, out: () => out });
}
for (const r of runners) r.run();
for (const r of runners) r.cpu.length = 0;
const load0 = loadavg()[0];
for (let i = 0; i < reps; i++) for (const r of runners) r.run();
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const [b, n] = runners;
const same = b.out().every((a, i) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(n.out()[i].buffer, n.out()[i].byteOffset, n.out()[i].byteLength)) === 0);
console.log(JSON.stringify({
  precision: values.precision, reps, threads: process.env.DSV3_THREADS ?? 'default', loadavg_start: load0, loadavg_end: loadavg()[0],
  base_cpu_ms_median: med(b.cpu), new_cpu_ms_median: med(n.cpu),
  new_over_base_paired_median: Number(med(b.cpu.map((x, i) => n.cpu[i] / x)).toFixed(3)),
  bit_identical: same,
}));
