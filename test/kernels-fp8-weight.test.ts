// Native FP8-weight linear (addon export linearFp8) against the reference
// (src/engine/reference/fp8-weight.ts): random shapes with partial 128-blocks (n, k in 1, 3, 127,
// 129, 1000; m in 1, 2, 7, 64, 300), both kernel paths (streaming GEMV for m <= 8, packed GEMM
// otherwise; fp8SetGemvMaxM forces either), every ISA this CPU has (setIsa), 1 and 2 threads,
// beta 0 (over NaN) and 1. Tolerance: per row of y, max|got - ref| <= 1e-5 * max|ref| (see check).
// Documented NaN-code behaviour (native/src/fp8_weight.h): a NaN code (0x7F / 0xFF) makes its whole output column
// NaN, in every row of y, as in the reference. Plus extreme magnitudes, empty shapes and
// argument validation.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { nativeAddon, type NativeAddon } from '../src/engine/native.js';
import { linearFp8 as refLinearFp8 } from '../src/engine/reference/fp8-weight.js';
import { requireNative } from './helpers/backends.js';
import { rng, randn, type Rng } from './helpers/random.js';
import { encodeE4M3 } from '../src/engine/fp8/codec.js';

type LinearFp8 = (m: number, n: number, k: number, x: Float32Array, codes: Uint8Array, scaleInv: Float32Array,
  beta: number, y: Float32Array) => void;

interface Case {
  m: number; n: number; k: number;
  x: Float32Array; codes: Uint8Array; scale: Float32Array; y0: Float32Array; beta: number;
  want: Float32Array; label: string;
}

/** A random E4M3 code: uniform over all non-NaN codes, or (default) a quantised normal value
 * spread over the code range like a real checkpoint block (amax near 448). */
function code(r: Rng, uniform: boolean): number {
  if (!uniform) return encodeE4M3(randn(r) * 100);
  const c = Math.floor(r() * 256);
  return (c & 0x7f) === 0x7f ? c ^ 0x01 : c;
}

interface CaseOpts { xScale?: number; scaleExp?: number; uniformCodes?: boolean }
function makeCase(r: Rng, m: number, n: number, k: number, beta: number, opts: CaseOpts = {}): Case {
  const xs = opts.xScale ?? 1;
  const x = Float32Array.from({ length: m * k }, () => (r() * 2 - 1) * xs);
  const codes = Uint8Array.from({ length: n * k }, () => code(r, opts.uniformCodes ?? false));
  const nb = Math.ceil(n / 128), kb = Math.ceil(k / 128);
  // real checkpoints: scale_inv = amax/448, about 2^-16..2^-4, within a small factor per matrix
  // (the per-row tolerance assumes that); scaleExp moves the whole matrix (>= 2^8 included)
  const base = 2 ** (opts.scaleExp ?? Math.floor(r() * 12 - 16));
  const scale = Float32Array.from({ length: nb * kb }, () => base * (1 + r()));
  const y0 = Float32Array.from({ length: m * n }, () => (beta === 0 ? NaN : r() * 2 - 1));
  const want = y0.slice();
  refLinearFp8(m, n, k, x, codes, scale, beta, want);
  return { m, n, k, x, codes, scale, y0, beta, want, label: `m=${m} n=${n} k=${k} beta=${beta}` };
}

/** Largest finite |v[q]| for q in [from, to). */
function absMax(v: Float32Array, from: number, to: number): number {
  let mx = 0;
  for (let q = from; q < to; q++) {
    const a = Math.abs(v[q]!);
    if (a > mx && a !== Infinity) mx = a;
  }
  return mx;
}

/** Per row: max|got - want| <= 1e-5 * max|want| (NaN must match NaN). A row of fewer than 128
 * outputs is too short for its maximum to measure the output scale (one output can be small by
 * cancellation, beta = 1 included), so there the maximum is taken over all of y. */
