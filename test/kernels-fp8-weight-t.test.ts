// Kernels.linearFp8T (native/src/isa/fp8_weight_gemv_t.c): y = x W with an FP8 block-scaled W
// [k, n] used untransposed (MLA's absorbed W^UK on an FP8 kv_b_proj, issue 12), against the
// pure-TypeScript reference on every ISA this CPU has and 1 and 2 threads:
//   - one-hot x rows give the dequantised weights float32(e4m3 * scale) bit for bit (every finite
//     code, subnormals included); a NaN code makes its column NaN;
//   - random x agrees with the reference within float32 summation-order error,
//     |got - want| <= 2 k 2^-24 sum_p |x_p W_pc| per output, on edge shapes (n, k not multiples
//     of 128, several column blocks, m up to 9).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { linearFp8T } from '../src/engine/reference/fp8-weight.js';
import { E4M3_TABLE } from '../src/engine/fp8/codec.js';
import { rng } from './helpers/random.js';

const { A, opts, eachConfig } = nativeForTests();

function weight(seed: number, k: number, n: number, nan: boolean): { codes: Uint8Array; scales: Float32Array } {
  const r = rng(seed);
  const codes = new Uint8Array(k * n);
  for (let i = 0; i < codes.length; i++) {
    const c = Math.floor(r() * 256);
    codes[i] = !nan && (c & 0x7f) === 0x7f ? 0x7e : c;
  }
  const scales = new Float32Array(Math.ceil(k / 128) * Math.ceil(n / 128));
  for (let i = 0; i < scales.length; i++) scales[i] = Math.fround(2 ** Math.floor(r() * 24 - 20) * (0.5 + r()) / 448);
  return { codes, scales };
}

test('linearFp8T: one-hot rows give the dequantised weights bit for bit (NaN codes give NaN)', opts, () => {
  const k = 130;
  const n = 272; // 2 full column blocks + a partial one
  const { codes, scales } = weight(1, k, n, false);
  const nanCol = 200;
  codes[5 * n + nanCol] = 0xff; // a NaN code: its column is NaN for every x row (0 * NaN)
  const nb = Math.ceil(n / 128);
  eachConfig((label) => {
    for (const p of [0, 1, 127, 128, 129]) {
      const m = 3;
      const x = new Float32Array(m * k);
      x[p] = 1; // row 0 one-hot, rows 1-2 zero, row 2 one-hot at p too
      x[2 * k + p] = 1;
      const y = new Float32Array(m * n).fill(7);
      A.linearFp8T(m, n, k, x, codes, scales, y);
      for (let i = 0; i < m; i++) assert.ok(Number.isNaN(y[i * n + nanCol]!), `${label} p=${p} row ${i}: NaN expected`);
      for (const i of [0, 2])
        for (let c = 0; c < n; c++) {
          if (c === nanCol) continue;
          const want = Math.fround(E4M3_TABLE[codes[p * n + c]!]! * scales[((p / 128) | 0) * nb + ((c / 128) | 0)]!);
          assert.ok(y[i * n + c] === want, `${label} p=${p} i=${i} c=${c}: ${y[i * n + c]} vs ${want}`); // +0 == -0: a sum from +0
        }
      for (let c = 0; c < n; c++) if (c !== nanCol) assert.ok(y[n + c] === 0, `${label} zero row [${c}] = ${y[n + c]}`);
    }
  });
});

test('linearFp8T equals the reference within float32 summation order on edge shapes', opts, () => {
  const shapes: Array<[number, number, number]> = [[1, 1, 1], [1, 512, 128], [2, 512, 128], [3, 384, 256], [1, 130, 17], [9, 257, 300], [5, 128, 1]];
  let seed = 100;
  for (const [m, n, k] of shapes) {
    const { codes, scales } = weight(seed++, k, n, false);
    const r = rng(seed++);
    const x = Float32Array.from({ length: m * k }, () => (r() - 0.5) * 2 ** Math.floor(r() * 8 - 4));
    const want = new Float32Array(m * n);
    linearFp8T(m, n, k, x, codes, scales, want);
    const nb = Math.ceil(n / 128);
    const bound = new Float64Array(m * n);
    for (let i = 0; i < m; i++)
      for (let p = 0; p < k; p++)
        for (let c = 0; c < n; c++)
          bound[i * n + c] += Math.abs(x[i * k + p]! * E4M3_TABLE[codes[p * n + c]!]! * scales[((p / 128) | 0) * nb + ((c / 128) | 0)]!);
    eachConfig((label) => {
      const got = new Float32Array(m * n).fill(Number.NaN);
      A.linearFp8T(m, n, k, x, codes, scales, got);
      for (let q = 0; q < m * n; q++) {
        const tol = 2 * k * 2 ** -24 * bound[q]! + 1e-38;
        assert.ok(Math.abs(got[q]! - want[q]!) <= tol, `${label} m=${m} n=${n} k=${k} [${q}]: ${got[q]} vs ${want[q]} (tol ${tol})`);
      }
    });
  }
});

test('linearFp8T rejects short buffers naming the argument', opts, () => {
  const { codes, scales } = weight(5, 128, 128, false);
  assert.throws(() => A.linearFp8T(1, 128, 128, new Float32Array(127), codes, scales, new Float32Array(128)), /'x'/);
  assert.throws(() => A.linearFp8T(1, 128, 128, new Float32Array(128), codes.subarray(1), scales, new Float32Array(128)), /'codes'/);
  assert.throws(() => A.linearFp8T(1, 256, 128, new Float32Array(128), new Uint8Array(256 * 128), scales, new Float32Array(256)), /'scaleInv'/);
});
