// Native GEMM (every ISA this CPU has, 1 and 2 threads) against the reference TypeScript GEMM:
// all four transpose combinations, alpha/beta variants, edge sizes (1, 3, 7, 127, 129, 1000 in
// each dimension, multiple cache blocks), strided operands, beta = 0 over NaN, bf16 weights;
// the threaded schedule (work stealing forced by a test hook); plus argument validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ref from '../src/engine/reference/gemm.js';
import { f32ToBf16 } from '../src/engine/dtype.js';

type GemmFn<B> = (transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Float32Array, lda: number, b: B, ldb: number, beta: number, c: Float32Array, ldc: number) => void;
interface Addon {
  gemmF32: GemmFn<Float32Array>;
  gemmBf16: GemmFn<Uint16Array>;
  gemmSelfCheck(isa: string): boolean;
  setIsa(isa: string): boolean;
  setThreads(n: number): number;
  info(): { isa: string; threads: number };
}

function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'binding.gyp'))) {
    const up = dirname(d);
    if (up === d) throw new Error('gemm.test: repository root (binding.gyp) not found');
    d = up;
  }
  return d;
}
const addonPath = process.env.DSV3_ADDON || join(repoRoot(), 'build', 'Release', 'dsv3.node');
const haveAddon = existsSync(addonPath);
const skip = !haveAddon && process.env.DSV3_REQUIRE_NATIVE !== '1' ? 'native addon not built' : false;
const addon: Addon | undefined = haveAddon ? (createRequire(import.meta.url)(addonPath) as Addon) : undefined;

let seed = 1;
function rand(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return ((seed >>> 8) / 16777216) * 2 - 1;
}
function randArray(n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rand();
  return x;
}

interface Case {
  ta: boolean; tb: boolean; m: number; n: number; k: number; alpha: number; beta: number;
  lda: number; ldb: number; ldc: number; a: Float32Array; b: Float32Array; bh: Uint16Array; c: Float32Array;
  want: Float32Array; wantBf16: Float32Array;
}

function makeCase(ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, beta: number, pad: number): Case {
  const lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const a = randArray((ta ? k : m) * lda), b = randArray((tb ? n : k) * ldb);
  const bh = new Uint16Array(b.length);
  for (let i = 0; i < b.length; i++) bh[i] = f32ToBf16(b[i]!);
  const c = randArray(m * ldc);
  if (beta === 0) c.fill(NaN);
  const want = c.slice(), wantBf16 = c.slice();
  ref.gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
  ref.gemmBf16(ta, tb, m, n, k, alpha, a, lda, bh, ldb, beta, wantBf16, ldc);
  return { ta, tb, m, n, k, alpha, beta, lda, ldb, ldc, a, b, bh, c, want, wantBf16 };
}

/** Per output: sum |alpha a b| + |beta c|, the scale of float32 summation error. */
function magnitudes(cs: Case): Float32Array {
  const mag = new Float32Array(cs.m * cs.ldc);
  const abs = (x: Float32Array): Float32Array => x.map(Math.abs);
  const cAbs = cs.beta === 0 ? mag : abs(cs.c);
  ref.gemm(cs.ta, cs.tb, cs.m, cs.n, cs.k, Math.abs(cs.alpha), abs(cs.a), cs.lda, abs(cs.b), cs.ldb, Math.abs(cs.beta), cAbs, cs.ldc);
  return cAbs;
}

