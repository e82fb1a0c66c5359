// Kernels.fp8RequantTiles128x1 (the Wgrad X^T operand re-quantised from the forward's cached
// 1x128-tile FP8 copy, paper §3.3.3 / fixtures README `wgrad_cached`): the fused native kernel
// (every ISA this CPU has, 1 and 2 threads) against the TypeScript reference BIT FOR BIT, codes
// and scales, over segment layouts (one segment; experts with 0, 1, 127, 128, 129 and 300 rows),
// awkward codes and scales (all 256 codes, zero / tiny / huge / infinite scales: NaN and
// infinite values, all-zero tiles); and the reference against the plain composition it stands
// for (fp8Dequant, then fp8QuantTiles128x1 of each segment). The fixture-exact check of the
// kernel on `wgrad_cached` is in test/fp8-gemm.test.ts. Kernels.fp8QuantTiles128x1Segments (the
// same per-segment 128x1 quantisation of float32 rows) likewise, against its reference and the
// reference against fp8QuantTiles128x1 per segment. Kernels.fp8QuantTilesDual (an output
// gradient's 1x128 and 128x1 operands from one read) likewise, against its reference, which is
// fp8QuantTiles1x128 plus fp8QuantTiles128x1Segments. Kernels.fp8SwigluBackwardDual (the FP8
// experts' SwiGLU backward with its dG / dU operands, one pass) against the native kernels it
// fuses (fp8Dequant, siluMulBackward, fp8QuantTilesDual) bit for bit, and the reference likewise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import * as ref from '../src/engine/reference/fp8-quant.js';
import { fp8QuantTiles128x1Segments, fp8QuantTilesDual, fp8RequantTiles128x1, fp8SiluMulQuant, fp8SwigluBackwardDual } from '../src/engine/reference/fp8-requant.js';
import { siluMul as refSiluMul, siluMulBackward as refSiluMulBackward } from '../src/engine/reference/rows.js';
import { rng } from './helpers/random.js';

const { A, opts, eachConfig } = nativeForTests();
const g128 = (n: number): number => Math.ceil(n / 128);

function scaleTotal(offsets: Int32Array, cols: number): number {
  let t = 0;
  for (let e = 0; e + 1 < offsets.length; e++) t += g128(offsets[e + 1]! - offsets[e]!) * cols;
  return t;
}

/** A 1x128-tile FP8 copy of [rows, cols]: either quantised from random values (realistic) or raw codes with awkward scales. */
function copyOf(seed: number, rows: number, cols: number, awkward: boolean): { codes: Uint8Array; scales: Float32Array } {
  const r = rng(seed);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * g128(cols));
  if (!awkward) {
    const x = new Float32Array(rows * cols);
    for (let i = 0; i < x.length; i++) x[i] = (r() - 0.5) * 2 ** Math.floor(r() * 12 - 6) * (r() < 0.01 ? 300 : 1);
    for (let i = 0; i < rows; i += 7) x.fill(0, i * cols, (i + 1) * cols); // all-zero rows
    ref.fp8QuantTiles1x128(x, cols, rows, cols, codes, scales, null);
    return { codes, scales };
  }
  for (let i = 0; i < codes.length; i++) codes[i] = (i * 97 + Math.floor(r() * 7)) & 0xff;
  for (let i = 0; i < scales.length; i++) scales[i] = [0, 1e-38, 3.4e38, Infinity, 2 ** -20, 1][i % 11] ?? r() * 2 ** Math.floor(r() * 40 - 20);
  return { codes, scales };
}

function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) assert.fail(`${what}[${i}]: 0x${g[i]!.toString(16)}, reference 0x${w[i]!.toString(16)}`);
  }
}
function sameCodes(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) assert.fail(`${what}[${i}]: 0x${got[i]!.toString(16)}, reference 0x${want[i]!.toString(16)}`);
}

// [segment sizes], cols: one segment of awkward sizes, and expert-like segment lists
const CASES: Array<[number[], number]> = [
  [[1], 1], [[3], 127], [[127], 128], [[128], 129], [[129], 300], [[300], 256], [[1000], 3], [[2], 1000],
  [[0, 1, 127, 0, 128, 129, 300, 0], 256], [[5, 0, 131], 128], [[0], 64], [[257, 3], 130], [[64, 64, 64, 64], 512],
  [[130], 1100], [[3, 0, 129], 2063], // more than one FP8_QUANT_CHUNK (1024) of columns per group
];

