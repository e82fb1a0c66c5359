/**
 * `dsv3 train-step`: exactly one training step of a checkpoint on one batch, writing every
 * quantity of the golden train-step fixture (losses, per-position NLL, gradients, updated
 * parameters, routing, loads and the updated balance biases).
 */
import type { Command } from '../command.js';
import { exists, fraction, nonNegative, oneOf, out, parseFlags, positive, required } from '../flags.js';
import { Tensor } from '../../engine/tensor.js';
import { DsvError } from '../../errors.js';
import { SafetensorsFile } from '../../io/safetensors-read.js';
import { type TensorToWrite, writeSafetensors } from '../../io/safetensors-write.js';
import { DeepseekV3 } from '../../model/model.js';
import type { LossReport } from '../../objective/losses.js';
import { AdamW } from '../../train/optimizer.js';
import { PAPER, TRAIN } from '../../train/recipe.js';
import { trainStep, type TrainStepOptions } from '../../train/train-step.js';

const HELP = `Usage: dsv3 train-step --model DIR --batch FILE --out OUT.safetensors --lr X --mtp-lambda X
                       --balance-alpha X --bias-gamma X [options]

Runs exactly one DeepSeek-V3 training step (forward with MTP, L = L_Main + L_MTP + L_Bal,
backward, global-norm clipping, one AdamW step from zero state, aux-loss-free bias update) and
writes the results. Prints the losses as one JSON line.

Required:
  --model DIR            float32/BF16 checkpoint directory (config.json + model.safetensors)
  --batch FILE           safetensors file with tokens (I32 [B, S+1]); the model reads tokens[:, :S]
  --out OUT              output safetensors file (written atomically)
  --lr X                 AdamW learning rate, > 0
  --mtp-lambda X         MTP loss weight λ, >= 0
  --balance-alpha X      α of the sequence-wise balance loss, >= 0
  --bias-gamma X         bias update speed γ, >= 0

Options:
  --weight-decay X       decoupled weight decay on >= 2-D parameters, >= 0 (default ${PAPER.weightDecay})
  --max-grad-norm X      global-norm clipping threshold, > 0 (default ${PAPER.maxGradNorm.toFixed(1)})
  --beta1 X, --beta2 X   AdamW betas, in [0, 1) (default ${PAPER.beta1}, ${PAPER.beta2})
  --eps X                AdamW epsilon, > 0 (default ${TRAIN.adamEps})
  --balance MODE         aux-free (default) | aux-loss | none
  --bias-mode MODE       sign (default) | proportional

Output tensors: logits [B,S,V], lm_nll [B,S], mtp_nll.depth.k [B,S-k-1], grad.<param> (before
clipping), updated.<param>, router.layers.j.topk_idx (I32 [B,T,K]), load.layers.j (I32 [E]),
bias_updated.<bias name>.
`;

export interface TrainStepRun {
  tensors: Record<string, TensorToWrite>;
  summary: LossReport & { grad_global_norm_before_clip: number; clip_coefficient: number; skipped: boolean };
}

/** Reads `tokens` (I32 [B, S+1]) from a safetensors file. */
export function readBatch(file: string): Tensor {
  const f = SafetensorsFile.open(file);
  try {
    if (!f.has('tokens')) throw new DsvError(`${file}: no tensor named "tokens" (I32 [B, S+1])`);
    const t = f.get('tokens');
    if (t.dtype !== 'i32' || t.shape.length !== 2 || t.shape[0]! < 1 || t.shape[1]! < 2) {
      throw new DsvError(`${file}: tokens must be I32 [B, S+1] with B, S >= 1, got ${f.info('tokens').tag} [${t.shape.join(', ')}]`);
    }
    return Tensor.fromI32(t.data as Int32Array, t.shape);
  } finally {
    f.close();
  }
}

function f32(t: Tensor): TensorToWrite {
  return { dtype: 'f32', shape: t.shape.slice(), data: t.contiguous().f32().slice() };
}

/** One step of `model` on `tokens` with a fresh AdamW; everything the fixture checks. */
export function runTrainStep(
  model: DeepseekV3,
  tokens: Tensor,
  o: TrainStepOptions & { weightDecay?: number; betas?: [number, number]; eps?: number },
): TrainStepRun {
  const opt = new AdamW(model.parameters(), { lr: o.lr, weightDecay: o.weightDecay, betas: o.betas, eps: o.eps }); // unset: the recipe's
  const r = trainStep(model, opt, tokens, o);
  const out: Record<string, TensorToWrite> = {
    logits: f32(r.logits),
    lm_nll: f32(r.lmNll),
  };
  r.mtpNll.forEach((t, k) => (out[`mtp_nll.depth.${k}`] = f32(t)));
  for (const p of opt.params) {
    const g = r.grads.get(p.name!);
    if (g) out[`grad.${p.name}`] = { dtype: 'f32', shape: p.shape.slice(), data: g };
    out[`updated.${p.name}`] = f32(p);
  }
  for (const [l, lr] of r.routing) {
    out[`router.layers.${l}.topk_idx`] = { dtype: 'i32', shape: lr.shape, data: lr.topkIdx.slice() };
    out[`load.layers.${l}`] = { dtype: 'i32', shape: [lr.load.length], data: lr.load.slice() };
  }
  for (const b of model.balanceBiases().values()) out[`bias_updated.${b.name}`] = f32(b);
  return {
    tensors: out,
    summary: { ...r.losses, grad_global_norm_before_clip: r.gradNorm, clip_coefficient: r.clipCoef, skipped: !r.applied },
  };
}

const FLAGS = {
  model: exists('model directory', 'dir'),
  batch: exists('batch file', 'file'),
  out: out('file'),
  lr: positive(),
  'mtp-lambda': nonNegative(),
  'balance-alpha': nonNegative(),
  'bias-gamma': nonNegative(),
  'weight-decay': nonNegative(),
  'max-grad-norm': positive(),
  beta1: fraction(),
  beta2: fraction(),
  eps: positive(),
  balance: oneOf(['aux-free', 'aux-loss', 'none'] as const),
  'bias-mode': oneOf(['sign', 'proportional'] as const),
};

export const trainStepCommand: Command = {
  name: 'train-step',
  summary: 'run exactly one training step (losses, gradients, AdamW, bias update) and write it',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values: v } = parseFlags('train-step', argv, FLAGS);
    const need = <K extends keyof typeof v & string>(name: K): NonNullable<(typeof v)[K]> => required(v, name);
    const o = {
      lr: need('lr'),
      mtpLambda: need('mtp-lambda'),
      balanceAlpha: need('balance-alpha'),
      balance: v.balance ?? TRAIN.balance,
      bias: { gamma: need('bias-gamma'), mode: v['bias-mode'] },
      weightDecay: v['weight-decay'],
      maxGradNorm: v['max-grad-norm'] ?? PAPER.maxGradNorm,
      betas: [v.beta1 ?? PAPER.beta1, v.beta2 ?? PAPER.beta2] as [number, number],
      eps: v.eps,
    };
    const [modelDir, batchFile, outFile] = [need('model'), need('batch'), need('out')];
    const model = DeepseekV3.load(modelDir, { weights: 'f32' });
    const run = runTrainStep(model, readBatch(batchFile), o);
    writeSafetensors(outFile, run.tensors);
    process.stdout.write(JSON.stringify(run.summary) + '\n');
    return run.summary.skipped ? 1 : 0;
  },
};