function check(tag: string, cs: Case, got: Float32Array): void {
  const { m, n } = cs;
  const all = absMax(cs.want, 0, m * n);
  for (let i = 0; i < m; i++) {
    const mx = n < 128 ? all : absMax(cs.want, i * n, i * n + n);
    for (let j = 0; j < n; j++) {
      const w = cs.want[i * n + j]!, g = got[i * n + j]!;
      if (Number.isNaN(w) || Number.isNaN(g)) {
        if (Number.isNaN(w) !== Number.isNaN(g)) assert.fail(`${tag}: y[${i},${j}] = ${g}, reference ${w}`);
        continue;
      }
      if (!(Math.abs(g - w) <= 1e-5 * mx)) assert.fail(`${tag}: y[${i},${j}] = ${g}, reference ${w} (row max ${mx})`);
    }
  }
}

function buildCases(): Case[] {
  const r = rng(0xf8);
  const sizes = [1, 3, 127, 129, 1000];
  const shapes: [number, number, number][] = [];
  for (const m of [1, 2, 7]) for (const n of sizes) for (const k of sizes) shapes.push([m, n, k]);
  shapes.push([64, 1, 1], [64, 3, 1000], [64, 1000, 3], [64, 127, 127], [64, 129, 1000], [64, 1000, 129]);
  shapes.push([300, 1, 129], [300, 3, 1000], [300, 1000, 3], [300, 129, 127], [300, 127, 129]);
  // GEMV inner-loop coverage: k slices (m >= 3), 16/32/64-wide groups, single vectors, tails
  shapes.push([3, 70, 2900], [8, 130, 2100], [4, 257, 1100], [5, 31, 333], [6, 40, 71], [8, 1, 5000]);
  const out: Case[] = [];
  shapes.forEach(([m, n, k], s) => out.push(makeCase(r, m, n, k, s % 2 === 0 ? 0 : 1)));
  for (const e of [-30, 9, 20]) out.push(makeCase(r, 2, 300, 700, 1, { scaleExp: e }), makeCase(r, 12, 300, 700, 0, { scaleExp: e }));
  for (const [m, n, k] of [[1, 200, 1000], [5, 129, 257], [40, 129, 300]] as const) out.push(makeCase(r, m, n, k, 0, { uniformCodes: true }));
  out.push(makeCase(r, 3, 200, 500, 0, { xScale: 1e30 }), makeCase(r, 9, 200, 500, 1, { xScale: 1e30 }));
  out.push(makeCase(r, 3, 200, 500, 0, { xScale: 1e-30 }), makeCase(r, 9, 200, 500, 0, { xScale: 1e-30 }));
  return out;
}

interface Config { isa: string; threads: number; vbmi: boolean }
function configs(a: NativeAddon): Config[] {
  const out: Config[] = [];
  for (const isa of ['scalar', 'avx2', 'avx512']) {
    if (!a.setIsa(isa as 'scalar')) continue;
    for (const threads of [1, 2]) {
      out.push({ isa, threads, vbmi: true });
      if (isa === 'avx512' && a.info().avx512vbmi) out.push({ isa, threads, vbmi: false });
    }
  }
  return out;
}

/** Runs fn under every configuration and both paths, restoring the addon state afterwards. */
function forEachConfig(a: NativeAddon, fn: (tag: string, lin: LinearFp8) => void): void {
  const { isa: isa0, threads: threads0 } = a.info();
  const gemvMax0 = a.fp8SetGemvMaxM(8) as number;
  try {
    for (const cfg of configs(a)) {
      a.setIsa(cfg.isa as 'scalar');
      a.setThreads(cfg.threads);
      a.fp8SetVbmi(cfg.vbmi);
      for (const gemvMax of [8, 0]) { // default paths, then the packed GEMM for every m
        a.fp8SetGemvMaxM(gemvMax);
        fn(`${cfg.isa}${cfg.vbmi ? '' : '/no-vbmi'}/${cfg.threads}t/${gemvMax ? 'auto' : 'gemm'}`, a.linearFp8 as LinearFp8);
      }
    }
  } finally {
    a.setIsa(isa0 as 'scalar');
    a.setThreads(threads0);
    a.fp8SetVbmi(true);
    a.fp8SetGemvMaxM(gemvMax0);
  }
}

