/**
 * `dsv3 train`: trains a DeepSeek-V3-architecture model from scratch (src/train/trainer.ts).
 * With no arguments: a small MoE model (DEFAULT_TRAIN_CONFIG) on the embedded Moby-Dick text,
 * sized to visibly learn in about eight minutes on two CPU cores.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { type Command, UsageError, intFlag, numberFlag } from '../command.js';
import { loadModelConfig, parseModelConfig, type ModelConfig } from '../../model/config.js';
import type { BalanceMode, BiasMode } from '../../objective/balance.js';
import { DsvError } from '../../errors.js';
import { PIPELINE_ALGOS } from '../../parallel/schedules.js';
import { checkPipelineOptions, trainPipelined } from '../../train/pipeline-trainer.js';
import { train, type PipelineTrainOptions, type TrainOptions } from '../../train/trainer.js';

/**
 * The default model of `dsv3 train`: configs/bench-small.json's architecture (4 layers, the first
 * dense; MLA with 8 heads; 16 routed experts in 4 groups, top-4 from 2 groups, 1 shared; one MTP
 * module; 9.5M parameters) with a 2048-token vocabulary so that 1000 steps of 8x128 tokens (~0.4 s each after the training
 * performance pass, plus validation) fit in
 * about eight minutes on two cores.
 */
export const DEFAULT_TRAIN_CONFIG: Record<string, unknown> = {
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  vocab_size: 2048,
  hidden_size: 256,
  intermediate_size: 768,
  moe_intermediate_size: 128,
  num_hidden_layers: 4,
  first_k_dense_replace: 1,
  moe_layer_freq: 1,
  num_attention_heads: 8,
  num_key_value_heads: 8,
  q_lora_rank: 128,
  kv_lora_rank: 64,
  qk_nope_head_dim: 32,
  qk_rope_head_dim: 16,
  v_head_dim: 32,
  n_routed_experts: 16,
  n_shared_experts: 1,
  num_experts_per_tok: 4,
  n_group: 4,
  topk_group: 2,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  topk_method: 'noaux_tc',
  norm_topk_prob: true,
  num_nextn_predict_layers: 1,
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  rope_scaling: null,
  max_position_embeddings: 1024,
  tie_word_embeddings: false,
  initializer_range: 0.02,
  torch_dtype: 'float32',
};

const DEFAULTS = { steps: 1000, batch: 8, seq: 128, lr: 3e-3, seed: 0, evalEvery: 50, ckptEvery: 100 };

/** The paper's bias speed per unit of learning rate: γ = 0.001 at peak lr 2.2e-4 (section 4.2). */
export function biasGammaForLr(lr: number): number {
  return (1e-3 * lr) / 2.2e-4;
}

const r4 = (x: number): number => Number(x.toPrecision(2));

