// gemmBf16Ab / gemmBatchBf16Ab (A and B both bf16 bits; native/src/isa/gemm_*.c) against the
// TypeScript reference, on every ISA copy this CPU runs (scalar, AVX2, AVX-512), 1 and 2 threads
// (with work stealing forced), with and without the VDPBF16PS path: all four layouts, GEMV
// sizes, A read in place (narrow C, untransposed A; k odd, several k blocks, a partial last row
// panel), A packed (wide C, rows 4 KB apart, transposed A), alpha, beta 0 over NaN and beta 1.
// Each result must equal the reference to float32 summation-order tolerance AND be bit-identical
// to the native gemmBf16 of A widened to float32 (the same kernels, the same order; only the
// source of A's bf16 values differs). scripts/verify-avx512.sh runs this file against the
// SIMDe-emulated AVX-512 copies too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { loadNativeKernels, nativeAddon } from '../src/engine/native.js';
import { requireNative } from './helpers/backends.js';
import { randData, rng, type Rng } from './helpers/random.js';

/** n random bf16 values: their bits and their float32 values. */
function bf16Operand(r: Rng, n: number): { h: Uint16Array; f: Float32Array } {
  const h = new Uint16Array(n);
  ref.bf16Round(randData(r, n), h, n);
  const f = new Float32Array(n);
  ref.bf16Widen(h, f, n);
  return { h, f };
}

/** Every ISA x {1, 2 threads (+ stealing)} x {VDPBF16PS allowed, not}, restoring all afterwards. */
function eachPath(fn: (label: string) => void): void {
  const a = nativeAddon()!;
  const { isa, threads } = a.info();
  const steal0 = process.env.DSV3_GEMM_STEAL_TEST;
  const dp0 = a['gemmAllowDpbf16'](true) as boolean;
  try {
    for (const i of ['scalar', 'avx2', 'avx512'] as const) {
      if (!a.setIsa(i)) continue;
      // a copy failing the load-time self-check would be replaced by AVX2 without notice here
      assert.equal(a['gemmSelfCheck'](i), true, `the ${i} GEMM self-check`);
      for (const dp of i === 'avx512' ? [true, false] : [true]) {
        a['gemmAllowDpbf16'](dp);
        for (const [th, steal] of [[1, '0'], [2, '0'], [2, '1']] as const) {
          a.setThreads(th);
          process.env.DSV3_GEMM_STEAL_TEST = steal;
          fn(`${i}${dp ? '' : ' (widening)'}/${th}t${steal === '1' ? ' steal' : ''}`);
        }
      }
    }
  } finally {
    if (steal0 === undefined) delete process.env.DSV3_GEMM_STEAL_TEST;
    else process.env.DSV3_GEMM_STEAL_TEST = steal0;
    a['gemmAllowDpbf16'](dp0);
    a.setIsa(isa as 'scalar' | 'avx2' | 'avx512');
    a.setThreads(threads);
  }
}

/** |got - exp| <= 3e-7 (k + 4) (|alpha| Σ|a b| + |beta c|) inside m x n; bits equal outside. */
function checkClose(what: string, ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number, af: Float32Array, lda: number,
  bf: Float32Array, ldb: number, beta: number, c0: Float32Array, got: Float32Array, exp: Float32Array, ldc: number): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < ldc; j++) {
      const o = i * ldc + j;
      if (j >= n) {
        if (!Object.is(got[o], exp[o]) && !(Number.isNaN(got[o]!) && Number.isNaN(exp[o]!))) assert.fail(`${what}: C[${i},${j}] past n was written`);
        continue;
      }
      let mag = 0;
      for (let p = 0; p < k; p++) mag += Math.abs(af[ta ? p * lda + i : i * lda + p]! * bf[tb ? j * ldb + p : p * ldb + j]!);
      mag = Math.abs(alpha) * mag * 1.01 + (beta === 0 ? 0 : Math.abs(beta * c0[o]!));
      const d = Math.abs(got[o]! - exp[o]!);
      if (!(d <= 3e-7 * (k + 4) * mag + 1e-30)) assert.fail(`${what}: C[${i},${j}] = ${got[o]}, reference ${exp[o]}`);
    }
  }
}

