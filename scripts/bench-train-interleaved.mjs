// Step-by-step interleaved training-step timing in ONE process, for a shared machine:
//   node scripts/bench-train-interleaved.mjs BASE_ROOT NEW_ROOT [steps]
// BASE_ROOT / NEW_ROOT: two built checkouts of dsv3 (dist/ and build/Release/dsv3.node), e.g. a
// `git worktree` of the base commit and this one. Four trainers (base/new x fp32/--fp8) on
// configs/bench-small.json, 8x256 tokens, bench train's step (forward, backward, clipping +
// AdamW; BF16 moments for new --fp8, as `bench train --fp8`), one step of each in turn after a
// warm-up step, so that the load of the moment hits all four alike. Prints one JSON line: per
// trainer the median and all step times (ms) and the last loss, and the medians of the ratios of
// adjacent steps.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [baseRoot, newRoot] = process.argv.slice(2);
if (!baseRoot || !newRoot) { console.error('usage: node scripts/bench-train-interleaved.mjs BASE_ROOT NEW_ROOT [steps]'); process.exit(2); }
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
  for (const fp8 of [false, true]) {
    const model = DeepseekV3.randomInit(cfg, 0);
    // as bench train of each version: new uses BF16 moments under fp8, base f32
    const opt = new AdamW(model.parameters(), { lr: 1e-4, ...(v === 'new' && fp8 ? { momentDtype: 'bf16' } : {}) });
    const arena = stepArena();
    const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, ...(fp8 ? { fp8 } : {}) };
    let i = 0;
    const ms = [];
    let loss = NaN;
    const step = () => {
      const tokens = Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size);
      i++;
      const t0 = performance.now();
      withArena(arena, () => {
        const f = forwardLosses(model, tokens, lossOpts, B);
        backward(f.terms.total);
        const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
        applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
        loss = f.terms.total.item();
      });
      arena?.reset();
      ms.push(performance.now() - t0);
    };
    runners.push({ name: `${v}-${fp8 ? 'fp8' : 'fp32'}`, step, ms, loss: () => loss });
  }
}
for (const r of runners) r.step(); // warm-up
for (const r of runners) r.ms.length = 0;
for (let s = 0; s < steps; s++) for (const r of runners) r.step();
const med = (a) => { const b = [...a].sort((x, y) => x - y); const n = b.length; return n % 2 ? b[(n - 1) / 2] : (b[n / 2 - 1] + b[n / 2]) / 2; };
const out = {};
for (const r of runners) out[r.name] = { median_ms: Math.round(med(r.ms)), ms: r.ms.map(Math.round), loss_last: r.loss() };
const m = (k) => out[k].median_ms;
// paired ratios: step s of fp8 against step s of fp32 (adjacent in time)
const pair = (a, b) => med(out[a].ms.map((x, s) => x / out[b].ms[s]));
out.ratios = {
  new_fp8_over_new_fp32: +pair('new-fp8', 'new-fp32').toFixed(3),
  base_fp8_over_base_fp32: +pair('base-fp8', 'base-fp32').toFixed(3),
  new_fp8_over_base_fp8: +pair('new-fp8', 'base-fp8').toFixed(3),
  new_fp32_over_base_fp32: +pair('new-fp32', 'base-fp32').toFixed(3),
  medians: { new_fp8: m('new-fp8'), new_fp32: m('new-fp32'), base_fp8: m('base-fp8'), base_fp32: m('base-fp32') },
};
console.log(JSON.stringify(out));
