/**
 * `dsv3 train`: trains a DeepSeek-V3-architecture model from scratch (src/train/trainer.ts).
 * With no arguments: a small MoE model (configs/train-small.json) on the embedded Moby-Dick text,
 * sized to visibly learn in about eight minutes on two CPU cores.
 */
import * as path from 'node:path';
import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { bool, custom, exists, fraction, int, nonNegative, oneOf, out, parseFlags, positive, precision, resolvePrecision, threads } from '../flags.js';
import { packageRoot } from '../../engine/native.js';
import { loadModelConfig } from '../../model/config.js';
import { DsvError } from '../../errors.js';
import { PIPELINE_ALGOS } from '../../parallel/schedules.js';
import { checkPipelineOptions, trainPipelined } from '../../train/pipeline-trainer.js';
import { balanceAlphaFor, biasGammaForLr, mtpSwitchStepFor, PAPER, TRAIN, warmupFor } from '../../train/recipe.js';
import type { PipelineTrainOptions, TrainOptions } from '../../train/train-options.js';
import { train } from '../../train/trainer.js';

const r4 = (x: number): number => Number(x.toPrecision(2));

const HELP = `Usage: dsv3 train [options]

Trains a DeepSeek-V3-architecture MoE model from scratch (MLA, DeepSeekMoE with sigmoid routing
and aux-loss-free balancing, MTP) with the paper's recipe (src/train/recipe.ts): AdamW (${PAPER.beta1},
${PAPER.beta2}, wd ${PAPER.weightDecay}), clipping at ${PAPER.maxGradNorm.toFixed(1)}, warmup -> constant -> cosine LR,
L = L_Main + λ·L_MTP + α·L_Bal, bias updates after every step. With no options: the model of ${TRAIN.config}
(configs/bench-small.json's architecture with a smaller BPE vocabulary) on the embedded Moby-Dick
text (${TRAIN.steps} steps of ${TRAIN.batch}x${TRAIN.seq} tokens), about eight minutes on two cores.

Model and data:
  --config FILE         model config.json (default: ${TRAIN.config} of the package)
  --data PATH           training text: a file or a directory of .txt/.md (default: Moby-Dick)
  --cache-dir DIR       token cache directory (default $DSV3_CACHE_DIR or ~/.cache/dsv3/data)
Schedule:
  --steps N             optimizer steps, >= 1 (default ${TRAIN.steps})
  --batch B             sequences per micro-batch, >= 1 (default ${TRAIN.batch})
  --seq S               tokens per sequence, >= 1 (default ${TRAIN.seq})
  --grad-accum N        micro-batches per step; gradients are summed and divided by N (default ${TRAIN.gradAccum})
  --batch-warmup N      batch-size warmup: micro-batches per step grow from 1 to --grad-accum over
                        the first N steps (the paper grows 3072 -> 15360 sequences; default off)
  --lr X                peak learning rate, > 0 (default ${TRAIN.lr})
  --warmup N            linear warmup steps (default ${TRAIN.warmupFraction * 100}% of --steps)
  --decay-start N       first step of the cosine decay (default: end of warmup)
  --min-lr X            learning rate at the end of the decay, <= --lr (default lr/${PAPER.lrFloorDivisor})
  --weight-decay X      AdamW decoupled weight decay on matrices, >= 0 (default ${PAPER.weightDecay})
  --max-grad-norm X     global-norm clipping, > 0 (default ${PAPER.maxGradNorm.toFixed(1)})
  --moment-dtype f32|bf16  AdamW moment storage (default ${TRAIN.momentDtype} under fp32; bf16 under
                        --precision fp8, as in the paper, and under --precision bf16 since
                        2026-12-07 (issue 13: peak RSS); f32 restores float32 moments)
  --precision fp32|bf16|fp8  training precision (default fp32). bf16: standard BF16 mixed
                        precision: the GEMMs of every Linear (MLA projections, dense FFNs, MTP
                        eh_proj, output head) and of the shared / routed experts take bf16
                        operands with float32 accumulation, forward and backward; weights are
                        rounded to bf16 once per optimizer step, Linear inputs saved for backward
                        in bf16; master weights, gradients, norms, softmax, attention core, MoE
                        gate, losses and AdamW's arithmetic stay float32; its moments are
                        bf16 unless --moment-dtype f32.
                        fp8: the same as --fp8 below. Recorded in run.json ("precision")
  --fp8                 FP8 mixed precision (paper section 3.3; default off): the Fprop, Dgrad and
                        Wgrad GEMMs of the MLA projections, dense / shared / routed expert FFNs
                        and MTP eh_proj on E4M3 operands (1x128 activation tiles, 128x128 weight
                        blocks, online scales), Linear inputs cached in FP8; the output head
                        runs as under --precision bf16 (the paper's "original precision");
                        embedding, MoE gate, norms and attention stay float32, as do the master
                        weights; AdamW moments default to BF16 (paper section 3.3.3).
                        Recorded in run.json ("precision") and metrics.jsonl
  --seed N              initialisation and data order (default ${TRAIN.seed})
Losses and balancing:
  --balance MODE        aux-free (default: bias updates + complementary sequence-wise loss),
                        aux-loss (classic auxiliary loss, no bias), none
  --balance-alpha X     α of the balance loss, >= 0 (default ${PAPER.balanceAlpha} for aux-free, the paper's;
                        ${TRAIN.auxLossAlpha} for aux-loss)
  --bias-gamma X        bias update speed γ, >= 0 (default: the paper's γ/lr ratio, ${PAPER.biasGamma} at peak
                        lr ${PAPER.peakLr.toExponential()}, i.e. ${PAPER.biasGamma}·lr/${PAPER.peakLr.toExponential()}: ${r4(biasGammaForLr(TRAIN.lr))} at the default lr; the
                        bias must move as fast relative to the router as in the paper)
  --bias-mode MODE      sign (default, the paper) | proportional
  --bias-ema B          smooth the load with an EMA of factor B in [0, 1) before the update
                        (default off)
  --bias-bounds LO,HI   clamp the bias to [LO, HI]
  --bias-freeze N       γ = 0 from step N on (as at the end of the paper's run)
  --mtp-lambda X        MTP loss weight λ, >= 0 (default ${PAPER.mtpLambda}, the paper's first ${PAPER.mtpSwitchTokensT}T tokens)
  --mtp-lambda-late X   λ from --mtp-switch on (default ${PAPER.mtpLambdaLate}, the paper's last ${(PAPER.totalTokensT - PAPER.mtpSwitchTokensT).toFixed(1)}T tokens)
  --mtp-switch N        step at which λ drops (default: ${Math.round((100 * PAPER.mtpSwitchTokensT) / PAPER.totalTokensT)}% of --steps, the paper's ${PAPER.mtpSwitchTokensT}T/${PAPER.totalTokensT}T)
Pipeline parallelism (paper section 3.2.1; one worker thread per rank, persistent across steps):
  --pipeline ALGO       dualpipe | dualpipev | 1f1b | zb1p: each step's micro-batches (of --batch
                        sequences each) go through that schedule; gradients are summed over the
                        micro-batches and DualPipe's two replicas of every stage, then one update
                        (clip, AdamW, bias) on the main thread is copied into every rank. A step
                        equals the sequential step with --grad-accum = micro-batches: it consumes
                        micro-batches x --batch sequences. Not with --fp8 or --batch-warmup
  --pp N                pipeline ranks (DualPipe: even; default ${TRAIN.pipelineRanks})
  --microbatches M      micro-batches per step (default: the smallest the schedule allows with
                        one per rank: 2N for dualpipe and dualpipev, N for 1f1b and zb1p;
                        DualPipe needs M even >= 2N, DualPipeV M >= 2N)
  --pp-threads T        size of the native thread pool during a pipeline step (default ${TRAIN.pipelineThreads}). The
                        pool is one per process, shared by all ranks (not T per rank): a rank
                        whose kernel call finds it busy computes on its own thread alone
Run:
  --out DIR             run directory (default runs/train-<date>)
  --resume [DIR]        continue bit-exactly from the latest checkpoint in --out (or from DIR)
  --eval-every N        validation every N steps (default ${TRAIN.evalEvery}; 0 = off)
  --eval-batches N      validation batches per evaluation (default ${TRAIN.evalBatches})
  --ckpt-every N        checkpoint every N steps (default ${TRAIN.ckptEvery}; always at the end)
  --keep N              checkpoints to keep (default ${TRAIN.keepCheckpoints})
  --max-non-finite K    stop after K consecutive non-finite steps (default ${TRAIN.maxNonFinite})
  --quiet               no progress output

Every value is checked before any work; a bad one exits with code 2 and names the flag.
Progress lines show the LM loss L_Main ("loss") and the MTP cross-entropy ("mtp"); "total" is
L_Main + λ·L_MTP + α·L_Bal, the loss that is minimised. At the end one JSON line on stdout:
final_lm_loss and val_loss (validation L_Main), then final_loss (the last step's total).

Outputs in DIR: metrics.jsonl (one line per step: losses, lr, grad norm, tokens/s, per-layer
load, MaxVio and bias), run.json, checkpoint-<step>/ (config.json, model.safetensors,
tokenizer.json, generation_config.json, trainer_state/). See also dsv3 report DIR and
dsv3 sample --model DIR.
`;

