// The FP8 Linear autograd op (src/engine/ops/fp8-training-linear.ts, paper §3.3 / Figure 6): forward
// (Fprop) and both backward parts (Dgrad = the paper's B, Wgrad = W, from the FP8-cached X)
// against the exact FP8 GEMM oracle (test/helpers/fp8-gemm-oracle.ts) on awkward shapes, per-row
// tolerance of tolerances.json `fp8_linear`; deferWeightGrads (DualPipe) giving the same dW;
// leading dims; strided inputs; and the result being close to, but not equal to, the fp32 linear.
// Runs on whichever backend is active (the reference when the native addon is absent).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refDgrad, refFprop, refWgrad } from './helpers/fp8-gemm-oracle.js';
import { backward, noGrad } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { fixturePath, readJson } from './helpers/fixtures.js';
import { randData, randTensor, rng } from './helpers/random.js';
import { assertRowRel } from './helpers/compare.js';

const TOL = readJson<{ fp8_linear: { gemm_outputs_row_rel_to_max: number } }>(fixturePath('tolerances.json')).fp8_linear.gemm_outputs_row_rel_to_max;
const r = rng(8);


/** Activations with per-token magnitudes, an outlier channel and a zero token (awkward tiles). */
function activations(m: number, k: number): Float32Array {
  const x = randData(r, m * k);
  for (let i = 0; i < m; i++) {
    const s = 2 ** Math.floor(r() * 8 - 4);
    for (let j = 0; j < k; j++) x[i * k + j]! *= j === k >> 1 ? 40 * s : s;
  }
  if (m > 2) x.fill(0, k, 2 * k);
  return x;
}

// [M, K, N]: none, some or all of them multiples of 128 / partial tiles / single elements
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [3, 127, 129], [129, 3, 127], [127, 300, 1], [300, 129, 3], [2, 256, 130], [131, 128, 128],
];

test('fp8TrainingLinear: Fprop, Dgrad and Wgrad (FP8-cached X) match the exact FP8 GEMMs on awkward shapes', () => {
  for (const [m, k, n] of SHAPES) {
    const xd = activations(m, k);
    const wd = randData(r, n * k, 0.05);
    const gd = randData(r, m * n);
    if (m > 4) gd.fill(0, 3 * n, 4 * n); // a padding token: zero gradient
    const x = Tensor.fromF32(xd.slice(), [m, k]);
    x.requiresGrad = true;
    const w = Tensor.param(wd.slice(), [n, k]);
    const y = ops.fp8TrainingLinear(x, w);
    assert.deepEqual(y.shape, [m, n]);
    const label = `[${m}, ${k}] x [${n}, ${k}]`;
    assertRowRel(y.f32(), refFprop(xd, wd, m, k, n), n, TOL, `Fprop ${label}`);
    backward(y, Tensor.fromF32(gd.slice(), [m, n]));
    assertRowRel(x.grad!.f32(), refDgrad(gd, wd, m, k, n), k, TOL, `Dgrad ${label}`);
    const dwRef = refWgrad(gd, xd, m, k, n, true);
    assertRowRel(w.grad!.f32(), dwRef, k, TOL, `Wgrad ${label}`);
    // the cached variant is what training uses; it differs from Wgrad on float32 X
    if (m > 1 && k > 1) assert.notDeepEqual(Array.from(dwRef), Array.from(refWgrad(gd, xd, m, k, n, false)), `cached X^T matters ${label}`);
  }
});

