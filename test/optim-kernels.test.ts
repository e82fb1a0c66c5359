// The optimizer kernels (adamw, sumSquares): native == reference, and the reference equals the
// AdamW of src/train/optimizer.ts bit for bit (same float64 expression, rounded once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import { loadNativeKernels } from '../src/engine/native.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { AdamW, gradGlobalNorm } from '../src/train/optimizer.js';
import { requireNative } from './helpers/backends.js';
import { randData, rng } from './helpers/random.js';

const r = rng(71);

/** Three AdamW steps on one [rows, cols] parameter: by the optimizer, and by kernel k. */
function threeSteps(k: typeof referenceKernels, n: number): { opt: Float32Array; kern: Float32Array; m: Float32Array; v: Float32Array } {
  const w0 = randData(r, n);
  const grads = [randData(r, n), randData(r, n, 1e-3), randData(r, n, 30)];
  const p = Tensor.param(w0.slice(), [n / 4, 4], 'w');
  const opt = new AdamW([p], { lr: 3e-3, weightDecay: 0.1 });
  const w = w0.slice();
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  grads.forEach((g, i) => {
    const gs = i === 2 ? 0.25 : 1;
    p.grad = Tensor.fromF32(g, p.shape);
    opt.step(3e-3, undefined, gs);
    const t = i + 1;
    k.adamw(w, g, m, v, n, gs, 1 - 3e-3 * 0.1, 0.9, 0.95, 1 - 0.9, 1 - 0.95, 3e-3, 1 - Math.pow(0.9, t), 1 - Math.pow(0.95, t), 1e-8);
  });
  return { opt: p.f32(), kern: w, m, v };
}

test('adamw (reference) equals AdamW.step bit for bit', () => {
  const { opt, kern } = threeSteps(referenceKernels, 4000);
  assert.deepEqual(Array.from(kern), Array.from(opt));
});

test('adamw and sumSquares: native == reference', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  for (const n of [4, 28, 1000, 300_000]) {
    const a = threeSteps(nat, n);
    assert.deepEqual(Array.from(a.kern), Array.from(a.opt), `adamw n ${n}`);
    const x = randData(r, n, 3);
    const s = nat.sumSquares(x, n);
    const ref = referenceKernels.sumSquares(x, n);
    assert.ok(Math.abs(s - ref) <= 1e-12 * ref, `sumSquares n ${n}: ${s} vs ${ref}`);
    const p = Tensor.param(new Float32Array(n), [n]);
    p.grad = Tensor.fromF32(x, [n]);
    assert.ok(Math.abs(Math.sqrt(s) - gradGlobalNorm([p])) <= 1e-12 * Math.sqrt(ref));
  }
  assert.equal(nat.sumSquares(new Float32Array(0), 0), 0);
  assert.throws(() => nat.adamw(new Float32Array(3), new Float32Array(4), new Float32Array(4), new Float32Array(4), 4, 1, 1, 0.9, 0.95, 0.1, 0.05, 1e-3, 0.1, 0.05, 1e-8), RangeError);
});
