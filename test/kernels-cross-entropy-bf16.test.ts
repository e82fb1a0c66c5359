// crossEntropyGradBf16 (native/src/fused_napi.c, isa/rows.c): the BF16 output head's
// cross-entropy and the bf16 bits of its logits gradient P - Y (dloss 1) in one pass per row.
// Under every ISA and 1 and 2 threads the native kernel must give exactly the bits of the native
// unfused calls it replaces (crossEntropy, crossEntropyBackward with dloss 1, bf16RoundRows: so
// training results do not change) and match the TypeScript reference (loss and lse to
// kernels-native.test.ts's tolerance; g16 within one bf16 step of the reference's bits, as the
// exp differs by an ulp). Then, at the op level, linearCrossEntropy({ bf16 }) gives the same loss
// and gradients, bit for bit, as with the three unfused kernels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { rng } from './helpers/random.js';
import { assertCloseToScale, f32Bits } from './helpers/compare.js';
import { kernels, withBackend } from '../src/engine/backend.js';
import type { Kernels } from '../src/engine/kernels.js';
import { backward } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import { linearCrossEntropy } from '../src/engine/ops/linear-cross-entropy.js';
import { mean } from '../src/engine/ops/index.js';

const { A, opts, eachConfig } = nativeForTests();
// vocab: vector tails, the stack block (1024) and its tail, a large vocabulary; rows: the threaded split
const SHAPES: Array<[number, number, number]> = [[0, 5, 5], [1, 1, 1], [3, 7, 9], [2, 16, 16], [5, 17, 20], [4, 33, 40],
  [7, 1024, 1040], [3, 1500, 1500], [9, 2100, 2133], [64, 4096, 4128]];

function data(r: () => number, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * scale;
  return a;
}

/** the unfused calls: crossEntropy, crossEntropyBackward (dloss 1) into a copy, bf16RoundRows */
function unfused(K: Pick<Kernels, 'crossEntropy' | 'crossEntropyBackward' | 'bf16RoundRows'>, logits: Float32Array, tg: Int32Array,
  loss: Float32Array, lse: Float32Array, g16: Uint16Array, rows: number, V: number, ldg: number): void {
  K.crossEntropy(logits, tg, loss, lse, rows, V);
  const p = new Float32Array(rows * V);
  K.crossEntropyBackward(logits, tg, lse, new Float32Array(rows).fill(1), p, rows, V);
  K.bf16RoundRows(p, g16, rows, V, ldg);
}

/** |a - b| in bf16 steps of the same sign (bits as integers) */
function bf16Steps(a: number, b: number): number {
  return (a & 0x8000) === (b & 0x8000) ? Math.abs(a - b) : Math.abs((a & 0x7fff) + (b & 0x7fff));
}

test('crossEntropyGradBf16: native equals crossEntropy + crossEntropyBackward + bf16RoundRows (bit for bit) and the reference', opts, () => {
  const r = rng(31);
  for (const [rows, V, ldg] of SHAPES) {
    const logits = data(r, rows * V, 6);
    const tg = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 3 ? -1 : Math.floor(r() * V))); // some ignored rows
    if (rows > 1 && V > 2) [logits[V], logits[V + 1]] = [-Infinity, 40]; // a masked logit and a dominant one
    const lossRef = new Float32Array(rows), lseRef = new Float32Array(rows), g16Ref = new Uint16Array(Math.max(0, (rows - 1) * ldg + V));
    ref.crossEntropyGradBf16(logits, tg, lossRef, lseRef, g16Ref, rows, V, ldg);
    const copy = logits.slice();
    eachConfig((c) => {
      const at = `[${rows},${V}] ldg ${ldg} ${c}`;
      const n16 = rows * ldg + 1;
      const loss = new Float32Array(rows + 1).fill(-3), lse = new Float32Array(rows + 1).fill(-3), g16 = new Uint16Array(n16).fill(0xabcd);
      A.crossEntropyGradBf16(logits, tg, loss, lse, g16, rows, V, ldg);
      assert.deepEqual(f32Bits(logits), f32Bits(copy), `logits are only read ${at}`);
      const l0 = new Float32Array(rows), s0 = new Float32Array(rows), b0 = new Uint16Array(n16).fill(0xabcd);
      unfused(A as unknown as Kernels, logits, tg, l0, s0, b0, rows, V, ldg);
      assert.deepEqual(f32Bits(loss.subarray(0, rows)), f32Bits(l0), `loss ${at}`);
      assert.deepEqual(f32Bits(lse.subarray(0, rows)), f32Bits(s0), `lse ${at}`);
      assert.deepEqual(g16, b0, `g16 (and its untouched padding) ${at}`);
      assert.deepEqual([loss[rows], lse[rows]], [-3, -3], `writes stop at the end ${at}`);
      assertCloseToScale(loss.subarray(0, rows), lossRef, `loss vs reference ${at}`);
      assertCloseToScale(lse.subarray(0, rows), lseRef, `lse vs reference ${at}`);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < V; j++) {
          const s = bf16Steps(g16[i * ldg + j]!, g16Ref[i * ldg + j]!);
          if (s > 1) assert.fail(`g16[${i}, ${j}] ${g16[i * ldg + j]!.toString(16)} vs reference ${g16Ref[i * ldg + j]!.toString(16)} ${at}`);
        }
        if (tg[i]! < 0) assert.ok(g16.subarray(i * ldg, i * ldg + V).every((h) => h === 0), `ignored row ${i} is zero ${at}`);
      }
    });
  }
});

