// Profiles full training steps of a model config (default configs/bench-small.json, batch 8 x
// seq 256): per phase (forward / backward / optimizer) wall and process CPU time, per kernel
// wall time and GEMM flops by shape, and per autograd node (backward closures, by op name).
// CPU time counts every thread of the process, so on a shared machine `cpu` is the better
// measure of work done and `wall` of what a user would see on an idle one. GEMM flops count
// gemm and gemmBatch calls (the MoE experts' GEMMs).
//
//   node scripts/profile-train.mjs [--config F] [--batch B] [--seq S] [--steps N] [--warmup W]
//                                  [--threads T] [--nodes] [--gemm] [--json]
// Needs a build (npm run build, node-gyp rebuild).
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const imp = (p) => import(join(root, 'dist', 'src', p));
const USAGE = `Usage: node scripts/profile-train.mjs [--config F] [--batch B] [--seq S] [--steps N]
         [--warmup W] [--threads T] [--nodes] [--gemm] [--json]

Profiles full training steps (default configs/bench-small.json, batch 8 x seq 256, 5 timed
steps after 1 warm-up): wall and CPU time per phase, wall time per kernel, with --gemm GEMM
flops and GFLOPS by shape, with --nodes time per autograd backward node. --json prints one
JSON object. Needs a build (npm run build; the native addon for the kernels).
`;
let values;
try {
  ({ values } = parseArgs({
    options: {
      config: { type: 'string', default: join(root, 'configs', 'bench-small.json') },
      batch: { type: 'string', default: '8' }, seq: { type: 'string', default: '256' },
      steps: { type: 'string', default: '5' }, warmup: { type: 'string', default: '1' },
      threads: { type: 'string' }, nodes: { type: 'boolean' }, gemm: { type: 'boolean' }, json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (e) {
  process.stderr.write(`profile-train: ${e.message}\n\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
for (const k of ['batch', 'seq', 'steps', 'warmup', ...(values.threads ? ['threads'] : [])]) {
  const v = Number(values[k]);
  if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) {
    process.stderr.write(`profile-train: --${k} expects a ${k === 'warmup' ? 'non-negative' : 'positive'} integer, got '${values[k]}'\n`);
    process.exit(2);
  }
}
const { kernels, useBackend } = await imp('engine/backend.js');
const { nativeAddon } = await imp('engine/native.js');
const { loadModelConfig } = await imp('model/config.js');
const { DeepseekV3 } = await imp('model/model.js');
const { AdamW } = await imp('train/optimizer.js');
const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
const { stepArena, withArena } = { ...(await imp('engine/arena.js')), ...(await imp('engine/active-arena.js').catch(() => ({}))) }; // active-arena.js: builds after 2026-12-07
const arena = stepArena(); // as dsv3 train; DSV3_ARENA=0 turns it off

if (values.threads) nativeAddon()?.setThreads(Number(values.threads));
const B = Number(values.batch);
const S = Number(values.seq);
const steps = Number(values.steps);
const warm = Number(values.warmup);
const cfg = loadModelConfig(values.config);
const model = DeepseekV3.randomInit(cfg, 0);
const opt = new AdamW(model.parameters(), { lr: 1e-4 });

const kAcc = new Map(); // kernel -> [ms, calls]
const gAcc = new Map(); // gemm shape -> [ms, calls, flops]
let gemmFlops = 0;
function timed(inner) {
  const out = { name: inner.name };
  for (const key of Object.keys(inner)) {
    const f = inner[key];
    if (typeof f !== 'function') continue;
    out[key] = (...args) => {
      const t = performance.now();
      try {
        return f.apply(inner, args);
      } finally {
        const dt = performance.now() - t;
        const e = kAcc.get(key) ?? [0, 0];
        e[0] += dt;
        e[1]++;
        kAcc.set(key, e);
        if (key === 'gemm' || key === 'gemmBatch') {
          const [ta, tb] = args;
          const dims = key === 'gemm' ? args.slice(2, 5) : Array.from(args[2]);
          let fl = 0;
          for (let i = 0; i < dims.length; i += 3) fl += 2 * dims[i] * dims[i + 1] * dims[i + 2];
          const [m, n, k] = dims;
          gemmFlops += fl;
          if (values.gemm) {
            const s = key === 'gemm' ? `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${m}x${n}x${k}` : `batch ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} x${dims.length / 3}`;
            const g = gAcc.get(s) ?? [0, 0, 0];
            g[0] += dt;
            g[1]++;
            g[2] += fl;
            gAcc.set(s, g);
          }
        }
      }
    };
  }
  return out;
}

/** Wraps every recorded backward closure reachable from root with a timer keyed by op name. */
const nAcc = new Map();
function timeNodes(rootT) {
  const seen = new Set();
  const stack = [rootT];
  while (stack.length) {
    const t = stack.pop();
    if (!t || seen.has(t) || !t.node) continue;
    seen.add(t);
    const node = t.node;
    const f = node.backward;
    if (f) {
      node.backward = (g) => {
        const t0 = performance.now();
        try {
          return f(g);
        } finally {
          const e = nAcc.get(node.name) ?? [0, 0];
          e[0] += performance.now() - t0;
          e[1]++;
          nAcc.set(node.name, e);
        }
      };
    }
    for (const x of node.inputs) stack.push(x);
  }
  return seen.size;
}

const base = kernels();
const ph = { fwd: [], bwd: [], opt: [], step: [], cpuFwd: [], cpuBwd: [], cpuOpt: [], cpuStep: [], faults: [] };
let nodeCount = 0;
const lossOpts = { mtpLambda: 0.3, balanceAlpha: 1e-4 };
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % cfg.vocab_size;
const cpuMs = (c) => (c.user + c.system) / 1000;
for (let i = 0; i < warm + steps; i++) {
  const on = i >= warm;
  if (on && i === warm) useBackend(timed(base));
  const tokens = Int32Array.from({ length: B * (S + 1) }, rnd);
  const pf0 = process.resourceUsage().minorPageFault;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const f = withArena(arena, () => forwardLosses(model, tokens, lossOpts, B));
  const t1 = performance.now();
  const c1 = process.cpuUsage();
  if (on && values.nodes) nodeCount = timeNodes(f.terms.total);
  const t1b = performance.now();
  const c1b = process.cpuUsage();
  withArena(arena, () => f.terms.total.backward());
  const t2 = performance.now();
  const c2 = process.cpuUsage();
  const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
  withArena(arena, () => applyUpdate(model, opt, loads, { lr: 1e-4 }));
  arena?.reset();
  const t3 = performance.now();
  const c3 = process.cpuUsage();
  if (!on) continue;
  ph.faults.push(process.resourceUsage().minorPageFault - pf0);
  ph.fwd.push(t1 - t0);
  ph.bwd.push(t2 - t1b);
  ph.opt.push(t3 - t2);
  ph.step.push(t1 - t0 + t3 - t1b);
  ph.cpuFwd.push(cpuMs(c1) - cpuMs(c0));
  ph.cpuBwd.push(cpuMs(c2) - cpuMs(c1b));
  ph.cpuOpt.push(cpuMs(c3) - cpuMs(c2));
  ph.cpuStep.push(cpuMs(c1) - cpuMs(c0) + cpuMs(c3) - cpuMs(c1b));
}
useBackend(base);

const med = (xs) => {
  const s = xs.slice().sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};
const r1 = (x) => Math.round(x * 10) / 10;
const stepMed = med(ph.step);
const kSum = [...kAcc.values()].reduce((a, e) => a + e[0], 0) / steps;
const res = {
  threads: nativeAddon()?.info().threads ?? 0,
  tokens_per_s: Math.round((B * S) / (stepMed / 1000)),
  step_ms_median: r1(stepMed),
  cpu_ms_median: r1(med(ph.cpuStep)),
  page_faults_per_step: med(ph.faults),
  cpu_ms_min: r1(Math.min(...ph.cpuStep)),
  peak_rss_mb: r1(process.resourceUsage().maxRSS / 1024),
  wall_ms: { forward: r1(med(ph.fwd)), backward: r1(med(ph.bwd)), optimizer: r1(med(ph.opt)) },
  cpu_ms: { forward: r1(med(ph.cpuFwd)), backward: r1(med(ph.cpuBwd)), optimizer: r1(med(ph.cpuOpt)) },
  gemm_gflop: r1(gemmFlops / steps / 1e9),
  gemm_gflops_per_s: r1(gemmFlops / 1e6 / ((kAcc.get('gemm')?.[0] ?? 0) + (kAcc.get('gemmBatch')?.[0] ?? 0))),
  kernels_ms: Object.fromEntries([...kAcc].sort((a, b) => b[1][0] - a[1][0]).map(([k, e]) => [k, [r1(e[0] / steps), e[1] / steps]])),
  other_ms: r1(ph.step.reduce((a, b) => a + b, 0) / steps - kSum),
  loadavg: (await import('node:os')).loadavg().map(r1),
};
if (values.nodes) {
  res.graph_nodes = nodeCount;
  res.backward_nodes_ms = Object.fromEntries([...nAcc].sort((a, b) => b[1][0] - a[1][0]).map(([k, e]) => [k, [r1(e[0] / steps), e[1] / steps]]));
}
if (values.gemm) {
  res.gemm_by_shape = Object.fromEntries([...gAcc].sort((a, b) => b[1][0] - a[1][0]).slice(0, 40)
    .map(([k, e]) => [k, { ms: r1(e[0] / steps), calls: e[1] / steps, gflops: r1(e[2] / e[0] / 1e6) }]));
}
process.stdout.write(values.json ? JSON.stringify(res) + '\n' : JSON.stringify(res, null, 1) + '\n');
