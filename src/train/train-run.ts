/**
 * The parts of a `dsv3 train` run that do not depend on how a step's gradients are computed:
 * setup (fresh run or resume: data, model, AdamW, data iterator, RNG, bias EMA, run.json), the
 * bookkeeping after each optimizer step (metrics, progress, validation, checkpoints, the
 * non-finite counter) and checkpointing. Used by the sequential loop (trainer.ts) and by
 * pipeline-parallel training (pipeline-trainer.ts), so both write the same run directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BatchIterator, prepareData, validationBatches, type BatchIteratorState, type PreparedData } from '../data/dataset.js';
import { Rng, type RngState } from '../data/rng.js';
import { type BufferArena } from '../engine/arena.js';
import { withArena } from '../engine/active-arena.js';
import { writeFileAtomic } from '../io/atomic-write.js';
import { loadTokenizerJson, tokenizerConfigJson, tokenizerToJson, type Tokenizer } from '../data/tokenizer/index.js';
import { DsvError } from '../errors.js';
import { configToJson, loadModelConfig, type ModelConfig } from '../model/config.js';
import { DeepseekV3 } from '../model/model.js';
import { maxVio } from '../objective/balance.js';
import { latestCheckpoint, listCheckpoints, loadTrainerState, saveTrainingCheckpoint, tidyRunDir, TRAINER_STATE_DIR } from './run-checkpoints.js';
import { MetricsWriter, type LayerStats, type MetricRecord } from './metrics.js';
import { AdamW, type AdamWState } from './optimizer.js';
import { bf16ArrayToF32, f32ArrayToBf16 } from '../engine/dtype.js';
import { Progress } from './progress.js';
import { f32CheckpointTensors } from '../model/checkpoint-layout.js';
import { evalLosses, type BiasEmaStates } from './train-step.js';
import { withRecipe } from './recipe.js';
import { runPrecision, trainerPlan, type RunOptions, type TrainOptions, type TrainResult } from './train-options.js';

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

export function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
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

/** Losses of one micro-batch as the step record averages them. */
export interface StepPart {
  total: number;
  lm: number;
  mtp: number;
  bal: number;
}

/** What one optimizer step produced (for `TrainRun.finishStep`). */
export interface StepOutcome {
  /** Why the step was skipped (non-finite loss or gradients), or null. */
  bad: string | null;
  parts: StepPart[];
  loads: Map<number, Int32Array>;
  lambda: number;
  lr: number;
  gradNorm: number;
  /** Micro-batches of the step. */
  nMicro: number;
  t0: number;
}

/** A run: its state and the step bookkeeping shared by the sequential and pipeline loops. */
export class TrainRun {
  readonly o: RunOptions;
  readonly progress: Progress;
  readonly data: PreparedData;
  readonly tok: Tokenizer;
  readonly model: DeepseekV3;
  readonly opt: AdamW;
  readonly it: BatchIterator;
  readonly metrics: MetricsWriter;
  readonly plan: ReturnType<typeof trainerPlan>;
  rng: Rng;
  ema: BiasEmaStates = {};
  step = 0;
  tokensSeen = 0;
  consecutive = 0;
  skipped = 0;
  elapsed = 0;
  readonly losses: number[] = [];
  lastCkpt: string | null;
  secPerStep = NaN;
  finalVal: number | null = null;
  finalLm: number | null = null;

