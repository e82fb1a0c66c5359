// The SwiGLU's backward writes dG's and dU's bf16 bits in its own pass and hands them to the
// backward of the bf16 Linears (gate, up) whose outputs it read (bf16-linear.ts offerBf16Grad):
// the outputs and every gradient must be bit for bit those of the same graph in which each
// Linear rounds its dY itself (forced here by a scale-by-1 between the Linears and the SwiGLU,
// which hands the Linears new gradient tensors of the same values), with two bf16Round calls
// fewer; a gradient that is not the offered tensor never takes its bits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { rng } from './helpers/random.js';
import { f32Bits } from './helpers/compare.js';
import { kernels, withBackend } from '../src/engine/backend.js';
import type { Kernels } from '../src/engine/kernels.js';
import { backward } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import { bf16Linear, offerBf16Grad } from '../src/engine/ops/bf16-linear.js';
import { swigluWith } from '../src/engine/ops/activation.js';
import { mul, scale, sum } from '../src/engine/ops/index.js';

const { opts } = nativeForTests();

function data(r: () => number, n: number, s: number): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * r() - 1) * s);
}

/** Kernels counting bf16Round calls, over the active backend. */
function counting(): { k: Kernels; calls: { bf16Round: number } } {
  const base = kernels();
  const calls = { bf16Round: 0 };
  return { k: { ...base, bf16Round: (...a: Parameters<Kernels['bf16Round']>) => { calls.bf16Round++; base.bf16Round(...a); } }, calls };
}

for (const backend of ['reference', 'native'] as const) {
  test(`swiglu(bf16) between bf16 Linears: dY bits from the SwiGLU's pass, same results bit for bit, 2 bf16Round fewer (${backend})`, backend === 'native' ? opts : {}, () => {
    withBackend(backend, () => {
      const r = rng(41);
      const [N, D, I] = [29, 40, 72];
      const x0 = data(r, N * D, 1), wg0 = data(r, I * D, 0.3), wu0 = data(r, I * D, 0.3), wd0 = data(r, D * I, 0.3), up0 = data(r, N * D, 1);
      const run = (taken: boolean) => {
        const x = new Tensor(x0.slice(), [N, D], 'f32'), wg = new Tensor(wg0.slice(), [I, D], 'f32');
        const wu = new Tensor(wu0.slice(), [I, D], 'f32'), wd = new Tensor(wd0.slice(), [D, I], 'f32');
        for (const t of [x, wg, wu, wd]) t.requiresGrad = true;
        const { k, calls } = counting();
        return withBackend(k, () => {
          let g = bf16Linear(x, wg), u = bf16Linear(x, wu);
          if (!taken) [g, u] = [scale(g, 1), scale(u, 1)]; // the Linears get new gradient tensors: they round dY themselves
          const y = bf16Linear(swigluWith(g, u, { bf16: true }), wd);
          const before = calls.bf16Round;
          backward(sum(mul(y, new Tensor(up0, [N, D], 'f32'))));
          return { y: y.f32(), grads: [x, wg, wu, wd].map((t) => t.grad!.f32()), backwardRounds: calls.bf16Round - before };
        });
      };
      const a = run(false), b = run(true);
      assert.deepEqual(f32Bits(b.y), f32Bits(a.y), 'output');
      for (let i = 0; i < 4; i++) assert.deepEqual(f32Bits(b.grads[i]!), f32Bits(a.grads[i]!), `gradient ${i}`);
      assert.ok(b.grads.every((gr) => gr.some((v) => v !== 0)));
      assert.equal(a.backwardRounds, 3, 'unfused: dY of down, gate and up rounded by the Linears');
      assert.equal(b.backwardRounds, 1, 'fused: only the down projection rounds its dY');
    });
  });
}

test('offerBf16Grad: the bits go only to the backward that receives that very tensor', () => {
  withBackend('reference', () => {
    const r = rng(42);
    const x = new Tensor(data(r, 6 * 8, 1), [6, 8], 'f32'), w = new Tensor(data(r, 4 * 8, 1), [4, 8], 'f32');
    w.requiresGrad = true;
    const y = bf16Linear(x, w);
    // wrong bits offered for some other tensor of the right size: never read
    offerBf16Grad(new Tensor(new Float32Array(24), [6, 4], 'f32'), new Uint16Array(24).fill(0x7f80));
    backward(sum(y));
    assert.ok(w.grad!.f32().every((v) => Number.isFinite(v)));
    assert.throws(() => offerBf16Grad(new Tensor(new Float32Array(24), [6, 4], 'f32'), new Uint16Array(23)), /23 bf16 values/);
  });
});
