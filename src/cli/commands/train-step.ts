/**
 * `dsv3 train-step`: exactly one training step of a checkpoint on one batch, writing every
 * quantity of the golden train-step fixture (losses, per-position NLL, gradients, updated
 * parameters, routing, loads and the updated balance biases).
 */
import { parseArgs } from 'node:util';
import { type Command, UsageError, numberFlag } from '../command.js';
import { Tensor } from '../../engine/tensor.js';
import { DsvError } from '../../errors.js';
import { SafetensorsFile } from '../../io/safetensors-read.js';
import { type TensorToWrite, writeSafetensors } from '../../io/safetensors-write.js';
import { DeepseekV3 } from '../../model/model.js';
import type { BalanceMode, BiasMode } from '../../objective/balance.js';
import type { LossReport } from '../../objective/losses.js';
import { AdamW } from '../../train/optimizer.js';
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
  --lr X                 AdamW learning rate
  --mtp-lambda X         MTP loss weight λ
  --balance-alpha X      α of the sequence-wise balance loss
  --bias-gamma X         bias update speed γ

Options:
  --weight-decay X       decoupled weight decay on >= 2-D parameters (default 0.1)
  --max-grad-norm X      global-norm clipping threshold (default 1.0)
  --beta1 X, --beta2 X   AdamW betas (default 0.9, 0.95)
  --eps X                AdamW epsilon (default 1e-8)
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
    if (t.dtype !== 'i32' || t.shape.length !== 2) throw new DsvError(`${file}: tokens must be I32 [B, S+1], got ${f.info('tokens').tag} [${t.shape.join(', ')}]`);
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
  const opt = new AdamW(model.parameters(), {
    lr: o.lr,
    weightDecay: o.weightDecay ?? 0.1,
    betas: o.betas ?? [0.9, 0.95],
    eps: o.eps ?? 1e-8,
  });
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

function req(values: Record<string, string | boolean | undefined>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string') throw new UsageError(`--${name} is required\n\n${HELP}`);
  return v;
}

export const trainStepCommand: Command = {
  name: 'train-step',
  summary: 'run exactly one training step (losses, gradients, AdamW, bias update) and write it',
  help: HELP,
  async run(argv) {
    const names = ['model', 'batch', 'out', 'lr', 'mtp-lambda', 'balance-alpha', 'bias-gamma', 'weight-decay', 'max-grad-norm', 'beta1', 'beta2', 'eps', 'balance', 'bias-mode'];
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        options: Object.fromEntries(names.map((n) => [n, { type: 'string' as const }])),
        allowPositionals: true,
        strict: true,
      });
    } catch (e) {
      throw new UsageError(`${(e as Error).message}\n\n${HELP}`);
    }
    const { values, positionals } = parsed;
    if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'\n\n${HELP}`);
    const balance = (values['balance'] ?? 'aux-free') as BalanceMode;
    if (!['aux-free', 'aux-loss', 'none'].includes(balance)) throw new UsageError(`--balance must be aux-free, aux-loss or none, got '${balance}'`);
    const biasMode = (values['bias-mode'] ?? 'sign') as BiasMode;
    if (!['sign', 'proportional'].includes(biasMode)) throw new UsageError(`--bias-mode must be sign or proportional, got '${biasMode}'`);
    const num = (n: string, d?: number): number => {
      const v = numberFlag(n, d === undefined ? req(values, n) : values[n], d ?? NaN);
      return v;
    };
    const model = DeepseekV3.load(req(values, 'model'), { weights: 'f32' });
    const tokens = readBatch(req(values, 'batch'));
    const run = runTrainStep(model, tokens, {
      lr: num('lr'),
      mtpLambda: num('mtp-lambda'),
      balanceAlpha: num('balance-alpha'),
      balance,
      bias: { gamma: num('bias-gamma'), mode: biasMode },
      weightDecay: num('weight-decay', 0.1),
      maxGradNorm: num('max-grad-norm', 1.0),
      betas: [num('beta1', 0.9), num('beta2', 0.95)],
      eps: num('eps', 1e-8),
    });
    writeSafetensors(req(values, 'out'), run.tensors);
    process.stdout.write(JSON.stringify(run.summary) + '\n');
    return run.summary.skipped ? 1 : 0;
  },
};
