// matmul (transposed views, broadcast batch dims, folded batches) and linear (split backward,
// deferred weight gradients, strided/transposed/bf16 weights): forward against a float64 JS
// product, gradients against finite differences, and input validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import { backward, customOp } from '../src/engine/autograd.js';
import { withBackend } from '../src/engine/backend.js';
import type { Kernels } from '../src/engine/kernels.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { f32ArrayToBf16, bf16ArrayToF32 } from '../src/engine/dtype.js';
import * as ops from '../src/engine/ops/index.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { randTensor, rng } from './helpers/random.js';

const r = rng(3);

/** Batched a @ b with broadcasting, float64, via expand to the broadcast shape. */
function refMatmul(a: Tensor, b: Tensor): { data: number[]; shape: number[] } {
  const m = a.shape[a.ndim - 2]!, k = a.shape[a.ndim - 1]!, n = b.shape[b.ndim - 1]!;
  const ba = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const nb = Math.max(ba.length, bb.length);
  const batch: number[] = [];
  for (let i = 0; i < nb; i++) batch.push(Math.max(ba[ba.length - nb + i] ?? 1, bb[bb.length - nb + i] ?? 1));
  const ad = a.expand([...batch, m, k]).toF32Array();
  const bd = b.expand([...batch, k, n]).toF32Array();
  const count = batch.reduce((x, y) => x * y, 1);
  const out: number[] = [];
  for (let t = 0; t < count; t++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += ad[t * m * k + i * k + p]! * bd[t * k * n + p * n + j]!;
        out.push(s);
      }
    }
  }
  return { data: out, shape: [...batch, m, n] };
}

// operand builders: plain, a transposed view, a column slice (row stride > cols), broadcast batch
const mk = {
  plain: (s: number[]) => randTensor(r, s),
  trans: (s: number[]) => randTensor(r, [...s.slice(0, -2), s[s.length - 1]!, s[s.length - 2]!]).transpose(-1, -2),
  sliced: (s: number[]) => randTensor(r, [...s.slice(0, -1), s[s.length - 1]! + 3]).slice(-1, 1, s[s.length - 1]! + 1),
  permuted: (s: number[]) => randTensor(r, [s[1]!, s[0]!, ...s.slice(2)]).transpose(0, 1),
};

test('matmul: forward for all layouts and broadcast batches', () => {
  const shapes: [number[], number[]][] = [
    [[3, 4], [4, 5]],
    [[1, 7], [7, 1]],
    [[2, 3, 4], [4, 5]], // folded batch
    [[2, 3, 4], [2, 4, 5]],
    [[2, 1, 3, 4], [3, 4, 2]], // broadcast batch both ways
    [[3, 4], [2, 4, 5]], // a broadcast over b's batch
    [[2, 3, 0], [0, 4]], // k = 0
  ];
  for (const [sa, sb] of shapes) {
    for (const la of ['plain', 'trans', 'sliced'] as const) {
      for (const lb of ['plain', 'trans', 'sliced'] as const) {
        const a = mk[la](sa);
        const b = mk[lb](sb);
        const y = ops.matmul(a, b);
        const ref = refMatmul(a, b);
        assert.deepEqual(y.shape, ref.shape);
        assertClose(y, ref.data, 1e-5, `matmul ${la} ${JSON.stringify(sa)} @ ${lb} ${JSON.stringify(sb)}`, 1e-5);
      }
    }
  }
  const a = mk.permuted([3, 2, 4, 5]); // batch dims with non-contiguous strides
  const b = mk.permuted([3, 2, 5, 2]);
  assertClose(ops.matmul(a, b), refMatmul(a, b).data, 1e-5, 'matmul permuted batch', 1e-5);
});

test('matmul: gradients (transposed views, broadcast batch, shared 2-D B)', () => {
  const cases: [number[], number[], keyof typeof mk, keyof typeof mk][] = [
    [[3, 4], [4, 5], 'plain', 'plain'],
    [[3, 4], [4, 5], 'trans', 'trans'],
    [[2, 3, 4], [4, 5], 'plain', 'trans'],
    [[2, 3, 4], [4, 5], 'sliced', 'plain'],
    [[2, 1, 3, 4], [3, 4, 2], 'plain', 'plain'],
    [[3, 4], [2, 4, 5], 'trans', 'plain'],
  ];
  for (const [sa, sb, la, lb] of cases) {
    const a = mk[la](sa);
    const b = mk[lb](sb);
    // rebuild the same layout from the gradchecked contiguous data
    const view = (t: Tensor, l: keyof typeof mk): Tensor => (l === 'trans' ? t.transpose(-1, -2).contiguous().transpose(-1, -2) : t);
    gradcheck((x, y) => ops.matmul(view(x, la), view(y, lb)), [a.contiguous(), b.contiguous()], { name: `matmul ${la}/${lb} ${JSON.stringify(sa)} @ ${JSON.stringify(sb)}` });
  }
  // transposed views whose gradient flows back through the transpose
  gradcheck((x, y) => ops.matmul(x.transpose(0, 1), y.transpose(-1, -2)), [randTensor(r, [4, 3]), randTensor(r, [2, 5, 4])], { name: 'matmul of views' });
});

