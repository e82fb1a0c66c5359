// Recomputing a bf16 Linear's output in backward from the bf16 copy of its input that the
// recorded Linear keeps for Wgrad (ops/bf16-linear.ts pendingBf16Copy / bf16LinearFromBits; MLA's
// up-projections under bf16, model/mla.ts, issue 13): the same bits as the forward's output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward } from '../src/engine/autograd.js';
import { withBackend } from '../src/engine/backend.js';
import { invalidateBf16Weights } from '../src/engine/bf16-weights.js';
import { f32ToBf16 } from '../src/engine/dtype.js';
import * as ops from '../src/engine/ops/index.js';
import { randTensor, rng } from './helpers/random.js';

for (const backend of ['native', 'reference'] as const) {
  test(`bf16LinearFromBits on a recorded bf16Linear's input copy equals its output bit for bit (${backend})`, () => {
    withBackend(backend, () => {
      const r = rng(7);
      for (const [shape, nOut] of [[[2, 5, 24], 40], [[3, 1, 130], 17], [[4, 64], 33]] as const) {
        invalidateBf16Weights();
        const x = randTensor(r, shape, 1.5);
        const w = randTensor(r, [nOut, shape[shape.length - 1]!], 0.3, true);
        const y = ops.bf16Linear(x, w);
        const xb = ops.pendingBf16Copy(x);
        assert.ok(xb, 'a recorded bf16Linear with a trainable weight keeps x in bf16');
        const xd = x.f32();
        for (let i = 0; i < xd.length; i++) assert.equal(xb[i], f32ToBf16(xd[i]!), `bf16 bits of x[${i}]`);
        const again = ops.bf16LinearFromBits(xb, x.shape, w);
        assert.deepEqual(again.shape, y.shape);
        assert.deepEqual(again.f32(), y.f32(), `shape ${shape.join('x')} -> ${nOut}`);
        // a strided view of x: no copy is found
        assert.equal(ops.pendingBf16Copy(x.slice(x.ndim - 1, 1, shape[shape.length - 1]!)), null);
        backward(ops.sum(y));
        assert.equal(ops.pendingBf16Copy(x), null, 'the copy is not offered once its Linear ran backward');
      }
      // frozen weight: the Linear keeps no copy, so there is none to recompute from
      const x = randTensor(r, [3, 8], 1);
      ops.bf16Linear(x, randTensor(r, [5, 8], 1, false));
      assert.equal(ops.pendingBf16Copy(x), null);
      assert.throws(() => ops.bf16LinearFromBits(new Uint16Array(12), [3, 4], randTensor(r, [5, 8], 1)), /do not match/);
    });
  });
}

for (const backend of ['native', 'reference'] as const) {
  test(`rmsNorm with recomputeInput gives the same output and gradients as keeping x (${backend})`, () => {
    withBackend(backend, () => {
      const r = rng(11);
      const base = randTensor(r, [3, 7, 40], 1.2);
      const x = base.slice(2, 0, 32); // strided, as kv_a_layernorm's input
      const grads = (recompute: boolean): { y: Float32Array; dx: Float32Array; dw: Float32Array; calls: number } => {
        const xi = x.detach();
        xi.requiresGrad = true;
        const w = randTensor(rng(3), [32], 1, true);
        let calls = 0;
        const y = ops.rmsNorm(xi, w, 1e-6, recompute ? { recomputeInput: { from: [], x: () => (calls++, x.contiguous().f32().slice()) } } : {});
        backward(ops.sum(ops.mul(y, y)));
        return { y: y.f32(), dx: xi.grad!.contiguous().f32(), dw: w.grad!.f32(), calls };
      };
      const a = grads(false);
      const b = grads(true);
      assert.equal(b.calls, 1, 'the input is recomputed once, in backward');
      assert.deepEqual(b.y, a.y);
      assert.deepEqual(b.dx, a.dx);
      assert.deepEqual(b.dw, a.dw);
      const w = randTensor(r, [32], 1, true);
      const bad = ops.rmsNorm(x, w, 1e-6, { recomputeInput: { from: [], x: () => new Float32Array(5) } });
      assert.throws(() => backward(ops.sum(bad)), /recomputed input has 5 elements/);
    });
  });
}
