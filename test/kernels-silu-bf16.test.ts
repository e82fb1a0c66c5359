// The fused bf16 kernels of the BF16 experts and SwiGLU (native/src/elementwise_napi.c,
// native/src/rowops_napi.c): siluMulRound (siluMul + bf16Round of g and u in one pass),
// siluMulBf16 / siluMulBackwardBf16 (siluMul / siluMulBackward of g, u given as bf16 bits; the latter optionally
// also writing the bf16 bits of dg, du in the same pass), scaleRows with y16 (the bits of the scaled rows too) and
// gatherRowsBf16 (gatherRows + bf16Round). Under every ISA and 1 and 2 threads, the native
// fused kernels must give the bits of the native unfused calls they replace (so training results
// do not change), and match the TypeScript reference (the rounded bits exactly; y, dg, du to the
// tolerance of the siluMul test in kernels-native.test.ts). Sizes cover vector tails, the
// 1024-element blocks, and the threaded split.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { rng } from './helpers/random.js';
import { assertCloseToScale, f32Bits } from './helpers/compare.js';

const { A, opts, eachConfig } = nativeForTests();
const SIZES = [0, 1, 7, 17, 1023, 1024, 1025, 3000, (1 << 15) + 33, (1 << 18) + 5];

function data(r: () => number, n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * scale;
  if (n > 6) [a[0], a[1], a[2], a[3], a[4], a[5]] = [-100, 100, -88.5, 0, -0, 1 + 2 ** -8]; // exp limits, signed zero, an RNE tie
  return a;
}

test('siluMulRound: native equals siluMul + bf16Round (native, bit for bit) and the reference', opts, () => {
  const r = rng(11);
  for (const n of SIZES) {
    const g = data(r, n, 8);
    const u = data(r, n, 2);
    const yRef = new Float32Array(n), g16Ref = new Uint16Array(n), u16Ref = new Uint16Array(n);
    ref.siluMulRound(g, u, yRef, g16Ref, u16Ref, n);
    eachConfig((c) => {
      const y = new Float32Array(n + 1).fill(-3), g16 = new Uint16Array(n + 1).fill(0xabcd), u16 = new Uint16Array(n + 1).fill(0xabcd);
      A.siluMulRound(g, u, y, g16, u16, n);
      const y0 = new Float32Array(n), g0 = new Uint16Array(n), u0 = new Uint16Array(n);
      A.siluMul(g, u, y0, n);
      A.bf16Round(g, g0, n);
      A.bf16Round(u, u0, n);
      assert.deepEqual(f32Bits(y.subarray(0, n)), f32Bits(y0), `y n=${n} ${c}`);
      assert.deepEqual(g16.subarray(0, n), g0, `g16 n=${n} ${c}`);
      assert.deepEqual(u16.subarray(0, n), u0, `u16 n=${n} ${c}`);
      assert.deepEqual([y[n], g16[n], u16[n]], [-3, 0xabcd, 0xabcd], `writes stop at n=${n} ${c}`);
      assert.deepEqual(g16.subarray(0, n), g16Ref, `g16 vs reference n=${n} ${c}`);
      assert.deepEqual(u16.subarray(0, n), u16Ref, `u16 vs reference n=${n} ${c}`);
      assertCloseToScale(y.subarray(0, n), yRef, `y vs reference n=${n} ${c}`);
    });
  }
});

test('siluMulBackwardBf16: native equals bf16Widen + siluMulBackward (native, bit for bit) and the reference', opts, () => {
  const r = rng(12);
  for (const n of SIZES) {
    const g16 = new Uint16Array(n), u16 = new Uint16Array(n);
    ref.bf16Round(data(r, n, 8), g16, n);
    ref.bf16Round(data(r, n, 2), u16, n);
    const dy = data(r, n, 1);
    const dgRef = new Float32Array(n), duRef = new Float32Array(n);
    ref.siluMulBackwardBf16(g16, u16, dy, dgRef, duRef, n);
    eachConfig((c) => {
      const dg = new Float32Array(n + 1).fill(-3), du = new Float32Array(n + 1).fill(-3);
      A.siluMulBackwardBf16(g16, u16, dy, dg, du, n);
      const g = new Float32Array(n), u = new Float32Array(n), dg0 = new Float32Array(n), du0 = new Float32Array(n);
      A.bf16Widen(g16, g, n);
      A.bf16Widen(u16, u, n);
      A.siluMulBackward(g, u, dy, dg0, du0, n);
      assert.deepEqual(f32Bits(dg.subarray(0, n)), f32Bits(dg0), `dg n=${n} ${c}`);
      assert.deepEqual(f32Bits(du.subarray(0, n)), f32Bits(du0), `du n=${n} ${c}`);
      assert.deepEqual([dg[n], du[n]], [-3, -3], `writes stop at n=${n} ${c}`);
      assertCloseToScale(dg.subarray(0, n), dgRef, `dg vs reference n=${n} ${c}`);
      assertCloseToScale(du.subarray(0, n), duRef, `du vs reference n=${n} ${c}`);
    });
  }
});

