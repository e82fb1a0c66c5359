// Development tool (not part of the package): the GEMM calls of ONE training step, each timed
// on its own. Records every gemm / gemmBf16 / gemmBf16Ab call and their gemmBatch* forms of a step of
// configs/bench-small.json (8 x 256, as `bench train`; after one warm-up step), groups equal
// calls (kernel, layout, sizes, leading dimensions, beta) and replays each group on random
// operands of the same extents: CPU time per call (process.cpuUsage, best of --reps runs), its
// GFLOPS and the share of the peak (fp32: `bench peak`'s FMA peak per thread; bf16: 1.7x that,
// VDPBF16PS; the AVX2 bf16 GEMM runs on the fp32 kernel, so its peak is the fp32 one). With
// --threads T the replay runs on T pool threads (CPU time then sums the threads; wall is also
// printed). The call site (op file) of each group is taken from the stack of its first call.
//
//   DSV3_THREADS=1 node scripts/gemm-step-table.mjs [--precision bf16|fp32] [--threads T]
//                                                  [--reps R] [--peak GFLOPS] [--json]
// --peak: the fp32 FMA peak of one thread (default: measured now, by wall time, which load
// lowers; on the quiet Zen 4 machine `bench peak` gives 117).
// Needs a build (npm run build; the native addon).
import { parseArgs } from 'node:util';
import { benchSmallTrainer, loadBuild } from './lib/bench-small-trainer.mjs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { loadavg } from 'node:os';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    precision: { type: 'string', default: 'bf16' }, threads: { type: 'string' }, reps: { type: 'string', default: '7' },
    json: { type: 'boolean' }, peak: { type: 'string' }, config: { type: 'string', default: join(root, 'configs', 'bench-small.json') },
  },
});
const build = await loadBuild(root);
const { kernels, useBackend } = build;
const { nativeAddon } = await build.imp('engine/native.js');

const addon = nativeAddon();
if (values.threads) addon.setThreads(Number(values.threads));
const threads = addon.info().threads;
const isa = addon.info().isa;
const B = 8, S = 256;
const { step } = benchSmallTrainer(build, values.precision, { config: values.config, batch: B, seq: S }); // bench train's step

const GEMMS = new Set(['gemm', 'gemmBf16', 'gemmBatch', 'gemmBatchBf16', 'gemmBf16Ab', 'gemmBatchBf16Ab']);
const groups = new Map(); // signature -> {kernel, ta, tb, dims, lda, ldb, ldc, beta, calls, ms, site}
function site() {
  const lines = new Error().stack.split('\n').slice(3);
  for (const l of lines) {
    const m = /dist\/src\/(engine\/ops|model|train)\/([\w-]+)\.js:(\d+)/.exec(l);
    if (m) return `${m[2]}:${m[3]}`;
  }
  return '?';
}
function recorder(inner) {
  const out = { name: inner.name };
  for (const key of Object.keys(inner)) {
    const f = inner[key];
    if (typeof f !== 'function') continue;
    if (!GEMMS.has(key)) { out[key] = f.bind(inner); continue; }
    out[key] = (...args) => {
      const t = performance.now();
      try {
        return f.apply(inner, args);
      } finally {
        const dt = performance.now() - t;
        const batch = key.startsWith('gemmBatch');
        const [ta, tb] = args;
        const dims = batch ? Array.from(args[2]) : args.slice(2, 5);
        const [lda, ldb, beta, ldc] = batch ? [args[5], args[7], args[8], args[10]] : [args[7], args[9], args[10], args[12]];
        const sig = `${key} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${dims.join(',')} ${lda},${ldb},${ldc} b${beta}`;
        let g = groups.get(sig);
        if (!g) groups.set(sig, (g = { kernel: key, ta, tb, dims, lda, ldb, ldc, beta, calls: 0, ms: 0, site: site() }));
        g.calls++;
        g.ms += dt;
      }
    };
  }
  return out;
}

step(); // warm-up
const base = kernels();
useBackend(recorder(base));
step();
useBackend(base);

