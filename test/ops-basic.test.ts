// Elementwise (broadcasting), unary, reduction ops and the differentiable views of tensor.ts:
// forward values against plain JS, gradients against finite differences, input validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward, customOp } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { distinctValues, randTensor, randUniform, rng } from './helpers/random.js';

const r = rng(42);

/** Elementwise op on two tensors expanded to the broadcast shape, in float64. */
function refBinary(a: Tensor, b: Tensor, shape: number[], f: (x: number, y: number) => number): number[] {
  const ad = a.expand(shape).toF32Array();
  const bd = b.expand(shape).toF32Array();
  return Array.from(ad, (x, i) => Math.fround(f(x, bd[i]!)));
}

const binaries = [
  ['add', ops.add, (x: number, y: number) => x + y],
  ['sub', ops.sub, (x: number, y: number) => x - y],
  ['mul', ops.mul, (x: number, y: number) => x * y],
  ['div', ops.div, (x: number, y: number) => x / y],
] as const;

// [a shape, b shape, broadcast shape]
const cases: [number[], number[], number[]][] = [
  [[3, 4], [3, 4], [3, 4]], // same shape (kernel path)
  [[5, 6], [6], [5, 6]], // row broadcast
  [[6], [2, 3, 6], [2, 3, 6]], // mirrored row broadcast
  [[2, 3, 4], [1, 1, 4], [2, 3, 4]], // suffix with leading ones
  [[2, 1, 4], [3, 1], [2, 3, 4]], // general broadcast both ways
  [[3, 4], [1], [3, 4]], // size-1 tensor
  [[], [2, 2], [2, 2]], // 0-dim scalar tensor
  [[4, 1], [1, 5], [4, 5]],
];

test('binary ops: forward with broadcasting', () => {
  for (const [name, f, g] of binaries) {
    for (const [sa, sb, so] of cases) {
      const a = randTensor(r, sa);
      const b = name === 'div' ? randUniform(r, sb, 0.5, 2) : randTensor(r, sb);
      const y = f(a, b);
      assert.deepEqual(y.shape, so, `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`);
      assertClose(y, refBinary(a, b, so, g), 1e-6, `${name} ${JSON.stringify(sa)} op ${JSON.stringify(sb)}`);
    }
    // strided (transposed) operands
    const a = randTensor(r, [4, 3]).transpose(0, 1);
    const b = randUniform(r, [3, 4], 0.5, 2);
    assertClose(f(a, b), refBinary(a, b, [3, 4], g), 1e-6, `${name} transposed`);
    // number operand
    const x = randTensor(r, [2, 3]);
    assertClose(f(x, 1.5), x.toF32Array().map((v) => Math.fround(g(v, 1.5))), 1e-6, `${name} scalar`);
  }
});

test('binary ops: gradients with broadcasting', () => {
  for (const [name, f] of binaries) {
    for (const [sa, sb] of cases) {
      const a = randTensor(r, sa);
      const b = name === 'div' ? randUniform(r, sb, 0.5, 2) : randTensor(r, sb);
      gradcheck(f, [a, b], { name: `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}` });
    }
    gradcheck((a, b) => f(a.transpose(0, 1), b), [randTensor(r, [4, 3]), randUniform(r, [3, 4], 0.5, 2)], { name: `${name} strided` });
    gradcheck((a) => f(a, 0.7), [randTensor(r, [3, 2])], { name: `${name} number` });
  }
});

