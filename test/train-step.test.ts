import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/engine/tensor.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { DeepseekV3 } from '../src/model/model.js';
import { readBatch, runTrainStep } from '../src/cli/commands/train-step.js';
import { forwardLosses } from '../src/train/train-step.js';
import { lossReport } from '../src/objective/losses.js';
import { fixturePath, readJson, readTensors } from './helpers/fixtures.js';
import { backward } from '../src/engine/autograd.js';

const DIR = fixturePath('train-step');
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Meta {
  hyperparameters: { lr: number; betas: [number, number]; eps: number; weight_decay: number; max_grad_norm: number; mtp_lambda: number; balance_alpha: number; bias_update_gamma: number };
  losses: { total: number; lm: number; mtp_weighted: number; mtp_depth_mean_ce: number[]; balance_total: number; balance_per_layer: Record<string, number> };
  grad_global_norm_before_clip: number;
  clip_coefficient: number;
  trainable_parameters: string[];
  bias_buffers: string[];
}
interface Tol {
  train_step: { losses_relative: number; lm_nll_and_mtp_nll_rel_to_max: number; grad_abs_over_global_max_abs_grad: number; updated_abs_end_to_end: number; bias_updated_abs: number };
  model: { float_tensors_rel_to_max: number };
}

const meta = readJson<Meta>(path.join(DIR, 'meta.json'));
const tol = readJson<Tol>(fixturePath('tolerances.json'));
const hp = meta.hyperparameters;
const stepOpts = {
  lr: hp.lr,
  balance: 'aux-free' as const,
  mtpLambda: hp.mtp_lambda,
  balanceAlpha: hp.balance_alpha,
  bias: { gamma: hp.bias_update_gamma },
  weightDecay: hp.weight_decay,
  maxGradNorm: hp.max_grad_norm,
  betas: hp.betas,
  eps: hp.eps,
};

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
function relClose(got: number, want: number, rel: number, what: string): void {
  assert.ok(Math.abs(got - want) <= rel * Math.abs(want), `${what}: ${got} vs ${want} (rel ${Math.abs(got - want) / Math.abs(want)})`);
}

function checkLosses(got: Meta['losses'], rel: number): void {
  const want = meta.losses;
  relClose(got.total, want.total, rel, 'total');
  relClose(got.lm, want.lm, rel, 'lm');
  relClose(got.mtp_weighted, want.mtp_weighted, rel, 'mtp_weighted');
  assert.equal(got.mtp_depth_mean_ce.length, want.mtp_depth_mean_ce.length);
  got.mtp_depth_mean_ce.forEach((c, k) => relClose(c, want.mtp_depth_mean_ce[k]!, rel, `mtp_depth_mean_ce[${k}]`));
  relClose(got.balance_total, want.balance_total, rel, 'balance_total');
  assert.deepEqual(Object.keys(got.balance_per_layer).sort(), Object.keys(want.balance_per_layer).sort());
  for (const [l, v] of Object.entries(want.balance_per_layer)) relClose(got.balance_per_layer[l]!, v, rel, `balance layer ${l}`);
}

/** Every tensor check of the fixture against a set of output tensors. */
function checkOutputs(out: Record<string, Tensor>): void {
  const exp = readTensors(path.join(DIR, 'expected.safetensors'));
  const ts = tol.train_step;
  const fl = (n: string): Float32Array => out[n]!.toF32Array();
  // logits, per-position NLL
  assert.ok(maxDiff(fl('logits'), exp['logits']!.f32()) <= tol.model.float_tensors_rel_to_max * maxAbs(exp['logits']!.f32()), 'logits');
  for (const n of ['lm_nll', 'mtp_nll.depth.0']) {
    assert.deepEqual(out[n]!.shape, exp[n]!.shape, n);
    const d = maxDiff(fl(n), exp[n]!.f32());
    assert.ok(d <= ts.lm_nll_and_mtp_nll_rel_to_max * maxAbs(exp[n]!.f32()), `${n}: ${d}`);
  }
  // gradients: max |delta| <= 2e-5 * global max |grad|
  let gmax = 0;
  for (const p of meta.trainable_parameters) gmax = Math.max(gmax, maxAbs(exp['grad.' + p]!.f32()));
  let worst = 0;
  for (const p of meta.trainable_parameters) {
    assert.ok(out['grad.' + p], `missing grad.${p}`);
    const d = maxDiff(fl('grad.' + p), exp['grad.' + p]!.f32());
    worst = Math.max(worst, d);
    assert.ok(d <= ts.grad_abs_over_global_max_abs_grad * gmax, `grad.${p}: ${d} > ${ts.grad_abs_over_global_max_abs_grad * gmax}`);
  }
  // updated parameters end to end (sign-sensitive elements 0 < |grad| < 1e-5: |delta| <= 2 lr)
  for (const p of meta.trainable_parameters) {
    const got = fl('updated.' + p);
    const want = exp['updated.' + p]!.f32();
    const g = exp['grad.' + p]!.f32();
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i]! - want[i]!);
      const sensitive = g[i] !== 0 && Math.abs(g[i]!) < 1e-5;
      assert.ok(d <= (sensitive ? 2 * hp.lr : ts.updated_abs_end_to_end), `updated.${p}[${i}]: |delta| ${d}`);
    }
  }
  // routing and loads: exact; biases within 1e-7
  for (const j of [1, 2]) {
    assert.deepEqual(out[`router.layers.${j}.topk_idx`]!.shape, exp[`router.layers.${j}.topk_idx`]!.shape);
    assert.deepEqual(Array.from(out[`router.layers.${j}.topk_idx`]!.i32()), Array.from(exp[`router.layers.${j}.topk_idx`]!.i32()), `topk ${j}`);
    assert.equal(out[`load.layers.${j}`]!.dtype, 'i32');
    assert.deepEqual(Array.from(out[`load.layers.${j}`]!.i32()), Array.from(exp[`load.layers.${j}`]!.i32()), `load ${j}`);
  }
  for (const b of meta.bias_buffers) assert.ok(maxDiff(fl('bias_updated.' + b), exp['bias_updated.' + b]!.f32()) <= ts.bias_updated_abs, b);
}

