// The bf16 kernels of BF16 mixed-precision training (native vs the TypeScript reference):
// bf16Round / bf16Widen bit for bit (RNE ties, NaN, ±Inf, ±0, subnormals, vector tails, the
// threaded split), and gemmBatchBf16 / gemmBf16 in the operand layouts training uses
// (Fprop NT, Dgrad NN, Wgrad TN with a saved bf16 X) to float32 summation-order tolerance.
// scripts/verify-avx512.sh runs this file against the SIMDe-emulated AVX-512 copies too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { loadNativeKernels } from '../src/engine/native.js';
import { nativeAddon } from '../src/engine/native.js';
import { f32ToBf16 } from '../src/engine/dtype.js';
import { requireNative } from './helpers/backends.js';
import { randData, rng } from './helpers/random.js';

/** Awkward float32 values: RNE ties both ways, NaNs (quiet and signalling, both signs), ±Inf,
 * ±0, subnormals, the largest finite (rounds to Inf), values just below a tie. */
function specials(): Float32Array {
  const u = Uint32Array.from([
    0x3f808000, 0x3f818000, 0x3f80ffff, 0x3f807fff, 0x3f808001, 0x7fc00000, 0x7f800001, 0xffa00000, 0xff800000, 0x7f800000,
    0x00000000, 0x80000000, 0x00000001, 0x00008000, 0x00018000, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x7f7f7fff, 0x3f7fffff,
    0x0000ffff, 0x80008000, 0x7fffffff, 0xffffffff,
  ]);
  return new Float32Array(u.buffer);
}

test('bf16Round / bf16Widen: native equals the reference bit for bit (specials, tails, threaded sizes)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  const r = rng(7);
  const sp = specials();
  for (const n of [0, 1, 7, 15, 16, 17, 31, 33, 100, 1000, (1 << 17) + 37, (1 << 18) + 5]) {
    const x = randData(r, n, 3);
    for (let i = 0; i < n; i += 5) x[i] = sp[(i / 5) % sp.length]!;
    // random bit patterns too (every exponent, NaN payloads)
    const xu = new Uint32Array(x.buffer);
    for (let i = 2; i < n; i += 11) xu[i] = (r() * 2 ** 32) >>> 0;
    const a = new Uint16Array(n + 3).fill(0xabcd);
    const b = new Uint16Array(n + 3).fill(0xabcd);
    nat.bf16Round(x, a, n);
    ref.bf16Round(x, b, n);
    assert.deepEqual(a, b, `bf16Round n=${n}`);
    assert.equal(a[n], 0xabcd, 'writes stop at n');
    for (let i = 0; i < n; i++) if (a[i] !== f32ToBf16(x[i]!)) assert.fail(`bf16Round[${i}] of bits ${xu[i]!.toString(16)}: ${a[i]} vs ${f32ToBf16(x[i]!)}`);
    const wa = new Float32Array(n + 1).fill(-7);
    const wb = new Float32Array(n + 1).fill(-7);
    nat.bf16Widen(a, wa, n);
    ref.bf16Widen(a, wb, n);
    assert.deepEqual(new Uint32Array(wa.buffer), new Uint32Array(wb.buffer), `bf16Widen n=${n}`);
    assert.equal(wa[n], -7);
    for (let i = 0; i < n; i++) assert.equal(new Uint32Array(wa.buffer, 4 * i, 1)[0], (a[i]! << 16) >>> 0);
  }
  // ties round to even: 1 + 2^-8 (between 1 and 1 + 2^-7) -> 1; 1 + 3*2^-8 -> 1 + 2^-6
  const out = new Uint16Array(2);
  nat.bf16Round(Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8), out, 2);
  assert.deepEqual([...out], [0x3f80, 0x3f82]);
});

test('bf16 kernels: bad arguments are RangeError / TypeError naming the argument', (t) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()! as unknown as Record<string, (...args: unknown[]) => void>;
  assert.throws(() => a['bf16Round']!(new Float32Array(4), new Uint16Array(3), 4), /'out' has 3 elements, the call needs 4/);
  assert.throws(() => a['bf16Round']!(new Float32Array(2), new Uint16Array(4), 4), /'x' has 2 elements/);
  assert.throws(() => a['bf16Widen']!(new Float32Array(4), new Float32Array(4), 4), /'h' must be a Uint16Array/);
  assert.throws(() => a['gemmBatchBf16']!(false, true, Int32Array.of(2, 2, 2), 1, [new Float32Array(4)], 2, [new Float32Array(4)], 2, 0, [new Float32Array(4)], 2), /'bs\[0\]' must be a Uint16Array/);
  assert.throws(() => ref.bf16Round(new Float32Array(4), new Uint16Array(3), 4), /out has 3 elements/);
});

/** The B operand of a GEMM as bf16 bits, rows x cols with leading dimension ld (padding random). */
function bits(r: () => number, n: number): Uint16Array {
  const f = randData(r, n);
  const h = new Uint16Array(n);
  ref.bf16Round(f, h, n);
  return h;
}

