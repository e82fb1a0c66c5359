// The FP8 (E4M3) operand quantisers of the training GEMMs (paper §3.3.2; Kernels.fp8QuantTiles1x128
// / fp8QuantTiles128x1 / fp8QuantBlocks128 / fp8Dequant): the native kernels (every ISA this CPU
// has, 1 and 2 threads) against the TypeScript reference BIT FOR BIT (codes, scales and the
// dequantised floats, signed zeros included; NaN outputs must be NaN on both sides, their
// payloads are not compared), on awkward shapes and values: zeros, all-zero tiles, tiles below
// the 1e-4 amax floor (float32 denormals too), outliers (E4M3 subnormal results), quotients
// rounding above 448 (saturation), NaN and infinities; strided inputs and out aliasing x. The
// reference itself is checked against the plain-loop quantisers (the fixture-exact oracle).
//
// If the addon cannot load, the native tests fail when CI (or DSV3_REQUIRE_NATIVE) is set and
// are skipped with the load error otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import * as ref from '../src/engine/reference/fp8-quant.js';
import { E4M3_TABLE, encodeE4M3 } from '../src/engine/fp8/codec.js';
import { quantizeBlocks128 } from '../src/engine/fp8/checkpoint-weights.js';
import { quantizeTiles1x128 } from './helpers/fp8-gemm-oracle.js';
import { rng } from './helpers/random.js';

const { A, opts, eachConfig } = nativeForTests();

type Quant = (x: Float32Array, ld: number, rows: number, cols: number,
  codes: Uint8Array | null, scales: Float32Array | null, out: Float32Array | null) => void;
type Kind = '1x128' | '128x1' | 'blocks';
const KINDS: Kind[] = ['1x128', '128x1', 'blocks'];
const REF: Record<Kind, Quant> = { '1x128': ref.fp8QuantTiles1x128, '128x1': ref.fp8QuantTiles128x1, blocks: ref.fp8QuantBlocks128 };
const NATIVE: Record<Kind, string> = { '1x128': 'fp8QuantTiles1x128', '128x1': 'fp8QuantTiles128x1', blocks: 'fp8QuantBlocks128' };
const g128 = (n: number): number => Math.ceil(n / 128);
function scaleCount(kind: Kind, rows: number, cols: number): number {
  return kind === '1x128' ? rows * g128(cols) : kind === '128x1' ? g128(rows) * cols : g128(rows) * g128(cols);
}

// [rows, cols]: 1, 3, 127, 128, 129, 300, 1000 in both roles (partial, exact and single tiles)
const SHAPES: Array<[number, number]> = [
  [1, 1], [1, 3], [3, 1], [3, 127], [127, 128], [128, 129], [129, 300], [300, 1000], [1000, 3], [3, 1000],
  [1000, 129], [128, 128], [129, 1], [1, 1000], [1000, 1], [300, 300], [127, 1000],
];

/**
 * rows x cols values at x[r * ld + c] (the gaps between rows hold 1e30, which must never be
 * read), row by row one of: zeros; values below the amax floor (float32 denormals included);
 * normal values with outliers (E4M3 subnormal results); magnitudes spread over 2^-40 .. 2^40;
 * the same with -0, NaN and (rarely) infinities sprinkled in.
 */
function awkward(seed: number, rows: number, cols: number, ld = cols, specials = true): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(rows > 0 ? (rows - 1) * ld + cols : 0).fill(1e30);
  for (let i = 0; i < rows; i++) {
    const mode = Math.floor(r() * (specials ? 5 : 4));
    const mag = 2 ** Math.floor(r() * 80 - 40);
    for (let j = 0; j < cols; j++) {
      let v: number;
      if (mode === 0) v = 0;
      else if (mode === 1) v = (r() - 0.5) * (r() < 0.1 ? 1e-40 : 1e-5);
      else if (mode === 2) v = (r() - 0.5) * (r() < 0.02 ? 2000 : 1);
      else v = (r() - 0.5) * mag * 2 ** Math.floor(r() * 20 - 10);
      if (mode === 4) {
        const u = r();
        if (u < 0.01) v = -0;
        else if (u < 0.02) v = 0;
        else if (u < 0.025) v = NaN;
        else if (u < 0.0255) v = r() < 0.5 ? Infinity : -Infinity;
      }
      x[i * ld + j] = v;
    }
  }
  return x;
}

/** Bit equality of two float32 arrays (signed zeros distinguished); NaN only matches NaN. */
function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      assert.fail(`${what}[${i}]: ${Object.is(got[i], -0) ? '-0' : got[i]} (0x${g[i]!.toString(16)}), reference ${Object.is(want[i], -0) ? '-0' : want[i]} (0x${w[i]!.toString(16)})`);
    }
  }
}
function sameCodes(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) assert.fail(`${what}[${i}]: 0x${got[i]!.toString(16)}, reference 0x${want[i]!.toString(16)}`);
}

