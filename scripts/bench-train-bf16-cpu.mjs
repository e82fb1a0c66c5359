// Interleaved training-step CPU time of two builds x two precisions in ONE process, for a shared
// machine (issue 13: bf16 >= 1.5x fp32):
//   DSV3_THREADS=1 node scripts/bench-train-bf16-cpu.mjs BASE_ROOT NEW_ROOT [steps]
// BASE_ROOT / NEW_ROOT: two built checkouts of dsv3 (dist/ and build/Release/dsv3.node). Four
// trainers (base/new x fp32/bf16) on configs/bench-small.json, 8x256 tokens, bench train's step
// (forward, backward, clipping + AdamW), one step of each in turn after a warm-up step. Each
// step's CPU time is process.cpuUsage() (all threads), its wall time performance.now(). Prints
// one JSON line: per trainer the median CPU and wall ms, and the medians of the ratios of the
// adjacent steps (fp32 / bf16 = the bf16 speed-up in CPU time; base / new).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [baseRoot, newRoot] = process.argv.slice(2);
if (!baseRoot || !newRoot) { console.error('usage: node scripts/bench-train-bf16-cpu.mjs BASE_ROOT NEW_ROOT [steps]'); process.exit(2); }
const roots = { base: resolve(baseRoot), new: resolve(newRoot) };
const steps = Number(process.argv[4] ?? 8);
const B = 8, S = 256;
const runners = [];
for (const [v, root] of Object.entries(roots)) {
  const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
  const { stepArena, withArena } = await imp('engine/arena.js');
  const { loadModelConfig } = await imp('model/config.js');
  const { DeepseekV3 } = await imp('model/model.js');
  const { backward } = await imp('engine/autograd.js');
  const { AdamW } = await imp('train/optimizer.js');
  const { PAPER, TRAIN } = await imp('train/recipe.js');
  const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
  const cfg = loadModelConfig(root + '/configs/bench-small.json');
  for (const precision of ['fp32', 'bf16']) {
    const model = DeepseekV3.randomInit(cfg, 0);
    const opt = new AdamW(model.parameters(), { lr: 1e-4 });
    const arena = stepArena();
    const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision };
    let i = 0;
    const cpu = [], wall = [];
    let loss = NaN;
    const step = () => {
      const tokens = Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size);
      i++;
      const c0 = process.cpuUsage(), t0 = performance.now();
      withArena(arena, () => {
        const f = forwardLosses(model, tokens, lossOpts, B);
        backward(f.terms.total);
        const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
        applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
        loss = f.terms.total.item();
      });
      arena?.reset();
      wall.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    };
    runners.push({ name: `${v}-${precision}`, step, cpu, wall, loss: () => loss });
  }
}
for (const r of runners) r.step(); // warm-up
for (const r of runners) { r.cpu.length = 0; r.wall.length = 0; }
for (let s = 0; s < steps; s++) for (const r of (s % 2 ? [...runners].reverse() : runners)) r.step();
const med = (a) => { const b = [...a].sort((x, y) => x - y); const n = b.length; return n % 2 ? b[(n - 1) / 2] : (b[n / 2 - 1] + b[n / 2]) / 2; };
const out = { threads: process.env.DSV3_THREADS ?? 'default', steps };
const by = Object.fromEntries(runners.map((r) => [r.name, r]));
for (const r of runners) out[r.name] = { cpu_ms_median: Math.round(med(r.cpu)), wall_ms_median: Math.round(med(r.wall)), loss_last: r.loss() };
const pair = (a, b) => +med(by[a].cpu.map((x, s) => x / by[b].cpu[s])).toFixed(3);
out.cpu_ratios = {
  base_fp32_over_bf16: pair('base-fp32', 'base-bf16'),
  new_fp32_over_bf16: pair('new-fp32', 'new-bf16'),
  new_bf16_over_base_bf16: pair('new-bf16', 'base-bf16'),
  new_fp32_over_base_fp32: pair('new-fp32', 'base-fp32'),
};
console.log(JSON.stringify(out));