function check(label: string, cs: Case, got: Float32Array, want: Float32Array, mag: Float32Array): void {
  const { m, n, k, ldc } = cs;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < ldc; j++) {
      const o = i * ldc + j;
      if (j >= n) {
        // padding between rows of C is never written
        assert.ok(Object.is(got[o], cs.c[o]) || (Number.isNaN(got[o]) && Number.isNaN(cs.c[o])), `${label}: C padding [${i},${j}] changed`);
        continue;
      }
      const tol = 2e-7 * (k + 4) * mag[o]! + 1e-30;
      if (!(Math.abs(got[o]! - want[o]!) <= tol)) {
        assert.fail(`${label}: C[${i},${j}] = ${got[o]}, reference ${want[o]} (tolerance ${tol})`);
      }
    }
  }
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1], [1, 7, 3], [3, 1, 7], [7, 3, 1], [2, 129, 127], [4, 127, 129], [3, 1000, 7], [1, 7, 1000],
  [5, 7, 1000], [1000, 3, 7], [127, 129, 7], [129, 127, 130], [7, 1000, 129], [1000, 129, 3], [6, 16, 256],
  [5, 2100, 20], [300, 40, 600], [2, 4200, 5],
  // the streaming path for several decode rows (continuous batching): m 5..16 in groups of 4
  [8, 131, 256], [9, 37, 33], [12, 200, 129], [16, 67, 300], [13, 1100, 64], [11, 4099, 17],
];
// [alpha, beta]: overwrite, scaled overwrite (C full of NaN), accumulate, general
const AB: [number, number][] = [[1, 0], [0.5, 0], [1, 1], [-1.5, 0.25]];

function buildCases(): { cs: Case; mag: Float32Array; label: string }[] {
  const out: { cs: Case; mag: Float32Array; label: string }[] = [];
  SHAPES.forEach(([m, n, k], si) => {
    for (let t = 0; t < 4; t++) {
      const ta = (t & 1) === 1, tb = (t & 2) === 2;
      const [alpha, beta] = AB[(si + t) % AB.length]!;
      const pad = (si + t) % 2 === 0 ? 0 : 3; // every other case uses strided (submatrix) operands
      const cs = makeCase(ta, tb, m, n, k, alpha, beta, pad);
      out.push({ cs, mag: magnitudes(cs), label: `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} pad=${pad}` });
    }
  });
  return out;
}

function configs(a: Addon): { isa: string; threads: number }[] {
  const out: { isa: string; threads: number }[] = [];
  for (const isa of ['scalar', 'avx2', 'avx512']) {
    if (!a.setIsa(isa)) continue;
    for (const threads of [1, 2]) out.push({ isa, threads });
  }
  return out;
}

function restore(a: Addon, isa: string, threads: number): void {
  a.setIsa(isa);
  a.setThreads(threads);
}

type Labelled = { cs: Case; mag: Float32Array; label: string };

/** Runs every case through gemmF32 and gemmBf16 (into copies of C) and checks both. */
function runCases(a: Addon, cases: readonly Labelled[], tag: string): void {
  for (const { cs, mag, label } of cases) {
    const got = cs.c.slice();
    a.gemmF32(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, cs.a, cs.lda, cs.b, cs.ldb, cs.beta, got, cs.ldc);
    check(`gemmF32 ${tag} ${label}`, cs, got, cs.want, mag);
    const gotH = cs.c.slice();
    a.gemmBf16(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, cs.a, cs.lda, cs.bh, cs.ldb, cs.beta, gotH, cs.ldc);
    check(`gemmBf16 ${tag} ${label}`, cs, gotH, cs.wantBf16, mag);
  }
}

test('native gemm / gemmBf16 match the reference (all ISAs, 1 and 2 threads)', { skip }, () => {
  const a = addon!;
  const { isa: isa0, threads: threads0 } = a.info();
  const cases = buildCases();
  try {
    for (const cfg of configs(a)) {
      a.setIsa(cfg.isa);
      a.setThreads(cfg.threads);
      runCases(a, cases, `${cfg.isa}/${cfg.threads}t`);
    }
  } finally {
    restore(a, isa0, threads0);
  }
});

