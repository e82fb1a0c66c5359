/**
 * `dsv3 train`: pre-training of a DeepSeek-V3-architecture model from scratch on a text corpus,
 * following the report's recipe (section 4.2) at laptop scale: AdamW (0.9, 0.95, wd 0.1),
 * clipping at 1.0, warmup → constant → cosine LR, MTP with λ 0.3 → 0.1, aux-loss-free balancing
 * (bias γ 0.001) with the complementary sequence-wise loss (α 1e-4), gradient accumulation.
 *
 * Every step appends to RUN_DIR/metrics.jsonl; every `ckptEvery` steps (and at the end) a
 * checkpoint is written atomically (checkpoint.ts). `resume` restores weights, biases, AdamW
 * moments, the data position, the RNG and the bias EMA, and continues bit-exactly. A step whose
 * loss or gradients are not finite is skipped and reported; after `maxNonFinite` consecutive
 * ones training stops, leaving the last good checkpoint as it was.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BatchIterator, prepareData, validationBatches, type BatchIteratorState, type PreparedData } from '../data/dataset.js';
import { Rng, type RngState } from '../data/rng.js';
import { stepArena, withArena, type BufferArena } from '../engine/arena.js';
import { loadTokenizerJson, tokenizerToJson } from '../data/tokenizer/index.js';
import { DsvError } from '../errors.js';
import { configToJson, loadModelConfig, type ModelConfig } from '../model/config.js';
import { DeepseekV3 } from '../model/model.js';
import { maxVio, type BalanceMode, type BiasUpdateOptions } from './balance.js';
import { latestCheckpoint, listCheckpoints, loadTrainerState, saveTrainingCheckpoint, writeJsonAtomic } from './checkpoint.js';
import { lossReport } from './losses.js';
import { batchSizeAt, biasGammaAt, lrAt, mtpLambdaAt } from './lr-schedule.js';
import { MetricsWriter, type LayerStats } from './metrics.js';
import { AdamW } from './optimizer.js';
import { Progress } from './progress.js';
import { modelTensors } from './state-dict.js';
import { applyUpdate, evalLosses, forwardLosses, type BiasEmaStates } from './train-step.js';

export interface TrainOptions {
  model: ModelConfig;
  /** Corpus file or directory (default: the embedded Moby-Dick). */
  data?: string;
  /** Token cache directory (null: no cache; default: the data module's). */
  cacheDir?: string | null;
  steps: number;
  batch: number;
  seq: number;
  gradAccum?: number;
  /** Batch-size warmup: micro-batches per step grow linearly from 1 to gradAccum over this many steps. */
  batchWarmup?: number;
  lr: number;
  warmup: number;
  /** First step of the cosine decay (default: end of warmup); decay runs to the last step. */
  decayStart?: number;
  minLr?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  momentDtype?: 'f32' | 'bf16';
  /**
   * FP8 mixed-precision training (paper §3.3, Figure 6; SPEC §2; LossOptions.fp8): the covered
   * Linears' Fprop, Dgrad and Wgrad on E4M3 operands, float32 master weights. Validation runs
   * the float32 forward, so FP8 and float32 runs are evaluated alike. Default off.
   */
  fp8?: boolean;
  seed: number;
  balance: BalanceMode;
  balanceAlpha: number;
  bias: BiasUpdateOptions;
  /** From this step on the bias is frozen (γ = 0), as at the end of the paper's run. */
  biasFreezeStep?: number;
  mtpLambda: number;
  /** λ after `mtpSwitchStep` (paper: 0.1); default: `mtpLambda` (constant). */
  mtpLambdaLate?: number;
  mtpSwitchStep?: number;
  evalEvery: number;
  evalBatches?: number;
  ckptEvery: number;
  keepCheckpoints?: number;
  out: string;
  /** true: continue from the latest checkpoint in `out`; a string: from that checkpoint dir. */
  resume?: boolean | string;
  /** Stop after this many consecutive non-finite steps (default 5). */
  maxNonFinite?: number;
  quiet?: boolean;
  /** Test hook: poison step `step` ('loss' or 'grad') to exercise the non-finite path. */
  inject?: (step: number) => 'loss' | 'grad' | null;
  /** Pre-loaded data (tests, benchmarks). */
  prepared?: PreparedData;
}