interface Res { codes: Uint8Array | null; scales: Float32Array | null; out: Float32Array | null }
const MODES = ['codes+scales+out', 'codes+scales', 'out'] as const;
function call(k: Quant, kind: Kind, mode: (typeof MODES)[number], x: Float32Array, ld: number, rows: number, cols: number): Res {
  const codes = mode === 'out' ? null : new Uint8Array(rows * cols).fill(0xaa);
  const scales = mode === 'out' ? null : new Float32Array(scaleCount(kind, rows, cols)).fill(-7);
  const out = mode === 'codes+scales' ? null : new Float32Array(rows * cols).fill(-7);
  k(x, ld, rows, cols, codes, scales, out);
  return { codes, scales, out };
}
function sameRes(got: Res, want: Res, what: string): void {
  if (want.codes) sameCodes(got.codes!, want.codes, `${what} codes`);
  if (want.scales) sameBits(got.scales!, want.scales, `${what} scales`);
  if (want.out) sameBits(got.out!, want.out, `${what} out`);
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

test('reference quantisers equal the oracle quantizeTiles1x128 / quantizeBlocks128 (codes, scales, code * scale)', () => {
  for (const [rows, cols] of SHAPES) {
    const x = awkward(rows * 7 + cols, rows, cols);
    for (const kind of KINDS) {
      const got = call(REF[kind], kind, 'codes+scales+out', x, cols, rows, cols);
      const label = `${kind} [${rows}, ${cols}]`;
      if (kind === '1x128') {
        const want = quantizeTiles1x128(x, rows, cols);
        sameCodes(got.codes!, want.codes, label);
        sameBits(got.scales!, want.scales, label);
      } else if (kind === 'blocks') {
        const want = quantizeBlocks128(x, rows, cols);
        sameCodes(got.codes!, want.codes, label);
        sameBits(got.scales!, want.scaleInv, label);
      } else {
        const want = quantizeTiles1x128(transpose(x, rows, cols), cols, rows); // 128x1 = 1x128 of x^T
        sameCodes(new Uint8Array(transpose(Float32Array.from(got.codes!), rows, cols)), want.codes, label);
        sameBits(transpose(got.scales!, g128(rows), cols), want.scales, label);
      }
      for (let i = 0; i < rows * cols; i++) {
        const r = Math.floor(i / cols), c = i % cols;
        const si = kind === '1x128' ? r * g128(cols) + (c >> 7) : kind === '128x1' ? (r >> 7) * cols + c : (r >> 7) * g128(cols) + (c >> 7);
        const v = Math.fround(E4M3_TABLE[got.codes![i]!]! * got.scales![si]!);
        if (!Object.is(got.out![i], v)) assert.fail(`${label} out[${i}]: ${got.out![i]}, code * scale ${v}`);
      }
      // without codes: the same values, except that zeros are +0
      const dq = call(REF[kind], kind, 'out', x, cols, rows, cols).out!;
      for (let i = 0; i < dq.length; i++) {
        const v = got.out![i]! === 0 ? 0 : got.out![i]!;
        if (!Object.is(dq[i], v)) assert.fail(`${label} out-only[${i}]: ${dq[i]}, expected ${v}`);
      }
    }
  }
});

test('the awkward inputs reach every E4M3 category (zero, subnormal, normal, 448, NaN codes)', () => {
  const seen = new Set<string>();
  for (const [rows, cols] of SHAPES) {
    const x = awkward(rows * 7 + cols, rows, cols);
    const { codes } = call(REF['1x128'], '1x128', 'codes+scales', x, cols, rows, cols);
    for (const c of codes!) {
      const m = c & 0x7f;
      seen.add(m === 0 ? 'zero' : m < 8 ? 'subnormal' : m === 0x7e ? '448' : m === 0x7f ? 'nan' : 'normal');
    }
  }
  assert.deepEqual([...seen].sort(), ['448', 'nan', 'normal', 'subnormal', 'zero']);
});

test('native fp8 quantisers equal the reference bit for bit (every ISA, 1 and 2 threads, all output modes)', opts, () => {
  for (const [rows, cols] of SHAPES) {
    const x = awkward(rows * 7 + cols, rows, cols);
    for (const kind of KINDS) {
      for (const mode of MODES) {
        const want = call(REF[kind], kind, mode, x, cols, rows, cols);
        eachConfig((cfg) => sameRes(call(A[NATIVE[kind]], kind, mode, x, cols, rows, cols), want, `${kind} ${mode} [${rows}, ${cols}] ${cfg}`));
      }
    }
  }
});

test('native fp8 quantisers: strided input (offset view, ld > cols) and out aliasing x', opts, () => {
  for (const [rows, cols] of [[3, 127], [129, 300], [300, 129], [1000, 3], [1, 1000], [128, 1000]] as Array<[number, number]>) {
    const ld = cols + 5;
    const base = awkward(rows + cols, rows, cols, ld);
    const padded = new Float32Array(base.length + 3).fill(1e30);
    padded.set(base, 3);
    const dense = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) dense.set(base.subarray(r * ld, r * ld + cols), r * cols);
    for (const kind of KINDS) {
      for (const mode of MODES) {
        const want = call(REF[kind], kind, mode, dense, cols, rows, cols);
        sameRes(call(REF[kind], kind, mode, padded.subarray(3), ld, rows, cols), want, `reference strided ${kind} ${mode}`);
        eachConfig((cfg) => {
          const label = `${kind} ${mode} [${rows}, ${cols}] ld ${ld} ${cfg}`;
          sameRes(call(A[NATIVE[kind]], kind, mode, padded.subarray(3), ld, rows, cols), want, `strided ${label}`);
          if (mode === 'codes+scales') return;
          const inPlace = dense.slice(); // out === x
          const codes = mode === 'out' ? null : new Uint8Array(rows * cols);
          const scales = mode === 'out' ? null : new Float32Array(scaleCount(kind, rows, cols));
          A[NATIVE[kind]](inPlace, cols, rows, cols, codes, scales, inPlace);
          sameRes({ codes, scales, out: inPlace }, want, `in place ${label}`);
        });
      }
    }
  }
});