test('native fp8RequantTiles128x1 equals the reference bit for bit (segments, awkward codes and scales)', opts, () => {
  let seed = 1;
  for (const [sizes, cols] of CASES) {
    const offsets = Int32Array.from([0, ...sizes.map(((s) => (v: number) => (s += v))(0))]);
    const rows = offsets[offsets.length - 1]!;
    for (const awkward of [false, true]) {
      const { codes, scales } = copyOf(seed++, rows, cols, awkward);
      for (const segs of sizes.length === 1 ? [null, offsets] : [offsets]) {
        const ns = scaleTotal(offsets, cols);
        const wantC = new Uint8Array(rows * cols);
        const wantS = new Float32Array(ns);
        fp8RequantTiles128x1(codes, scales, rows, cols, segs, wantC, wantS);
        eachConfig((cfg) => {
          const gotC = new Uint8Array(rows * cols).fill(0x5a);
          const gotS = new Float32Array(ns).fill(-7);
          A.fp8RequantTiles128x1(codes, scales, rows, cols, segs, gotC, gotS);
          const what = `[${sizes}] x ${cols} ${awkward ? 'awkward' : 'quantised'} ${segs ? 'offsets' : 'null'} ${cfg}`;
          sameCodes(gotC, wantC, `codes ${what}`);
          sameBits(gotS, wantS, `scales ${what}`);
        });
      }
    }
  }
});

test('reference fp8RequantTiles128x1 is fp8Dequant then fp8QuantTiles128x1 per segment', () => {
  const sizes = [0, 130, 1, 128, 0, 40];
  const cols = 200;
  const offsets = Int32Array.of(0, 0, 130, 131, 259, 259, 299);
  const rows = 299;
  const { codes, scales } = copyOf(7, rows, cols, false);
  const got = new Uint8Array(rows * cols);
  const gotS = new Float32Array(scaleTotal(offsets, cols));
  fp8RequantTiles128x1(codes, scales, rows, cols, offsets, got, gotS);
  const v = new Float32Array(rows * cols);
  ref.fp8Dequant(codes, scales, rows, cols, 1, v);
  let so = 0;
  let a = 0;
  for (const n of sizes) {
    const c = new Uint8Array(n * cols);
    const s = new Float32Array(g128(n) * cols);
    ref.fp8QuantTiles128x1(v.subarray(a * cols), cols, n, cols, c, s, null);
    sameCodes(got.subarray(a * cols, (a + n) * cols), c, `segment at row ${a}`);
    sameBits(gotS.subarray(so, so + s.length), s, `scales of the segment at row ${a}`);
    so += s.length;
    a += n;
  }
  assert.equal(so, gotS.length);
});

test('fp8RequantTiles128x1 validates offsets and lengths (native and reference)', opts, () => {
  const codes = new Uint8Array(300 * 4), scales = new Float32Array(300), oc = new Uint8Array(300 * 4), os = new Float32Array(12);
  for (const [name, f] of [['native', A.fp8RequantTiles128x1.bind(A)], ['reference', fp8RequantTiles128x1]] as const) {
    assert.throws(() => f(codes, scales, 300, 4, Int32Array.of(0, 299), oc, os), RangeError, `${name}: offsets short of rows`);
    assert.throws(() => f(codes, scales, 300, 4, Int32Array.of(1, 300), oc, os), RangeError, `${name}: offsets not from 0`);
    assert.throws(() => f(codes, scales, 300, 4, Int32Array.of(0, 200, 100, 300), oc, os), RangeError, `${name}: decreasing offsets`);
    assert.throws(() => f(codes, scales, 300, 4, null, oc, new Float32Array(11)), RangeError, `${name}: outScales too short`);
    assert.throws(() => f(codes, scales, 300, 4, null, new Uint8Array(1199), os), RangeError, `${name}: outCodes too short`);
    assert.throws(() => f(codes, new Float32Array(299), 300, 4, null, oc, os), RangeError, `${name}: scales too short`);
    f(codes, scales, 300, 4, Int32Array.of(0, 100, 300), oc, new Float32Array(12)); // 1 + 2 groups of 4 columns
  }
  assert.throws(() => A.fp8RequantTiles128x1(codes, scales, 300, 4, [0, 300] as unknown as Int32Array, oc, os), TypeError, 'offsets of the wrong type');
});