/** LO,HI with LO <= HI. */
function parseBounds(raw: string): [number, number] | undefined {
  const [lo, hi, ...rest] = raw.split(',').map((x) => (x.trim() === '' ? NaN : Number(x)));
  return rest.length === 0 && Number.isFinite(lo) && Number.isFinite(hi) && lo! <= hi! ? [lo!, hi!] : undefined;
}

const FLAGS = {
  config: exists('model config', 'path'),
  data: exists('training text', 'path'),
  'cache-dir': out('dir'),
  steps: int(1),
  batch: int(1),
  seq: int(1),
  'grad-accum': int(1),
  'batch-warmup': int(0),
  lr: positive(),
  warmup: int(0),
  'decay-start': int(0),
  'min-lr': nonNegative(),
  'weight-decay': nonNegative(),
  'max-grad-norm': positive(),
  'moment-dtype': oneOf(['f32', 'bf16'] as const),
  fp8: bool(),
  precision: precision(),
  seed: int(0),
  balance: oneOf(['aux-free', 'aux-loss', 'none'] as const),
  'balance-alpha': nonNegative(),
  'bias-gamma': nonNegative(),
  'bias-mode': oneOf(['sign', 'proportional'] as const),
  'bias-ema': fraction(),
  'bias-bounds': custom('LO,HI with LO <= HI', parseBounds),
  'bias-freeze': int(0),
  'mtp-lambda': nonNegative(),
  'mtp-lambda-late': nonNegative(),
  'mtp-switch': int(0),
  pipeline: oneOf(PIPELINE_ALGOS),
  pp: int(1),
  microbatches: int(1),
  'pp-threads': threads(),
  out: out('dir'),
  resume: custom('a checkpoint directory, or nothing (the latest in --out)', (raw) => raw, true),
  'eval-every': int(0),
  'eval-batches': int(1),
  'ckpt-every': int(0),
  keep: int(1),
  'max-non-finite': int(1),
  quiet: bool(),
};