test('fp8TrainingLinear: deferWeightGrads gives dX at once and the same dW later (the split backward of DualPipe)', () => {
  const [m, k, n] = [150, 200, 70];
  const xd = activations(m, k);
  const wd = randData(r, n * k, 0.05);
  const gd = randData(r, m * n);
  const run = (defer: boolean): { dx: Float32Array; dw: Float32Array } => {
    const x = Tensor.fromF32(xd.slice(), [m, k]);
    x.requiresGrad = true;
    const w = Tensor.param(wd.slice(), [n, k]);
    const y = ops.fp8TrainingLinear(x, w);
    const g = Tensor.fromF32(gd.slice(), [m, n]);
    if (!defer) backward(y, g);
    else {
      const { weightGrads } = ops.deferWeightGrads(() => backward(y, g));
      assert.equal(weightGrads.length, 1);
      assert.ok(x.grad, 'dX is computed in the B part');
      assert.equal(w.grad, null, 'dW waits for its closure');
      weightGrads[0]!();
      assert.throws(() => weightGrads[0]!(), /already applied/);
    }
    return { dx: x.grad!.f32(), dw: w.grad!.f32() };
  };
  const now = run(false);
  const later = run(true);
  assert.deepEqual(later.dx, now.dx);
  assert.deepEqual(later.dw, now.dw);
  // a second backward accumulates into w.grad (Wgrad with beta 1)
  const x = Tensor.fromF32(xd.slice(), [m, k]);
  const w = Tensor.param(wd.slice(), [n, k]);
  for (let i = 0; i < 2; i++) backward(ops.fp8TrainingLinear(x, w), Tensor.fromF32(gd.slice(), [m, n]));
  for (let i = 0; i < now.dw.length; i++) assert.equal(w.grad!.f32()[i], Math.fround(now.dw[i]! * 2));
  assert.equal(x.grad, null, 'x did not require a gradient');
});

test('fp8TrainingLinear: leading dims are flattened, gradients flow back through them; strided x', () => {
  const [b, s, k, n] = [2, 3, 130, 5];
  const xd = activations(b * s, k);
  const wd = randData(r, n * k, 0.05);
  const gd = randData(r, b * s * n);
  const x3 = Tensor.fromF32(xd.slice(), [b, s, k]);
  x3.requiresGrad = true;
  const w = Tensor.param(wd.slice(), [n, k]);
  const y3 = ops.fp8TrainingLinear(x3, w);
  assert.deepEqual(y3.shape, [b, s, n]);
  backward(y3, Tensor.fromF32(gd.slice(), [b, s, n]));
  assert.deepEqual(x3.grad!.shape, [b, s, k]);
  const x2 = Tensor.fromF32(xd.slice(), [b * s, k]);
  x2.requiresGrad = true;
  const w2 = Tensor.param(wd.slice(), [n, k]);
  const y2 = ops.fp8TrainingLinear(x2, w2);
  backward(y2, Tensor.fromF32(gd.slice(), [b * s, n]));
  assert.deepEqual(y3.f32(), y2.f32());
  assert.deepEqual(x3.grad!.f32(), x2.grad!.f32());
  assert.deepEqual(w.grad!.f32(), w2.grad!.f32());
  // through another op: the loss sum(y * y) reaches x through the leading dims
  const xs = Tensor.fromF32(xd.slice(), [b, s, k]);
  xs.requiresGrad = true;
  const y = ops.fp8TrainingLinear(xs, w2);
  backward(ops.sum(ops.mul(y, y)));
  assertRowRel(xs.grad!.f32(), refDgrad(y.f32().map((v) => 2 * v), wd, b * s, k, n), k, TOL, 'Dgrad through sum(y^2)');
  // a strided (column-sliced) and a transposed input give the same as their contiguous copies
  const wide = randTensor(r, [7, k + 9]);
  const sliced = wide.slice(1, 4, 4 + k);
  assert.deepEqual(noGrad(() => ops.fp8TrainingLinear(sliced, w)).f32(), noGrad(() => ops.fp8TrainingLinear(sliced.contiguous(), w)).f32());
  const tr = randTensor(r, [k, 6]).transpose(0, 1);
  assert.deepEqual(noGrad(() => ops.fp8TrainingLinear(tr, w)).f32(), noGrad(() => ops.fp8TrainingLinear(tr.contiguous(), w)).f32());
});