const HELP = `Usage: dsv3 train [options]

Trains a DeepSeek-V3-architecture MoE model from scratch (MLA, DeepSeekMoE with sigmoid routing
and aux-loss-free balancing, MTP) with the paper's recipe: AdamW (0.9, 0.95, wd 0.1), clipping
at 1.0, warmup -> constant -> cosine LR, L = L_Main + λ·L_MTP + α·L_Bal, bias updates after
every step. With no options: bench-small's architecture (${DEFAULT_TRAIN_CONFIG['num_hidden_layers']} layers, ${DEFAULT_TRAIN_CONFIG['n_routed_experts']} routed experts, top-${DEFAULT_TRAIN_CONFIG['num_experts_per_tok']}) with a
${DEFAULT_TRAIN_CONFIG['vocab_size']}-token BPE vocabulary on the embedded Moby-Dick text
(${DEFAULTS.steps} steps of ${DEFAULTS.batch}x${DEFAULTS.seq} tokens), about eight minutes on two cores.

Model and data:
  --config FILE         model config.json (default: built-in small config; see configs/)
  --data PATH           training text: a file or a directory of .txt/.md (default: Moby-Dick)
  --cache-dir DIR       token cache directory (default $DSV3_CACHE_DIR or ~/.cache/dsv3/data)
Schedule:
  --steps N             optimizer steps (default ${DEFAULTS.steps})
  --batch B             sequences per micro-batch (default ${DEFAULTS.batch})
  --seq S               tokens per sequence (default ${DEFAULTS.seq})
  --grad-accum N        micro-batches per step; gradients are summed and divided by N (default 1)
  --batch-warmup N      batch-size warmup: micro-batches per step grow from 1 to --grad-accum over
                        the first N steps (the paper grows 3072 -> 15360 sequences; default off)
  --lr X                peak learning rate (default ${DEFAULTS.lr})
  --warmup N            linear warmup steps (default 5% of --steps)
  --decay-start N       first step of the cosine decay (default: end of warmup)
  --min-lr X            learning rate at the end of the decay (default lr/10)
  --weight-decay X      AdamW decoupled weight decay on matrices (default 0.1)
  --max-grad-norm X     global-norm clipping (default 1.0)
  --moment-dtype f32|bf16  AdamW moment storage (default f32)
  --fp8                 FP8 mixed precision (paper section 3.3; default off): the Fprop, Dgrad and
                        Wgrad GEMMs of the MLA projections, dense / shared / routed expert FFNs
                        and MTP eh_proj on E4M3 operands (1x128 activation tiles, 128x128 weight
                        blocks, online scales), Linear inputs cached in FP8; embedding, output
                        head, MoE gate, norms and attention stay float32, as do the master
                        weights (add --moment-dtype bf16 for the paper's BF16 AdamW moments).
                        Recorded in run.json ("precision") and metrics.jsonl
  --seed N              initialisation and data order (default ${DEFAULTS.seed})
Losses and balancing:
  --balance MODE        aux-free (default: bias updates + complementary sequence-wise loss),
                        aux-loss (classic auxiliary loss, no bias), none
  --balance-alpha X     α of the balance loss (default 1e-4 for aux-free, 0.01 for aux-loss)
  --bias-gamma X        bias update speed γ (default: the paper's γ/lr ratio, 0.001 at peak
                        lr 2.2e-4, i.e. 0.001·lr/2.2e-4: ${r4(biasGammaForLr(DEFAULTS.lr))} at the default lr; the
                        bias must move as fast relative to the router as in the paper)
  --bias-mode MODE      sign (default, the paper) | proportional
  --bias-ema B          smooth the load with an EMA of factor B before the update (default off)
  --bias-bounds LO,HI   clamp the bias to [LO, HI]
  --bias-freeze N       γ = 0 from step N on (as at the end of the paper's run)
  --mtp-lambda X        MTP loss weight λ (default 0.3, the paper's first 10T tokens)
  --mtp-lambda-late X   λ from --mtp-switch on (default 0.1, the paper's last 4.8T tokens)
  --mtp-switch N        step at which λ drops (default: 68% of --steps, the paper's 10T/14.8T)
Pipeline parallelism (paper section 3.2.1; one worker thread per rank, persistent across steps):
  --pipeline ALGO       dualpipe | dualpipev | 1f1b | zb1p: each step's micro-batches (of --batch
                        sequences each) go through that schedule; gradients are summed over the
                        micro-batches and DualPipe's two replicas of every stage, then one update
                        (clip, AdamW, bias) on the main thread is copied into every rank. A step
                        equals the sequential step with --grad-accum = micro-batches: it consumes
                        micro-batches x --batch sequences. Not with --fp8 or --batch-warmup
  --pp N                pipeline ranks (DualPipe: even; default 2)
  --microbatches M      micro-batches per step (default: the smallest the schedule allows with
                        one per rank: 2N for dualpipe and dualpipev, N for 1f1b and zb1p;
                        DualPipe needs M even >= 2N, DualPipeV M >= 2N)
  --pp-threads T        native threads per rank (default 1)
Run:
  --out DIR             run directory (default runs/train-<date>)
  --resume [DIR]        continue bit-exactly from the latest checkpoint in --out (or from DIR)
  --eval-every N        validation every N steps (default ${DEFAULTS.evalEvery}; 0 = off)
  --eval-batches N      validation batches per evaluation (default 4)
  --ckpt-every N        checkpoint every N steps (default ${DEFAULTS.ckptEvery}; always at the end)
  --keep N              checkpoints to keep (default 2)
  --max-non-finite K    stop after K consecutive non-finite steps (default 5)
  --quiet               no progress output

Outputs in DIR: metrics.jsonl (one line per step: losses, lr, grad norm, tokens/s, per-layer
load, MaxVio and bias), run.json, checkpoint-<step>/ (config.json, model.safetensors,
tokenizer.json, generation_config.json, trainer_state/). See also dsv3 report DIR and
dsv3 sample --model DIR.
`;

