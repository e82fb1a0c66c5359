// The optimizer kernels (adamw, sumSquares): native == reference, and the reference equals the
// AdamW of src/train/optimizer.ts bit for bit (same float64 expression, rounded once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import { loadNativeKernels } from '../src/engine/native.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { AdamW, gradGlobalNorm } from '../src/train/optimizer.js';
import { requireNative } from './helpers/backends.js';
import { nativeForTests } from './helpers/native-configs.js';
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

test('adamwBf16 (BF16 moments): native == reference bit for bit on every ISA; AdamW.step uses it', (t) => {
  if (!requireNative(t)) return;
  const { A, eachConfig } = nativeForTests();
  for (const n of [4, 7, 1000, 300_001]) {
    const w0 = randData(r, n);
    const grads = [randData(r, n), randData(r, n, 1e-3), randData(r, n, 30)];
    grads[1]![3] = NaN; // a NaN gradient: NaN moments stay NaN (quiet) on both sides
    const run = (f: (w: Float32Array, g: Float32Array, m: Uint16Array, v: Uint16Array, t: number, gs: number) => void) => {
      const w = w0.slice();
      const m = new Uint16Array(n);
      const v = new Uint16Array(n);
      grads.forEach((g, i) => f(w, g, m, v, i + 1, i === 2 ? 0.25 : 1));
      return { w, m, v };
    };
    const args = (t: number) => [0.9, 0.95, 1 - 0.9, 1 - 0.95, 3e-3, 1 - Math.pow(0.9, t), 1 - Math.pow(0.95, t), 1e-8] as const;
    const want = run((w, g, m, v, t, gs) => referenceKernels.adamwBf16(w, g, m, v, n, gs, 1 - 3e-4, ...args(t)));
    eachConfig((cfg) => {
      const got = run((w, g, m, v, t, gs) => A.adamwBf16(w, g, m, v, n, gs, 1 - 3e-4, ...args(t)));
      for (const k of ['w', 'm', 'v'] as const) {
        const a = got[k];
        const b = want[k];
        for (let i = 0; i < n; i++) if (!Object.is(a[i], b[i])) assert.fail(`n ${n} ${cfg} ${k}[${i}]: ${a[i]} vs ${b[i]}`);
      }
    });
  }
  // the optimizer with bf16 moments takes this kernel: same weights as the reference kernel
  const n = 1000;
  const w0 = randData(r, n);
  const g = randData(r, n);
  const p = Tensor.param(w0.slice(), [n], 'w');
  const opt = new AdamW([p], { lr: 3e-3, weightDecay: 0, momentDtype: 'bf16' });
  p.grad = Tensor.fromF32(g, [n]);
  opt.step();
  const w = w0.slice();
  referenceKernels.adamwBf16(w, g, new Uint16Array(n), new Uint16Array(n), n, 1, 1, 0.9, 0.95, 0.1, 1 - 0.95, 3e-3, 1 - 0.9, 1 - 0.95, opt.eps);
  assert.deepEqual(Array.from(p.f32()), Array.from(w));
});
