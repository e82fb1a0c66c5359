// Recomputing an FP8 training Linear's output in backward from the FP8 operands the recorded
// Linear keeps anyway (X's 1x128-tile copy for Wgrad; W's block copy is made again from W:
// ops/fp8-training-linear.ts pendingFp8Fprop / fp8LinearFromOperands; MLA's up-projections and
// kv_a_layernorm's input under fp8, model/mla.ts, issue 13): the same bits as the forward's output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward } from '../src/engine/autograd.js';
import { withBackend } from '../src/engine/backend.js';
import * as ops from '../src/engine/ops/index.js';
import { Tensor } from '../src/engine/tensor.js';
import { randTensor, rng } from './helpers/random.js';

for (const backend of ['native', 'reference'] as const) {
  test(`fp8LinearFromOperands on a recorded fp8TrainingLinear's operands equals its output bit for bit (${backend})`, () => {
    withBackend(backend, () => {
      const r = rng(17);
      for (const [shape, nOut] of [[[2, 5, 24], 40], [[3, 1, 130], 17], [[4, 300], 129], [[2, 64, 256], 96]] as const) {
        const x = randTensor(r, shape, 1.5, true);
        const w = randTensor(r, [nOut, shape[shape.length - 1]!], 0.3, true);
        const y = ops.fp8TrainingLinear(x, w);
        const f = ops.pendingFp8Fprop(x, w);
        assert.ok(f, 'a recorded FP8 Linear with a trainable weight and input keeps both operands');
        assert.equal(ops.fp8FpropBuffers(f).length, 2); // X's codes and scales: W's block codes are not kept
        const again = ops.fp8LinearFromOperands(f, x.shape);
        assert.deepEqual(again.shape, y.shape);
        assert.deepEqual(again.f32(), y.f32(), `shape ${shape.join('x')} -> ${nOut}`);
        // another tensor, or a strided view of x: no operands are offered
        assert.equal(ops.pendingFp8Fprop(x.slice(x.ndim - 1, 1, shape[shape.length - 1]!), w), null);
        assert.equal(ops.pendingFp8Fprop(randTensor(r, shape, 1), w), null);
        assert.throws(() => ops.fp8LinearFromOperands(f, [7, shape[shape.length - 1]!]), /does not match/);
        backward(ops.sum(y));
        assert.equal(ops.pendingFp8Fprop(x, w), null, 'the operands are not offered once the Linear ran backward');
      }
      // two Linears on one x (they share x's FP8 copy): each weight gets its own Fprop back
      const x = randTensor(r, [6, 256], 1, true);
      const [wa, wb] = [randTensor(r, [48, 256], 0.2, true), randTensor(r, [20, 256], 0.2, true)];
      const [ya, yb] = [ops.fp8TrainingLinear(x, wa), ops.fp8TrainingLinear(x, wb)];
      assert.deepEqual(ops.fp8LinearFromOperands(ops.pendingFp8Fprop(x, wa)!, x.shape).f32(), ya.f32());
      assert.deepEqual(ops.fp8LinearFromOperands(ops.pendingFp8Fprop(x, wb)!, x.shape).f32(), yb.f32());
      // frozen weight (no Wgrad copy of x) or an input without a gradient (no Dgrad copy of W): none
      const x2 = randTensor(r, [3, 128], 1, true);
      const frozen = randTensor(r, [5, 128], 1, false);
      ops.fp8TrainingLinear(x2, frozen);
      assert.equal(ops.pendingFp8Fprop(x2, frozen), null);
      const x3 = randTensor(r, [3, 128], 1, false);
      const w3 = randTensor(r, [5, 128], 1, true);
      ops.fp8TrainingLinear(x3, w3);
      assert.equal(ops.pendingFp8Fprop(x3, w3), null);
    });
  });
}