const STRING_FLAGS = [
  'config', 'data', 'cache-dir', 'steps', 'batch', 'seq', 'grad-accum', 'batch-warmup', 'lr', 'warmup', 'decay-start', 'min-lr',
  'weight-decay', 'max-grad-norm', 'moment-dtype', 'seed', 'balance', 'balance-alpha', 'bias-gamma', 'bias-mode',
  'bias-ema', 'bias-bounds', 'bias-freeze', 'mtp-lambda', 'mtp-lambda-late', 'mtp-switch', 'out', 'resume',
  'eval-every', 'eval-batches', 'ckpt-every', 'keep', 'max-non-finite', 'pipeline', 'pp', 'microbatches', 'pp-threads',
];

function defaultOut(): string {
  const d = new Date();
  const p = (x: number): string => String(x).padStart(2, '0');
  return path.join('runs', `train-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`);
}

/** Parses `dsv3 train` flags into TrainOptions. */
export function parseTrainArgs(argv: string[]): TrainOptions {
  // `--resume` may stand alone (latest checkpoint of --out): give it an empty value; negative
  // numbers (`--bias-bounds -0.5,0.5`) are values, not flags
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a === '--resume' && (next === undefined || next.startsWith('--'))) args.push('--resume=');
    else if (a.startsWith('--') && !a.includes('=') && next !== undefined && /^-[\d.]/.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else args.push(a);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...Object.fromEntries(STRING_FLAGS.map((n) => [n, { type: 'string' as const }])), quiet: { type: 'boolean' }, fp8: { type: 'boolean' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\nRun dsv3 train --help for the options.`);
  }
  const { values: v, positionals } = parsed;
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const vals = v as Record<string, string | boolean | undefined>;
  const s = (n: string): string | undefined => vals[n] as string | undefined;
  const model: ModelConfig = s('config') ? loadModelConfig(s('config')!) : parseModelConfig(DEFAULT_TRAIN_CONFIG, 'built-in train config');
  const balance = (s('balance') ?? 'aux-free') as BalanceMode;
  if (!['aux-free', 'aux-loss', 'none'].includes(balance)) throw new UsageError(`--balance must be aux-free, aux-loss or none, got '${balance}'`);
  const biasMode = (s('bias-mode') ?? 'sign') as BiasMode;
  if (!['sign', 'proportional'].includes(biasMode)) throw new UsageError(`--bias-mode must be sign or proportional, got '${biasMode}'`);
  const momentDtype = (s('moment-dtype') ?? 'f32') as 'f32' | 'bf16';
  if (!['f32', 'bf16'].includes(momentDtype)) throw new UsageError(`--moment-dtype must be f32 or bf16, got '${momentDtype}'`);
  let bounds: [number, number] | undefined;
  if (s('bias-bounds')) {
    const m = /^(-?[\d.e+-]+),(-?[\d.e+-]+)$/.exec(s('bias-bounds')!);
    if (!m || !(Number(m[1]) <= Number(m[2]))) throw new UsageError(`--bias-bounds expects LO,HI with LO <= HI, got '${s('bias-bounds')}'`);
    bounds = [Number(m[1]), Number(m[2])];
  }
  const steps = intFlag('steps', s('steps'), DEFAULTS.steps, 1);
  const switchStep = s('mtp-switch') !== undefined ? intFlag('mtp-switch', s('mtp-switch'), 0) : undefined;
  const resume = s('resume');
  const lr = numberFlag('lr', s('lr'), DEFAULTS.lr);
  const o: TrainOptions = {
    model,
    steps,
    batch: intFlag('batch', s('batch'), DEFAULTS.batch, 1),
    seq: intFlag('seq', s('seq'), DEFAULTS.seq, 1),
    gradAccum: intFlag('grad-accum', s('grad-accum'), 1, 1),
    lr,
    warmup: intFlag('warmup', s('warmup'), Math.max(1, Math.round(steps * 0.05))),
    weightDecay: numberFlag('weight-decay', s('weight-decay'), 0.1),
    maxGradNorm: numberFlag('max-grad-norm', s('max-grad-norm'), 1.0),
    momentDtype,
    seed: intFlag('seed', s('seed'), DEFAULTS.seed),
    balance,
    balanceAlpha: numberFlag('balance-alpha', s('balance-alpha'), balance === 'aux-loss' ? 0.01 : balance === 'none' ? 0 : 1e-4),
    bias: {
      gamma: numberFlag('bias-gamma', s('bias-gamma'), biasGammaForLr(lr)),
      mode: biasMode,
      ...(s('bias-ema') !== undefined ? { emaBeta: numberFlag('bias-ema', s('bias-ema'), 0) } : {}),
      ...(bounds ? { bounds } : {}),
    },
    mtpLambda: numberFlag('mtp-lambda', s('mtp-lambda'), 0.3),
    evalEvery: intFlag('eval-every', s('eval-every'), DEFAULTS.evalEvery),
    evalBatches: intFlag('eval-batches', s('eval-batches'), 4, 1),
    ckptEvery: intFlag('ckpt-every', s('ckpt-every'), DEFAULTS.ckptEvery),
    keepCheckpoints: intFlag('keep', s('keep'), 2, 1),
    out: s('out') ?? defaultOut(),
    maxNonFinite: intFlag('max-non-finite', s('max-non-finite'), 5, 1),
    quiet: Boolean(v['quiet']),
  };
  if (v['fp8']) o.fp8 = true;
  if (s('data') !== undefined) o.data = s('data')!;
  if (s('cache-dir') !== undefined) o.cacheDir = s('cache-dir')!;
  if (s('batch-warmup') !== undefined) o.batchWarmup = intFlag('batch-warmup', s('batch-warmup'), 0);
  if (s('decay-start') !== undefined) o.decayStart = intFlag('decay-start', s('decay-start'), 0);
  if (s('min-lr') !== undefined) o.minLr = numberFlag('min-lr', s('min-lr'), 0);
  if (s('bias-freeze') !== undefined) o.biasFreezeStep = intFlag('bias-freeze', s('bias-freeze'), 0);
  o.mtpSwitchStep = switchStep ?? Math.round((steps * 10) / 14.8);
  o.mtpLambdaLate = numberFlag('mtp-lambda-late', s('mtp-lambda-late'), 0.1);
  if (resume !== undefined) o.resume = resume === '' ? true : resume;
  const pipe = s('pipeline');
  if (pipe === undefined) {
    for (const f of ['pp', 'microbatches', 'pp-threads']) if (s(f) !== undefined) throw new UsageError(`--${f} needs --pipeline ALGO (one of ${PIPELINE_ALGOS.join(', ')})`);
    return o;
  }
  if (!(PIPELINE_ALGOS as readonly string[]).includes(pipe)) throw new UsageError(`--pipeline must be one of ${PIPELINE_ALGOS.join(', ')}, got '${pipe}'`);
  if (s('grad-accum') !== undefined) throw new UsageError(`--grad-accum ${s('grad-accum')} cannot be combined with --pipeline ${pipe}: the micro-batches per step are --microbatches`);
  if (o.fp8) throw new UsageError(`--fp8 cannot be combined with --pipeline ${pipe}: pipeline stages run the float32 path only`);
  if (o.batchWarmup !== undefined) throw new UsageError(`--batch-warmup cannot be combined with --pipeline ${pipe}: a schedule has a fixed number of micro-batches per step`);
  const p: PipelineTrainOptions = { algo: pipe as PipelineTrainOptions['algo'], ranks: intFlag('pp', s('pp'), 2, 1), threads: intFlag('pp-threads', s('pp-threads'), 1, 1) };
  if (s('microbatches') !== undefined) p.microbatches = intFlag('microbatches', s('microbatches'), 1, 1);
  try {
    p.microbatches = checkPipelineOptions(o, p); // legal (ranks, micro-batches) for the schedule
  } catch (e) {
    if (e instanceof DsvError) throw new UsageError(`--pipeline ${pipe} --pp ${p.ranks}${s('microbatches') !== undefined ? ` --microbatches ${s('microbatches')}` : ''}: ${e.message}`);
    throw e;
  }
  o.pipeline = p;
  return o;
}

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a DeepSeek-V3-architecture MoE model from scratch (MTP, aux-loss-free balancing)',
  help: HELP,
  async run(argv) {
    const o = parseTrainArgs(argv);
    if (!o.quiet) process.stderr.write(`dsv3 train: run directory ${o.out}\n`);
    const r = o.pipeline ? await trainPipelined(o) : train(o);
    if (r.status === 'diverged') {
      process.stderr.write(`dsv3 train: ${r.message}\n`);
      return 1;
    }
    if (!o.quiet) process.stderr.write(`dsv3 train: ${r.message}\n`);
    process.stdout.write(JSON.stringify({ status: r.status, step: r.step, final_loss: r.losses[r.losses.length - 1] ?? null, val_loss: r.finalValLoss, checkpoint: r.lastCheckpoint }) + '\n');
    return 0;
  },
};
