// Autograd core: accumulation over backward calls, noGrad, detach, customOp, fan-out, the
// freed-graph error, deferred linear weight gradients, and the per-op overhead of a tiny op.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward, customOp, isGradEnabled, noGrad } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { assertClose } from './helpers/compare.js';
import { randTensor, rng } from './helpers/random.js';

test('gradients accumulate over two backward calls', () => {
  const x = Tensor.param(Float32Array.of(1, 2, 3), [3]);
  backward(ops.sum(ops.mul(x, x)));
  assert.deepEqual(x.grad!.toArray(), [2, 4, 6]);
  backward(ops.sum(ops.scale(x, 3)));
  assert.deepEqual(x.grad!.toArray(), [5, 7, 9]);
});

test('noGrad records nothing', () => {
  const x = Tensor.param(Float32Array.of(1, 2), [2]);
  const y = noGrad(() => {
    assert.equal(isGradEnabled(), false);
    return ops.exp(ops.add(x, 1));
  });
  assert.equal(isGradEnabled(), true);
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => backward(ops.sum(y)), /does not require grad/);
});

test('detach cuts the graph', () => {
  const x = Tensor.param(Float32Array.of(2, 3), [2]);
  const d = ops.mul(x, x).detach();
  assert.equal(d.requiresGrad, false);
  const y = ops.sum(ops.mul(d, x)); // d/dx = d (treated as a constant) = x^2
  backward(y);
  assert.deepEqual(x.grad!.toArray(), [4, 9]);
});

test('customOp with a user backward', () => {
  const x = Tensor.param(Float32Array.of(1, -2, 3), [3]);
  // f(x) = x^3 elementwise, written by hand
  const cube = (t: Tensor): Tensor => customOp('cube', [t],
    (a) => Tensor.fromF32(a.toF32Array().map((v) => v * v * v), a.shape),
    (g, a) => [Tensor.fromF32(a.toF32Array().map((v, i) => 3 * v * v * g.toF32Array()[i]!), a.shape)]);
  const y = cube(x);
  assert.deepEqual(y.toArray(), [1, -8, 27]);
  assert.equal(y.node?.name, 'cube');
  backward(ops.sum(y));
  assert.deepEqual(x.grad!.toArray(), [3, 12, 27]);
});

test('fan-out: a tensor used twice gets the sum of both gradients', () => {
  const x = Tensor.param(Float32Array.of(1, 2, 3), [3]);
  const h = ops.scale(x, 2); // an intermediate used twice
  const y = ops.sum(ops.add(ops.exp(h), ops.mul(h, h)));
  backward(y);
  const want = [1, 2, 3].map((v) => 2 * (Math.exp(2 * v) + 2 * 2 * v));
  assertClose(x.grad!, want, 1e-6, 'grad');
  // a leaf used twice directly
  const w = Tensor.param(Float32Array.of(5), [1]);
  backward(ops.sum(ops.add(w, w)));
  assert.deepEqual(w.grad!.toArray(), [2]);
});

test('backward twice through a freed graph is a clear error', () => {
  const x = Tensor.param(Float32Array.of(1, 2), [2]);
  const h = ops.exp(x);
  const l1 = ops.sum(h);
  const l2 = ops.mean(h);
  backward(l1);
  assert.throws(() => backward(l1), /already freed/);
  // l2 reaches h, whose node was freed by l1's backward
  assert.throws(() => backward(l2), /graph through 'exp' was already freed/);
});

test('backward with an explicit gradient, and shape errors', () => {
  const x = Tensor.param(Float32Array.of(1, 2, 3, 4), [2, 2]);
  const y = ops.scale(x, 2);
  assert.throws(() => backward(y), /non-scalar/);
  assert.throws(() => backward(y, Tensor.zeros([4])), /does not match/);
  backward(y, Tensor.fromF32(Float32Array.of(1, 0, 0, 1), [2, 2]));
  assert.deepEqual(x.grad!.toArray(), [2, 0, 0, 2]);
});

test('the backward pass records no graph of its own', () => {
  const x = Tensor.param(Float32Array.of(1, 2), [2]);
  const w = Tensor.param(Float32Array.of(3, 4), [2]);
  backward(ops.sum(ops.mul(x, w)));
  assert.equal(x.grad!.requiresGrad, false);
  assert.equal(x.grad!.node, null);
  assert.equal(w.grad!.node, null);
});

test('deferWeightGrads: linear weight gradients equal with and without deferral', () => {
  const r = rng(7);
  const x0 = randTensor(r, [2, 5, 6]);
  const w1d = randTensor(r, [8, 6]).toF32Array();
  const w2d = randTensor(r, [4, 8]).toF32Array();
  const run = (defer: boolean) => {
    const x = Tensor.param(x0.toF32Array(), x0.shape);
    const w1 = Tensor.param(w1d.slice(), [8, 6], 'w1');
    const w2 = Tensor.param(w2d.slice(), [4, 8], 'w2');
    const loss = ops.sum(ops.linear(ops.silu(ops.linear(x, w1)), w2));
    if (!defer) {
      backward(loss);
      return { x, w1, w2, n: 0 };
    }
    const { weightGrads } = ops.deferWeightGrads(() => backward(loss));
    // input gradients are there already, weight gradients not yet
    assert.ok(x.grad);
    assert.equal(w1.grad, null);
    assert.equal(w2.grad, null);
    for (const f of weightGrads) f();
    assert.throws(() => weightGrads[0]!(), /already applied/);
    return { x, w1, w2, n: weightGrads.length };
  };
  const a = run(false);
  const b = run(true);
  assert.equal(b.n, 2);
  assertClose(b.x.grad!, a.x.grad!, 1e-6, 'dx');
  assertClose(b.w1.grad!, a.w1.grad!, 1e-6, 'dw1');
  assertClose(b.w2.grad!, a.w2.grad!, 1e-6, 'dw2');
  // deferred closures accumulate into an existing gradient
  const w = Tensor.param(w1d.slice(), [8, 6]);
  w.grad = Tensor.full([8, 6], 1);
  const { weightGrads } = ops.deferWeightGrads(() => backward(ops.sum(ops.linear(x0, w))));
  weightGrads.forEach((f) => f());
  const ref = ops.linearGradWeight(Tensor.full([2, 5, 8], 1), x0);
  assertClose(w.grad, ref.toF32Array().map((v) => v + 1), 1e-6, 'accumulated dw');
});

test('per-op overhead: a tiny 8x8 add is a few microseconds', () => {
  const a = Tensor.full([8, 8], 1);
  const b = Tensor.full([8, 8], 2);
  for (let i = 0; i < 20000; i++) ops.add(a, b); // warm up
  let best = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 20000; i++) ops.add(a, b);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 20000);
  }
  // ~1 µs on a quiet machine; the bound leaves room for a loaded CI runner
  assert.ok(best < 10000, `8x8 add took ${best.toFixed(0)} ns`);
});
