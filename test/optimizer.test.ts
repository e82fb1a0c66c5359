import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/engine/tensor.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { AdamW, clipCoefficient, clipGradNorm, gradsFinite, scaleGrads } from '../src/train/optimizer.js';
import { batchSizeAt, biasGammaAt, lrAt, mtpLambdaAt } from '../src/train/lr-schedule.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/train-step/', import.meta.url));

interface Meta {
  hyperparameters: { lr: number; betas: [number, number]; eps: number; weight_decay: number; max_grad_norm: number };
  trainable_parameters: string[];
  weight_decay_parameters: string[];
  grad_global_norm_before_clip: number;
  clip_coefficient: number;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('AdamW + global-norm clipping from the stored gradients match updated.* within 1e-6', () => {
  const meta = JSON.parse(readFileSync(FIX + 'meta.json', 'utf8')) as Meta;
  const model = SafetensorsFile.open(FIX + 'model.safetensors');
  const exp = SafetensorsFile.open(FIX + 'expected.safetensors');
  const hp = meta.hyperparameters;
  const params = meta.trainable_parameters.map((n) => {
    const info = model.info(n);
    const p = Tensor.param(model.getF32(n), info.shape, n);
    p.grad = Tensor.fromF32(exp.getF32('grad.' + n), info.shape);
    return p;
  });
  // weight decay goes exactly to the >= 2-D parameters
  const decayed = params.filter((p) => p.ndim >= 2).map((p) => p.name);
  assert.deepEqual(decayed.sort(), meta.weight_decay_parameters.slice().sort());

  const norm = clipGradNorm(params, hp.max_grad_norm);
  assert.ok(Math.abs(norm - meta.grad_global_norm_before_clip) <= 1e-6 * meta.grad_global_norm_before_clip, `norm ${norm}`);
  assert.ok(Math.abs(clipCoefficient(norm, hp.max_grad_norm) - meta.clip_coefficient) <= 1e-6);

  const opt = new AdamW(params, { lr: hp.lr, betas: hp.betas, eps: hp.eps, weightDecay: hp.weight_decay });
  opt.step();
  let worst = 0;
  for (const p of params) {
    const d = maxAbsDiff(p.f32(), exp.getF32('updated.' + p.name!));
    worst = Math.max(worst, d);
    assert.ok(d <= 1e-6, `${p.name}: max |delta| ${d}`);
  }
  assert.ok(worst <= 1e-6);
  model.close();
  exp.close();
});

/** A float64 AdamW for a few steps, the oracle for multi-step behaviour. */
function adamwRef(p0: number[], grads: number[][], lr: number, wd: number, decay: boolean): number[] {
  const p = p0.slice();
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, s) => {
    const t = s + 1;
    for (let j = 0; j < p.length; j++) {
      if (decay) p[j]! *= 1 - lr * wd;
      m[j] = 0.9 * m[j]! + 0.1 * g[j]!;
      v[j] = 0.95 * v[j]! + 0.05 * g[j]! * g[j]!;
      p[j]! -= (lr * (m[j]! / (1 - 0.9 ** t))) / (Math.sqrt(v[j]! / (1 - 0.95 ** t)) + 1e-8);
    }
  });
  return p;
}

test('AdamW over several steps follows a float64 reference; 1-D params are not decayed', () => {
  const w = Tensor.param(Float32Array.from([0.5, -0.25, 1, 2, -3, 0.125]), [2, 3], 'w');
  const n = Tensor.param(Float32Array.from([1, 1.5, -0.5]), [3], 'n');
  const gw = [[0.1, -0.2, 0.3, 0, 1e-3, -5], [0.2, 0.2, -0.1, 0.5, 0, 1], [-0.3, 0.1, 0.1, 0.1, 0.1, 0.1]];
  const gn = [[1, -1, 0.5], [0.25, 0, -2], [3, 3, 3]];
  const opt = new AdamW([w, n, w], { lr: 0.01 });
  assert.equal(opt.params.length, 2, 'a tied parameter listed twice is one parameter');
  for (let s = 0; s < 3; s++) {
    w.grad = Tensor.from(gw[s]!, [2, 3]);
    n.grad = Tensor.from(gn[s]!, [3]);
    opt.step();
  }
  const rw = adamwRef([0.5, -0.25, 1, 2, -3, 0.125], gw, 0.01, 0.1, true);
  const rn = adamwRef([1, 1.5, -0.5], gn, 0.01, 0.1, false);
  rw.forEach((x, j) => assert.ok(Math.abs(w.f32()[j]! - x) < 1e-6, `w[${j}] ${w.f32()[j]} vs ${x}`));
  rn.forEach((x, j) => assert.ok(Math.abs(n.f32()[j]! - x) < 1e-6, `n[${j}] ${n.f32()[j]} vs ${x}`));
});

