// Bit-exactness check of a memory change (issue 13): runs STEPS training steps of bench-small 8x256
// (configs/bench-small.json, seed 0, step arena as in `dsv3 train`, lr 1e-3) of a built checkout
// and prints per step the loss, its float32 bits and a hash of every parameter's gradient, then a
// hash of the parameters. Run it on a base build and on yours and diff the output:
//   node scripts/train-step-bits.mjs ROOT [fp32|bf16|fp8] [STEPS]
import { join } from 'node:path';
import { createHash } from 'node:crypto';
const root = process.argv[2]; const prec = process.argv[3] ?? 'fp8'; const steps = Number(process.argv[4] ?? 3);
const imp = (p) => import(join(root, 'dist', 'src', p));
const { stepArena, withArena } = await imp('engine/active-arena.js');
const { loadModelConfig } = await imp('model/config.js');
const { DeepseekV3 } = await imp('model/model.js');
const { backward } = await imp('engine/autograd.js');
const { AdamW } = await imp('train/optimizer.js');
const { PAPER, TRAIN, defaultMomentDtype } = await imp('train/recipe.js');
const { applyUpdate, forwardLosses } = await imp('train/train-step.js');
const cfg = loadModelConfig(join(root, 'configs', 'bench-small.json'));
const model = DeepseekV3.randomInit(cfg, 0);
const params = model.parameters();
const opt = new AdamW(params, { lr: 1e-3, momentDtype: defaultMomentDtype(prec) });
const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec };
const B = 8, S = 256;
const arena = stepArena();
const rng = (i) => Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31 + ((j * j) >> 3)) % cfg.vocab_size);
for (let i = 0; i < steps; i++) {
  let line;
  withArena(arena, () => {
    const f = forwardLosses(model, rng(i), lossOpts, B);
    const loss = f.terms.total.item?.() ?? f.terms.total.f32()[0];
    backward(f.terms.total);
    const h = createHash('sha256');
    for (const p of params) { const g = p.grad; if (g) h.update(Buffer.from(g.f32().buffer, g.f32().byteOffset, g.f32().byteLength)); else h.update('none'); }
    line = `${prec} step ${i} loss ${loss} bits ${Buffer.from(new Float32Array([loss]).buffer).toString('hex')} grads ${h.digest('hex').slice(0, 16)}`;
    const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
    applyUpdate(model, opt, loads, { lr: 1e-3, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
  });
  arena?.reset();
  console.log(line);
}
const h = createHash('sha256'); for (const p of params) h.update(Buffer.from(p.f32().buffer, p.f32().byteOffset, p.f32().byteLength));
console.log(`${prec} final params ${h.digest('hex').slice(0, 16)}`);