test('binary ops: shape mismatch and dtype errors', () => {
  assert.throws(() => ops.add(Tensor.zeros([2, 3]), Tensor.zeros([4])), /add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
  assert.throws(() => ops.mul(Tensor.zeros([2, 3]), Tensor.zeros([3, 3])), /\[2, 3\] and \[3, 3\]/);
  assert.throws(() => ops.add(Tensor.zeros([2], 'i32'), Tensor.zeros([2])), /add: a must be float32, got i32/);
});

const unaries: [string, (x: Tensor) => Tensor, (v: number) => number, 'any' | 'pos'][] = [
  ['neg', ops.neg, (v) => -v, 'any'],
  ['exp', ops.exp, Math.exp, 'any'],
  ['log', ops.log, Math.log, 'pos'],
  ['sqrt', ops.sqrt, Math.sqrt, 'pos'],
  ['rsqrt', ops.rsqrt, (v) => 1 / Math.sqrt(v), 'pos'],
  ['sigmoid', ops.sigmoid, (v) => 1 / (1 + Math.exp(-v)), 'any'],
  ['silu', ops.silu, (v) => v / (1 + Math.exp(-v)), 'any'],
  ['pow3', (x) => ops.pow(x, 3), (v) => v ** 3, 'any'],
  ['pow2', (x) => ops.pow(x, 2), (v) => v ** 2, 'any'],
  ['pow-1.5', (x) => ops.pow(x, -1.5), (v) => v ** -1.5, 'pos'],
  ['scale', (x) => ops.scale(x, -2.5), (v) => -2.5 * v, 'any'],
];

test('unary ops: forward and gradients (contiguous and strided inputs)', () => {
  for (const [name, f, ref, domain] of unaries) {
    const x = domain === 'pos' ? randUniform(r, [3, 5], 0.5, 2) : randTensor(r, [3, 5]);
    assertClose(f(x), x.toF32Array().map((v) => Math.fround(ref(v))), 2e-6, name);
    gradcheck(f, [x], { name });
    gradcheck((t) => f(t.transpose(0, 1)), [x], { name: `${name} (transposed)` });
  }
  assert.throws(() => ops.exp(Tensor.zeros([2], 'bf16')), /exp: input must be float32, got bf16/);
});

test('sum and mean: forward over all/one/several dims, keepdim', () => {
  const x = randTensor(r, [2, 3, 4]);
  const d = x.toF32Array();
  const at = (i: number, j: number, k: number): number => d[(i * 3 + j) * 4 + k]!;
  let total = 0;
  for (const v of d) total += v;
  assertClose(ops.sum(x), [total], 1e-6, 'sum all');
  assert.deepEqual(ops.sum(x).shape, []);
  assert.deepEqual(ops.sum(x, undefined, true).shape, [1, 1, 1]);
  assertClose(ops.mean(x), [total / 24], 1e-6, 'mean all');
  const s1: number[] = [];
  for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) s1.push(at(i, 0, k) + at(i, 1, k) + at(i, 2, k));
  assertClose(ops.sum(x, 1), s1, 1e-6, 'sum dim 1');
  assert.deepEqual(ops.sum(x, 1, true).shape, [2, 1, 4]);
  assertClose(ops.mean(x, -2), s1.map((v) => v / 3), 1e-6, 'mean dim -2');
  const s02: number[] = [];
  for (let j = 0; j < 3; j++) {
    let s = 0;
    for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) s += at(i, j, k);
    s02.push(s);
  }
  assertClose(ops.sum(x, [0, 2]), s02, 1e-6, 'sum dims [0, 2]');
  assert.deepEqual(ops.sum(x, [2, 0], true).shape, [1, 3, 1]);
  assertClose(ops.sum(x.transpose(0, 2), [1, 2]), Array.from({ length: 4 }, (_, k) => {
    let s = 0;
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) s += at(i, j, k);
    return s;
  }), 1e-6, 'sum of a transposed view');
  assert.throws(() => ops.sum(x, 3), /sum: dim 3 is out of range for shape \[2, 3, 4\]/);
  assert.throws(() => ops.sum(x, [1, -2]), /repeated dim/);
});

test('sum, mean, max: gradients', () => {
  const x = randTensor(r, [2, 3, 4]);
  gradcheck((t) => ops.sum(t), [x], { name: 'sum all' });
  gradcheck((t) => ops.mean(t, 1), [x], { name: 'mean 1' });
  gradcheck((t) => ops.sum(t, [0, 2], true), [x], { name: 'sum [0,2] keepdim' });
  gradcheck((t) => ops.mean(t, [1, 2]), [x], { name: 'mean [1,2]' });
  gradcheck((t) => ops.sum(t.transpose(0, 1), -1), [x], { name: 'sum of a view' });
  const y = Tensor.fromF32(distinctValues(r, 24, 0.1), [2, 3, 4]);
  gradcheck((t) => ops.max(t, 1), [y], { name: 'max dim 1' });
  gradcheck((t) => ops.max(t, -1, true), [y], { name: 'max dim -1 keepdim' });
});

test('max and argmax: values, first index on ties', () => {
  const x = Tensor.from([1, 5, 5, 2, -1, -3, -1, -2], [2, 4]);
  assert.deepEqual(ops.max(x, 1).toArray(), [5, -1]);
  assert.deepEqual(ops.argmax(x, 1).toArray(), [1, 0]);
  assert.deepEqual(ops.max(x, 0, true).toArray(), [1, 5, 5, 2]);
  assert.deepEqual(ops.max(x, 0, true).shape, [1, 4]);
  const p = Tensor.param(x.toF32Array(), [2, 4]);
  backward(ops.sum(ops.max(p, 1)));
  assert.deepEqual(p.grad!.toArray(), [0, 1, 0, 0, 1, 0, 0, 0]);
});

test('tensor views are differentiable', () => {
  const x = randTensor(r, [2, 3, 4]);
  gradcheck((t) => t.reshape(4, 6), [x], { name: 'reshape' });
  gradcheck((t) => t.transpose(0, 2), [x], { name: 'transpose' });
  gradcheck((t) => t.permute([1, 2, 0]).contiguous(), [x], { name: 'permute + contiguous' });
  gradcheck((t) => t.slice(1, 1, 3), [x], { name: 'slice' });
  gradcheck((t) => t.slice(2, 1, 2).squeeze(2), [x], { name: 'slice + squeeze' });
  gradcheck((t) => t.unsqueeze(1).expand([2, 5, 3, 4]), [x], { name: 'unsqueeze + expand' });
  gradcheck((t) => t.transpose(1, 2).reshape(2, 12), [x], { name: 'transpose + reshape (copy)' });
  gradcheck((t) => t.clone(), [x], { name: 'clone' });
});

test('gradcheck itself rejects a wrong gradient', () => {
  const x = randTensor(r, [3, 4]);
  const wrong = (t: Tensor): Tensor => customOp('wrongSquare', [t], (a) => ops.mul(a, a),
    (g, a) => [ops.mul(g, ops.scale(a, 2.1))]); // d(a^2) is 2a, not 2.1a
  assert.throws(() => gradcheck(wrong, [x]), /analytic .* vs numeric/);
  const right = (t: Tensor): Tensor => customOp('square', [t], (a) => ops.mul(a, a), (g, a) => [ops.mul(g, ops.scale(a, 2))]);
  gradcheck(right, [x]);
});