/** |native - reference| <= 3e-7 (k + 4) (|alpha| Σ|a b| + |beta c|): float32 summation order only. */
function checkGemm(what: string, ta: boolean, tb: boolean, m: number, n: number, k: number, a: Float32Array, lda: number,
  b: Uint16Array, ldb: number, beta: number, c0: Float32Array, got: Float32Array, exp: Float32Array, ldc: number): void {
  const bf = new Float32Array(b.length);
  ref.bf16Widen(b, bf, b.length);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let mag = 0;
      for (let p = 0; p < k; p++) mag += Math.abs(a[ta ? p * lda + i : i * lda + p]! * bf[tb ? j * ldb + p : p * ldb + j]!) * 1.01;
      mag += Math.abs(beta * c0[i * ldc + j]!);
      const d = Math.abs(got[i * ldc + j]! - exp[i * ldc + j]!);
      if (!(d <= 3e-7 * (k + 4) * mag + 1e-30)) assert.fail(`${what} C[${i},${j}]: ${got[i * ldc + j]} vs ${exp[i * ldc + j]}`);
    }
  }
}

/** Runs fn with the VDPBF16PS path (where the CPU has it) and with the widening path (the
 * AVX-512 copy on a CPU without avx512_bf16; AVX2 and scalar always widen), the latter both
 * with A rounded to the bf16 grid once before the loop nest (the default) and with A rounded
 * while packing (gemmBf16RoundPrepass(false)). */
function bothBf16Paths(fn: (path: string) => void): void {
  const a = nativeAddon() as unknown as { gemmAllowDpbf16?: (on: boolean) => boolean; gemmBf16RoundPrepass?: (on: boolean) => boolean };
  if (!a.gemmAllowDpbf16 || !a.gemmBf16RoundPrepass) return fn('default');
  const prev = a.gemmAllowDpbf16(true);
  const prevPre = a.gemmBf16RoundPrepass(true);
  try {
    fn('dpbf16');
    a.gemmAllowDpbf16(false);
    fn('widening, A rounded before the loop nest');
    a.gemmBf16RoundPrepass(false);
    fn('widening, A rounded in packing');
  } finally {
    a.gemmAllowDpbf16(prev);
    a.gemmBf16RoundPrepass(prevPre);
  }
}

test('gemmBatchBf16: native equals the reference (Fprop NT, Dgrad NN, Wgrad TN; edges, beta, empty GEMMs)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  bothBf16Paths((mode) => {
  const r = rng(11);
  for (const [ta, tb] of [[false, true], [false, false], [true, false], [true, true]] as const) {
    for (const beta of [0, 1]) {
      // one batch: many shapes (the experts' token counts differ, one has none)
      const shapes = [[37, 45, 29], [0, 45, 29], [13, 1, 400], [64, 32, 129], [5, 70, 3], [130, 40, 17]] as const;
      const K = 400, N = 70, M = 130;
      const lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
      const as = shapes.map(() => randData(r, (ta ? K : M) * lda));
      const bs = shapes.map(() => bits(r, (tb ? N : K) * ldb));
      const c0 = shapes.map(() => randData(r, M * ldc));
      const cn = c0.map((c) => (beta === 0 ? new Float32Array(c.length).fill(NaN) : c.slice()));
      const cr = c0.map((c) => (beta === 0 ? new Float32Array(c.length).fill(NaN) : c.slice()));
      const dims = Int32Array.from(shapes.flat());
      nat.gemmBatchBf16(ta, tb, dims, 1, as, lda, bs, ldb, beta, cn, ldc);
      ref.gemmBatchBf16(ta, tb, dims, 1, as, lda, bs, ldb, beta, cr, ldc);
      shapes.forEach(([m, n, k], i) => {
        checkGemm(`batch ta=${ta} tb=${tb} beta=${beta} #${i}`, ta, tb, m, n, k, as[i]!, lda, bs[i]!, ldb, beta, c0[i]!, cn[i]!, cr[i]!, ldc);
        // outside the m x n block C is untouched (NaN fill for beta 0 stays NaN past row m)
        for (let q = m * ldc; q < M * ldc; q++) assert.ok(Object.is(cn[i]![q], cr[i]![q]) || (Number.isNaN(cn[i]![q]!) && Number.isNaN(cr[i]![q]!)), `C past row ${m} (${mode})`);
      });
    }
  }
  });
});

test('gemmBf16 in the training layouts at training sizes (m in the hundreds, k up to 2 KC blocks)', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  bothBf16Paths((mode) => {
  const r = rng(13);
  // Fprop y = x W^T, Dgrad dx = dy W, Wgrad dW = dy^T xb (xb the saved bf16 X)
  for (const [what, ta, tb, m, n, k] of [['fprop', false, true, 300, 96, 256], ['dgrad', false, false, 300, 256, 96], ['wgrad', true, false, 96, 256, 800], ['wgrad, many outputs (A packed in several chunks per row)', true, false, 300, 64, 130]] as const) {
    const lda = ta ? m : k, ldb = tb ? k : n;
    const a = randData(r, (ta ? k : m) * lda);
    const b = bits(r, (tb ? n : k) * ldb);
    const cn = new Float32Array(m * n);
    const cr = new Float32Array(m * n);
    nat.gemmBf16(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, cn, n);
    ref.gemmBf16(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, cr, n);
    checkGemm(`${what} (${mode})`, ta, tb, m, n, k, a, lda, b, ldb, 0, cn, cn, cr, n);
  }
  });
});
