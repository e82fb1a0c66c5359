// The small-m GEMM against narrow float32 weight rows (native/src/isa/gemm_gemv.c, nt_rows_narrow:
// m = 2..16, k <= 1024, W^T stored [n, k]; the batched decode and the speculative verification
// forward; AVX-512 with k % 32 = 0: the register-tiled gemm_rows_tile.c): every row of an m-row call equals, bit for bit, the same row computed alone (m = 1,
// the decode GEMV), on every ISA and with 1 and 2 threads, including alpha / beta and row strides.
// Values against the reference are checked by gemm.test.ts; this pins the equality of the paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';

const { A, opts, eachConfig } = nativeForTests();

let seed = 12345;
function rand(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return ((seed >>> 8) / 16777216) * 2 - 1;
}

test('gemm NT, narrow float32 weight rows: each of m = 2..16 rows equals its own one-row GEMV bit for bit', opts, () => {
  for (const [n, k, lda] of [[37, 256, 256], [129, 1024, 1030], [64, 48, 50], [5, 1000, 1000], [300, 17, 17], [38, 128, 130], [97, 768, 768], [2, 32, 32]] as const) {
    const w = Float32Array.from({ length: n * k }, rand);
    for (const m of [2, 3, 4, 5, 8, 13, 16]) {
      const x = Float32Array.from({ length: m * lda }, rand);
      const c0 = Float32Array.from({ length: m * n }, rand);
      for (const [alpha, beta] of [[1, 0], [0.5, 1]] as const) {
        eachConfig((label) => {
          const got = c0.slice();
          A.gemmF32(false, true, m, n, k, alpha, x, lda, w, k, beta, got, n);
          for (let i = 0; i < m; i++) {
            const one = c0.slice(i * n, (i + 1) * n);
            A.gemmF32(false, true, 1, n, k, alpha, x.subarray(i * lda), lda, w, k, beta, one, n);
            for (let j = 0; j < n; j++) {
              if (!Object.is(got[i * n + j], one[j])) {
                assert.fail(`${label} m ${m} n ${n} k ${k} alpha ${alpha} beta ${beta}: row ${i} col ${j}: ${got[i * n + j]} vs one row ${one[j]}`);
              }
            }
          }
        });
      }
    }
  }
});