function addon(t: TestContext): NativeAddon | null {
  if (!requireNative(t)) return null;
  const a = nativeAddon()!;
  if (typeof a.linearFp8 !== 'function') {
    const msg = 'the native addon does not export linearFp8';
    if (process.env.CI || process.env.DSV3_REQUIRE_NATIVE) assert.fail(msg);
    t.skip(msg);
    return null;
  }
  return a;
}

test('native linearFp8 matches the reference (shapes, ISAs, threads, both paths, beta 0/1)', (t) => {
  const a = addon(t);
  if (!a) return;
  const cases = buildCases();
  forEachConfig(a, (tag, lin) => {
    for (const cs of cases) {
      const got = cs.y0.slice();
      lin(cs.m, cs.n, cs.k, cs.x, cs.codes, cs.scale, cs.beta, got);
      check(`${tag} ${cs.label}`, cs, got);
    }
  });
});

test('native linearFp8: a NaN code makes its whole output column NaN (documented behaviour)', (t) => {
  const a = addon(t);
  if (!a) return;
  const r = rng(7);
  // positions: inside a 32/64-code group, in the single-vector part, in the scalar tail
  const cases: { cs: Case; nanRows: number[] }[] = [];
  for (const [m, n, k] of [[1, 140, 1000], [3, 140, 1000], [9, 140, 1000], [2, 131, 129]] as const) {
    const cs = makeCase(r, m, n, k, m % 2 === 0 ? 1 : 0);
    const marks: [number, number, number][] = [[5, 40, 0x7f], [77, k - 1, 0xff], [130, Math.min(k - 1, 975), 0x7f]];
    for (const [row, col, c] of marks) cs.codes[row * k + col] = c;
    cs.want = cs.y0.slice();
    refLinearFp8(m, n, k, cs.x, cs.codes, cs.scale, cs.beta, cs.want);
    cases.push({ cs, nanRows: marks.map((q) => q[0]) });
  }
  forEachConfig(a, (tag, lin) => {
    for (const { cs, nanRows } of cases) {
      const got = cs.y0.slice();
      lin(cs.m, cs.n, cs.k, cs.x, cs.codes, cs.scale, cs.beta, got);
      for (let i = 0; i < cs.m; i++)
        for (const j of nanRows) assert.ok(Number.isNaN(got[i * cs.n + j]), `${tag} ${cs.label}: y[${i},${j}] should be NaN`);
      check(`${tag} ${cs.label} (NaN codes)`, cs, got); // every other column equals the reference
    }
  });
});

