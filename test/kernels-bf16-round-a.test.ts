// gemmBf16RoundA (gemmBf16 of an untransposed A that also hands back A's bf16 bits; native
// dsv3_gemm_bf16x in native/src/isa/gemm_driver.c / gemm_pack.c, which write the bits from the
// pass that rounds A for the GEMM: the packing, or the rounding pre-pass for narrow C) against
// the TypeScript reference, on every ISA copy this CPU runs (scalar, AVX2, AVX-512), 1 and 2
// threads (with work stealing forced), with and without VDPBF16PS (there A is rounded first, then
// gemmBf16Ab) and with the pre-pass on and off: GEMV sizes (m <= 16), narrow C (pre-pass), wide C
// (packing), k tails, lda > k, A values at rounding ties, NaN, infinities and subnormals, beta 0
// over NaN and beta 1, alpha 0 and n = 0 (the bits are still written). aBits must equal the
// reference bits (= bf16Round) exactly, and C must be bit-identical to the native gemmBf16 of the
// same A and to the native gemmBf16Ab of the reference bits (the same kernels and order), and
// within float32 summation-order tolerance of the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceKernels as ref } from '../src/engine/reference/index.js';
import { loadNativeKernels, nativeAddon } from '../src/engine/native.js';
import { requireNative } from './helpers/backends.js';
import { randData, rng, type Rng } from './helpers/random.js';

function eachPath(fn: (label: string) => void): void {
  const a = nativeAddon()!;
  const { isa, threads } = a.info();
  const steal0 = process.env.DSV3_GEMM_STEAL_TEST;
  const dp0 = a['gemmAllowDpbf16'](true) as boolean;
  const pre0 = a['gemmBf16RoundPrepass'](true) as boolean;
  try {
    for (const i of ['scalar', 'avx2', 'avx512'] as const) {
      if (!a.setIsa(i)) continue;
      for (const dp of i === 'avx512' ? [true, false] : [true]) {
        a['gemmAllowDpbf16'](dp);
        for (const pre of [true, false]) {
          a['gemmBf16RoundPrepass'](pre);
          for (const [th, steal] of [[1, '0'], [2, '0'], [2, '1']] as const) {
            a.setThreads(th);
            process.env.DSV3_GEMM_STEAL_TEST = steal;
            fn(`${i}${dp ? '' : ' (widening)'}${pre ? '' : ' (no pre-pass)'}/${th}t${steal === '1' ? ' steal' : ''}`);
          }
        }
      }
    }
  } finally {
    if (steal0 === undefined) delete process.env.DSV3_GEMM_STEAL_TEST;
    else process.env.DSV3_GEMM_STEAL_TEST = steal0;
    a['gemmAllowDpbf16'](dp0);
    a['gemmBf16RoundPrepass'](pre0);
    a.setIsa(isa as 'scalar' | 'avx2' | 'avx512');
    a.setThreads(threads);
  }
}

/** Random A with some awkward values: exact rounding ties, NaN, +-Infinity, subnormals, -0. */
function awkwardA(r: Rng, n: number): Float32Array {
  const x = randData(r, n);
  const u = new Uint32Array(x.buffer);
  for (let i = 0; i < n; i += 7) {
    const kind = Math.floor(r() * 6);
    if (kind === 0) u[i] = (u[i]! & 0xffff0000) | 0x8000; // a tie: round to even
    else if (kind === 1) u[i] = 0x7fc00001 | (r() < 0.5 ? 0x80000000 : 0); // NaN
    else if (kind === 2) x[i] = r() < 0.5 ? Infinity : -Infinity;
    else if (kind === 3) u[i] = 0x00012345; // subnormal
    else if (kind === 4) x[i] = -0;
    else u[i] = (u[i]! & 0xffff0000) | 0x7fff; // just below a tie
  }
  return x;
}

// [m, n, k, lda (0: k)]
const SHAPES: [number, number, number, number][] = [
  [1, 37, 300, 0], [13, 45, 29, 0], [16, 64, 64, 0], [17, 40, 33, 0], [300, 96, 256, 0], [64, 256, 801, 0], [130, 40, 17, 0],
  [37, 200, 65, 0], [48, 300, 100, 0], [50, 64, 300, 2048], [700, 128, 96, 0], [290, 150, 260, 270],
];