// [m, n, k, lda override or 0]: GEMV (m <= 16); narrow C with untransposed A read in place
// (k odd, k over two VDPBF16PS k blocks of 384, a partial last MR panel, k below one prefetch
// step); wide C (A packed); A rows 4 KB apart (packed: they would share L1 sets); tall m for
// the 2-thread grid.
const SHAPES: [number, number, number, number][] = [
  [1, 37, 300, 0], [13, 45, 29, 0], [300, 96, 256, 0], [64, 256, 801, 0], [130, 40, 17, 0], [37, 200, 65, 0],
  [48, 300, 100, 0], [50, 64, 300, 2048], [700, 128, 96, 0],
];

test('gemmBf16Ab: native equals the reference and the native gemmBf16 of the widened A (every ISA, layout, path)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  const r = rng(21);
  let si = 0;
  for (const [m, n, k, ldaOver] of SHAPES) {
    for (const [ta, tb] of [[false, true], [false, false], [true, false], [true, true]] as const) {
      const beta = [0, 1, 0.5][si++ % 3]!;
      const alpha = si % 2 ? 0.75 : 1;
      const lda = ta ? m + 3 : ldaOver || k + (si % 2);
      const ldb = (tb ? k : n) + (si % 3), ldc = n + 2;
      const A = bf16Operand(r, (ta ? k : m) * lda);
      const B = bf16Operand(r, (tb ? n : k) * ldb);
      const c0 = randData(r, m * ldc);
      const fill = (): Float32Array => (beta === 0 ? new Float32Array(c0.length).fill(NaN) : c0.slice());
      const exp = fill();
      ref.gemmBf16Ab(ta, tb, m, n, k, alpha, A.h, lda, B.h, ldb, beta, exp, ldc);
      const what = `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${m}x${n}x${k} lda=${lda} alpha=${alpha} beta=${beta}`;
      eachPath((label) => {
        const got = fill();
        nat.gemmBf16Ab(ta, tb, m, n, k, alpha, A.h, lda, B.h, ldb, beta, got, ldc);
        checkClose(`${what} ${label}`, ta, tb, m, n, k, alpha, A.f, lda, B.f, ldb, beta, c0, got, exp, ldc);
        const viaF32 = fill();
        nat.gemmBf16(ta, tb, m, n, k, alpha, A.f, lda, B.h, ldb, beta, viaF32, ldc);
        assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(viaF32.buffer), `${what} ${label}: bits differ from gemmBf16`);
      });
    }
  }
});

test('gemmBatchBf16Ab: native equals the reference (experts of different sizes, an empty one; every layout)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  const r = rng(23);
  const shapes = [[37, 45, 29], [0, 45, 29], [13, 1, 400], [64, 32, 129], [5, 70, 3], [130, 40, 17]] as const;
  const K = 400, N = 70, M = 130;
  for (const [ta, tb] of [[false, true], [false, false], [true, false], [true, true]] as const) {
    for (const beta of [0, 1]) {
      const lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 3, ldc = N + 2;
      const as = shapes.map(() => bf16Operand(r, (ta ? K : M) * lda));
      const bs = shapes.map(() => bf16Operand(r, (tb ? N : K) * ldb));
      const c0 = shapes.map(() => randData(r, M * ldc));
      const fill = (): Float32Array[] => c0.map((c) => (beta === 0 ? new Float32Array(c.length).fill(NaN) : c.slice()));
      const dims = Int32Array.from(shapes.flat());
      const exp = fill();
      ref.gemmBatchBf16Ab(ta, tb, dims, 1, as.map((x) => x.h), lda, bs.map((x) => x.h), ldb, beta, exp, ldc);
      eachPath((label) => {
        const got = fill();
        nat.gemmBatchBf16Ab(ta, tb, dims, 1, as.map((x) => x.h), lda, bs.map((x) => x.h), ldb, beta, got, ldc);
        shapes.forEach(([m, n, k], i) => {
          checkClose(`batch ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} beta=${beta} #${i} ${label}`, ta, tb, m, n, k, 1, as[i]!.f, lda, bs[i]!.f, ldb, beta, c0[i]!, got[i]!, exp[i]!, ldc);
          for (let q = m * ldc; q < M * ldc; q++) {
            if (!Object.is(got[i]![q], exp[i]![q]) && !(Number.isNaN(got[i]![q]!) && Number.isNaN(exp[i]![q]!))) assert.fail(`batch #${i}: C past row ${m} was written (${label})`);
          }
        });
      });
    }
  }
});