test('native fp8Dequant equals the reference bit for bit (all 256 codes, blockRows 1 / 3 / 128, special scales)', opts, () => {
  const r = rng(99);
  for (const [rows, cols] of SHAPES) {
    for (const br of [1, 3, 128]) {
      const codes = new Uint8Array(rows * cols);
      for (let i = 0; i < codes.length; i++) codes[i] = (i * 97 + Math.floor(r() * 7)) & 0xff;
      const scales = new Float32Array(Math.ceil(rows / br) * g128(cols));
      for (let i = 0; i < scales.length; i++) scales[i] = [0, 1e-38, 3.4e38, Infinity, 2 ** -20, 1][i % 9] ?? r() * 2 ** Math.floor(r() * 40 - 20);
      const want = new Float32Array(rows * cols);
      ref.fp8Dequant(codes, scales, rows, cols, br, want);
      eachConfig((cfg) => {
        const got = new Float32Array(rows * cols).fill(-7);
        A.fp8Dequant(codes, scales, rows, cols, br, got);
        sameBits(got, want, `fp8Dequant [${rows}, ${cols}] blockRows ${br} ${cfg}`);
      });
    }
  }
});

test('native fp8 quantisers validate their arguments before touching memory', opts, () => {
  const x = new Float32Array(300);
  const codes = new Uint8Array(300), scales = new Float32Array(300), out = new Float32Array(300);
  for (const kind of KINDS) {
    const f = A[NATIVE[kind]] as Quant;
    assert.throws(() => f(x, 100, 3, 100, codes, null, out), TypeError, `${kind}: codes without scales`);
    assert.throws(() => f(x, 100, 3, 100, null, scales, out), TypeError, `${kind}: scales without codes`);
    assert.throws(() => f(x, 100, 4, 100, null, null, new Float32Array(400)), RangeError, `${kind}: x too short`);
    assert.throws(() => f(x, 99, 3, 100, null, null, out), RangeError, `${kind}: ld < cols`);
    assert.throws(() => f(x, 100, 3, 100, null, null, new Float32Array(299)), RangeError, `${kind}: out too short`);
    assert.throws(() => f(x, 100, 3, 100, new Uint8Array(299), scales, null), RangeError, `${kind}: codes too short`);
    assert.throws(() => f(x, 100, 3, 100, codes, new Float32Array(0), null), RangeError, `${kind}: scales too short`);
    assert.throws(() => f(x, 100, 3, 100, out as unknown as Uint8Array, scales, null), TypeError, `${kind}: codes of the wrong type`);
    assert.throws(() => f(x, 100, -1, 100, null, null, out), RangeError, `${kind}: negative rows`);
    f(new Float32Array(0), 0, 0, 5, null, null, null); // empty: nothing to do
  }
  assert.throws(() => A.fp8Dequant(codes, scales, 3, 100, 0, out), RangeError, 'blockRows 0');
  assert.throws(() => A.fp8Dequant(codes, new Float32Array(2), 3, 100, 1, out), RangeError, 'dequant scales too short');
  assert.throws(() => A.fp8Dequant(codes, scales, 3, 100, 1, new Float32Array(10)), RangeError, 'dequant out too short');
});

