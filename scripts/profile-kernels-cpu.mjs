// Development tool (not part of the package): CPU time per kernel of training steps at several
// precisions, interleaved in ONE process (a step of each precision in turn, after one warm-up
// step each), for a built checkout ROOT: configs/bench-small.json, 8 x 256 tokens, bench train's
// step. Every Kernels call is timed with process.cpuUsage (so run it with DSV3_THREADS=1: the
// pool's other threads would count too); prints JSON per precision: median and mean CPU ms per
// step, `other` (CPU outside kernel calls: JS, autograd), the last loss, and CPU ms per step by
// kernel. Unlike `bench train`'s kernels_ms (wall time) it stays meaningful on a loaded machine.
//   DSV3_ISA=avx2 DSV3_THREADS=1 node scripts/profile-kernels-cpu.mjs ROOT STEPS fp32,bf16,fp8
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
if (!(Number(process.argv[3]) >= 1)) { console.error('usage: DSV3_THREADS=1 node scripts/profile-kernels-cpu.mjs ROOT STEPS [fp32,bf16,fp8]'); process.exit(2); }
const root = resolve(process.argv[2]); const steps = Number(process.argv[3]); const precs = (process.argv[4] ?? 'fp32,bf16,fp8').split(',');
const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
const { kernels, useBackend } = await imp('engine/backend.js');
const { stepArena, withArena } = await imp('engine/arena.js');
const { loadModelConfig } = await imp('model/config.js');
const { DeepseekV3 } = await imp('model/model.js');
const { backward } = await imp('engine/autograd.js');
const { AdamW } = await imp('train/optimizer.js');
const { PAPER, TRAIN } = await imp('train/recipe.js');
const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
const cfg = loadModelConfig(root + '/configs/bench-small.json');
const B = 8, S = 256;
const base = kernels();
let acc = null;
const wrapped = { name: base.name };
for (const key of Object.keys(base)) {
  const f = base[key]; if (typeof f !== 'function') continue;
  wrapped[key] = (...args) => { if (!acc) return f.apply(base, args); const c0 = process.cpuUsage(); try { return f.apply(base, args); } finally { const c = process.cpuUsage(c0); acc.set(key, (acc.get(key) ?? 0) + (c.user + c.system) / 1000); } };
}
useBackend(wrapped);
const R = [];
for (const prec of precs) {
  const model = DeepseekV3.randomInit(cfg, 0);
  const opt = new AdamW(model.parameters(), { lr: 1e-4, ...(prec === 'fp8' ? { momentDtype: 'bf16' } : {}) });
  const arena = stepArena();
  const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec };
  R.push({ prec, model, opt, arena, lossOpts, i: 0, k: new Map(), cpu: [], loss: NaN });
}
const step = (r, timed) => {
  const tokens = Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + r.i * 31) % cfg.vocab_size); r.i++;
  acc = timed ? r.k : null;
  const c0 = process.cpuUsage();
  withArena(r.arena, () => { const f = forwardLosses(r.model, tokens, r.lossOpts, B); backward(f.terms.total);
    const loads = new Map([...f.routing].map(([l, x]) => [l, x.load]));
    applyUpdate(r.model, r.opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } }); r.loss = f.terms.total.item(); });
  r.arena?.reset();
  const c = process.cpuUsage(c0); if (timed) r.cpu.push((c.user + c.system) / 1000);
  acc = null;
};
for (const r of R) step(r, false);
for (let s = 0; s < steps; s++) for (const r of R) step(r, true);
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b[b.length >> 1]; };
const out = {};
for (const r of R) { const tot = r.cpu.reduce((a, b) => a + b, 0) / steps; let ks = 0; const k = {}; for (const [n, v] of [...r.k].sort((a, b) => b[1] - a[1])) { k[n] = Math.round(v / steps * 10) / 10; ks += v / steps; }
  out[r.prec] = { cpu_med: Math.round(med(r.cpu)), cpu_mean: Math.round(tot), other: Math.round(tot - ks), loss: r.loss, k }; }
console.log(JSON.stringify(out, null, 1));