test('native linearFp8 GEMV: the GFNI decode (AVX-512 + VBMI + GFNI) gives exactly the arithmetic decode\'s outputs', (t) => {
  const a = addon(t);
  if (!a) return;
  const info = a.info();
  if (!info.avx512 || !info.avx512vbmi || !info.gfni) {
    t.skip('this CPU has no AVX-512 VBMI + GFNI: the GEMV uses the arithmetic decode only');
    return;
  }
  const r = rng(11);
  const cases: Case[] = [];
  // every code value (NaN codes excluded: the NaN test covers them), rows of 64-code groups,
  // single vectors and a scalar tail, m = 1..8, several 128-row scale blocks
  for (const [m, n, k] of [[1, 300, 2048], [1, 257, 1408], [2, 140, 1000], [4, 131, 129], [8, 200, 700], [3, 130, 64]] as const) {
    const cs = makeCase(r, m, n, k, m % 2, { uniformCodes: true });
    for (let q = 0; q < 256 && q < cs.codes.length; q++) cs.codes[q] = (q & 0x7f) === 0x7f ? q ^ 1 : q;
    cs.want = cs.y0.slice();
    refLinearFp8(m, n, k, cs.x, cs.codes, cs.scale, cs.beta, cs.want);
    cases.push(cs);
  }
  const { isa: isa0, threads: threads0 } = a.info();
  const gemvMax0 = a.fp8SetGemvMaxM(8) as number;
  try {
    a.setIsa('avx512');
    for (const threads of [1, 2]) {
      a.setThreads(threads);
      for (const cs of cases) {
        const out: Float32Array[] = [];
        for (const vbmi of [true, false]) {
          a.fp8SetVbmi(vbmi);
          const got = cs.y0.slice();
          (a.linearFp8 as LinearFp8)(cs.m, cs.n, cs.k, cs.x, cs.codes, cs.scale, cs.beta, got);
          out.push(got);
        }
        assert.deepEqual(new Uint32Array(out[0].buffer), new Uint32Array(out[1].buffer), `${threads}t ${cs.label}`);
        check(`avx512/gfni/${threads}t ${cs.label}`, cs, out[0]);
      }
    }
  } finally {
    a.setIsa(isa0 as 'scalar');
    a.setThreads(threads0);
    a.fp8SetVbmi(true);
    a.fp8SetGemvMaxM(gemvMax0);
  }
});

test('native linearFp8: empty shapes and k = 0', (t) => {
  const a = addon(t);
  if (!a) return;
  forEachConfig(a, (tag, lin) => {
    const y = new Float32Array([1, 2, 3, 4, 5, 6]);
    lin(2, 3, 0, new Float32Array(0), new Uint8Array(0), new Float32Array(0), 1, y);
    assert.deepEqual(Array.from(y), [1, 2, 3, 4, 5, 6], tag);
    y.fill(NaN);
    lin(2, 3, 0, new Float32Array(0), new Uint8Array(0), new Float32Array(0), 0, y);
    assert.deepEqual(Array.from(y), [0, 0, 0, 0, 0, 0], tag);
    lin(0, 3, 4, new Float32Array(0), new Uint8Array(12), new Float32Array(1), 0, new Float32Array(0));
    lin(2, 0, 4, new Float32Array(8), new Uint8Array(0), new Float32Array(0), 0, new Float32Array(0));
  });
});

test('native linearFp8 validates its arguments', (t) => {
  const a = addon(t);
  if (!a) return;
  const lin = a.linearFp8 as LinearFp8;
  const m = 3, n = 130, k = 200;
  const x = new Float32Array(m * k), codes = new Uint8Array(n * k), s = new Float32Array(2 * 2), y = new Float32Array(m * n);
  const range = (f: () => void, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof RangeError && re.test(e.message));
  const type = (f: () => void, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof TypeError && re.test(e.message));
  lin(m, n, k, x, codes, s, 0, y); // exact sizes are fine
  range(() => lin(m, n, k, x.subarray(1), codes, s, 0, y), /'x'/);
  range(() => lin(m, n, k, x, codes.subarray(1), s, 0, y), /'codes'/);
  range(() => lin(m, n, k, x, codes, s.subarray(1), 0, y), /'scaleInv'/);
  range(() => lin(m, n, k, x, codes, s, 0, y.subarray(1)), /'y'/);
  range(() => lin(-1, n, k, x, codes, s, 0, y), /'m'/);
  range(() => lin(m, 1.5, k, x, codes, s, 0, y), /'n'/);
  range(() => lin(m, n, 2 ** 31, x, codes, s, 0, y), /'k'/);
  type(() => lin(m, n, k, x, new Int8Array(n * k) as unknown as Uint8Array, s, 0, y), /'codes'/);
  type(() => lin(m, n, k, new Float64Array(m * k) as unknown as Float32Array, codes, s, 0, y), /'x'/);
  type(() => lin(m, n, k, x, codes, s, 0, [] as unknown as Float32Array), /'y'/);
  type(() => lin(m, n, k, x, codes, s, 'a' as unknown as number, y), /'beta'/);
});