// The AVX-512 encoder multiplies by float32(1/s) and divides only where that product lies near an
// E4M3 rounding midpoint (isa/fp8_quant.c q8_enc_fast; with that fallback off the tests below fail;
// an AVX2 port of it, commit c814d96, failed them too without its fallback). These inputs put float32(x / s) within a
// few ulps of a midpoint (normal and E4M3-subnormal ones), on both sides, for many scales: the
// codes and values must still equal the reference's true division bit for bit.
function nearTies(seed: number, rows: number, cols: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(rows * cols);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < rows; i++) {
    const amax = Math.fround(0.01 + 100 * r()); // the first element of each row (and column tile) sets the scale
    x[i * cols] = amax;
    const s = Math.fround(Math.max(amax, 1e-4) / 448);
    for (let j = 1; j < cols; j++) {
      // a midpoint between neighbouring E4M3 values: normal (mantissa m + 1/2 in binade e) or subnormal ((n + 1/2) * 2^-9)
      const mid = r() < 0.8 ? (8 + Math.floor(8 * r()) + 0.5) * 2 ** (Math.floor(15 * r()) - 9) : (Math.floor(8 * r()) + 0.5) * 2 ** -9;
      f32[0] = Math.min(mid, 440) * s;
      u32[0] += Math.floor(17 * r()) - 8; // within +-8 ulp of s * mid
      x[i * cols + j] = r() < 0.5 ? f32[0] : -f32[0];
    }
  }
  return x;
}

test('native fp8 quantisers equal the reference on quotients near E4M3 rounding midpoints (every ISA)', opts, () => {
  for (const [rows, cols] of [[300, 1000], [1000, 129], [129, 300]] as Array<[number, number]>) {
    const x = nearTies(rows + cols, rows, cols);
    for (const kind of KINDS) {
      for (const mode of MODES) {
        const want = call(REF[kind], kind, mode, x, cols, rows, cols);
        eachConfig((cfg) => sameRes(call(A[NATIVE[kind]], kind, mode, x, cols, rows, cols), want, `near ties ${kind} ${mode} [${rows}, ${cols}] ${cfg}`));
      }
    }
  }
});

// Widths around the AVX2 (8) and AVX-512 (16) vector lengths: full vectors, partial tail vectors and
// per-column scales (128x1) whose reciprocals load with a 1.0 fill, all near midpoints.
test('native fp8 quantisers equal the reference near E4M3 midpoints on widths around 8 and 16 lanes (every ISA)', opts, () => {
  for (const cols of [1, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 33]) {
    const rows = 257;
    const x = nearTies(cols * 31 + 5, rows, cols);
    for (const [r, c, xx] of [[rows, cols, x], [cols, rows, transpose(x, rows, cols)]] as Array<[number, number, Float32Array]>) {
      for (const kind of KINDS) {
        for (const mode of MODES) {
          const want = call(REF[kind], kind, mode, xx, c, r, c);
          eachConfig((cfg) => sameRes(call(A[NATIVE[kind]], kind, mode, xx, c, r, c), want, `near ties ${kind} ${mode} [${r}, ${c}] ${cfg}`));
        }
      }
    }
  }
});

// The tests above can fail: on these inputs float32(x * float32(1/s)) and the reference's float32(x / s)
// encode to different E4M3 codes for some elements (normal and subnormal ones for 1x128 and 128x1
// tiles, normal ones for 128x128 blocks), so an encoder without the exact fallback gets codes wrong.
test('near-midpoint inputs include quotients that multiplying by the reciprocal encodes wrongly (normal and subnormal codes)', () => {
  for (const kind of KINDS) {
    const rows = 300, cols = 1000; // 128x1 tiles run down columns: the transpose of rows of near ties
    const x = kind === '128x1' ? transpose(nearTies(rows + cols, cols, rows), cols, rows) : nearTies(rows + cols, rows, cols);
    const { codes, scales } = call(REF[kind], kind, 'codes+scales', x, cols, rows, cols);
    let normal = 0, subnormal = 0;
    for (let i = 0; i < rows * cols; i++) {
      const r = Math.floor(i / cols), c = i % cols;
      const s = scales![kind === '1x128' ? r * g128(cols) + (c >> 7) : kind === '128x1' ? (r >> 7) * cols + c : (r >> 7) * g128(cols) + (c >> 7)]!;
      assert.equal(encodeE4M3(x[i]! / s), codes![i], `${kind} [${i}]: the reference is x / s`);
      const viaRecip = encodeE4M3(Math.fround(x[i]! * Math.fround(1 / s)));
      if (viaRecip !== codes![i]) { if ((codes![i]! & 0x7f) < 8) subnormal++; else normal++; }
    }
    // blocks: one scale per 128 x 128, set by one row's amax, so only that row's elements are near ties
    assert.ok(normal > 0 && (subnormal > 0 || kind === 'blocks'), `${kind}: ${normal} normal and ${subnormal} subnormal codes differ via the reciprocal`);
  }
});
