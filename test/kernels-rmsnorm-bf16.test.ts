// rmsNormBf16 (native/src/fused_napi.c, isa/rows.c): RMSNorm that also writes the bf16 bits of
// its output, for the BF16 Linears that read a norm's output (ops/norm.ts `bf16Out`). Under every
// ISA and 1 and 2 threads the native kernel must give exactly the bits of the native unfused calls
// it replaces (rmsNorm, then bf16Round of y: so training results do not change) and match the
// TypeScript reference (y and rstd to kernels-native.test.ts's RMSNorm tolerance, y16 = the
// reference rounding of y). Then, at the op level, rmsNorm(bf16Out) followed by bf16Linear gives
// the same output and gradients, bit for bit, as without the fused bits, with one bf16Round fewer.
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
import { bf16Linear } from '../src/engine/ops/bf16-linear.js';
import { rmsNorm } from '../src/engine/ops/norm.js';
import { add, mul, sum } from '../src/engine/ops/index.js';

const { A, opts, eachConfig } = nativeForTests();
// cols: vector tails of 8 and 16 lanes, the model's widths; rows: the threaded split (rows * cols large)
const SHAPES: Array<[number, number]> = [[0, 5], [1, 1], [3, 7], [2, 16], [5, 17], [4, 33], [7, 256], [9, 1000], [2048, 64], [513, 512]];

function data(r: () => number, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * scale;
  return a;
}

test('rmsNormBf16: native equals rmsNorm + bf16Round (native, bit for bit) and the reference', opts, () => {
  const r = rng(21);
  for (const [rows, cols] of SHAPES) {
    const n = rows * cols;
    const x = data(r, n, 3);
    if (n > 4) [x[0], x[1], x[2]] = [1 + 2 ** -8, -(1 + 3 * 2 ** -8), 0]; // ties to even either way, a zero
    const w = data(r, cols, 2);
    const yRef = new Float32Array(n), y16Ref = new Uint16Array(n), rstdRef = new Float32Array(rows);
    ref.rmsNormBf16(x, w, yRef, y16Ref, rstdRef, rows, cols, 1e-6);
    eachConfig((c) => {
      const y = new Float32Array(n + 1).fill(-3), y16 = new Uint16Array(n + 1).fill(0xabcd), rstd = new Float32Array(rows + 1).fill(-3);
      A.rmsNormBf16(x, w, y, y16, rstd, rows, cols, 1e-6);
      const y0 = new Float32Array(n), r0 = new Float32Array(rows), b0 = new Uint16Array(n);
      A.rmsNorm(x, w, y0, r0, rows, cols, 1e-6);
      A.bf16Round(y0, b0, n);
      const at = `[${rows},${cols}] ${c}`;
      assert.deepEqual(f32Bits(y.subarray(0, n)), f32Bits(y0), `y ${at}`);
      assert.deepEqual(f32Bits(rstd.subarray(0, rows)), f32Bits(r0), `rstd ${at}`);
      assert.deepEqual(y16.subarray(0, n), b0, `y16 ${at}`);
      assert.deepEqual([y[n], y16[n], rstd[rows]], [-3, 0xabcd, -3], `writes stop at the end ${at}`);
      // against the reference: y and rstd as kernels-native.test.ts's rmsNorm; y16 is the reference rounding of y
      assertCloseToScale(y.subarray(0, n), yRef, `y vs reference ${at}`);
      assertCloseToScale(rstd.subarray(0, rows), rstdRef, `rstd vs reference ${at}`);
      const b1 = new Uint16Array(n);
      ref.bf16Round(y.subarray(0, n), b1, n);
      assert.deepEqual(y16.subarray(0, n), b1, `y16 vs reference rounding ${at}`);
    });
  }
  // the reference itself: y16 is its bf16Round of its y
  const x = data(r, 3 * 40, 1), w = data(r, 40, 1), y = new Float32Array(120), y16 = new Uint16Array(120), rs = new Float32Array(3);
  ref.rmsNormBf16(x, w, y, y16, rs, 3, 40, 1e-6);
  const b = new Uint16Array(120);
  ref.bf16Round(y, b, 120);
  assert.deepEqual(y16, b);
  assert.ok(y16.some((h) => h !== 0));
});