/** Awkward float32 rows: zero rows, tiny (below the amax floor) and huge values, outliers, NaN and infinities. */
function awkwardRows(seed: number, rows: number, cols: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const mode = Math.floor(r() * 5);
    const mag = 2 ** Math.floor(r() * 60 - 30);
    for (let j = 0; j < cols; j++) {
      let v = (r() - 0.5) * mag;
      if (mode === 0) v = 0;
      else if (mode === 1) v = (r() - 0.5) * 1e-6;
      else if (mode === 2 && r() < 0.02) v *= 3000;
      else if (mode === 3 && r() < 0.01) v = [NaN, Infinity, -Infinity, -0][Math.floor(r() * 4)]!;
      x[i * cols + j] = v;
    }
  }
  return x;
}

test('native fp8QuantTiles128x1Segments equals the reference bit for bit; the reference is fp8QuantTiles128x1 per segment', opts, () => {
  let seed = 100;
  for (const [sizes, cols] of CASES) {
    const offsets = Int32Array.from([0, ...sizes.map(((s) => (v: number) => (s += v))(0))]);
    const rows = offsets[offsets.length - 1]!;
    const x = awkwardRows(seed++, rows, cols);
    const ns = scaleTotal(offsets, cols);
    const wantC = new Uint8Array(rows * cols);
    const wantS = new Float32Array(ns);
    fp8QuantTiles128x1Segments(x, rows, cols, offsets, wantC, wantS);
    let so = 0;
    for (let e = 0; e + 1 < offsets.length; e++) {
      const [a, n] = [offsets[e]!, offsets[e + 1]! - offsets[e]!];
      const c = new Uint8Array(n * cols);
      const sc = new Float32Array(g128(n) * cols);
      ref.fp8QuantTiles128x1(x.subarray(a * cols), cols, n, cols, c, sc, null);
      sameCodes(wantC.subarray(a * cols, (a + n) * cols), c, `reference segment ${e} of [${sizes}] x ${cols}`);
      sameBits(wantS.subarray(so, so + sc.length), sc, `reference scales of segment ${e} of [${sizes}] x ${cols}`);
      so += sc.length;
    }
    for (const segs of sizes.length === 1 ? [null, offsets] : [offsets]) {
      eachConfig((cfg) => {
        const gotC = new Uint8Array(rows * cols).fill(0x5a);
        const gotS = new Float32Array(ns).fill(-7);
        A.fp8QuantTiles128x1Segments(x, rows, cols, segs, gotC, gotS);
        const what = `[${sizes}] x ${cols} ${segs ? 'offsets' : 'null'} ${cfg}`;
        sameCodes(gotC, wantC, `codes ${what}`);
        sameBits(gotS, wantS, `scales ${what}`);
      });
    }
  }
});

test('fp8QuantTiles128x1Segments validates offsets and lengths (native and reference)', opts, () => {
  const x = new Float32Array(1200), oc = new Uint8Array(1200), os = new Float32Array(12);
  for (const [name, f] of [['native', A.fp8QuantTiles128x1Segments.bind(A)], ['reference', fp8QuantTiles128x1Segments]] as const) {
    assert.throws(() => f(x, 300, 4, Int32Array.of(0, 299), oc, os), RangeError, `${name}: offsets short of rows`);
    assert.throws(() => f(x, 300, 4, Int32Array.of(0, 200, 100, 300), oc, os), RangeError, `${name}: decreasing offsets`);
    assert.throws(() => f(x, 300, 4, Int32Array.of(0, 100, 300), oc, new Float32Array(11)), RangeError, `${name}: outScales too short`);
    assert.throws(() => f(new Float32Array(1199), 300, 4, null, oc, os), RangeError, `${name}: x too short`);
    f(x, 300, 4, Int32Array.of(0, 100, 300), oc, os);
  }
});

