// CPU time per training step of a base build against this one and its memory variants, for a
// shared machine (issue 13, peak RSS): ONE process, one model per variant, one step of each in
// turn (after two warm-up steps each), process CPU time (user + system) per step:
//   DSV3_THREADS=1 node scripts/bench-train-variants.mjs BASE_ROOT NEW_ROOT fp32|bf16|fp8 [steps]
// BASE_ROOT / NEW_ROOT: built checkouts (dist/ and build/Release/dsv3.node). Variants: base;
// new; new with the arena's give-back (BufferArena giveBack); new without the MLA
// recomputation. configs/bench-small.json at 8x256, bench train's step. Prints per variant the
// median CPU ms, its ratio to base and every step's figure.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
const [baseRoot, newRoot, prec = 'bf16', stepsArg] = process.argv.slice(2);
if (!baseRoot || !newRoot || !['fp32', 'bf16', 'fp8'].includes(prec)) {
  console.error('usage: node scripts/bench-train-variants.mjs BASE_ROOT NEW_ROOT fp32|bf16|fp8 [steps]');
  process.exit(2);
}
const steps = Number(stepsArg ?? 5);
const roots = { base: resolve(baseRoot), new: resolve(newRoot) };
const B = 8, S = 256;
const runners = [];
const variants = [['base', {}], ['new', {}], ['new', { giveBack: true }], ['new', { recompute: false }]];
for (const [v, o] of variants) {
  const root = roots[v];
  const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
  const { BufferArena, withArena } = { ...(await imp('engine/arena.js')), ...(await imp('engine/active-arena.js').catch(() => ({}))) }; // active-arena.js: builds after 2026-12-07
  const { loadModelConfig } = await imp('model/config.js');
  const { DeepseekV3 } = await imp('model/model.js');
  const { backward } = await imp('engine/autograd.js');
  const { AdamW } = await imp('train/optimizer.js');
  const { PAPER, TRAIN, defaultMomentDtype } = await imp('train/recipe.js');
  const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
  const mla = v === 'new' ? await imp('model/mla.js') : null;
  const cfg = loadModelConfig(root + '/configs/bench-small.json');
  const model = DeepseekV3.randomInit(cfg, 0);
  const opt = new AdamW(model.parameters(), { lr: 1e-4, momentDtype: defaultMomentDtype(prec === 'fp8') });
  const arena = v === 'base' ? new BufferArena() : new BufferArena({ giveBack: o.giveBack ?? false });
  let i = 0; const cpu = [];
  const step = () => {
    const tokens = Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size); i++;
    const c0 = process.cpuUsage();
    const run = () => withArena(arena, () => {
      const f = forwardLosses(model, tokens, { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec }, B);
      backward(f.terms.total);
      applyUpdate(model, opt, new Map([...f.routing].map(([l, r]) => [l, r.load])), { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
    });
    if (o.recompute === false) mla.withMlaRecompute(false, run); else run();
    arena.reset();
    const c = process.cpuUsage(c0); cpu.push((c.user + c.system) / 1000);
  };
  runners.push({ name: v + JSON.stringify(o), step, cpu });
}
for (const r of runners) { r.step(); r.step(); r.cpu.length = 0; }
for (let s = 0; s < steps; s++) for (const r of runners) r.step();
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b[(b.length - 1) >> 1]; };
const base = med(runners[0].cpu);
for (const r of runners) console.log(prec, r.name.padEnd(28), 'cpu median', med(r.cpu).toFixed(0), 'ratio', (med(r.cpu) / base).toFixed(3), r.cpu.map(Math.round).join(' '));