export interface TrainResult {
  status: 'done' | 'diverged';
  message: string;
  step: number;
  /** Training loss of every step run in this call (NaN for skipped steps). */
  losses: number[];
  lastCheckpoint: string | null;
  finalValLoss: number | null;
}

interface TrainerStateJson {
  version: 1;
  step: number;
  tokens_seen: number;
  data: BatchIteratorState;
  rng: RngState;
  bias_ema: BiasEmaStates;
  consecutive_non_finite: number;
  skipped_steps: number;
  elapsed_s: number;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
}

/** Validation: mean losses over the first `n` validation batches (same batches every time). */
function validate(model: DeepseekV3, val: Int32Array, o: TrainOptions, n: number, lambda: number, arena: BufferArena | null): { total: number; lm: number; mtp: number } {
  const lm: number[] = [];
  const mtp: number[] = [];
  const tot: number[] = [];
  let k = 0;
  for (const b of validationBatches(val, o.batch, o.seq)) {
    if (k++ >= n) break;
    const r = withArena(arena, () => evalLosses(model, b.tokens, { mtpLambda: lambda, balanceAlpha: 0, balance: 'none' }, b.batchSize));
    arena?.reset(); // r holds plain numbers
    lm.push(r.lm);
    mtp.push(r.mtp_depth_mean_ce.length ? mean(r.mtp_depth_mean_ce) : NaN);
    tot.push(r.total);
  }
  return { total: mean(tot), lm: mean(lm), mtp: mean(mtp) };
}

export function trainerPlan(o: TrainOptions): { lr: (s: number) => number; lambda: (s: number) => number; gamma: (s: number) => number } {
  const decayStart = o.decayStart ?? o.warmup;
  const sched = { peak: o.lr, warmup: o.warmup, decayStart, decaySteps: Math.max(0, o.steps - decayStart), floor: o.minLr ?? o.lr / 10 };
  const lam = { early: o.mtpLambda, late: o.mtpLambdaLate ?? o.mtpLambda, switchStep: o.mtpSwitchStep ?? Infinity };
  const gam = { early: o.bias.gamma ?? 1e-3, late: 0, switchStep: o.biasFreezeStep ?? Infinity };
  return { lr: (s) => lrAt(s, sched), lambda: (s) => mtpLambdaAt(s, lam), gamma: (s) => biasGammaAt(s, gam) };
}

/** The precision run.json of the run in `dir` records ('fp32' for runs from before the flag), or null. */
function startPrecision(dir: string): string | null {
  try {
    const run = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { precision?: unknown };
    return typeof run.precision === 'string' ? run.precision : 'fp32';
  } catch {
    return null; // no (readable) run.json: nothing to compare with
  }
}