test('native gemm matches the reference on random shapes, strides and scalars', { skip }, () => {
  const a = addon!;
  const { isa: isa0, threads: threads0 } = a.info();
  const cases: { cs: Case; mag: Float32Array; label: string }[] = [];
  for (let q = 0; q < 40; q++) {
    const dim = (): number => 1 + Math.floor(((rand() + 1) / 2) ** 2 * 90);
    const [m, n, k] = [dim(), dim(), dim()];
    const ta = rand() > 0, tb = rand() > 0, pad = Math.floor((rand() + 1) * 3);
    const alpha = [1, -0.5, 2][q % 3]!, beta = [0, 1, 0.75, 0][q % 4]!;
    const cs = makeCase(ta, tb, m, n, k, alpha, beta, pad);
    cases.push({ cs, mag: magnitudes(cs), label: `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} m=${m} n=${n} k=${k} pad=${pad} a=${alpha} b=${beta}` });
  }
  try {
    for (const cfg of configs(a)) {
      a.setIsa(cfg.isa);
      a.setThreads(cfg.threads);
      runCases(a, cases, `${cfg.isa}/${cfg.threads}t`);
    }
  } finally {
    restore(a, isa0, threads0);
  }
});

// Shapes for the threaded schedule (gemm_driver.c): several NC column blocks and KC k blocks
// (k blocks accumulate into C regions another thread may own), row counts not a multiple of
// MR, tall, wide and narrow C (narrow, untransposed A is read in place; lda = 1024 is not),
// k just over a block. Run on 2 threads as scheduled and with DSV3_GEMM_STEAL_TEST=1, where
// every thread starts on another's tile as a thief does when one is descheduled.
const SCHED_SHAPES: [number, number, number][] = [
  [13, 2100, 260], [131, 200, 300], [60, 130, 1024], [400, 40, 260], [64, 40, 700], [20, 600, 513], [97, 256, 520],
];

test('native gemm: threaded schedule, work stealing, several k and column blocks', { skip }, () => {
  const a = addon!;
  const { isa: isa0, threads: threads0 } = a.info();
  const cases: { cs: Case; mag: Float32Array; label: string }[] = [];
  SCHED_SHAPES.forEach(([m, n, k], si) => { // one transpose combination per shape, all four in turn
    const t = si % 4, ta = (t & 1) === 1, tb = (t & 2) === 2;
    const [alpha, beta] = AB[(si + t) % AB.length]!;
    const pad = t % 2 === 0 ? 0 : 5;
    const cs = makeCase(ta, tb, m, n, k, alpha, beta, pad);
    cases.push({ cs, mag: magnitudes(cs), label: `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} pad=${pad}` });
  });
  const steal0 = process.env.DSV3_GEMM_STEAL_TEST;
  try {
    for (const cfg of configs(a)) {
      a.setIsa(cfg.isa);
      a.setThreads(cfg.threads);
      for (const steal of cfg.threads > 1 ? ['0', '1'] : ['0']) {
        process.env.DSV3_GEMM_STEAL_TEST = steal;
        runCases(a, cases, `${cfg.isa}/${cfg.threads}t${steal === '1' ? ' steal' : ''}`);
      }
    }
  } finally {
    if (steal0 === undefined) delete process.env.DSV3_GEMM_STEAL_TEST;
    else process.env.DSV3_GEMM_STEAL_TEST = steal0;
    restore(a, isa0, threads0);
  }
});

test('native gemm special cases: k = 0, alpha = 0 (A, B not read), m or n = 0', { skip }, () => {
  const a = addon!;
  const { isa: isa0 } = a.info();
  try {
    for (const cfg of configs(a)) {
      a.setIsa(cfg.isa);
      a.setThreads(cfg.threads);
      const c = new Float32Array([1, 2, 3, 4, 5, 6]);
      a.gemmF32(false, false, 2, 3, 0, 1, new Float32Array(0), 1, new Float32Array(0), 3, 2, c, 3);
      assert.deepEqual(Array.from(c), [2, 4, 6, 8, 10, 12]);
      const nanA = new Float32Array(2 * 4).fill(NaN), nanB = new Float32Array(4 * 3).fill(NaN);
      a.gemmF32(false, false, 2, 3, 4, 0, nanA, 4, nanB, 3, 0.5, c, 3);
      assert.deepEqual(Array.from(c), [1, 2, 3, 4, 5, 6]);
      c.fill(NaN);
      a.gemmBf16(true, true, 2, 3, 4, 0, nanA, 2, new Uint16Array(12), 4, 0, c, 3);
      assert.deepEqual(Array.from(c), [0, 0, 0, 0, 0, 0]);
      a.gemmF32(false, false, 0, 3, 4, 1, new Float32Array(0), 4, nanB, 3, 0, new Float32Array(0), 3);
      a.gemmF32(false, false, 2, 0, 4, 1, nanA, 4, new Float32Array(0), 1, 0, new Float32Array(0), 1);
    }
  } finally {
    restore(a, isa0, 2);
  }
});