test('train-step fixture: losses, NLL, gradients, clipping, AdamW, routing, loads and bias update', () => {
  const model = DeepseekV3.load(DIR, { weights: 'f32' });
  const run = runTrainStep(model, readBatch(path.join(DIR, 'batch.safetensors')), stepOpts);
  checkLosses(run.summary, tol.train_step.losses_relative);
  relClose(run.summary.grad_global_norm_before_clip, meta.grad_global_norm_before_clip, 1e-5, 'grad norm');
  relClose(run.summary.clip_coefficient, meta.clip_coefficient, 1e-5, 'clip coefficient');
  assert.equal(run.summary.skipped, false);
  const out: Record<string, Tensor> = {};
  for (const [n, t] of Object.entries(run.tensors)) out[n] = new Tensor(t.data, t.shape, t.dtype);
  checkOutputs(out);
});

test('train-step fixture: gradient of the balance loss alone w.r.t. each router weight', () => {
  const model = DeepseekV3.load(DIR, { weights: 'f32' });
  const f = forwardLosses(model, readBatch(path.join(DIR, 'batch.safetensors')), { mtpLambda: hp.mtp_lambda, balanceAlpha: hp.balance_alpha, balance: 'aux-free' });
  backward(f.terms.balanceTotal!);
  const exp = readTensors(path.join(DIR, 'expected.safetensors'));
  for (const j of [1, 2]) {
    const name = `model.layers.${j}.mlp.gate.weight`;
    const want = exp['grad_balance_only.' + name]!.f32();
    const got = model.params.get(name)!.grad!.toF32Array();
    const d = maxDiff(got, want);
    assert.ok(d <= 2e-5 * maxAbs(want), `${name}: ${d} vs max ${maxAbs(want)}`);
  }
});

test('dsv3 train-step CLI writes the fixture tensors and prints the losses', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-train-step-'));
  try {
    const outFile = path.join(tmp, 'out.safetensors');
    const r = spawnSync(process.execPath, [
      CLI, 'train-step', '--model', DIR, '--batch', path.join(DIR, 'batch.safetensors'), '--out', outFile,
      '--lr', String(hp.lr), '--mtp-lambda', String(hp.mtp_lambda), '--balance-alpha', String(hp.balance_alpha),
      '--bias-gamma', String(hp.bias_update_gamma), '--weight-decay', String(hp.weight_decay), '--max-grad-norm', String(hp.max_grad_norm),
    ], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1);
    checkLosses(JSON.parse(lines[0]!) as Meta['losses'], tol.train_step.losses_relative);
    checkOutputs(readTensors(outFile));
    const f = SafetensorsFile.open(outFile);
    assert.equal(f.info('load.layers.1').tag, 'I32');
    f.close();
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('train-step fixture: the fused head + cross-entropy (the training path) meets the fixture losses, NLL and gradients', () => {
  const model = DeepseekV3.load(DIR, { weights: 'f32' });
  const f = forwardLosses(model, readBatch(path.join(DIR, 'batch.safetensors')), { mtpLambda: hp.mtp_lambda, balanceAlpha: hp.balance_alpha, balance: 'aux-free' });
  assert.equal(f.logits, null, 'the default training forward must not materialise the logits');
  checkLosses(lossReport(f.terms), tol.train_step.losses_relative);
  const exp = readTensors(path.join(DIR, 'expected.safetensors'));
  for (const [n, t] of [['lm_nll', f.terms.lmNll], ['mtp_nll.depth.0', f.terms.mtpNll[0]!]] as const) {
    assert.deepEqual(t.shape, exp[n]!.shape, n);
    assert.ok(maxDiff(t.toF32Array(), exp[n]!.f32()) <= tol.train_step.lm_nll_and_mtp_nll_rel_to_max * maxAbs(exp[n]!.f32()), n);
  }
  backward(f.terms.total);
  let gmax = 0;
  for (const p of meta.trainable_parameters) gmax = Math.max(gmax, maxAbs(exp['grad.' + p]!.f32()));
  for (const p of meta.trainable_parameters) {
    const d = maxDiff(model.params.get(p)!.grad!.toF32Array(), exp['grad.' + p]!.f32());
    assert.ok(d <= tol.train_step.grad_abs_over_global_max_abs_grad * gmax, `grad.${p}: ${d}`);
  }
});