test('native fp8QuantTilesDual equals the reference bit for bit: fp8QuantTiles1x128 and fp8QuantTiles128x1Segments of the same rows', opts, () => {
  let seed = 500;
  // CASES, plus widths past the kernel's 1024-column chunk
  for (const [sizes, cols] of [...CASES, [[200], 1300], [[129, 0, 5], 2050], [[3, 140], 1024]] as Array<[number[], number]>) {
    const offsets = Int32Array.from([0, ...sizes.map(((s) => (v: number) => (s += v))(0))]);
    const rows = offsets[offsets.length - 1]!;
    const x = awkwardRows(seed++, rows, cols);
    const ns = scaleTotal(offsets, cols);
    const nr = rows * g128(cols);
    const wantC = new Uint8Array(rows * cols), wantS = new Float32Array(nr), wantCc = new Uint8Array(rows * cols), wantCs = new Float32Array(ns);
    fp8QuantTilesDual(x, rows, cols, offsets, wantC, wantS, wantCc, wantCs);
    // the reference is literally the two quantisations
    const c1 = new Uint8Array(rows * cols), s1 = new Float32Array(nr), c2 = new Uint8Array(rows * cols), s2 = new Float32Array(ns);
    if (rows > 0) ref.fp8QuantTiles1x128(x, cols, rows, cols, c1, s1, null);
    fp8QuantTiles128x1Segments(x, rows, cols, offsets, c2, s2);
    sameCodes(wantC, c1, `reference 1x128 codes [${sizes}] x ${cols}`);
    sameBits(wantS, s1, `reference 1x128 scales [${sizes}] x ${cols}`);
    sameCodes(wantCc, c2, `reference 128x1 codes [${sizes}] x ${cols}`);
    sameBits(wantCs, s2, `reference 128x1 scales [${sizes}] x ${cols}`);
    for (const segs of sizes.length === 1 ? [null, offsets] : [offsets]) {
      eachConfig((cfg) => {
        const gotC = new Uint8Array(rows * cols).fill(0x5a), gotS = new Float32Array(nr).fill(-7);
        const gotCc = new Uint8Array(rows * cols).fill(0xa5), gotCs = new Float32Array(ns).fill(-9);
        A.fp8QuantTilesDual(x, rows, cols, segs, gotC, gotS, gotCc, gotCs);
        const what = `[${sizes}] x ${cols} ${segs ? 'offsets' : 'null'} ${cfg}`;
        sameCodes(gotC, wantC, `1x128 codes ${what}`);
        sameBits(gotS, wantS, `1x128 scales ${what}`);
        sameCodes(gotCc, wantCc, `128x1 codes ${what}`);
        sameBits(gotCs, wantCs, `128x1 scales ${what}`);
      });
    }
  }
});

test('fp8QuantTilesDual validates offsets and lengths (native and reference)', opts, () => {
  const x = new Float32Array(1200), c = new Uint8Array(1200), sc = new Float32Array(300), oc = new Uint8Array(1200), os = new Float32Array(12);
  for (const [name, f] of [['native', A.fp8QuantTilesDual.bind(A)], ['reference', fp8QuantTilesDual]] as const) {
    assert.throws(() => f(x, 300, 4, Int32Array.of(0, 299), c, sc, oc, os), RangeError, `${name}: offsets short of rows`);
    assert.throws(() => f(x, 300, 4, null, c, new Float32Array(299), oc, os), RangeError, `${name}: scales too short`);
    assert.throws(() => f(x, 300, 4, null, new Uint8Array(1199), sc, oc, os), RangeError, `${name}: codes too short`);
    assert.throws(() => f(x, 300, 4, Int32Array.of(0, 100, 300), c, sc, oc, new Float32Array(11)), RangeError, `${name}: colScales too short`);
    f(x, 300, 4, Int32Array.of(0, 100, 300), c, sc, oc, os);
  }
});