test('fp8TrainingLinear: close to the fp32 linear (E4M3 error of a few percent) but not equal', () => {
  const [m, k, n] = [64, 384, 96];
  const x = randTensor(r, [m, k], 1, true);
  const w = randTensor(r, [n, k], 0.05, true);
  const g = randTensor(r, [m, n]);
  const yq = ops.fp8TrainingLinear(x, w);
  backward(yq, g);
  const [dxq, dwq] = [x.grad!.f32().slice(), w.grad!.f32().slice()];
  x.grad = null;
  w.grad = null;
  const yf = ops.linear(x, w);
  backward(yf, g);
  const relFro = (a: Float32Array, e: Float32Array): number => {
    let d = 0;
    let s = 0;
    for (let i = 0; i < e.length; i++) {
      d += (a[i]! - e[i]!) ** 2;
      s += e[i]! ** 2;
    }
    return Math.sqrt(d / s);
  };
  // fixtures meta.json error_vs_fp32: rel_fro 0.028-0.035 on its (harsher) data
  for (const [what, a, e] of [['y', yq.f32(), yf.f32()], ['dX', dxq, x.grad!.f32()], ['dW', dwq, w.grad!.f32()]] as const) {
    const err = relFro(a, e);
    assert.ok(err > 3e-3 && err < 0.06, `${what}: relative error vs fp32 ${err}`);
  }
});

test('fp8TrainingLinear: no graph without gradients; empty shapes; input validation', () => {
  const x = randTensor(r, [4, 10], 1, true);
  const w = randTensor(r, [3, 10], 1, true);
  assert.equal(noGrad(() => ops.fp8TrainingLinear(x, w)).node, null);
  assert.equal(ops.fp8TrainingLinear(randTensor(r, [4, 10]), randTensor(r, [3, 10])).node, null);
  // empty rows, empty K (y = 0), empty N
  const e0 = ops.fp8TrainingLinear(Tensor.zeros([0, 10]), w);
  assert.deepEqual(e0.shape, [0, 3]);
  const xk = Tensor.zeros([2, 0]);
  xk.requiresGrad = true;
  const wk = Tensor.param(new Float32Array(0), [3, 0]);
  const yk = ops.fp8TrainingLinear(xk, wk);
  assert.deepEqual(Array.from(yk.f32()), [0, 0, 0, 0, 0, 0]);
  backward(yk, Tensor.full([2, 3], 1));
  assert.deepEqual(wk.grad!.shape, [3, 0]);
  assert.deepEqual(ops.fp8TrainingLinear(x, Tensor.zeros([0, 10])).shape, [4, 0]);
  assert.throws(() => ops.fp8TrainingLinear(x, randTensor(r, [3, 11])), /does not match weight/);
  assert.throws(() => ops.fp8TrainingLinear(x, randTensor(r, [3, 2, 5])), /2-D/);
  assert.throws(() => ops.fp8TrainingLinear(x, w.to('bf16')), /float32 master weight/);
  assert.throws(() => ops.fp8LinearGradWeight(randTensor(r, [5, 3]), randTensor(r, [4, 10])), /leading dims/);
});

test('fp8TrainingLinear keeps its FP8 cache, not its float32 input: the input is collectable before backward (the float32 linear keeps it)', async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose_gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const rr = rng(5);
  const a = Tensor.param(randData(rr, 6 * 130), [6, 130]);
  const w = Tensor.param(randData(rr, 5 * 130), [5, 130]);
  const g = Tensor.param(Float32Array.from({ length: 130 }, () => 1), [130]);
  const make = (op: (x: Tensor, w: Tensor) => Tensor): { y: Tensor; ref: WeakRef<object> } => {
    const x = ops.rmsNorm(a, g, 1e-6); // a non-leaf float32 input that only the Linear uses (rmsNorm keeps its input, not its output)
    return { y: op(x, w), ref: new WeakRef(x.data) };
  };
  const fp8 = make(ops.fp8TrainingLinear);
  const f32 = make(ops.linear);
  await new Promise((r) => setImmediate(r)); // WeakRefs are kept alive until the current job ends
  gc();
  assert.equal(fp8.ref.deref(), undefined, 'the float32 input of the FP8 Linear is no longer reachable');
  assert.notEqual(f32.ref.deref(), undefined, 'the float32 linear keeps its input for Wgrad');
  // and the backward still reaches a through x's producer node
  backward(ops.sum(fp8.y));
  assert.ok(a.grad && w.grad && a.grad.f32().some((v) => v !== 0));
});