// replay
const k = base;
const rnd = (n) => { const a = new Float32Array(n); for (let j = 0; j < n; j++) a[j] = Math.random() - 0.5; return a; };
const bits = (n) => { const f = rnd(n), h = new Uint16Array(n); k.bf16Round(f, h, n); return h; };
const reps = Number(values.reps);
// the fp32 FMA peak of one thread: --peak, else measured (wall time: low on a loaded machine)
const peakMeasured = addon.fmaPeak(1, 0.5);
const peak1 = values.peak ? Number(values.peak) : peakMeasured;
const rows = [];
for (const g of groups.values()) {
  const bf16 = g.kernel.includes('Bf16');
  const abits = g.kernel.endsWith('Ab');
  const count = g.dims.length / 3;
  const as = [], bs = [], cs = [];
  let flops = 0;
  for (let q = 0; q < count; q++) {
    const [m, n, kk] = g.dims.slice(3 * q, 3 * q + 3);
    flops += 2 * m * n * kk;
    const ar = g.ta ? kk : m, br = g.tb ? n : kk;
    as.push(abits ? bits(Math.max(1, ar * g.lda)) : rnd(Math.max(1, ar * g.lda)));
    bs.push(bf16 ? bits(Math.max(1, br * g.ldb)) : rnd(Math.max(1, br * g.ldb)));
    cs.push(rnd(Math.max(1, m * g.ldc)));
  }
  const run = () => {
    if (!g.kernel.startsWith('gemmBatch')) {
      const [m, n, kk] = g.dims;
      k[g.kernel](g.ta, g.tb, m, n, kk, 1, as[0], g.lda, bs[0], g.ldb, g.beta, cs[0], g.ldc);
    } else k[g.kernel](g.ta, g.tb, Int32Array.from(g.dims), 1, as, g.lda, bs, g.ldb, g.beta, cs, g.ldc);
  };
  // inner repetitions so that one timed run is >= ~2 ms
  run();
  const t0 = performance.now(); run(); const one = performance.now() - t0;
  const inner = Math.max(1, Math.ceil(2 / Math.max(one, 1e-3)));
  let cpu = Infinity, wall = Infinity;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage(), w0 = performance.now();
    for (let q = 0; q < inner; q++) run();
    const c = process.cpuUsage(c0), w = performance.now() - w0;
    cpu = Math.min(cpu, (c.user + c.system) / 1000 / inner);
    wall = Math.min(wall, w / inner);
  }
  const peak = peak1 * (bf16 && addon.info().avx512bf16 && isa === 'avx512' ? 1.7 : 1);
  const tdims = count === 1 ? g.dims.join('x') : `${count}x[${g.dims.filter((_, j) => j % 3 === 0).join('/')}]x${g.dims[1]}x${g.dims[2]}`;
  rows.push({
    kernel: g.kernel, layout: `${g.ta ? 'T' : 'N'}${g.tb ? 'T' : 'N'}`, dims: tdims, beta: g.beta, site: g.site, calls: g.calls,
    step_ms: +(g.ms).toFixed(2), cpu_ms_call: +cpu.toFixed(3), wall_ms_call: +wall.toFixed(3), cpu_ms_step: +(cpu * g.calls).toFixed(2),
    gflops_cpu: +(flops / cpu / 1e6).toFixed(1), pct_peak_cpu: Math.round((100 * flops / cpu / 1e6) / (peak * threads)),
    gflops_wall: +(flops / wall / 1e6).toFixed(1),
    // CPU ms per step above what the group would take at the peak (its loss)
    loss_ms_step: +((cpu - flops / (peak * threads) / 1e6) * g.calls).toFixed(2),
  });
}
rows.sort((a, b) => b.loss_ms_step - a.loss_ms_step);
const tot = rows.reduce((a, r) => a + r.cpu_ms_step, 0);
const loss = rows.reduce((a, r) => a + r.loss_ms_step, 0);
const res = { precision: values.precision, isa, threads, peak_fp32_1t: +peak1.toFixed(1), peak_measured_1t: +peakMeasured.toFixed(1), loss_ms_step_total: +loss.toFixed(1), loadavg: loadavg().map((x) => +x.toFixed(1)), cpu_ms_step_total: +tot.toFixed(1), rows };
if (values.json) process.stdout.write(JSON.stringify(res) + '\n');
else {
  console.log(`precision ${res.precision}, isa ${isa}, threads ${threads}, fp32 peak/thread ${res.peak_fp32_1t} GFLOPS (measured now ${res.peak_measured_1t}), load ${res.loadavg.join(' ')}; replayed CPU ms per step ${res.cpu_ms_step_total}, of it above peak ${res.loss_ms_step_total}`);
  console.log('kernel          lay dims                         beta site                  calls  step_ms cpu/call  cpu/step  GFLOPS  %peak  loss_ms');
  for (const r of rows) {
    console.log(`${r.kernel.padEnd(15)} ${r.layout}  ${r.dims.padEnd(28)} ${String(r.beta).padEnd(4)} ${r.site.padEnd(22)} ${String(r.calls).padStart(4)} ${r.step_ms.toFixed(2).padStart(8)} ${r.cpu_ms_call.toFixed(3).padStart(8)} ${r.cpu_ms_step.toFixed(2).padStart(9)} ${r.gflops_cpu.toFixed(1).padStart(7)} ${String(r.pct_peak_cpu).padStart(5)} ${r.loss_ms_step.toFixed(2).padStart(8)}`);
  }
}
