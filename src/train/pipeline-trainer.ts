/**
 * `dsv3 train --pipeline ALGO --pp N`: pipeline-parallel training (DeepSeek-V3 report §3.2.1;
 * docs/DUALPIPE.md §2, §3, §10) with the same recipe, run directory, metrics and checkpoints as the
 * sequential trainer (trainer.ts, train-run.ts).
 *
 * A step takes M micro-batches of `batch` sequences from the data iterator, exactly the batches
 * the sequential trainer with `--grad-accum M` takes, and runs them through the schedule on
 * persistent worker ranks (train-pool.ts). Each micro-batch's loss is back-propagated unscaled
 * (lossScale 1); the ranks return every parameter's gradient summed over its replicas (the
 * DualPipe all-reduce, docs/DUALPIPE.md §2.2) and over the micro-batches, and the expert loads of
 * every MoE layer summed over the step. The main thread then runs the one optimizer update of
 * the sequential path, `applyUpdate` with divisor M (--grad-accum semantics: global-norm
 * clipping over all distinct parameters of sum/M, AdamW, the aux-loss-free bias update from the
 * step's loads), on its full copy of the model, and copies the updated parameters and biases
 * into every rank: all replicas hold the same float32 values after every step (§2.2).
 *
 * The main model is also what validation evaluates and what checkpoints are written from (the
 * normal Hugging Face layout), so `dsv3 sample` and `--resume` read pipeline runs like any other;
 * a resumed run sends the loaded weights to the ranks before its first step.
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import { checkScheduleSize, buildSchedule } from '../parallel/schedules.js';
import { PipelineTrainPool, type PoolStepResult } from '../parallel/train-pool.js';
import type { DeepseekV3 } from '../model/model.js';
import type { AdamW } from './optimizer.js';
import { runPrecision, type PipelineTrainOptions, type TrainOptions, type TrainResult } from './train-options.js';
import { TRAIN } from './recipe.js';
import { TrainRun, type StepPart } from './train-run.js';
import { applyUpdate, type BiasEmaStates, type UpdateOptions, type UpdateResult } from './train-step.js';

/**
 * Micro-batches per step when --microbatches is not given: the smallest number the schedule
 * accepts (docs/DUALPIPE.md §4) that gives every rank work in the steady state, i.e. at least one
 * per rank: DualPipe 2·PP, DualPipeV 2·R, 1F1B and ZB1P PP.
 */
export function defaultMicrobatches(algo: string, ranks: number): number {
  const n = algo === 'dualpipe' || algo === 'dualpipev' ? 2 * ranks : ranks;
  checkScheduleSize(algo, ranks, n); // names the values at fault (e.g. an odd PP for DualPipe)
  return n;
}

/** Rejects what pipeline training does not support, naming the values. */
export function checkPipelineOptions(o: TrainOptions, p: PipelineTrainOptions): number {
  if (runPrecision(o) !== 'fp32') throw new DsvError(`--precision ${runPrecision(o)} is not supported with --pipeline ${p.algo}: the pipeline stages run the float32 path only`);
  if (o.batchWarmup) throw new DsvError(`--batch-warmup ${o.batchWarmup} is not supported with --pipeline ${p.algo}: a schedule has a fixed number of micro-batches per step (--microbatches)`);
  if (o.inject) throw new DsvError('the non-finite injection hook is not supported with --pipeline');
  if (!Number.isInteger(p.ranks) || p.ranks < 1) throw new DsvError(`--pp must be an integer >= 1, got ${p.ranks}`);
  const m = p.microbatches ?? defaultMicrobatches(p.algo, p.ranks);
  checkScheduleSize(p.algo, p.ranks, m);
  const accum = o.gradAccum ?? TRAIN.gradAccum;
  if (accum !== 1 && accum !== m) {
    throw new DsvError(`--grad-accum ${accum} conflicts with --pipeline ${p.algo} --pp ${p.ranks}: the step's micro-batches are the schedule's ${m} (set them with --microbatches)`);
  }
  return m;
}