test('matmul: errors name the shapes', () => {
  assert.throws(() => ops.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5])), /matmul: inner dims differ: \[2, 3\] @ \[4, 5\]/);
  assert.throws(() => ops.matmul(Tensor.zeros([3]), Tensor.zeros([3, 5])), /at least 2 dims/);
  assert.throws(() => ops.matmul(Tensor.zeros([2, 2, 3]), Tensor.zeros([3, 3, 5])), /batch dims of \[2, 2, 3\] and \[3, 3, 5\]/);
  assert.throws(() => ops.matmul(Tensor.zeros([2, 3]), Tensor.zeros([3, 5], 'bf16')), /matmul: b must be float32, got bf16/);
});

test('linear: forward y = x W^T for strided x and transposed W', () => {
  const x = randTensor(r, [2, 3, 6]);
  const w = randTensor(r, [5, 6]);
  const ref = refMatmul(x, w.transpose(0, 1));
  assertClose(ops.linear(x, w), ref.data, 1e-5, 'linear', 1e-5);
  assert.deepEqual(ops.linear(x, w).shape, [2, 3, 5]);
  assertClose(ops.linear(x.transpose(0, 1), w), refMatmul(x.transpose(0, 1), w.transpose(0, 1)).data, 1e-5, 'linear strided x', 1e-5);
  const wt = randTensor(r, [6, 5]).transpose(0, 1); // W given as a transposed view
  assertClose(ops.linear(x, wt), refMatmul(x, wt.transpose(0, 1)).data, 1e-5, 'linear transposed w', 1e-5);
  const x1 = randTensor(r, [6]);
  assert.deepEqual(ops.linear(x1, w).shape, [5]);
  assertClose(ops.linear(x1, w), refMatmul(x1.reshape(1, 6), w.transpose(0, 1)).data, 1e-5, 'linear 1-D x', 1e-5);
  assert.throws(() => ops.linear(x, randTensor(r, [5, 7])), /linear: x \[2, 3, 6\] does not match weight \[out, in\] \[5, 7\]/);
  assert.throws(() => ops.linear(x, randTensor(r, [30])), /weight must be 2-D/);
});

test('linear: bf16 weights use gemmBf16 (x rounded to bf16)', () => {
  const x = randTensor(r, [4, 8]);
  const wf = randTensor(r, [3, 8]);
  const wb = new Tensor(f32ArrayToBf16(wf.toF32Array()), [3, 8], 'bf16');
  const xr = Tensor.fromF32(bf16ArrayToF32(f32ArrayToBf16(x.toF32Array())), x.shape);
  const wr = Tensor.fromF32(bf16ArrayToF32(wb.raw('bf16')), [3, 8]);
  assertClose(ops.linear(x, wb), refMatmul(xr, wr.transpose(0, 1)).data, 1e-5, 'linear bf16', 1e-5);
  const xp = Tensor.param(x.toF32Array(), x.shape);
  backward(ops.sum(ops.linear(xp, wb)));
  assert.ok(xp.grad);
});

