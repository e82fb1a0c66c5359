/**
 * `dsv3 train`: pre-training of a DeepSeek-V3-architecture model from scratch on a text corpus,
 * following the report's recipe (section 4.2) at laptop scale: AdamW (0.9, 0.95, wd 0.1),
 * clipping at 1.0, warmup → constant → cosine LR, MTP with λ 0.3 → 0.1, aux-loss-free balancing
 * (bias γ 0.001) with the complementary sequence-wise loss (α 1e-4), gradient accumulation.
 * The numbers, and what a caller may leave out, are in recipe.ts.
 *
 * Every step appends to RUN_DIR/metrics.jsonl; every `ckptEvery` steps (and at the end) a
 * checkpoint is written atomically (run-checkpoints.ts). `resume` restores weights, biases, AdamW
 * moments, the data position, the RNG and the bias EMA, and continues bit-exactly. A step whose
 * loss or gradients are not finite is skipped and reported; after `maxNonFinite` consecutive
 * ones training stops, leaving the last good checkpoint as it was.
 */
import { stepArena, withArena } from '../engine/active-arena.js';
import { backward } from '../engine/autograd.js';
import { DsvError } from '../errors.js';
import { lossReport } from '../objective/losses.js';
import { batchSizeAt } from './lr-schedule.js';
import { withRecipe } from './recipe.js';
import { runPrecision, type TrainOptions, type TrainResult } from './train-options.js';
import { applyUpdate, forwardLosses } from './train-step.js';
import { TrainRun, type StepPart } from './train-run.js';

/** Runs (or resumes) a training run; see the module comment. */
export function train(opts: TrainOptions): TrainResult {
  if (opts.pipeline) throw new DsvError('pipeline-parallel training runs through trainPipelined (src/train/pipeline-trainer.ts), which is asynchronous');
  const o = withRecipe(opts);
  const accum = o.gradAccum;
  if (!Number.isInteger(accum) || accum < 1) throw new DsvError(`--grad-accum must be a positive integer, got ${accum}`);
  const run = new TrainRun(o);
  const { model, opt, it, plan } = run;
  const arena = stepArena();
  while (run.step < o.steps) {
    const t0 = performance.now();
    const step = run.step;
    const lambda = plan.lambda(step);
    const lr = plan.lr(step);
    const lossOpts = { mtpLambda: lambda, balanceAlpha: o.balanceAlpha, balance: o.balance, precision: runPrecision(o) };
    const loads = new Map<number, Int32Array>();
    const parts: StepPart[] = [];
    let bad: string | null = null;
    opt.zeroGrad();
    const nMicro = o.batchWarmup ? batchSizeAt(step, { start: 1, end: accum, rampSteps: o.batchWarmup }) : accum;
    // the step's activations and gradients live in the arena until the reset below
    let gradNorm = NaN;
    withArena(arena, () => {
      for (let micro = 0; micro < nMicro; micro++) {
        const batch = it.next();
        if (bad) continue; // keep the data position consistent, skip the work
        const f = forwardLosses(model, batch.tokens, lossOpts, batch.batchSize);
        const r = lossReport(f.terms);
        const inj = o.inject?.(step) ?? null;
        if (inj === 'loss') r.total = NaN;
        parts.push({ total: r.total, lm: r.lm, mtp: r.mtp_weighted, bal: r.balance_total });
        for (const [l, lr2] of f.routing) {
          const acc = loads.get(l) ?? new Int32Array(lr2.load.length);
          for (let e = 0; e < acc.length; e++) acc[e]! += lr2.load[e]!;
          loads.set(l, acc);
        }
        if (!Number.isFinite(r.total)) {
          bad = `non-finite loss (${r.total})`;
          continue;
        }
        backward(f.terms.total);
        if (inj === 'grad') {
          const g = opt.params[0]!.grad;
          if (g) g.f32()[0] = NaN;
        }
      }
      if (!bad) {
        const u = applyUpdate(model, opt, loads, { lr, maxGradNorm: o.maxGradNorm, balance: o.balance, bias: { ...o.bias, gamma: plan.gamma(step) } }, run.ema, nMicro);
        gradNorm = u.gradNorm;
        if (!u.applied) bad = `non-finite gradients (norm ${u.gradNorm})`;
      } else {
        opt.zeroGrad();
      }
    });
    arena?.reset(); // gradients are applied and cleared; losses and loads were copied out
    const stop = run.finishStep({ bad, parts, loads, lambda, lr, gradNorm, nMicro, t0 }, arena);
    if (stop) return stop;
  }
  return run.done(arena);
}