test('gemmBf16Ab / gemmBatchBf16Ab: bad arguments are TypeError / RangeError naming the argument', (t) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()! as unknown as Record<string, (...args: unknown[]) => void>;
  const h = (n: number): Uint16Array => new Uint16Array(n);
  assert.throws(() => a['gemmBf16Ab']!(false, true, 2, 2, 2, 1, new Float32Array(4), 2, h(4), 2, 0, new Float32Array(4), 2), /argument 'a' has the wrong typed-array type/);
  assert.throws(() => a['gemmBf16Ab']!(false, true, 2, 2, 2, 1, h(3), 2, h(4), 2, 0, new Float32Array(4), 2), /'a' has 3 elements, the call needs 4/);
  assert.throws(() => a['gemmBatchBf16Ab']!(false, true, Int32Array.of(2, 2, 2), 1, [new Float32Array(4)], 2, [h(4)], 2, 0, [new Float32Array(4)], 2), /'as\[0\]' must be a Uint16Array/);
  assert.throws(() => ref.gemmBf16Ab(false, true, 2, 2, 2, 1, h(3), 2, h(4), 2, 0, new Float32Array(4), 2), /argument 'a' has 3 elements/);
});

test('bf16RoundRows: native equals the reference bit for bit (rows padded, padding untouched, threaded sizes)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  const a = nativeAddon()!;
  const th0 = a.info().threads;
  const r = rng(29);
  try {
    for (const th of [1, 2]) {
      a.setThreads(th);
      for (const [rows, cols, ldo] of [[0, 5, 5], [1, 1, 1], [3, 17, 20], [7, 33, 33], [512, 4096, 4128], [300, 1000, 1001]] as const) {
        const x = randData(r, rows * cols, 3);
        const xu = new Uint32Array(x.buffer);
        for (let i = 0; i < x.length; i += 13) xu[i] = (r() * 2 ** 32) >>> 0; // every exponent, NaN payloads, subnormals
        const n = rows > 0 ? (rows - 1) * ldo + cols + 2 : 2;
        const got = new Uint16Array(n).fill(0xabcd);
        const exp = new Uint16Array(n).fill(0xabcd);
        nat.bf16RoundRows(x, got, rows, cols, ldo);
        ref.bf16RoundRows(x, exp, rows, cols, ldo);
        assert.deepEqual(got, exp, `bf16RoundRows ${rows}x${cols} ldo=${ldo} (${th} threads)`);
        if (rows > 0 && ldo > cols) assert.equal(got[cols], 0xabcd, 'padding untouched');
      }
    }
  } finally {
    a.setThreads(th0);
  }
  const f = a['bf16RoundRows'] as (...args: unknown[]) => void;
  assert.throws(() => f(new Float32Array(6), new Uint16Array(6), 2, 3, 2), /ldo must be >= cols/);
  assert.throws(() => f(new Float32Array(6), new Uint16Array(6), 2, 3, 4), /'out' has 6 elements, the call needs 7/);
  assert.throws(() => ref.bf16RoundRows(new Float32Array(6), new Uint16Array(6), 2, 3, 4), /out has 6 elements, the call needs 7/);
});
