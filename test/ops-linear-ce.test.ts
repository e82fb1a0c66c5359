// linearCrossEntropy (output head + cross-entropy fused in row chunks): equal to
// crossEntropy(linear(x, W), t, 'none') in values and gradients, on both backends, for chunk
// sizes that do and do not divide the rows, uniform (mean) and arbitrary upstream gradients,
// ignored rows; gradients against finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withBackend } from '../src/engine/backend.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { requireNative } from './helpers/backends.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { randTensor, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

const r = rng(23);

/** Values and gradients (x, w) of Σ_r g_r · nll_r for the fused and the unfused head. */
function both(N: number, D: number, V: number, targets: Int32Array, g: Float32Array | null, chunkRows?: number) {
  const x0 = randTensor(r, [N, D]).toF32Array();
  const w0 = randTensor(r, [V, D], 0.5).toF32Array();
  const run = (fused: boolean) => {
    const x = Tensor.param(x0.slice(), [N, D]);
    const w = Tensor.param(w0.slice(), [V, D]);
    const nll = fused ? ops.linearCrossEntropy(x, w, targets, chunkRows ? { chunkRows } : {}) : ops.crossEntropy(ops.linear(x, w), targets, 'none');
    const values = nll.toF32Array();
    if (g) backward(nll, Tensor.fromF32(g, [N]));
    else backward(ops.mean(nll)); // uniform upstream gradient: the training path
    return { values, gx: x.grad!.toF32Array(), gw: w.grad!.toF32Array() };
  };
  return { fused: run(true), plain: run(false) };
}

function check(name: string, N: number, D: number, V: number, chunkRows: number | undefined, uniform: boolean): void {
  const targets = Int32Array.from({ length: N }, (_, i) => (i % 7 === 3 ? -1 : (i * 37 + 5) % V)); // some ignored rows
  const g = uniform ? null : Float32Array.from({ length: N }, (_, i) => 0.3 + ((i * 13) % 5) * 0.25);
  const { fused, plain } = both(N, D, V, targets, g, chunkRows);
  assertClose(fused.values, plain.values, 1e-5, `${name}: nll`);
  for (let i = 0; i < N; i++) if (targets[i]! < 0) assert.equal(fused.values[i], 0, `${name}: ignored row ${i}`);
  assertClose(fused.gx, plain.gx, 1e-5, `${name}: dX`);
  assertClose(fused.gw, plain.gw, 1e-5, `${name}: dW`);
}

test('linearCrossEntropy equals crossEntropy(linear) on the reference backend (chunks, ignored rows, both backward paths)', () => {
  withBackend('reference', () => {
    for (const uniform of [true, false]) {
      check(`ref 20x8x13 chunk 7 uniform=${uniform}`, 20, 8, 13, 7, uniform);
      check(`ref 21x5x31 chunk 21 uniform=${uniform}`, 21, 5, 31, 21, uniform);
      check(`ref 1x3x2 chunk 4 uniform=${uniform}`, 1, 3, 2, 4, uniform);
    }
  });
});

test('linearCrossEntropy on the native backend equals the unfused head, and the reference', (t) => {
  if (!requireNative(t)) return;
  withBackend('native', () => {
    for (const uniform of [true, false]) {
      check(`native 300x48x1000 default chunk uniform=${uniform}`, 300, 48, 1000, undefined, uniform);
      check(`native 129x17x257 chunk 64 uniform=${uniform}`, 129, 17, 257, 64, uniform);
    }
  });
  const x = randTensor(r, [70, 24]);
  const w = randTensor(r, [129, 24], 0.5);
  const tg = Int32Array.from({ length: 70 }, (_, i) => (i * 11) % 129);
  const nat = withBackend('native', () => ops.linearCrossEntropy(x, w, tg, { chunkRows: 16 }).toF32Array());
  const ref = withBackend('reference', () => ops.linearCrossEntropy(x, w, tg, { chunkRows: 16 }).toF32Array());
  assertClose(nat, ref, 1e-5, 'native == reference');
});

test('linearCrossEntropy: gradients against finite differences ([B, T, D] input, mean and weighted)', () => {
  const x = randTensor(r, [2, 3, 5]);
  const w = randTensor(r, [11, 5], 0.7);
  const tg = Int32Array.from([4, -1, 0, 10, 7, 2]);
  gradcheck((a, b) => ops.linearCrossEntropy(a, b, tg, { chunkRows: 4 }), [x, w], { name: 'linearCrossEntropy (weighted rows)' });
  gradcheck((a, b) => ops.mean(ops.linearCrossEntropy(a, b, tg, { chunkRows: 4 })), [x, w], { name: 'linearCrossEntropy (mean)' });
  assert.deepEqual(ops.linearCrossEntropy(x, w, tg).shape, [2, 3]);
});

test('linearCrossEntropy: clear errors', () => {
  const x = randTensor(r, [4, 5]);
  const w = randTensor(r, [9, 5]);
  assert.throws(() => ops.linearCrossEntropy(x, randTensor(r, [9, 4]), new Int32Array(4)), /x \[4, 5\] does not match weight \[vocab, hidden\] \[9, 4\]/);
  assert.throws(() => ops.linearCrossEntropy(x, w, new Int32Array(3)), /3 targets for x \[4, 5\] \(4 rows\)/);
  assert.throws(() => ops.linearCrossEntropy(x, w, Int32Array.from([0, 9, 0, 0])), /target 9 at row 1 is out of range for a vocabulary of 9/);
  assert.throws(() => ops.linearCrossEntropy(x, w, new Int32Array(4), { chunkRows: 0 }), /chunkRows must be a positive integer/);
});