test('linear: gradients, and the two halves of its backward', () => {
  gradcheck((x, w) => ops.linear(x, w), [randTensor(r, [2, 3, 6]), randTensor(r, [5, 6])], { name: 'linear' });
  gradcheck((x, w) => ops.linear(x.transpose(0, 1), w.transpose(0, 1)), [randTensor(r, [3, 2, 6]), randTensor(r, [6, 5])], { name: 'linear views' });
  gradcheck((x, w) => ops.linear(x, w), [randTensor(r, [7]), randTensor(r, [3, 7])], { name: 'linear 1-D' });
  // linearGradInput / linearGradWeight against matmul
  const gy = randTensor(r, [2, 3, 5]);
  const w = randTensor(r, [5, 6]);
  const x = randTensor(r, [2, 3, 6]);
  assertClose(ops.linearGradInput(gy, w), refMatmul(gy, w).data, 1e-5, 'dX = dY W', 1e-5);
  const dw = refMatmul(gy.reshape(6, 5).transpose(0, 1), x.reshape(6, 6));
  assertClose(ops.linearGradWeight(gy, x), dw.data, 1e-5, 'dW = dY^T X', 1e-5);
  const acc = Tensor.full([5, 6], 2);
  ops.linearGradWeight(gy, x, acc);
  assertClose(acc, dw.data.map((v) => v + 2), 1e-5, 'dW accumulated', 1e-5);
  assert.throws(() => ops.linearGradWeight(gy, randTensor(r, [3, 2, 6])), /leading dims of gy \[2, 3, 5\] and x \[3, 2, 6\] differ/);
});

test('deferWeightGrads: nested scopes, frozen and non-leaf weights', () => {
  const x = randTensor(r, [4, 3]);
  const w = Tensor.param(randTensor(r, [2, 3]).toF32Array(), [2, 3]);
  const frozen = randTensor(r, [2, 2]); // requires no grad: nothing deferred
  const base = Tensor.param(randTensor(r, [3, 2]).toF32Array(), [3, 2]);
  const outer = ops.deferWeightGrads(() => {
    const inner = ops.deferWeightGrads(() => backward(ops.sum(ops.linear(ops.linear(x, w), frozen))));
    assert.equal(inner.weightGrads.length, 1);
    // a non-leaf weight (a view of a parameter) is never deferred: its gradient flows now
    backward(ops.sum(ops.linear(x, base.transpose(0, 1))));
    assert.ok(base.grad);
    return inner.weightGrads;
  });
  assert.equal(outer.weightGrads.length, 0);
  assert.equal(w.grad, null);
  outer.result[0]!();
  assert.ok(w.grad);
  // deferral also applies to linear layers reached through a custom op
  const w2 = Tensor.param(randTensor(r, [2, 3]).toF32Array(), [2, 3]);
  const y = customOp('id', [ops.linear(x, w2)], (t) => t.clone(), (g) => [g]);
  const { weightGrads } = ops.deferWeightGrads(() => backward(ops.sum(y)));
  assert.equal(weightGrads.length, 1);
});

test('matmul and linear pass trans flags to gemm instead of copying; batches fold into one GEMM', () => {
  const calls: { tA: boolean; tB: boolean; m: number; n: number; k: number; a: ArrayBufferLike; b: ArrayBufferLike }[] = [];
  const spy: Kernels = {
    ...referenceKernels,
    gemm: (tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
      calls.push({ tA, tB, m, n, k, a: a.buffer, b: b.buffer });
      referenceKernels.gemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    },
  };
  withBackend(spy, () => {
    const a = Tensor.param(randTensor(r, [4, 3]).toF32Array(), [4, 3]);
    const b = randTensor(r, [5, 4]);
    const y = ops.matmul(a.transpose(0, 1), b.transpose(0, 1)); // [3, 4] @ [4, 5], both transposed views
    assert.equal(calls.length, 1);
    assert.deepEqual([calls[0]!.tA, calls[0]!.tB, calls[0]!.m, calls[0]!.n, calls[0]!.k], [true, true, 3, 5, 4]);
    assert.equal(calls[0]!.a, a.data.buffer, 'A is passed in place');
    assert.equal(calls[0]!.b, b.data.buffer, 'B is passed in place');
    calls.length = 0;
    backward(ops.sum(y)); // dA^T = (dC B^T)^T: one GEMM, no copies of B
    assert.equal(calls.length, 1);
    calls.length = 0;
    ops.matmul(randTensor(r, [2, 3, 4]), randTensor(r, [4, 5]));
    assert.deepEqual(calls.map((c) => c.m), [6], 'batch folded into the rows of one GEMM');
    calls.length = 0;
    const x = Tensor.param(randTensor(r, [2, 3, 6]).toF32Array(), [2, 3, 6]);
    const w = Tensor.param(randTensor(r, [5, 6]).toF32Array(), [5, 6]);
    backward(ops.sum(ops.linear(x, w)));
    // forward NT [6, 6] x [5, 6]^T; dX = dY W (NN); dW = dY^T X (TN) over all 6 rows
    assert.deepEqual(calls.map((c) => [c.tA, c.tB, c.m, c.n, c.k]), [[false, true, 6, 5, 6], [false, false, 6, 6, 5], [true, false, 5, 6, 6]]);
  });
});