test('native fp8SwigluBackwardDual equals native fp8Dequant + siluMulBackward + fp8QuantTilesDual bit for bit (every ISA, 1 and 2 threads); the reference likewise', opts, () => {
  let seed = 900;
  for (const [sizes, cols] of [[[1], 1], [[3], 127], [[129], 128], [[300], 256], [[0, 1, 127, 0, 128, 129, 300, 0], 128], [[5, 0, 131], 200], [[200], 1300]] as Array<[number[], number]>) {
    const offsets = Int32Array.from([0, ...sizes.map(((s) => (v: number) => (s += v))(0))]);
    const rows = offsets[offsets.length - 1]!;
    const g = copyOf(seed++, rows, cols, false), u = copyOf(seed++, rows, cols, seed % 3 === 0);
    const dh = awkwardRows(seed++, rows, cols);
    const n = rows * cols, nr = rows * g128(cols), ns = scaleTotal(offsets, cols);
    const out = (): [Uint8Array, Float32Array, Uint8Array, Float32Array, Uint8Array, Float32Array, Uint8Array, Float32Array] =>
      [new Uint8Array(n).fill(0x5a), new Float32Array(nr).fill(-7), new Uint8Array(n).fill(0xa5), new Float32Array(ns).fill(-9),
        new Uint8Array(n).fill(0x3c), new Float32Array(nr).fill(-5), new Uint8Array(n).fill(0xc3), new Float32Array(ns).fill(-3)];
    const check = (got: ReturnType<typeof out>, want: ReturnType<typeof out>, what: string): void => {
      for (let i = 0; i < 8; i++) {
        if (i % 2 === 0) sameCodes(got[i] as Uint8Array, want[i] as Uint8Array, `${['dG 1x128', '', 'dG 128x1', '', 'dU 1x128', '', 'dU 128x1'][i]} codes ${what}`);
        else sameBits(got[i] as Float32Array, want[i] as Float32Array, `output ${i} scales ${what}`);
      }
    };
    const separate = (K: { fp8Dequant: typeof ref.fp8Dequant; siluMulBackward: (g: Float32Array, u: Float32Array, dy: Float32Array, dg: Float32Array, du: Float32Array, n: number) => void; fp8QuantTilesDual: typeof fp8QuantTilesDual }, segs: Int32Array | null): ReturnType<typeof out> => {
      const o = out();
      const G = new Float32Array(n), U = new Float32Array(n), dG = new Float32Array(n), dU = new Float32Array(n);
      if (n > 0) {
        K.fp8Dequant(g.codes, g.scales, rows, cols, 1, G);
        K.fp8Dequant(u.codes, u.scales, rows, cols, 1, U);
        K.siluMulBackward(G, U, dh, dG, dU, n);
      }
      K.fp8QuantTilesDual(dG, rows, cols, segs, o[0], o[1], o[2], o[3]);
      K.fp8QuantTilesDual(dU, rows, cols, segs, o[4], o[5], o[6], o[7]);
      return o;
    };
    for (const segs of sizes.length === 1 ? [null, offsets] : [offsets]) {
      const what = `[${sizes}] x ${cols} ${segs ? 'offsets' : 'null'}`;
      const r = out();
      fp8SwigluBackwardDual(g.codes, g.scales, u.codes, u.scales, dh, rows, cols, segs, ...r);
      check(r, separate({ fp8Dequant: ref.fp8Dequant, siluMulBackward: refSiluMulBackward, fp8QuantTilesDual }, segs), `reference ${what}`);
      eachConfig((cfg) => {
        const want = separate(A as unknown as Parameters<typeof separate>[0], segs);
        const got = out();
        A.fp8SwigluBackwardDual(g.codes, g.scales, u.codes, u.scales, dh, rows, cols, segs, ...got);
        check(got, want, `${what} ${cfg}`);
      });
    }
  }
});

test('fp8SwigluBackwardDual validates its arguments (native and reference)', opts, () => {
  const c = new Uint8Array(1200), s = new Float32Array(300), dh = new Float32Array(1200), os = new Float32Array(12);
  for (const [name, f] of [['native', A.fp8SwigluBackwardDual.bind(A)], ['reference', fp8SwigluBackwardDual]] as const) {
    assert.throws(() => f(c, s, c, s, new Float32Array(1199), 300, 4, null, c, s, c, os, c, s, c, os), RangeError, `${name}: dh too short`);
    assert.throws(() => f(c, s, c, new Float32Array(299), dh, 300, 4, null, c, s, c, os, c, s, c, os), RangeError, `${name}: uScales too short`);
    assert.throws(() => f(c, s, c, s, dh, 300, 4, Int32Array.of(0, 299), c, s, c, os, c, s, c, os), RangeError, `${name}: offsets short of rows`);
    assert.throws(() => f(c, s, c, s, dh, 300, 4, null, c, s, c, os, c, s, c, new Float32Array(11)), RangeError, `${name}: duColScales too short`);
    f(c, s, c, s, dh, 300, 4, Int32Array.of(0, 100, 300), c, s, c, os, c, s, c, os);
  }
});

