// AdamW writing the bf16 copy of the updated weight in the same pass (Kernels.adamw / adamwBf16
// `wb`; native/src/optim_napi.c, reference/optim.ts) and AdamW.step using it for the weights that
// BF16 training multiplies with (engine/bf16-weights.ts). Native == reference bit for bit on every
// ISA and 1 and 2 threads; w, m, v are the bits of the call without wb; wb is bf16Round of the new
// w; and after AdamW.step a weight's bf16 copy is current without another bf16Round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { kernels, withBackend } from '../src/engine/backend.js';
import type { Kernels } from '../src/engine/kernels.js';
import { bf16WeightBits } from '../src/engine/bf16-weights.js';
import { AdamW } from '../src/train/optimizer.js';
import { nativeForTests } from './helpers/native-configs.js';
import { randData, rng } from './helpers/random.js';

const { A, opts, eachConfig } = nativeForTests();
const N = A as unknown as Kernels;
const r = rng(73);
// around the 2048-element blocks of the fused pass, vector tails, and a threaded split (64K per task)
const SIZES = [0, 4, 7, 2047, 2048, 2049, 300_001];
const args = (t: number) => [0.9, 0.95, 1 - 0.9, 1 - 0.95, 3e-3, 1 - Math.pow(0.9, t), 1 - Math.pow(0.95, t), 1e-8] as const;
const u32 = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

for (const moments of ['f32', 'bf16'] as const) {
  test(`adamw${moments === 'bf16' ? 'Bf16' : ''} with wb: the same update, wb = bf16Round(new w); native == reference on every ISA`, opts, () => {
    for (const n of SIZES) {
      const w0 = randData(r, n);
      const grads = [randData(r, n), randData(r, n, 1e-3), randData(r, n, 30)];
      if (n > 5) grads[1]![3] = NaN; // a NaN gradient: a NaN weight, rounded to a quiet NaN in wb
      // three steps; wb (when given) is written at every step, checked after the last
      const run = (k: Pick<Kernels, 'adamw' | 'adamwBf16'>, withWb: boolean) => {
        const w = w0.slice();
        const mf = new Float32Array(n), vf = new Float32Array(n), mh = new Uint16Array(n), vh = new Uint16Array(n);
        const wb = withWb ? new Uint16Array(n + 1).fill(0xabcd) : undefined;
        grads.forEach((g, i) => {
          const gs = i === 2 ? 0.25 : 1;
          if (moments === 'f32') k.adamw(w, g, mf, vf, n, gs, 1 - 3e-4, ...args(i + 1), wb);
          else k.adamwBf16(w, g, mh, vh, n, gs, 1 - 3e-4, ...args(i + 1), wb);
        });
        return { w, m: moments === 'f32' ? new Uint16Array(mf.buffer) : mh, v: moments === 'f32' ? new Uint16Array(vf.buffer) : vh, wb };
      };
      const want = run(ref, true);
      const plain = run(ref, false);
      assert.deepEqual(u32(want.w), u32(plain.w), `reference w n ${n}`);
      const rounded = new Uint16Array(n);
      ref.bf16Round(want.w, rounded, n);
      assert.deepEqual(want.wb!.subarray(0, n), rounded, `reference wb n ${n}`);
      eachConfig((c) => {
        const got = run(N, true);
        const got0 = run(N, false);
        assert.deepEqual(u32(got.w), u32(want.w), `w n ${n} ${c}`);
        assert.deepEqual(got.m, want.m, `m n ${n} ${c}`);
        assert.deepEqual(got.v, want.v, `v n ${n} ${c}`);
        assert.deepEqual(got.wb!.subarray(0, n), want.wb!.subarray(0, n), `wb n ${n} ${c}`);
        assert.equal(got.wb![n], 0xabcd, `wb written past n ${n} ${c}`);
        assert.deepEqual(u32(got0.w), u32(got.w), `w without wb n ${n} ${c}`);
      });
    }
  });
}

test('adamw / adamwBf16: wb short or mistyped is an error naming it; undefined is no copy', opts, () => {
  const f = () => new Float32Array(8);
  const h = () => new Uint16Array(8);
  const p = [1, 0.5, 0.9, 0.95, 0.1, 0.05, 1e-3, 0.1, 0.05, 1e-8] as const;
  for (const k of [N, ref]) {
    assert.throws(() => k.adamw(f(), f(), f(), f(), 8, ...p, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /wb/.test(e.message));
    assert.throws(() => k.adamwBf16(f(), f(), h(), h(), 8, ...p, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /wb/.test(e.message));
    const w = Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8);
    k.adamw(w, f(), f(), f(), 8, ...p, undefined);
    assert.equal(w[7], 4); // updated (decay 0.5, no gradient)
  }
  assert.throws(() => A.adamw(f(), f(), f(), f(), 8, ...p, new Float32Array(8) as unknown as Uint16Array), (e: Error) => e instanceof TypeError && /wb/.test(e.message));
});

/** The active kernels, counting bf16Round calls. */
function counting(): { k: Kernels; calls: { bf16Round: number } } {
  const base = kernels();
  const calls = { bf16Round: 0 };
  return { k: { ...base, bf16Round: (...a: Parameters<Kernels['bf16Round']>) => { calls.bf16Round++; base.bf16Round(...a); } }, calls };
}

for (const backend of ['reference', 'native'] as const) {
  test(`AdamW.step writes the bf16 copies of the weights that have one, in the update (${backend})`, backend === 'native' ? opts : {}, () => {
    withBackend(backend, () => {
      for (const momentDtype of ['f32', 'bf16'] as const) {
        const n = 3000;
        const a = Tensor.param(randData(r, n), [n / 4, 4], 'a'); // has a bf16 copy, gets a gradient
        const b = Tensor.param(randData(r, n), [n / 4, 4], 'b'); // no bf16 copy
        const c = Tensor.param(randData(r, n), [n / 4, 4], 'c'); // has a copy, no gradient this step
        const opt = new AdamW([a, b, c], { lr: 1e-2, momentDtype });
        const ba = bf16WeightBits(a);
        const bc = bf16WeightBits(c);
        const before = ba.slice();
        a.grad = Tensor.fromF32(randData(r, n), a.shape);
        b.grad = Tensor.fromF32(randData(r, n), b.shape);
        const { k, calls } = counting();
        withBackend(k, () => opt.step());
        assert.equal(calls.bf16Round, 0, 'the step rounds nothing separately');
        const wantA = new Uint16Array(n);
        ref.bf16Round(a.f32(), wantA, n);
        assert.notDeepEqual(wantA, before);
        assert.deepEqual(ba, wantA, `${momentDtype}: a's copy holds the new weight's bits`);
        withBackend(k, () => {
          assert.equal(bf16WeightBits(a), ba, 'the same buffer, current: not rounded again');
          assert.equal(calls.bf16Round, 0);
          assert.equal(bf16WeightBits(c), bc); // invalidated by the step: rounded afresh on use
          assert.equal(calls.bf16Round, 1);
          bf16WeightBits(b); // made on first use
          assert.equal(calls.bf16Round, 2);
        });
        const wantB = new Uint16Array(n);
        ref.bf16Round(b.f32(), wantB, n);
        assert.deepEqual(bf16WeightBits(b), wantB);
      }
    });
  });
}