/**
 * The optimizer update of a pipeline step on the main model: the replica-summed gradients into
 * `.grad` (none for a parameter no rank had a gradient for, as the sequential path leaves it),
 * then `applyUpdate` with divisor `m` (clipping, AdamW, bias update from the step's loads).
 */
export function applyPipelineUpdate(model: DeepseekV3, opt: AdamW, res: PoolStepResult, u: UpdateOptions, ema: BiasEmaStates, m: number): UpdateResult {
  for (const [i, param] of opt.params.entries()) {
    const name = opt.names[i]!;
    const g = res.grads.get(name);
    if (!g) throw new DsvError(`pipeline step: no rank returned a gradient for "${name}"`);
    param.grad = res.noGrad.has(name) ? null : Tensor.fromF32(g, param.shape);
  }
  return applyUpdate(model, opt, res.loads, u, ema, m);
}

/** Runs (or resumes) a pipeline-parallel training run; see the module comment. */
export async function trainPipelined(opts: TrainOptions): Promise<TrainResult> {
  const p = opts.pipeline;
  if (!p) throw new DsvError('trainPipelined needs TrainOptions.pipeline (use train for sequential training)');
  const m = checkPipelineOptions(opts, p);
  const schedule = buildSchedule(p.algo, p.ranks, m);
  const run = new TrainRun({ ...opts, gradAccum: m }, { pipeline: { algo: p.algo, ranks: p.ranks, microbatches: m } });
  const { model, opt, it, plan, o } = run;
  const cfg = model.cfg;
  const pool = await PipelineTrainPool.start(cfg, schedule, { threads: p.threads ?? TRAIN.pipelineThreads });
  const sendWeights = (): void =>
    pool.setWeights((name, kind) => {
      const t = (kind === 'param' ? model.params : model.buffers).get(name);
      if (!t) throw new DsvError(`pipeline rank holds ${kind} "${name}" that the model does not have`);
      return t.f32();
    });
  try {
    sendWeights();
    while (run.step < o.steps) {
      const t0 = performance.now();
      const step = run.step;
      const lambda = plan.lambda(step);
      const lr = plan.lr(step);
      // the step's M micro-batches, as the sequential trainer draws them, in batch order (§3)
      const batches = Array.from({ length: m }, () => it.next());
      const rows = batches.reduce((a, b) => a + b.batchSize, 0);
      const tokens = new Int32Array(batches.reduce((a, b) => a + b.tokens.length, 0));
      let at = 0;
      for (const b of batches) {
        tokens.set(b.tokens, at);
        at += b.tokens.length;
      }
      const res = await pool.step(tokens, rows, { mtpLambda: lambda, balanceAlpha: o.balanceAlpha, balance: o.balance });
      p.onTimeline?.(res.timeline, step);
      const parts: StepPart[] = res.losses.map((r) => ({ total: r.total, lm: r.lm, mtp: r.mtp_weighted, bal: r.balance_total }));
      const nonFinite = parts.find((x) => !Number.isFinite(x.total));
      let bad: string | null = nonFinite ? `non-finite loss (${nonFinite.total})` : null;
      let gradNorm = NaN;
      if (!bad) {
        const u = applyPipelineUpdate(model, opt, res, { lr, maxGradNorm: o.maxGradNorm, balance: o.balance, bias: { ...o.bias, gamma: plan.gamma(step) } }, run.ema, m);
        gradNorm = u.gradNorm;
        if (!u.applied) bad = `non-finite gradients (norm ${u.gradNorm})`;
        else sendWeights();
      }
      const stop = run.finishStep({ bad, parts, loads: res.loads, lambda, lr, gradNorm, nMicro: m, t0 }, null);
      if (stop) return stop;
    }
    return run.done(null);
  } finally {
    await pool.close();
  }
}