  /** Sets up a fresh run or resumes one (`extraRun`: more run.json fields of a fresh run). */
  constructor(opts: TrainOptions, extraRun: Record<string, unknown> = {}) {
    const o = withRecipe(opts);
    this.o = o;
    this.progress = new Progress(process.stderr, 10, o.quiet ?? false);
    const progress = this.progress;
    let resumeDir: string | null = null;
    if (o.resume) {
      resumeDir = typeof o.resume === 'string' ? o.resume : latestCheckpoint(o.out);
      if (!resumeDir) throw new DsvError(`--resume: no checkpoint found in ${o.out}`);
    } else if (listCheckpoints(o.out).length > 0) {
      throw new DsvError(`${o.out} already holds checkpoints of another run; continue it with --resume or choose another --out`);
    }
    this.lastCkpt = resumeDir;
    // a resumed run keeps its own config and tokenizer (so the token stream is the same)
    const baseCfg = resumeDir ? loadModelConfig(resumeDir) : o.model;
    if (o.seq > baseCfg.max_position_embeddings) throw new DsvError(`--seq ${o.seq} exceeds the model's max_position_embeddings (${baseCfg.max_position_embeddings})`);
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
    this.data = data;
    const tok = data.tokenizer;
    this.tok = tok;
    if (tok.vocabSize > baseCfg.vocab_size) throw new DsvError(`the tokenizer has ${tok.vocabSize} tokens but the model's vocab_size is ${baseCfg.vocab_size}`);
    const cfg: ModelConfig = { ...baseCfg, bos_token_id: tok.bosId ?? null, eos_token_id: tok.eosId ?? null };
    const model = resumeDir ? DeepseekV3.load(resumeDir, { weights: 'f32' }) : DeepseekV3.randomInit(cfg, o.seed);
    this.model = model;
    this.opt = new AdamW(model.parameters(), { lr: o.lr, weightDecay: o.weightDecay, momentDtype: o.momentDtype });
    this.it = new BatchIterator(data.train, { batchSize: o.batch, seqLen: o.seq, seed: o.seed });
    // the trainer's own random stream: no op of the default recipe draws from it (no dropout), but
    // it is saved and restored with the rest so any stochastic addition resumes exactly
    this.rng = new Rng(o.seed);
    fs.mkdirSync(o.out, { recursive: true });
    progress.log(`run directory ${o.out}`);
    this.metrics = new MetricsWriter(path.join(o.out, 'metrics.jsonl'));
    if (resumeDir) {
      const { state, optimizer } = loadTrainerState(resumeDir);
      const s = state as unknown as TrainerStateJson;
      const inFile = (f: string, run: () => void): void => {
        try {
          run();
        } catch (e) {
          throw e instanceof DsvError ? new DsvError(`${path.join(resumeDir!, TRAINER_STATE_DIR, f)}: ${e.message}`) : e;
        }
      };
      // moments saved in the other storage (a run continued with or without --fp8, whose default
      // differs, or another --moment-dtype) are converted: bf16 -> f32 exactly, f32 -> bf16 rounded
      if (optimizer.momentDtype !== this.opt.momentDtype) {
        progress.log(`note: the checkpoint's AdamW moments are ${optimizer.momentDtype}; they continue as ${this.opt.momentDtype}`);
      }
      inFile('optimizer.safetensors', () => this.opt.loadState(convertMoments(optimizer, this.opt.momentDtype)));
      inFile('state.json', () => {
        for (const k of ['step', 'tokens_seen', 'consecutive_non_finite', 'skipped_steps', 'elapsed_s'] as const) {
          const int = k !== 'elapsed_s';
          if (!(int ? Number.isSafeInteger(s[k]) : Number.isFinite(s[k])) || s[k] < 0) throw new DsvError(`"${k}" must be a non-negative ${int ? 'integer' : 'number'}, got ${JSON.stringify(s[k])}`);
        }
        this.it.restore(s.data);
        this.rng = Rng.fromState(s.rng);
      });
      this.ema = s.bias_ema ?? {};
      this.step = s.step;
      this.tokensSeen = s.tokens_seen;
      this.consecutive = s.consecutive_non_finite;
      this.skipped = s.skipped_steps;
      this.elapsed = s.elapsed_s;
      this.metrics.truncateAfter(this.step);
      if (o.resume === true) tidyRunDir(o.out, o.keepCheckpoints ?? 2); // what a killed run left
      progress.log(`resumed from ${resumeDir} at step ${this.step}`);
      const before = startPrecision(o.out);
      if (before !== null && before !== runPrecision(o)) progress.log(`note: the run started in ${before}; it continues in ${runPrecision(o)} (step records say which)`);
    } else {
      fs.rmSync(this.metrics.file, { force: true });
      writeFileAtomic(path.join(o.out, 'run.json'), JSON.stringify({
        steps: o.steps, batch: o.batch, seq: o.seq, grad_accum: o.gradAccum, batch_warmup: o.batchWarmup ?? 0, lr: o.lr, warmup: o.warmup, seed: o.seed,
        balance: o.balance, balance_alpha: o.balanceAlpha, bias_gamma: o.bias.gamma, bias_mode: o.bias.mode,
        mtp_lambda: o.mtpLambda, precision: runPrecision(o), moment_dtype: o.momentDtype, data: data.corpusName, train_tokens: data.train.length, val_tokens: data.val.length,
        parameters: model.parameters().reduce((a, p) => a + p.size, 0), model: configToJson(cfg), ...extraRun,
      }, null, 2) + '\n');
    }
    this.plan = trainerPlan(o);
  }