test('AdamW state round-trips bit-exactly (f32 and bf16 moments)', () => {
  for (const momentDtype of ['f32', 'bf16'] as const) {
    const mk = (): Tensor => Tensor.param(Float32Array.from([0.3, -0.7, 0.11, 0.9]), [2, 2], 'w');
    const grads = [[0.1, -0.3, 0.2, 0.05], [-0.2, 0.1, 0.4, -0.01], [0.3, 0.3, -0.3, 0.7], [0.01, 0.02, 0.03, 0.04]];
    const a = mk();
    const oa = new AdamW([a], { lr: 0.05, momentDtype });
    for (const g of grads) {
      a.grad = Tensor.from(g, [2, 2]);
      oa.step();
    }
    const b = mk();
    const ob = new AdamW([b], { lr: 0.05, momentDtype });
    for (const g of grads.slice(0, 2)) {
      b.grad = Tensor.from(g, [2, 2]);
      ob.step();
    }
    const saved = ob.state();
    const c = Tensor.param(b.f32().slice(), [2, 2], 'w');
    const oc = new AdamW([c], { lr: 0.05, momentDtype });
    oc.loadState(saved);
    for (const g of grads.slice(2)) {
      c.grad = Tensor.from(g, [2, 2]);
      oc.step();
    }
    assert.deepEqual(Array.from(c.f32()), Array.from(a.f32()), momentDtype);
    assert.ok(saved.m['w'] instanceof (momentDtype === 'bf16' ? Uint16Array : Float32Array));
  }
});

test('clipping, scaling and finiteness helpers', () => {
  const a = Tensor.param(Float32Array.from([3, 0]), [2], 'a');
  const b = Tensor.param(Float32Array.from([0, 0]), [2], 'b');
  a.grad = Tensor.from([3, 0]);
  b.grad = Tensor.from([0, 4]);
  assert.equal(clipGradNorm([a, b], 10), 5);
  assert.deepEqual(a.grad.toArray(), [3, 0], 'no clipping under the max norm');
  assert.equal(clipGradNorm([a, b], 1), 5);
  assert.ok(Math.abs(b.grad!.toArray()[1]! - 4 / (5 + 1e-6)) < 1e-6);
  scaleGrads([a, b], 0.5);
  assert.ok(Math.abs(a.grad!.toArray()[0]! - 1.5 / (5 + 1e-6)) < 1e-6);
  assert.ok(gradsFinite([a, b]));
  b.grad = Tensor.from([NaN, 0]);
  assert.ok(!gradsFinite([a, b]));
});

test('schedules: warmup, constant, cosine to the floor; λ, γ and batch-size warmup', () => {
  const o = { peak: 1e-3, warmup: 10, decayStart: 20, decaySteps: 10, floor: 1e-4 };
  assert.ok(Math.abs(lrAt(0, o) - 1e-4) < 1e-12);
  assert.ok(Math.abs(lrAt(9, o) - 1e-3) < 1e-12);
  assert.equal(lrAt(15, o), 1e-3);
  assert.equal(lrAt(20, o), 1e-3);
  assert.ok(Math.abs(lrAt(25, o) - 5.5e-4) < 1e-12);
  assert.ok(Math.abs(lrAt(30, o) - 1e-4) < 1e-12);
  assert.ok(Math.abs(lrAt(1000, o) - 1e-4) < 1e-12);
  for (let s = 20; s < 30; s++) assert.ok(lrAt(s + 1, o) <= lrAt(s, o));
  assert.equal(mtpLambdaAt(5, { early: 0.3, late: 0.1, switchStep: 10 }), 0.3);
  assert.equal(mtpLambdaAt(10, { early: 0.3, late: 0.1, switchStep: 10 }), 0.1);
  assert.equal(biasGammaAt(100), 0.001);
  assert.equal(batchSizeAt(0, { start: 1, end: 5, rampSteps: 4 }), 1);
  assert.equal(batchSizeAt(2, { start: 1, end: 5, rampSteps: 4 }), 3);
  assert.equal(batchSizeAt(9, { start: 1, end: 5, rampSteps: 4 }), 5);
});