test('rmsNormBf16: short or mistyped buffers are errors naming the argument', opts, () => {
  const x = new Float32Array(8), w = new Float32Array(4), y = new Float32Array(8), rs = new Float32Array(2);
  assert.throws(() => A.rmsNormBf16(x, w, y, new Uint16Array(7), rs, 2, 4, 1e-6), (e: Error) => e instanceof RangeError && /y16/.test(e.message));
  assert.throws(() => A.rmsNormBf16(x, w, y, new Float32Array(8), rs, 2, 4, 1e-6), (e: Error) => e instanceof TypeError && /y16/.test(e.message));
  assert.throws(() => A.rmsNormBf16(x, w, y, new Uint16Array(8), new Float32Array(1), 2, 4, 1e-6), (e: Error) => e instanceof RangeError && /rstd/.test(e.message));
  assert.throws(() => ref.rmsNormBf16(x, w, y, new Uint16Array(7), rs, 2, 4, 1e-6), (e: Error) => e instanceof RangeError && /y16/.test(e.message));
});

/** Kernels that count bf16Round and rmsNormBf16 calls, over the active backend. */
function counting(): { k: Kernels; calls: { bf16Round: number; rmsNormBf16: number } } {
  const base = kernels();
  const calls = { bf16Round: 0, rmsNormBf16: 0 };
  const k: Kernels = {
    ...base,
    bf16Round: (...a: Parameters<Kernels['bf16Round']>) => { calls.bf16Round++; base.bf16Round(...a); },
    rmsNormBf16: (...a: Parameters<Kernels['rmsNormBf16']>) => { calls.rmsNormBf16++; base.rmsNormBf16(...a); },
  };
  return { k, calls };
}

for (const backend of ['reference', 'native'] as const) {
  test(`rmsNorm(bf16Out) -> bf16Linear: same output and gradients, bit for bit, one bf16Round fewer (${backend})`, backend === 'native' ? opts : {}, () => {
    withBackend(backend, () => {
      const r = rng(22);
      const [rows, D, O1, O2] = [37, 48, 24, 40];
      const x0 = data(r, rows * D, 2), g0 = data(r, D, 1), w10 = data(r, O1 * D, 0.2), w20 = data(r, O2 * D, 0.2), up1 = data(r, rows * O1, 1), up2 = data(r, rows * O2, 1);
      const run = (fused: boolean): { out: Float32Array[]; grads: Float32Array[]; calls: { bf16Round: number; rmsNormBf16: number } } => {
        const x = new Tensor(x0.slice(), [rows, D], 'f32'), gw = new Tensor(g0.slice(), [D], 'f32');
        const w1 = new Tensor(w10.slice(), [O1, D], 'f32'), w2 = new Tensor(w20.slice(), [O2, D], 'f32');
        for (const t of [x, gw, w1, w2]) t.requiresGrad = true;
        const { k, calls } = counting();
        return withBackend(k, () => {
          const h = rmsNorm(x, gw, 1e-6, { bf16Out: fused });
          const y1 = bf16Linear(h, w1), y2 = bf16Linear(h, w2); // two readers of h: one bf16 copy
          const loss = add(sum(mul(y1, new Tensor(up1, [rows, O1], 'f32'))), sum(mul(y2, new Tensor(up2, [rows, O2], 'f32'))));
          const c = { ...calls };
          backward(loss);
          return { out: [y1.f32(), y2.f32()], grads: [x.grad!.f32(), gw.grad!.f32(), w1.grad!.f32(), w2.grad!.f32()], calls: c };
        });
      };
      const a = run(false), b = run(true);
      for (let i = 0; i < 2; i++) assert.deepEqual(f32Bits(b.out[i]!), f32Bits(a.out[i]!), `output ${i}`);
      for (let i = 0; i < 4; i++) assert.deepEqual(f32Bits(b.grads[i]!), f32Bits(a.grads[i]!), `gradient ${i}`);
      // forward: the two weights are rounded either way; unfused, X is rounded once more (one copy
      // shared by the two Linears); fused, the norm writes X's bits
      assert.deepEqual(a.calls, { bf16Round: 3, rmsNormBf16: 0 });
      assert.deepEqual(b.calls, { bf16Round: 2, rmsNormBf16: 1 });
    });
  });
}