test('fp8TrainingLinear: Linears that read the same x quantise it once and share the FP8 copy (same results as separate inputs; arena poison)', async () => {
  const { kernels, useBackend } = await import('../src/engine/backend.js');
  const { BufferArena } = await import('../src/engine/arena.js');
  const { withArena } = await import('../src/engine/active-arena.js');
  const [m, k] = [130, 200];
  const xd = activations(m, k);
  const w1d = randData(r, 70 * k, 0.05);
  const w2d = randData(r, 90 * k, 0.05);
  /** out1, out2, dx, dw1, dw2 and the number of 1x128 quantisations of an m x k operand. */
  const run = (same: boolean, arena: InstanceType<typeof BufferArena> | null): [Float32Array[], number] => {
    const base = kernels();
    let quants = 0;
    useBackend({ ...base, fp8QuantTiles1x128: (x, ld, rows, cols, codes, scales, out) => {
      if (rows === m && cols === k) quants++;
      base.fp8QuantTiles1x128(x, ld, rows, cols, codes, scales, out);
    } });
    try {
      const res = withArena(arena, () => {
        const x = Tensor.param(xd.slice(), [m, k]);
        const w1 = Tensor.param(w1d.slice(), [70, k]);
        const w2 = Tensor.param(w2d.slice(), [90, k]);
        const h = ops.mul(x, Tensor.scalar(1)); // a non-leaf activation, as in the model
        const h2 = same ? h : ops.mul(x, Tensor.scalar(1));
        const y1 = ops.fp8TrainingLinear(h, w1);
        const y2 = ops.fp8TrainingLinear(h2, w2);
        backward(ops.add(ops.sum(ops.mul(y1, y1)), ops.sum(y2)));
        return [y1.f32().slice(), y2.f32().slice(), x.grad!.f32().slice(), w1.grad!.f32().slice(), w2.grad!.f32().slice()];
      });
      return [res, quants];
    } finally {
      useBackend(base);
    }
  };
  const [sep, nSep] = run(false, null);
  const [shared, nShared] = run(true, null);
  assert.equal(nSep, 2, 'two inputs: two quantisations');
  assert.equal(nShared, 1, 'one input read by two Linears: one quantisation');
  shared.forEach((v, i) => assert.deepEqual(v, sep[i]!, `tensor ${i}`));
  const arena = new BufferArena({ poison: true, minElems: 16 });
  const [poisoned] = run(true, arena);
  poisoned.forEach((v, i) => assert.deepEqual(v, sep[i]!, `tensor ${i} (arena, poison)`));
});

test('fp8TrainingLinear keeps X\'s FP8 copy but not W\'s block codes from forward to backward; Dgrad quantises W again, same bits (arena poison)', async () => {
  const { BufferArena } = await import('../src/engine/arena.js');
  const { withArena } = await import('../src/engine/active-arena.js');
  const [m, k, n] = [2, 256, 384];
  const xd = activations(m, k);
  const wd = randData(r, n * k, 0.05);
  const run = (arena: InstanceType<typeof BufferArena> | null): { grads: Float32Array[]; heldAfterForward: number } => withArena(arena, () => {
    const x = Tensor.param(xd.slice(), [m, k]);
    const w = Tensor.param(wd.slice(), [n, k]);
    const h = ops.mul(x, Tensor.scalar(1));
    const before = arena?.stats().inUseBytes ?? 0;
    const y = ops.fp8TrainingLinear(h, w);
    const heldAfterForward = (arena?.stats().inUseBytes ?? 0) - before;
    backward(ops.sum(ops.mul(y, y)));
    return { grads: [y.f32().slice(), x.grad!.f32().slice(), w.grad!.f32().slice()], heldAfterForward };
  });
  const plain = run(null);
  const arena = new BufferArena({ poison: true, minElems: 16 });
  const inArena = run(arena);
  // y (m x n float32) and X's codes + tile scales are in use; W's n x k codes (98,304 bytes) are not
  assert.ok(inArena.heldAfterForward < (n * k) / 8, `in use after forward: ${inArena.heldAfterForward} bytes`);
  assert.ok(inArena.heldAfterForward >= m * n * 4 + m * k, `in use after forward: ${inArena.heldAfterForward} bytes`);
  inArena.grads.forEach((v, i) => assert.deepEqual(v, plain.grads[i]!, `tensor ${i} (arena, poison: the re-quantised W gives the same Dgrad)`));
});