/** Runs (or resumes) a training run; see the module comment. */
export function train(o: TrainOptions): TrainResult {
  const progress = new Progress(process.stderr, 10, o.quiet ?? false);
  const accum = o.gradAccum ?? 1;
  if (!Number.isInteger(accum) || accum < 1) throw new DsvError(`--grad-accum must be a positive integer, got ${accum}`);
  let resumeDir: string | null = null;
  if (o.resume) {
    resumeDir = typeof o.resume === 'string' ? o.resume : latestCheckpoint(o.out);
    if (!resumeDir) throw new DsvError(`--resume: no checkpoint found in ${o.out}`);
  } else if (listCheckpoints(o.out).length > 0) {
    throw new DsvError(`${o.out} already holds checkpoints of another run; continue it with --resume or choose another --out`);
  }
  // a resumed run keeps its own config and tokenizer (so the token stream is the same)
  const baseCfg = resumeDir ? loadModelConfig(resumeDir) : o.model;
  const resumeTok = resumeDir && fs.existsSync(path.join(resumeDir, 'tokenizer.json')) ? loadTokenizerJson(path.join(resumeDir, 'tokenizer.json')) : undefined;
  const data =
    o.prepared ??
    prepareData({
      ...(o.data !== undefined ? { data: o.data } : {}),
      ...(resumeTok ? { tokenizer: resumeTok } : { vocabSize: baseCfg.vocab_size }),
      ...(o.cacheDir !== undefined ? { cacheDir: o.cacheDir } : {}),
      seqLen: o.seq,
      log: (m) => progress.log(m),
    });
  const tok = data.tokenizer;
  if (tok.vocabSize > baseCfg.vocab_size) throw new DsvError(`the tokenizer has ${tok.vocabSize} tokens but the model's vocab_size is ${baseCfg.vocab_size}`);
  const cfg: ModelConfig = { ...baseCfg, bos_token_id: tok.bosId ?? null, eos_token_id: tok.eosId ?? null };
  const model = resumeDir ? DeepseekV3.load(resumeDir, { weights: 'f32' }) : DeepseekV3.randomInit(cfg, o.seed);
  const opt = new AdamW(model.parameters(), { lr: o.lr, weightDecay: o.weightDecay ?? 0.1, momentDtype: o.momentDtype ?? 'f32' });
  const it = new BatchIterator(data.train, { batchSize: o.batch, seqLen: o.seq, seed: o.seed });
  // the trainer's own random stream: no op of the default recipe draws from it (no dropout), but
  // it is saved and restored with the rest so any stochastic addition resumes exactly
  let rng = new Rng(o.seed);
  let ema: BiasEmaStates = {};
  let step = 0;
  let tokensSeen = 0;
  let consecutive = 0;
  let skipped = 0;
  let elapsed = 0;
  fs.mkdirSync(o.out, { recursive: true });
  const metrics = new MetricsWriter(path.join(o.out, 'metrics.jsonl'));
  if (resumeDir) {
    const { state, optimizer } = loadTrainerState(resumeDir);
    const s = state as unknown as TrainerStateJson;
    opt.loadState(optimizer);
    it.restore(s.data);
    rng = Rng.fromState(s.rng);
    ema = s.bias_ema ?? {};
    step = s.step;
    tokensSeen = s.tokens_seen;
    consecutive = s.consecutive_non_finite;
    skipped = s.skipped_steps;
    elapsed = s.elapsed_s;
    metrics.truncateAfter(step);
    progress.log(`resumed from ${resumeDir} at step ${step}`);
    const before = startPrecision(o.out);
    if (before !== null && before !== (o.fp8 ? 'fp8' : 'fp32')) progress.log(`note: the run started in ${before}; it continues in ${o.fp8 ? 'fp8' : 'fp32'} (step records say which)`);
  } else {
    fs.rmSync(metrics.file, { force: true });
    writeJsonAtomic(path.join(o.out, 'run.json'), {
      steps: o.steps, batch: o.batch, seq: o.seq, grad_accum: accum, batch_warmup: o.batchWarmup ?? 0, lr: o.lr, warmup: o.warmup, seed: o.seed,
      balance: o.balance, balance_alpha: o.balanceAlpha, bias_gamma: o.bias.gamma ?? 1e-3, bias_mode: o.bias.mode ?? 'sign',
      mtp_lambda: o.mtpLambda, precision: o.fp8 ? 'fp8' : 'fp32', moment_dtype: o.momentDtype ?? 'f32', data: data.corpusName, train_tokens: data.train.length, val_tokens: data.val.length,
      parameters: model.parameters().reduce((a, p) => a + p.size, 0), model: configToJson(cfg),
    });
  }
  const plan = trainerPlan(o);
  const maxNonFinite = o.maxNonFinite ?? 5;
  const evalN = o.evalBatches ?? 4;
  const losses: number[] = [];
  let lastCkpt: string | null = resumeDir;
  let secPerStep = NaN;
  let finalVal: number | null = null;

  const save = (): void => {
    const st: TrainerStateJson = {
      version: 1, step, tokens_seen: tokensSeen, data: it.state(), rng: rng.state(), bias_ema: ema,
      consecutive_non_finite: consecutive, skipped_steps: skipped, elapsed_s: elapsed,
    };
    lastCkpt = saveTrainingCheckpoint(o.out, step, {
      config: configToJson(model.cfg),
      tensors: modelTensors(model),
      tokenizerJson: JSON.stringify(tokenizerToJson(tok)),
      generationConfig: { _from_model_config: true, bos_token_id: model.cfg.bos_token_id, eos_token_id: model.cfg.eos_token_id, do_sample: true, temperature: 1.0, top_k: 50 },
      trainerState: st as unknown as Record<string, unknown>,
      optimizer: opt.state(),
    }, o.keepCheckpoints ?? 2);
  };

  const arena = stepArena();
  while (step < o.steps) {
    const t0 = performance.now();
    const lambda = plan.lambda(step);
    const lr = plan.lr(step);
    const lossOpts = { mtpLambda: lambda, balanceAlpha: o.balanceAlpha, balance: o.balance, fp8: o.fp8 ?? false };
    const loads = new Map<number, Int32Array>();
    const parts: { total: number; lm: number; mtp: number; bal: number }[] = [];
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
        f.terms.total.backward();
        if (inj === 'grad') {
          const g = opt.params[0]!.grad;
          if (g) g.f32()[0] = NaN;
        }
      }
      if (!bad) {
        const u = applyUpdate(model, opt, loads, { lr, maxGradNorm: o.maxGradNorm ?? 1.0, balance: o.balance, bias: { ...o.bias, gamma: plan.gamma(step) } }, ema, nMicro);
        gradNorm = u.gradNorm;
        if (!u.applied) bad = `non-finite gradients (norm ${u.gradNorm})`;
      } else {
        opt.zeroGrad();
      }
    });
    arena?.reset(); // gradients are applied and cleared; losses and loads were copied out
    const tokens = o.batch * o.seq * nMicro;
    tokensSeen += tokens;
    step++;
    const dt = (performance.now() - t0) / 1000;
    elapsed += dt;
    secPerStep = Number.isFinite(secPerStep) ? 0.9 * secPerStep + 0.1 * dt : dt;
    if (bad) {
      consecutive++;
      skipped++;
      losses.push(NaN);
      metrics.append({ type: 'skip', step, reason: bad, consecutive });
      progress.log(`step ${step}: skipped, ${bad} (${consecutive} in a row)`);
      if (consecutive >= maxNonFinite) {
        progress.done();
        const message =
          `training stopped at step ${step}: ${consecutive} consecutive steps with non-finite loss or gradients ` +
          `(lower --lr or raise --warmup). Last good checkpoint: ${lastCkpt ?? 'none (no checkpoint was written yet)'}`;
        arena?.trim();
        return { status: 'diverged', message, step, losses, lastCheckpoint: lastCkpt, finalValLoss: finalVal };
      }
      continue;
    }
    consecutive = 0;
    const total = mean(parts.map((p) => p.total));
    losses.push(total);
    const layers: Record<string, LayerStats> = {};
    const biases = model.balanceBiases();
    let worstVio = 0;
    for (const [l, load] of loads) {
      const mv = maxVio(load);
      worstVio = Math.max(worstVio, mv);
      layers[String(l)] = { load: Array.from(load), maxvio: mv, bias: Array.from(biases.get(l)?.f32() ?? []) };
    }
    const mtp = mean(parts.map((p) => p.mtp));
    metrics.append({
      type: 'step', step, loss: total, lm: mean(parts.map((p) => p.lm)), mtp, balance: mean(parts.map((p) => p.bal)),
      lr, grad_norm: gradNorm, tokens_per_s: tokens / dt, mtp_lambda: lambda, layers, ...(o.fp8 ? { fp8: true } : {}),
    });
    progress.update({ step, steps: o.steps, loss: total, mtp: lambda > 0 ? mtp / lambda : NaN, tokensPerS: tokens / dt, maxVio: worstVio, lr, secPerStep });
    if (o.evalEvery > 0 && (step % o.evalEvery === 0 || step === o.steps) && data.val.length > o.seq) {
      const v = validate(model, data.val, o, evalN, lambda, arena);
      finalVal = v.lm;
      metrics.append({ type: 'eval', step, val_loss: v.total, val_lm: v.lm, val_mtp: v.mtp });
      progress.log(`step ${step}: validation LM loss ${v.lm.toFixed(4)}, MTP CE ${Number.isFinite(v.mtp) ? v.mtp.toFixed(4) : '-'}`);
    }
    if ((o.ckptEvery > 0 && step % o.ckptEvery === 0) || step === o.steps) save();
  }
  arena?.trim(); // the arena's buffers are unmapped now, not at some later garbage collection
  progress.done();
  return { status: 'done', message: `trained ${step} steps; checkpoint ${lastCkpt}`, step, losses, lastCheckpoint: lastCkpt, finalValLoss: finalVal };
}