test('gemmBf16RoundA: bits equal bf16Round, C bit-identical to native gemmBf16 / gemmBf16Ab and close to the reference', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  const r = rng(51);
  let checks = 0;
  for (const [m, n, k, ld0] of SHAPES) {
    const lda = ld0 || k;
    for (const tb of [true, false]) {
      for (const [alpha, beta] of [[1, 0], [0.75, 1], [0, 1]] as const) {
        const a = awkwardA(r, (m - 1) * lda + k);
        const finite = a.map((v) => (Number.isFinite(v) ? v : 0.5)); // C checks on finite A (NaN / Inf make the sums NaN)
        const ldb = tb ? k : n;
        const bits = new Uint16Array(tb ? n * k : k * n);
        ref.bf16Round(randData(r, bits.length), bits, bits.length);
        const ldc = n + 3;
        const c0 = Float32Array.from({ length: m * ldc }, (_, i) => (beta === 0 ? NaN : Math.sin(i)));
        const wantBits = new Uint16Array(m * k).fill(0xabcd);
        const exp = c0.slice();
        ref.gemmBf16RoundA(false, tb, m, n, k, alpha, finite, lda, bits, ldb, beta, exp, ldc, wantBits);
        const wantBitsAwk = new Uint16Array(m * k);
        for (let i = 0; i < m; i++) ref.bf16Round(a.subarray(i * lda, i * lda + k), wantBitsAwk.subarray(i * k), k);
        eachPath((label) => {
          const what = `[${m},${n},${k}] lda ${lda} tb ${tb} alpha ${alpha} beta ${beta} ${label}`;
          // awkward A: the bits
          const gotBits = new Uint16Array(m * k).fill(0xabcd);
          const junk = c0.slice();
          nat.gemmBf16RoundA(false, tb, m, n, k, alpha, a, lda, bits, ldb, beta, junk, ldc, gotBits);
          for (let i = 0; i < gotBits.length; i++) if (gotBits[i] !== wantBitsAwk[i]) assert.fail(`${what}: aBits[${i}] = ${gotBits[i]}, bf16Round ${wantBitsAwk[i]}`);
          // finite A: C
          const got = c0.slice();
          const gb = new Uint16Array(m * k);
          nat.gemmBf16RoundA(false, tb, m, n, k, alpha, finite, lda, bits, ldb, beta, got, ldc, gb);
          for (let i = 0; i < gb.length; i++) if (gb[i] !== wantBits[i]) assert.fail(`${what}: finite aBits[${i}]`);
          const viaBf16 = c0.slice();
          nat.gemmBf16(false, tb, m, n, k, alpha, finite, lda, bits, ldb, beta, viaBf16, ldc);
          const viaAb = c0.slice();
          nat.gemmBf16Ab(false, tb, m, n, k, alpha, wantBits, k, bits, ldb, beta, viaAb, ldc);
          for (let o = 0; o < got.length; o++) {
            if (!Object.is(got[o], viaBf16[o])) assert.fail(`${what}: C[${o}] = ${got[o]}, native gemmBf16 ${viaBf16[o]}`);
            if (!Object.is(got[o], viaAb[o])) assert.fail(`${what}: C[${o}] = ${got[o]}, native gemmBf16Ab ${viaAb[o]}`);
            const tol = 3e-7 * (k + 4) * (Math.abs(alpha) * k * 4 + Math.abs(beta) + 1e-30);
            if (Number.isNaN(exp[o]!) ? !Number.isNaN(got[o]!) : !(Math.abs(got[o]! - exp[o]!) <= tol)) assert.fail(`${what}: C[${o}] = ${got[o]}, reference ${exp[o]}`);
          }
          checks++;
        });
      }
    }
  }
  assert.ok(checks > 0);
});

test('gemmBf16RoundA: bad arguments are errors naming the argument; n = 0 and alpha = 0 still write the bits', (t) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()!;
  const x = Float32Array.of(1.00390625, -3, 0.1, 7);
  const b = new Uint16Array(4);
  const c = new Float32Array(4);
  assert.throws(() => a['gemmBf16RoundA']!(true, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2, new Uint16Array(4)), /transA/);
  assert.throws(() => a['gemmBf16RoundA']!(false, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2, new Uint16Array(3)), /aBits/);
  assert.throws(() => a['gemmBf16RoundA']!(false, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2, new Float32Array(4)), /aBits/);
  assert.throws(() => a['gemmBf16RoundA']!(false, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2), /arguments/);
  assert.throws(() => a['gemmBf16RoundA']!(false, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2, new Uint16Array(x.buffer, 0, 4)), /overlap/);
  assert.throws(() => ref.gemmBf16RoundA(true, true, 2, 2, 2, 1, x, 2, b, 2, 0, c, 2, new Uint16Array(4)), /transA/);
  const want = new Uint16Array(4);
  ref.bf16Round(x, want, 4);
  for (const [n, alpha] of [[0, 1], [2, 0]] as const) {
    const bits = new Uint16Array(4);
    a['gemmBf16RoundA']!(false, true, 2, n, 2, alpha, x, 2, b, 2, 1, c, Math.max(n, 1), bits);
    assert.deepEqual(Array.from(bits), Array.from(want), `n ${n} alpha ${alpha}`);
  }
});