test('native gemm self-check agrees on every ISA of this CPU', { skip }, () => {
  const a = addon!;
  const { isa: isa0 } = a.info();
  for (const isa of ['scalar', 'avx2', 'avx512']) {
    if (!a.setIsa(isa)) continue;
    assert.equal(a.gemmSelfCheck(isa), true, isa);
  }
  a.setIsa(isa0);
});

test('native gemm validates its arguments', { skip }, () => {
  const a = addon!;
  const A = new Float32Array(6 * 5), B = new Float32Array(5 * 7), C = new Float32Array(6 * 7), BH = new Uint16Array(35);
  const range = (f: () => void, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof RangeError && re.test(e.message));
  range(() => a.gemmF32(false, false, 6, 7, 5, 1, A.subarray(1), 5, B, 7, 0, C, 7), /'a'/);
  range(() => a.gemmF32(false, false, 6, 7, 5, 1, A, 5, B.subarray(0, 34), 7, 0, C, 7), /'b'/);
  range(() => a.gemmF32(false, false, 6, 7, 5, 1, A, 5, B, 7, 0, C.subarray(0, 41), 7), /'c'/);
  range(() => a.gemmBf16(false, false, 6, 7, 5, 1, A, 5, BH.subarray(2), 7, 0, C, 7), /'b'/);
  range(() => a.gemmF32(false, false, 6, 7, 5, 1, A, 4, B, 7, 0, C, 7), /lda/);
  range(() => a.gemmF32(true, false, 5, 7, 6, 1, A, 4, B, 7, 0, C, 7), /lda/);
  range(() => a.gemmF32(false, true, 4, 5, 7, 1, A, 7, B, 6, 0, C, 7), /ldb/);
  range(() => a.gemmF32(false, false, 6, 7, 5, 1, A, 5, B, 7, 0, C, 6), /ldc/);
  range(() => a.gemmF32(false, false, -1, 7, 5, 1, A, 5, B, 7, 0, C, 7), /'m'/);
  range(() => a.gemmF32(false, false, 6, 7, 2.5, 1, A, 5, B, 7, 0, C, 7), /'k'/);
  // exact extents pass: the last row needs only `cols` elements, not a full `ld`
  a.gemmF32(false, false, 6, 7, 5, 1, new Float32Array(5 * 8 + 5), 8, B, 7, 0, C, 7);
  assert.throws(() => a.gemmF32(false, false, 6, 7, 5, 1, A, 5, BH as unknown as Float32Array, 7, 0, C, 7), TypeError);
  assert.throws(() => a.gemmBf16(false, false, 6, 7, 5, 1, A, 5, B as unknown as Uint16Array, 7, 0, C, 7), TypeError);
  assert.throws(() => a.gemmF32(0 as unknown as boolean, false, 6, 7, 5, 1, A, 5, B, 7, 0, C, 7), TypeError);
});

test('reference gemm validates its arguments', () => {
  const A = new Float32Array(30), B = new Float32Array(35), C = new Float32Array(42);
  assert.throws(() => ref.gemm(false, false, 6, 7, 5, 1, A.subarray(1), 5, B, 7, 0, C, 7), RangeError);
  assert.throws(() => ref.gemm(false, false, 6, 7, 5, 1, A, 4, B, 7, 0, C, 7), RangeError);
  const c = new Float32Array(4).fill(NaN);
  ref.gemm(false, false, 2, 2, 1, 1, new Float32Array([1, 2]), 1, new Float32Array([3, 4]), 2, 0, c, 2);
  assert.deepEqual(Array.from(c), [3, 4, 6, 8]);
});