function defaultOut(): string {
  const d = new Date();
  const p = (x: number): string => String(x).padStart(2, '0');
  return path.join('runs', `train-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`);
}

/** Parses and checks `dsv3 train` flags into TrainOptions (the recipe, recipe.ts, fills the rest). */
export function parseTrainArgs(argv: string[]): TrainOptions {
  const { values: v } = parseFlags('train', argv, FLAGS);
  const steps = v.steps ?? TRAIN.steps;
  const lr = v.lr ?? TRAIN.lr;
  const balance = v.balance ?? TRAIN.balance;
  if (v['min-lr'] !== undefined && v['min-lr'] > lr) throw new UsageError(`--min-lr ${v['min-lr']} exceeds the peak --lr ${lr}`);
  const model = loadModelConfig(v.config ?? path.join(packageRoot(), TRAIN.config));
  const o: TrainOptions = {
    model,
    steps,
    batch: v.batch ?? TRAIN.batch,
    seq: v.seq ?? TRAIN.seq,
    gradAccum: v['grad-accum'],
    lr,
    warmup: v.warmup ?? warmupFor(steps),
    decayStart: v['decay-start'],
    minLr: v['min-lr'],
    weightDecay: v['weight-decay'],
    maxGradNorm: v['max-grad-norm'],
    momentDtype: v['moment-dtype'],
    seed: v.seed ?? TRAIN.seed,
    balance,
    balanceAlpha: v['balance-alpha'] ?? balanceAlphaFor(balance),
    bias: {
      gamma: v['bias-gamma'] ?? biasGammaForLr(lr),
      mode: v['bias-mode'],
      ...(v['bias-ema'] !== undefined ? { emaBeta: v['bias-ema'] } : {}),
      ...(v['bias-bounds'] ? { bounds: v['bias-bounds'] } : {}),
    },
    biasFreezeStep: v['bias-freeze'],
    mtpLambda: v['mtp-lambda'] ?? PAPER.mtpLambda,
    mtpLambdaLate: v['mtp-lambda-late'] ?? PAPER.mtpLambdaLate,
    mtpSwitchStep: v['mtp-switch'] ?? mtpSwitchStepFor(steps),
    evalEvery: v['eval-every'] ?? TRAIN.evalEvery,
    evalBatches: v['eval-batches'],
    ckptEvery: v['ckpt-every'] ?? TRAIN.ckptEvery,
    keepCheckpoints: v.keep,
    out: v.out ?? defaultOut(),
    maxNonFinite: v['max-non-finite'],
    quiet: v.quiet === true,
  };
  const prec = resolvePrecision(v);
  if (prec === 'fp8') o.fp8 = true;
  if (prec !== 'fp32') o.precision = prec;
  if (v.data !== undefined) o.data = v.data;
  if (v['cache-dir'] !== undefined) o.cacheDir = v['cache-dir'];
  if (v['batch-warmup'] !== undefined) o.batchWarmup = v['batch-warmup'];
  if (v.resume !== undefined) o.resume = v.resume === '' ? true : v.resume;
  const pipe = v.pipeline;
  if (pipe === undefined) {
    for (const f of ['pp', 'microbatches', 'pp-threads'] as const) if (v[f] !== undefined) throw new UsageError(`--${f} needs --pipeline ALGO (one of ${PIPELINE_ALGOS.join(', ')})`);
    return o;
  }
  if (v['grad-accum'] !== undefined) throw new UsageError(`--grad-accum ${v['grad-accum']} cannot be combined with --pipeline ${pipe}: the micro-batches per step are --microbatches`);
  if (prec !== 'fp32') throw new UsageError(`${v.fp8 ? '--fp8' : `--precision ${prec}`} cannot be combined with --pipeline ${pipe}: pipeline stages run the float32 path only`);
  if (o.batchWarmup !== undefined) throw new UsageError(`--batch-warmup cannot be combined with --pipeline ${pipe}: a schedule has a fixed number of micro-batches per step`);
  const p: PipelineTrainOptions = { algo: pipe, ranks: v.pp ?? TRAIN.pipelineRanks, threads: v['pp-threads'] ?? TRAIN.pipelineThreads };
  if (v.microbatches !== undefined) p.microbatches = v.microbatches;
  try {
    p.microbatches = checkPipelineOptions(o, p); // legal (ranks, micro-batches) for the schedule
  } catch (e) {
    if (e instanceof DsvError) throw new UsageError(`--pipeline ${pipe} --pp ${p.ranks}${v.microbatches !== undefined ? ` --microbatches ${v.microbatches}` : ''}: ${e.message}`);
    throw e;
  }
  o.pipeline = p;
  return o;
}

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a DeepSeek-V3-architecture MoE model from scratch (MTP, aux-loss-free balancing)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const o = parseTrainArgs(argv);
    const r = o.pipeline ? await trainPipelined(o) : train(o);
    if (r.status === 'diverged') {
      process.stderr.write(`dsv3 train: ${r.message}\n`);
      return 1;
    }
    if (!o.quiet) process.stderr.write(`dsv3 train: ${r.message}\n`);
    // final_loss is the total; the LM losses come first
    const res = { status: r.status, step: r.step, final_lm_loss: r.finalLmLoss, val_loss: r.finalValLoss, final_loss: r.losses[r.losses.length - 1] ?? null, checkpoint: r.lastCheckpoint };
    process.stdout.write(JSON.stringify(res) + '\n');
    return 0;
  },
};