test('crossEntropyGradBf16: reference is crossEntropy + crossEntropyBackward + bf16RoundRows, with real gradients', () => {
  const r = rng(32);
  const [rows, V, ldg] = [6, 50, 56];
  const logits = data(r, rows * V, 3);
  const tg = Int32Array.from([3, -1, 49, 0, 17, 17]);
  const loss = new Float32Array(rows), lse = new Float32Array(rows), g16 = new Uint16Array((rows - 1) * ldg + V).fill(7);
  ref.crossEntropyGradBf16(logits, tg, loss, lse, g16, rows, V, ldg);
  const l0 = new Float32Array(rows), s0 = new Float32Array(rows), b0 = new Uint16Array(g16.length).fill(7);
  unfused(ref, logits, tg, l0, s0, b0, rows, V, ldg);
  assert.deepEqual([...loss], [...l0]);
  assert.deepEqual([...lse], [...s0]);
  assert.deepEqual(g16, b0);
  assert.equal(loss[1], 0);
  assert.ok(g16[0 * ldg + 3]! & 0x8000, 'the target entry of P - Y is negative');
  assert.ok(!(g16[0 * ldg + 4]! & 0x8000) && g16[0 * ldg + 4]! !== 0, 'a non-target entry is positive');
  assert.equal(g16[V], 7, 'padding untouched');
});

test('crossEntropyGradBf16: bad arguments are errors naming the argument', opts, () => {
  const logits = new Float32Array(8), tg = new Int32Array(2), loss = new Float32Array(2), lse = new Float32Array(2);
  for (const K of [A, ref] as const) {
    assert.throws(() => K.crossEntropyGradBf16(logits, tg, loss, lse, new Uint16Array(9), 2, 4, 6), (e: Error) => e instanceof RangeError && /g16/.test(e.message));
    assert.throws(() => K.crossEntropyGradBf16(logits, tg, loss, lse, new Uint16Array(8), 2, 4, 3), (e: Error) => e instanceof RangeError && /ldg/.test(e.message));
    assert.throws(() => K.crossEntropyGradBf16(logits, Int32Array.of(0, 4), loss, lse, new Uint16Array(8), 2, 4, 4), (e: Error) => e instanceof RangeError && /target 4 at row 1/.test(e.message));
    assert.throws(() => K.crossEntropyGradBf16(logits, tg, new Float32Array(1), lse, new Uint16Array(8), 2, 4, 4), (e: Error) => e instanceof RangeError && /loss/.test(e.message));
  }
  assert.throws(() => A.crossEntropyGradBf16(logits, tg, loss, lse, new Float32Array(8) as unknown as Uint16Array, 2, 4, 4), (e: Error) => e instanceof TypeError && /g16/.test(e.message));
});

/** Kernels whose crossEntropyGradBf16 is the three unfused calls of the same backend, counting the fused calls. */
function unfusedBackend(): { k: Kernels; calls: { fused: number } } {
  const base = kernels();
  const calls = { fused: 0 };
  const k: Kernels = {
    ...base,
    crossEntropyGradBf16: (logits, tg, loss, lse, g16, rows, V, ldg) => { calls.fused++; unfused(base, logits, tg, loss, lse, g16, rows, V, ldg); },
  };
  return { k, calls };
}

for (const backend of ['reference', 'native'] as const) {
  test(`linearCrossEntropy(bf16): same loss and gradients, bit for bit, as the unfused kernels (${backend})`, backend === 'native' ? opts : {}, () => {
    withBackend(backend, () => {
      const r = rng(33);
      const [N, D, V] = [45, 24, 300];
      const x0 = data(r, N * D, 1), w0 = data(r, V * D, 0.3);
      const tg = Int32Array.from({ length: N }, (_, i) => (i === 7 ? -1 : Math.floor(r() * V)));
      const run = (fusedKernel: boolean): { loss: Float32Array; dx: Float32Array; dw: Float32Array; fused: number } => {
        const x = new Tensor(x0.slice(), [N, D], 'f32'), w = new Tensor(w0.slice(), [V, D], 'f32');
        x.requiresGrad = true;
        w.requiresGrad = true;
        const { k, calls } = unfusedBackend();
        return withBackend(fusedKernel ? kernels() : k, () => {
          const l = linearCrossEntropy(x, w, tg, { bf16: true, chunkRows: 16 }); // three chunks, the last short
          backward(mean(l));
          return { loss: l.f32(), dx: x.grad!.f32(), dw: w.grad!.f32(), fused: calls.fused };
        });
      };
      const a = run(false), b = run(true);
      assert.equal(a.fused, 3, 'the op calls the fused kernel once per chunk');
      assert.deepEqual(f32Bits(b.loss), f32Bits(a.loss), 'loss');
      assert.deepEqual(f32Bits(b.dx), f32Bits(a.dx), 'dx');
      assert.deepEqual(f32Bits(b.dw), f32Bits(a.dw), 'dw');
      assert.ok(b.dw.some((v) => v !== 0) && b.dx.some((v) => v !== 0));
    });
  });
}