  /** Appends a record to metrics.jsonl and hands it to the caller's onRecord. */
  private record(r: MetricRecord): void {
    this.metrics.append(r);
    this.o.onRecord?.(r);
  }

  /** Writes a checkpoint of the current step (HF layout + trainer_state/). */
  save(): void {
    const { o, model } = this;
    const st: TrainerStateJson = {
      version: 1, step: this.step, tokens_seen: this.tokensSeen, data: this.it.state(), rng: this.rng.state(), bias_ema: this.ema,
      consecutive_non_finite: this.consecutive, skipped_steps: this.skipped, elapsed_s: this.elapsed,
    };
    this.metrics.sync();
    this.lastCkpt = saveTrainingCheckpoint(o.out, this.step, {
      config: configToJson(model.cfg),
      tensors: f32CheckpointTensors(model),
      tokenizerJson: JSON.stringify(tokenizerToJson(this.tok)),
      tokenizerConfig: tokenizerConfigJson(this.tok),
      generationConfig: { _from_model_config: true, bos_token_id: model.cfg.bos_token_id, eos_token_id: model.cfg.eos_token_id, do_sample: true, temperature: 1.0, top_k: 50 },
      trainerState: st as unknown as Record<string, unknown>,
      optimizer: this.opt.state(),
    }, o.keepCheckpoints);
  }

  /** Validation: mean losses over the first `n` validation batches (same batches every time). */
  validate(n: number, lambda: number, arena: BufferArena | null): { total: number; lm: number; mtp: number } {
    const o = this.o;
    const lm: number[] = [];
    const mtp: number[] = [];
    const tot: number[] = [];
    let k = 0;
    for (const b of validationBatches(this.data.val, o.batch, o.seq)) {
      if (k++ >= n) break;
      const r = withArena(arena, () => evalLosses(this.model, b.tokens, { mtpLambda: lambda, balanceAlpha: 0, balance: 'none' }, b.batchSize));
      arena?.reset(); // r holds plain numbers
      lm.push(r.lm);
      mtp.push(r.mtp_depth_mean_ce.length ? mean(r.mtp_depth_mean_ce) : NaN);
      tot.push(r.total);
    }
    return { total: mean(tot), lm: mean(lm), mtp: mean(mtp) };
  }