test('siluMulBackwardBf16 with dg16, du16: the same dg, du, and their bf16Round (native and reference, bit for bit)', opts, () => {
  const r = rng(14);
  for (const n of SIZES) {
    const g16 = new Uint16Array(n), u16 = new Uint16Array(n);
    ref.bf16Round(data(r, n, 8), g16, n);
    ref.bf16Round(data(r, n, 2), u16, n);
    const dy = data(r, n, 1);
    const dgRef = new Float32Array(n), duRef = new Float32Array(n), dg16Ref = new Uint16Array(n), du16Ref = new Uint16Array(n);
    ref.siluMulBackwardBf16(g16, u16, dy, dgRef, duRef, n, dg16Ref, du16Ref);
    const rounded = (a: Float32Array): Uint16Array => { const h = new Uint16Array(a.length); ref.bf16Round(a, h, a.length); return h; };
    assert.deepEqual(dg16Ref, rounded(dgRef), `reference dg16 n=${n}`);
    assert.deepEqual(du16Ref, rounded(duRef), `reference du16 n=${n}`);
    eachConfig((c) => {
      const dg = new Float32Array(n), du = new Float32Array(n);
      const dg16 = new Uint16Array(n + 1).fill(0xabcd), du16 = new Uint16Array(n + 1).fill(0xabcd);
      A.siluMulBackwardBf16(g16, u16, dy, dg, du, n, dg16, du16);
      const dg0 = new Float32Array(n), du0 = new Float32Array(n);
      A.siluMulBackwardBf16(g16, u16, dy, dg0, du0, n);
      assert.deepEqual(f32Bits(dg), f32Bits(dg0), `dg n=${n} ${c}`);
      assert.deepEqual(f32Bits(du), f32Bits(du0), `du n=${n} ${c}`);
      assert.deepEqual(dg16.subarray(0, n), rounded(dg0), `dg16 n=${n} ${c}`);
      assert.deepEqual(du16.subarray(0, n), rounded(du0), `du16 n=${n} ${c}`);
      assert.deepEqual([dg16[n], du16[n]], [0xabcd, 0xabcd], `writes stop at n=${n} ${c}`);
      const only = new Uint16Array(n).fill(7);
      A.siluMulBackwardBf16(g16, u16, dy, dg0, du0, n, undefined, only); // one of the two
      assert.deepEqual(only, rounded(du0), `du16 alone n=${n} ${c}`);
    });
  }
  const h = new Uint16Array(8), f = new Float32Array(8);
  assert.throws(() => A.siluMulBackwardBf16(h, h, f, f, f, 8, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /dg16/.test(e.message));
  assert.throws(() => A.siluMulBackwardBf16(h, h, f, f, f, 8, undefined, new Float32Array(8)), (e: Error) => e instanceof TypeError && /du16/.test(e.message));
  assert.throws(() => ref.siluMulBackwardBf16(h, h, f, f, f, 8, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /dg16/.test(e.message));
});

test('scaleRows with y16: the same y (in place too), and its bf16Round (native and reference, bit for bit)', opts, () => {
  const r = rng(15);
  // cols: vector tails, a row over the 2,048-element block (one row a block), the experts' I; rows: the threaded split
  for (const [rows, cols] of [[0, 4], [1, 1], [3, 7], [17, 128], [5, 3000], [8192, 128]] as const) {
    const n = rows * cols;
    const x = data(r, n, 4);
    const sc = data(r, rows, 2);
    const yRef = new Float32Array(n), y16Ref = new Uint16Array(n);
    ref.scaleRows(x, sc, yRef, rows, cols, y16Ref);
    const rounded = new Uint16Array(n);
    ref.bf16Round(yRef, rounded, n);
    assert.deepEqual(y16Ref, rounded, `reference y16 [${rows},${cols}]`);
    eachConfig((c) => {
      const y = new Float32Array(n), y16 = new Uint16Array(n + 1).fill(0xabcd);
      A.scaleRows(x, sc, y, rows, cols, y16);
      assert.deepEqual(f32Bits(y), f32Bits(yRef), `y [${rows},${cols}] ${c}`);
      assert.deepEqual(y16.subarray(0, n), y16Ref, `y16 [${rows},${cols}] ${c}`);
      assert.equal(y16[n], 0xabcd, `writes stop at n [${rows},${cols}] ${c}`);
      const z = x.slice(), z16 = new Uint16Array(n);
      A.scaleRows(z, sc, z, rows, cols, z16); // in place, as the experts' backward calls it
      assert.deepEqual(f32Bits(z), f32Bits(yRef), `in place y [${rows},${cols}] ${c}`);
      assert.deepEqual(z16, y16Ref, `in place y16 [${rows},${cols}] ${c}`);
    });
  }
  const f = new Float32Array(8);
  assert.throws(() => A.scaleRows(f, new Float32Array(2), f, 2, 4, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /y16/.test(e.message));
  assert.throws(() => A.scaleRows(f, new Float32Array(2), f, 2, 4, f as unknown as Uint16Array), (e: Error) => e instanceof TypeError && /y16/.test(e.message));
  assert.throws(() => ref.scaleRows(f, new Float32Array(2), f, 2, 4, new Uint16Array(7)), (e: Error) => e instanceof RangeError && /y16/.test(e.message));
});

test('siluMulBf16: native equals bf16Widen + siluMul (native, bit for bit) and the reference', opts, () => {
  const r = rng(13);
  for (const n of SIZES) {
    const g16 = new Uint16Array(n), u16 = new Uint16Array(n);
    ref.bf16Round(data(r, n, 8), g16, n);
    ref.bf16Round(data(r, n, 2), u16, n);
    const yRef = new Float32Array(n);
    ref.siluMulBf16(g16, u16, yRef, n);
    eachConfig((c) => {
      const y = new Float32Array(n + 1).fill(-3);
      A.siluMulBf16(g16, u16, y, n);
      const g = new Float32Array(n), u = new Float32Array(n), y0 = new Float32Array(n);
      A.bf16Widen(g16, g, n);
      A.bf16Widen(u16, u, n);
      A.siluMul(g, u, y0, n);
      assert.deepEqual(f32Bits(y.subarray(0, n)), f32Bits(y0), `y n=${n} ${c}`);
      assert.equal(y[n], -3, `writes stop at n=${n} ${c}`);
      assertCloseToScale(y.subarray(0, n), yRef, `y vs reference n=${n} ${c}`);
    });
  }
});

test('gatherRowsBf16: native equals gatherRows + bf16Round (native and reference, bit for bit)', opts, () => {
  const r = rng(14);
  for (const [srcRows, rows, cols] of [[1, 0, 5], [5, 9, 1], [7, 13, 17], [40, 300, 256], [64, 2100, 33]] as const) {
    const src = data(r, srcRows * cols, 3);
    const su = new Uint32Array(src.buffer);
    for (let i = 7; i < src.length; i += 29) su[i] = (r() * 2 ** 32) >>> 0; // every exponent, NaN payloads
    const idx = Int32Array.from({ length: rows }, () => Math.floor(r() * srcRows));
    const want = new Uint16Array(rows * cols);
    ref.gatherRowsBf16(src, idx, want, rows, cols);
    const tmp = new Float32Array(rows * cols), want2 = new Uint16Array(rows * cols);
    ref.gatherRows(src, idx, null, tmp, rows, cols);
    ref.bf16Round(tmp, want2, rows * cols);
    assert.deepEqual(want, want2);
    eachConfig((c) => {
      const got = new Uint16Array(rows * cols + 1).fill(0xabcd);
      A.gatherRowsBf16(src, idx, got, rows, cols);
      const t32 = new Float32Array(rows * cols), n16 = new Uint16Array(rows * cols);
      A.gatherRows(src, idx, null, t32, rows, cols);
      A.bf16Round(t32, n16, rows * cols);
      assert.deepEqual(got.subarray(0, rows * cols), n16, `native unfused ${rows}x${cols} ${c}`);
      assert.deepEqual(got.subarray(0, rows * cols), want, `reference ${rows}x${cols} ${c}`);
      assert.equal(got[rows * cols], 0xabcd, `writes stop ${c}`);
    });
  }
});

test('fused bf16 kernels: short or mistyped buffers are errors naming the argument', opts, () => {
  const f = new Float32Array(8), h = new Uint16Array(8), hs = new Uint16Array(4);
  const a = A as unknown as Record<string, (...args: unknown[]) => void>;
  assert.throws(() => a.siluMulRound!(f, f, f, h, hs, 8), (e: Error) => e instanceof RangeError && /u16/.test(e.message));
  assert.throws(() => a.siluMulRound!(f, f, f, f, h, 8), (e: Error) => /g16/.test(e.message));
  assert.throws(() => a.siluMulBackwardBf16!(h, h, f, f, new Float32Array(3), 8), (e: Error) => e instanceof RangeError && /du/.test(e.message));
  assert.throws(() => a.siluMulBackwardBf16!(f, h, f, f, f, 8), (e: Error) => /g16/.test(e.message));
  assert.throws(() => a.siluMulBf16!(h, h, new Float32Array(3), 8), (e: Error) => e instanceof RangeError && /\by\b/.test(e.message));
  assert.throws(() => a.gatherRowsBf16!(f, Int32Array.of(0, 9), new Uint16Array(8), 2, 4), (e: Error) => e instanceof RangeError && /idx/.test(e.message));
  assert.throws(() => a.gatherRowsBf16!(f, Int32Array.of(0, 1), new Uint16Array(7), 2, 4), (e: Error) => e instanceof RangeError && /dst16/.test(e.message));
  for (const k of [ref.siluMulRound, ref.siluMulBackwardBf16] as const) {
    assert.throws(() => (k as (...args: unknown[]) => void)(f, f, f, hs, hs, 8), RangeError);
  }
});
