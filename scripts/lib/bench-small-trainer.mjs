// Shared by the development scripts that time or profile training steps of a built checkout
// (bench-train-precision-interleaved.mjs, profile-kernels-cpu.mjs, gemm-step-table.mjs): the step
// of `dsv3 bench train` — random init (seed 0), AdamW (bf16 and fp8: BF16 moments, as `bench train
// --precision bf16/fp8`), the paper's loss weights, the step arena — on B x S deterministic tokens.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The modules of the build at ROOT (dist/ and its addon), imported from that build. */
export async function loadBuild(rootArg) {
  const root = resolve(rootArg);
  const imp = (p) => import(pathToFileURL(root + '/dist/src/' + p).href);
  return {
    root,
    imp,
    ...(await imp('engine/backend.js')),
    ...(await imp('engine/arena.js')),
    ...(await imp('engine/active-arena.js').catch(() => ({}))), // (builds before it: in arena.js)
    ...(await imp('model/config.js')),
    ...(await imp('model/model.js')),
    ...(await imp('engine/autograd.js')),
    ...(await imp('train/optimizer.js')),
    ...(await imp('train/recipe.js')),
    ...(await imp('train/train-step.js')),
  };
}

/**
 * A trainer of `precision` on the build `b` (loadBuild): step() runs one full training step
 * (forward, backward, optimizer) on the next batch and returns its loss.
 */
export function benchSmallTrainer(b, precision, { config, batch = 8, seq = 256, momentDtype } = {}) {
  const cfg = b.loadModelConfig(config ?? b.root + '/configs/bench-small.json');
  const model = b.DeepseekV3.randomInit(cfg, 0);
  // builds before `--precision` (e.g. 0d94b0c, when issue 13 was filed) take `fp8: true` and, as their
  // `bench train --fp8` did, float32 moments; they have no bf16 mode
  const legacy = typeof b.lossPrecision !== 'function';
  if (legacy && precision === 'bf16') throw new Error(`${b.root}: this build predates --precision bf16`);
  const md = momentDtype ?? (!legacy && (precision === 'fp8' || precision === 'bf16') ? 'bf16' : undefined);
  const opt = new b.AdamW(model.parameters(), { lr: 1e-4, ...(md ? { momentDtype: md } : {}) });
  const arena = b.stepArena();
  const lossOpts = { mtpLambda: b.PAPER.mtpLambda, balanceAlpha: b.PAPER.balanceAlpha, balance: b.TRAIN.balance, ...(legacy ? { fp8: precision === 'fp8' } : { precision }) };
  let i = 0;
  const step = () => {
    const tokens = Int32Array.from({ length: batch * (seq + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size);
    i++;
    let loss = NaN;
    b.withArena(arena, () => {
      const f = b.forwardLosses(model, tokens, lossOpts, batch);
      b.backward(f.terms.total);
      const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
      b.applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: b.PAPER.maxGradNorm, balance: b.TRAIN.balance, bias: { gamma: b.PAPER.biasGamma } });
      loss = f.terms.total.item();
    });
    arena?.reset();
    return loss;
  };
  return { cfg, model, step };
}