  /**
   * Bookkeeping after a step whose update (if any) is applied: counters, metrics, progress,
   * validation, checkpoints. Returns the run's result when training must stop (diverged).
   */
  finishStep(s: StepOutcome, arena: BufferArena | null): TrainResult | null {
    const o = this.o;
    const tokens = o.batch * o.seq * s.nMicro;
    this.tokensSeen += tokens;
    this.step++;
    const step = this.step;
    const dt = (performance.now() - s.t0) / 1000;
    this.elapsed += dt;
    this.secPerStep = Number.isFinite(this.secPerStep) ? 0.9 * this.secPerStep + 0.1 * dt : dt;
    if (s.bad) {
      this.consecutive++;
      this.skipped++;
      this.losses.push(NaN);
      this.record({ type: 'skip', step, reason: s.bad, consecutive: this.consecutive });
      this.progress.log(`step ${step}: skipped, ${s.bad} (${this.consecutive} in a row)`);
      if (this.consecutive >= o.maxNonFinite) {
        this.progress.done();
        const message =
          `training stopped at step ${step}: ${this.consecutive} consecutive steps with non-finite loss or gradients ` +
          `(lower --lr or raise --warmup). Last good checkpoint: ${this.lastCkpt ?? 'none (no checkpoint was written yet)'}`;
        arena?.trim();
        return { status: 'diverged', message, step, losses: this.losses, finalLmLoss: this.finalLm, lastCheckpoint: this.lastCkpt, finalValLoss: this.finalVal };
      }
      return null;
    }
    this.consecutive = 0;
    const { parts, loads, lambda, lr } = s;
    const total = mean(parts.map((p) => p.total));
    this.losses.push(total);
    const layers: Record<string, LayerStats> = {};
    const biases = this.model.balanceBiases();
    let worstVio = 0;
    for (const [l, load] of loads) {
      const mv = maxVio(load);
      worstVio = Math.max(worstVio, mv);
      layers[String(l)] = { load: Array.from(load), maxvio: mv, bias: Array.from(biases.get(l)?.f32() ?? []) };
    }
    const mtp = mean(parts.map((p) => p.mtp));
    const lm = mean(parts.map((p) => p.lm));
    this.finalLm = lm;
    this.record({
      type: 'step', step, loss: total, lm, mtp, balance: mean(parts.map((p) => p.bal)),
      lr, grad_norm: s.gradNorm, tokens_per_s: tokens / dt, mtp_lambda: lambda, layers, ...(runPrecision(o) === 'fp8' ? { fp8: true } : {}),
      ...(runPrecision(o) !== 'fp32' ? { precision: runPrecision(o) as 'bf16' | 'fp8' } : {}),
    });
    this.progress.update({ step, steps: o.steps, lm, mtp: lambda > 0 ? mtp / lambda : NaN, total, tokensPerS: tokens / dt, maxVio: worstVio, lr, secPerStep: this.secPerStep });
    if (o.evalEvery > 0 && (step % o.evalEvery === 0 || step === o.steps) && this.data.val.length > o.seq) {
      const v = this.validate(o.evalBatches, lambda, arena);
      this.finalVal = v.lm;
      this.record({ type: 'eval', step, val_loss: v.total, val_lm: v.lm, val_mtp: v.mtp });
      this.progress.log(`step ${step}: validation LM loss ${v.lm.toFixed(4)}, MTP CE ${Number.isFinite(v.mtp) ? v.mtp.toFixed(4) : '-'}`);
    }
    if ((o.ckptEvery > 0 && step % o.ckptEvery === 0) || step === o.steps) this.save();
    return null;
  }

  /** The result of a run that reached its last step. */
  done(arena: BufferArena | null): TrainResult {
    arena?.trim(); // the arena's buffers are unmapped now, not at some later garbage collection
    this.progress.done();
    return { status: 'done', message: `trained ${this.step} steps; checkpoint ${this.lastCkpt}`, step: this.step, losses: this.losses, finalLmLoss: this.finalLm, lastCheckpoint: this.lastCkpt, finalValLoss: this.finalVal };
  }
}

/** AdamW state with its moments in `dtype` (bf16 -> f32 exact, f32 -> bf16 round to nearest even). */
function convertMoments(s: AdamWState, dtype: 'f32' | 'bf16'): AdamWState {
  if (s.momentDtype === dtype) return s;
  const conv = (r: AdamWState['m']): AdamWState['m'] =>
    Object.fromEntries(Object.entries(r).map(([k, a]) => [k, dtype === 'f32' ? bf16ArrayToF32(a as Uint16Array) : f32ArrayToBf16(a as Float32Array)]));
  return { step: s.step, momentDtype: dtype, m: conv(s.m), v: conv(s.v) };
}
