// Development tool (not part of the package): interleaved training-step timing of two built
// checkouts in ONE process, by process CPU time, for a shared machine:
//   node scripts/bench-train-ab.mjs BASE_ROOT NEW_ROOT [--precisions bf16,fp32] [--steps N]
// BASE_ROOT / NEW_ROOT: checkouts with dist/ and build/Release/dsv3.node (e.g. `git archive` of
// the base commit, built). For each precision, a base and a new trainer on
// configs/bench-small.json, 8 x 256 tokens, `bench train`'s step (forward with MTP, backward,
// clipping + AdamW, bias update; BF16 moments under fp8); after a warm-up step each, one step of
// each trainer in turn, so that the load of the moment hits all alike. Per step it records the
// process CPU time (user + system, all threads: with DSV3_THREADS=1 the work of the step) and
// the wall time. Prints one JSON line: per trainer the median CPU and wall ms and the last
// loss; per precision the median of the ratios new/base of adjacent steps (CPU and wall); and
// each precision's new and base CPU medians against fp32's. Each checkout loads its own addon
// (two copies of the native library in one process: their thread pools are separate, and they
// never run at once).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { precisions: { type: 'string', default: 'bf16,fp32' }, steps: { type: 'string', default: '8' } },
});
const [baseRoot, newRoot] = positionals;
if (!baseRoot || !newRoot) {
  console.error('usage: node scripts/bench-train-ab.mjs BASE_ROOT NEW_ROOT [--precisions bf16,fp32] [--steps N]');
  process.exit(2);
}
const precisions = values.precisions.split(',');
const steps = Number(values.steps);
const B = 8, S = 256;
const runners = [];
for (const [v, root] of [['base', resolve(baseRoot)], ['new', resolve(newRoot)]]) {
  const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
  process.env.DSV3_ADDON = root + '/build/Release/dsv3.node';
  const { nativeAddon } = await imp('engine/native.js');
  if (!nativeAddon()) throw new Error(`no native addon in ${root}`);
  const { stepArena, withArena } = await imp('engine/arena.js');
  const { loadModelConfig } = await imp('model/config.js');
  const { DeepseekV3 } = await imp('model/model.js');
  const { backward } = await imp('engine/autograd.js');
  const { AdamW } = await imp('train/optimizer.js');
  const { PAPER, TRAIN, defaultMomentDtype } = await imp('train/recipe.js');
  const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
  const cfg = loadModelConfig(root + '/configs/bench-small.json');
  for (const precision of precisions) {
    const model = DeepseekV3.randomInit(cfg, 0);
    const opt = new AdamW(model.parameters(), { lr: 1e-4, momentDtype: defaultMomentDtype(precision === 'fp8') });
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
      const c = process.cpuUsage(c0);
      wall.push(performance.now() - t0);
      cpu.push((c.user + c.system) / 1000);
    };
    runners.push({ name: `${v}-${precision}`, v, precision, step, cpu, wall, loss: () => loss });
  }
}
const load0 = loadavg()[0];
for (const r of runners) r.step(); // warm-up
for (const r of runners) { r.cpu.length = 0; r.wall.length = 0; }
for (let s = 0; s < steps; s++) for (const r of runners) r.step();
const med = (a) => { const b = [...a].sort((x, y) => x - y); const n = b.length; return n % 2 ? b[(n - 1) / 2] : (b[n / 2 - 1] + b[n / 2]) / 2; };
const r1 = (x) => Math.round(x * 10) / 10;
const out = { steps, threads: process.env.DSV3_THREADS ?? 'default', loadavg_start: r1(load0), loadavg_end: r1(loadavg()[0]), trainers: {}, new_over_base: {}, over_fp32: {} };
const by = (n) => runners.find((r) => r.name === n);
for (const r of runners) out.trainers[r.name] = { cpu_ms_median: r1(med(r.cpu)), wall_ms_median: r1(med(r.wall)), cpu_ms: r.cpu.map(Math.round), loss_last: r.loss() };
const pair = (a, b, key) => +med(a[key].map((x, s) => x / b[key][s])).toFixed(3);
for (const p of precisions) {
  out.new_over_base[p] = { cpu: pair(by(`new-${p}`), by(`base-${p}`), 'cpu'), wall: pair(by(`new-${p}`), by(`base-${p}`), 'wall') };
  if (p !== 'fp32' && precisions.includes('fp32')) {
    // speed-up over fp32 of the same checkout (fp32 step time / this step time), paired steps
    out.over_fp32[p] = { new: +(1 / pair(by(`new-${p}`), by('new-fp32'), 'cpu')).toFixed(3), base: +(1 / pair(by(`base-${p}`), by('base-fp32'), 'cpu')).toFixed(3) };
  }
}
console.log(JSON.stringify(out));