test('native fp8SiluMulQuant equals native siluMul + fp8QuantTiles1x128 (of H, G, U) bit for bit (every ISA, 1 and 2 threads); the reference likewise', opts, () => {
  let seed = 1300;
  for (const [rows, cols] of [[1, 1], [3, 127], [129, 128], [300, 256], [70, 1300], [1000, 64]] as Array<[number, number]>) {
    const g = awkwardRows(seed++, rows, cols), u = awkwardRows(seed++, rows, cols);
    const n = rows * cols, nr = rows * g128(cols);
    type Out = [Uint8Array, Float32Array, Uint8Array, Float32Array, Uint8Array, Float32Array];
    const out = (): Out => [new Uint8Array(n).fill(0x5a), new Float32Array(nr).fill(-7), new Uint8Array(n).fill(0xa5), new Float32Array(nr).fill(-9), new Uint8Array(n).fill(0x3c), new Float32Array(nr).fill(-5)];
    type K = { siluMul(g: Float32Array, u: Float32Array, y: Float32Array, n: number): void; fp8QuantTiles1x128: typeof ref.fp8QuantTiles1x128 };
    const separate = (k: K): Out => {
      const o = out();
      const h = new Float32Array(n);
      k.siluMul(g, u, h, n);
      k.fp8QuantTiles1x128(h, cols, rows, cols, o[0], o[1], null);
      k.fp8QuantTiles1x128(g, cols, rows, cols, o[2], o[3], null);
      k.fp8QuantTiles1x128(u, cols, rows, cols, o[4], o[5], null);
      return o;
    };
    const check = (got: Out, want: Out, what: string, cache: boolean): void => {
      for (let i = 0; i < (cache ? 6 : 2); i++) {
        if (i % 2 === 0) sameCodes(got[i] as Uint8Array, want[i] as Uint8Array, `${['H', 'G', 'U'][i / 2]} codes ${what}`);
        else sameBits(got[i] as Float32Array, want[i] as Float32Array, `${['H', 'G', 'U'][(i - 1) / 2]} scales ${what}`);
      }
    };
    const r = out();
    fp8SiluMulQuant(g, u, rows, cols, ...r);
    check(r, separate({ siluMul: refSiluMul, fp8QuantTiles1x128: ref.fp8QuantTiles1x128 }), `reference [${rows}, ${cols}]`, true);
    eachConfig((cfg) => {
      const want = separate(A as unknown as K);
      for (const cache of [true, false]) {
        const got = out();
        A.fp8SiluMulQuant(g, u, rows, cols, got[0], got[1], cache ? got[2] : null, cache ? got[3] : null, cache ? got[4] : null, cache ? got[5] : null);
        check(got, want, `[${rows}, ${cols}] ${cache ? 'with' : 'without'} G/U ${cfg}`, cache);
      }
    });
  }
});

test('fp8SiluMulQuant validates its arguments (native and reference)', opts, () => {
  const x = new Float32Array(1200), c = new Uint8Array(1200), s = new Float32Array(300);
  for (const [name, f] of [['native', A.fp8SiluMulQuant.bind(A)], ['reference', fp8SiluMulQuant]] as const) {
    assert.throws(() => f(new Float32Array(1199), x, 300, 4, c, s, null, null, null, null), RangeError, `${name}: g too short`);
    assert.throws(() => f(x, x, 300, 4, c, s, c, null, null, null), TypeError, `${name}: gCodes without gScales`);
    f(x, x, 300, 4, c, s, c, s, null, null);
  }
  assert.throws(() => A.fp8SiluMulQuant(x, x, 300, 4, c, new Float32Array(299), null, null, null, null), RangeError, 'native: hScales too short');
});
