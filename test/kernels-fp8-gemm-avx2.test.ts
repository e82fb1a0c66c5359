// The AVX2 copy of the FP8 training GEMM (native/src/isa/fp8_train_gemm_f32.c: E4M3 codes decoded
// while packing, each 128-block's sum promoted in registers) does the same float32 arithmetic in
// the same order as the decode-then-multiply float32 path it replaced, which the AVX-512 build
// still runs without VDPBF16PS (fp8GemmAllowDp(false)): per block an FMA chain over k from +0,
// then acc + P * (sA * sB). So on ANY codes (block sums not exact in float32) the two give the
// same bits, on every operand layout pair, edge shapes (k not a multiple of 128, more than one k
// slice, m and n not multiples of the 6 x 16 tile), beta 0 and 1, 1 and 2 threads. The reference
// comparisons (bit-exact on exact block sums, tolerance otherwise) run on every ISA in
// kernels-fp8-gemm.test.ts. Needs a CPU with AVX-512 to have the other path; skipped elsewhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { fp8GemmScaleCount } from '../src/engine/reference/fp8-gemm.js';
import { rng } from './helpers/random.js';

const { A, opts } = nativeForTests();

function operand(seed: number, rows: number, k: number, layout: number): { codes: Uint8Array; scales: Float32Array } {
  const r = rng(seed);
  const codes = new Uint8Array(rows * k);
  for (let i = 0; i < codes.length; i++) {
    const c = Math.floor(r() * 256);
    codes[i] = (c & 0x7f) === 0x7f ? 0x7e : c; // every finite code, subnormals included
  }
  const scales = new Float32Array(fp8GemmScaleCount(layout, rows, k));
  for (let i = 0; i < scales.length; i++) scales[i] = Math.fround(2 ** Math.floor(r() * 24 - 20) * (0.5 + r()) / 448);
  return { codes, scales };
}

const SHAPES: Array<[number, number, number]> = [
  [1, 1, 1], [7, 17, 9], [6, 16, 128], [13, 33, 255], [37, 70, 257], [100, 65, 300], [29, 97, 513], [300, 40, 200], [5, 300, 384], [290, 20, 130],
];

test('AVX2 fp8Gemm equals the float32 decode-then-multiply path bit for bit on arbitrary codes', opts, () => {
  const { isa, threads } = A.info();
  if (!A.setIsa('avx512')) return; // no second path on this CPU
  const prevDp = A.fp8GemmAllowDp(false) as boolean;
  try {
    let seed = 7000;
    let checked = 0;
    for (const [m, n, k] of SHAPES) {
      for (let la = 0; la < 4; la++) for (let lb = 0; lb < 4; lb++) {
        const a = operand(seed++, m, k, la);
        const b = operand(seed++, n, k, lb);
        for (const beta of [0, 1] as const) {
          const r = rng(seed++);
          const c0 = Float32Array.from({ length: m * n }, () => (beta ? r() - 0.5 : NaN));
          A.setIsa('avx512');
          A.setThreads(1);
          const want = c0.slice();
          A.fp8Gemm(m, n, k, a.codes, a.scales, la, b.codes, b.scales, lb, beta, want, n);
          assert.ok(A.setIsa('avx2'));
          for (const th of [1, 2]) {
            A.setThreads(th);
            const got = c0.slice();
            A.fp8Gemm(m, n, k, a.codes, a.scales, la, b.codes, b.scales, lb, beta, got, n);
            for (let i = 0; i < want.length; i++) {
              if (!Object.is(got[i], want[i])) assert.fail(`[${m},${n},${k}] layouts ${la}/${lb} beta ${beta} ${th}t: C[${i}] = ${got[i]}, float32 path ${want[i]}`);
            }
            checked++;
          }
        }
      }
    }
    assert.equal(checked, SHAPES.length * 16 * 2 * 2);
  } finally {
    A.fp8GemmAllowDp(prevDp);
    A.setIsa(isa as 'scalar' | 'avx2' | 'avx512');
    A.setThreads(threads);
  }
});