for (const backend of ['native', 'reference'] as const) {
  test(`swigluWith with recompute gives the same output and gradients as keeping g and u, writing dG / dU over the recomputed u / g (${backend})`, () => {
    withBackend(backend, () => {
      const r = rng(23);
      for (const n of [1, 15, 16, 1000, 70_000, 140_001]) { // tails, and sizes the native kernel splits over threads
        const gd = randTensor(r, [n], 3).f32();
        const ud = randTensor(r, [n], 2).f32();
        const dyd = randTensor(r, [n], 1).f32();
        const grads = (recompute: boolean): { y: Float32Array; dg: Float32Array; du: Float32Array; calls: number } => {
          const g = Tensor.param(gd.slice(), [n]);
          const u = Tensor.param(ud.slice(), [n]);
          let calls = 0;
          const rc = { from: [], g: () => (calls++, gd.slice()), u: () => (calls++, ud.slice()) };
          const y = ops.swigluWith(g, u, recompute ? { recompute: rc } : {});
          backward(ops.sum(ops.mul(y, Tensor.fromF32(dyd.slice(), [n]))));
          return { y: y.f32().slice(), dg: g.grad!.f32().slice(), du: u.grad!.f32().slice(), calls };
        };
        const a = grads(false);
        const b = grads(true);
        assert.equal(b.calls, 2, 'g and u are recomputed once each, in backward');
        assert.deepEqual(b.y, a.y);
        assert.deepEqual(b.dg, a.dg, `dG, n=${n}`);
        assert.deepEqual(b.du, a.du, `dU, n=${n}`);
      }
      const g = Tensor.param(new Float32Array(4), [4]);
      const shared = new Float32Array(4);
      const bad = ops.swigluWith(g, Tensor.param(new Float32Array(4), [4]), { recompute: { from: [], g: () => shared, u: () => shared } });
      assert.throws(() => backward(ops.sum(bad)), /separate buffers/);
    });
  });
}

for (const backend of ['native', 'reference'] as const) {
  test(`linearWith(x, w, rmsNormAgain(h, g)) gives the same output and gradients as linear on the norm's output (${backend})`, () => {
    withBackend(backend, () => {
      const r = rng(29);
      const hd = randTensor(r, [2, 9, 40], 1.3).f32();
      const gd = randTensor(r, [40], 1).f32();
      const wd = randTensor(r, [6, 40], 0.4).f32();
      const run = (again: boolean): { y: Float32Array; dh: Float32Array; dg: Float32Array; dw: Float32Array; calls: number } => {
        const h = Tensor.param(hd.slice(), [2, 9, 40]);
        const g = Tensor.param(gd.slice(), [40]);
        const w = Tensor.param(wd.slice(), [6, 40]);
        const u = ops.rmsNorm(h, g, 1e-6);
        let calls = 0;
        const rc = ops.rmsNormAgain(h, g, 1e-6);
        assert.ok(rc);
        const y = again ? ops.linearWith(u, w, { from: rc.from, x: () => (calls++, rc.x()) }) : ops.linear(u, w);
        backward(ops.sum(ops.mul(y, y)));
        return { y: y.f32().slice(), dh: h.grad!.f32().slice(), dg: g.grad!.f32().slice(), dw: w.grad!.f32().slice(), calls };
      };
      const a = run(false);
      const b = run(true);
      assert.equal(b.calls, 1, 'the input is recomputed once, for Wgrad');
      assert.deepEqual(b.y, a.y);
      assert.deepEqual(b.dw, a.dw);
      assert.deepEqual(b.dh, a.dh);
      assert.deepEqual(b.dg, a.dg);
      assert.equal(ops.rmsNormAgain(Tensor.fromF32(hd, [2, 9, 40]).slice(2, 0, 20), Tensor.fromF32(gd.subarray(0, 20), [20])), null, 'a strided x: nothing to save');
      const bad = ops.linearWith(Tensor.param(hd.slice(), [2, 9, 40]), Tensor.param(wd.slice(), [6, 40]), { from: [], x: () => new Float32Array(3) });
      assert.throws(() => backward(ops.sum(bad)), /recomputed input has 3 elements/);
    });
  });
}
