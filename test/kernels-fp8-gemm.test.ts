// The block-scaled FP8 training GEMM (Kernels.fp8Gemm; paper §3.3.2, N_C = 128 promotion): the
// native kernel (every ISA this CPU has, 1 and 2 threads; on AVX-512 both the VDPBF16PS path and
// the float32 path) against the TypeScript reference (exact block sums), on every operand layout,
// edge shapes (k not a multiple of 128, m and n not multiples of the micro-tile, more than one
// k slice per packing), beta 0 (C full of NaN, never read) and 1:
//   - on codes whose block sums are exact in float32 the results are BIT-identical (the same
//     promotion order, one rounding per operation, the right scale of every (row, block));
//   - on arbitrary codes they differ by float32 summation within a block only: |d| <= 8e-6 *
//     sum_b |sA sB| sum_k |a b| per element (127 float32 additions of exact products);
// and the reference itself is the exact oracle (test/helpers/fp8-gemm-oracle.ts) on the
// fp8-linear fixture's Fprop, Dgrad and Wgrad operands, bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import { fp8Gemm as refGemm, fp8GemmScaleCount } from '../src/engine/reference/fp8-gemm.js';
import { E4M3_TABLE } from '../src/engine/fp8/codec.js';
import { rng } from './helpers/random.js';
import { dgradOperands, fp8GemmRef, fpropOperands, transpose, wgradOperands, type Fp8GemmOperand } from './helpers/fp8-gemm-oracle.js';
import { fixturePath, readTensors } from './helpers/fixtures.js';

const { A, opts, eachConfig } = nativeForTests();

interface Op { codes: Uint8Array; scales: Float32Array; layout: number }

/** Random operand [rows, k] in `layout`: codes from `pick`, scales like amax / 448 over 2^-20..2^4. */
function operand(seed: number, rows: number, k: number, layout: number, pick: (r: () => number) => number): Op {
  const r = rng(seed);
  const codes = new Uint8Array(rows * k);
  for (let i = 0; i < codes.length; i++) codes[i] = pick(r);
  const scales = new Float32Array(fp8GemmScaleCount(layout, rows, k));
  for (let i = 0; i < scales.length; i++) scales[i] = Math.fround(2 ** Math.floor(r() * 24 - 20) * (0.5 + r()) / 448);
  return { codes, scales, layout };
}
/** Any finite code (no NaN codes 0x7F / 0xFF). */
const anyCode = (r: () => number): number => { const c = Math.floor(r() * 256); return (c & 0x7f) === 0x7f ? 0 : c; };
/** Codes of magnitude 1 .. 3.75 (exponent fields 7, 8) and zero: a block sum of 128 products is exact in float32. */
const smallCode = (r: () => number): number => r() < 0.1 ? 0 : ((r() < 0.5 ? 0x80 : 0) | (0x38 + Math.floor(r() * 16)));

function magnitude(m: number, n: number, k: number, a: Op, b: Op): Float64Array {
  const absA = { ...a, codes: a.codes.map((c) => c & 0x7f) };
  const absB = { ...b, codes: b.codes.map((c) => c & 0x7f) };
  const out = new Float32Array(m * n);
  refGemm(m, n, k, absA.codes, absA.scales.map(Math.abs), a.layout, absB.codes, absB.scales.map(Math.abs), b.layout, 0, out, n);
  return Float64Array.from(out);
}

const SHAPES: Array<[number, number, number]> = [
  [1, 1, 1], [3, 5, 7], [13, 33, 128], [12, 32, 256], [37, 70, 129], [100, 65, 300], [29, 97, 513], [300, 40, 200], [5, 300, 384],
];

function runNative(m: number, n: number, k: number, a: Op, b: Op, beta: 0 | 1, c0: Float32Array): Float32Array {
  const c = c0.slice();
  A.fp8Gemm(m, n, k, a.codes, a.scales, a.layout, b.codes, b.scales, b.layout, beta, c, n);
  return c;
}

function eachPath(fn: (label: string) => void): void {
  eachConfig((cfg) => {
    if (A.info().isa !== 'avx512') return fn(cfg);
    const prev = A.fp8GemmAllowDp(true) as boolean;
    try {
      fn(`${cfg}${A.info().avx512bf16 ? '/vdpbf16ps' : ''}`);
      A.fp8GemmAllowDp(false);
      fn(`${cfg}/float32`);
    } finally {
      A.fp8GemmAllowDp(prev);
    }
  });
}

test('native fp8Gemm is bit-identical to the reference where block sums are exact (every layout, beta 0 / 1)', opts, () => {
  let seed = 1;
  for (const [m, n, k] of SHAPES) {
    for (let la = 0; la < 4; la++) for (let lb = 0; lb < 4; lb++) {
      if ((la + lb + m) % 3 !== 0 && k !== 300) continue; // a spread of layout pairs per shape, all of them at k = 300
      const a = operand(seed++, m, k, la, smallCode);
      const b = operand(seed++, n, k, lb, smallCode);
      for (const beta of [0, 1] as const) {
        const r = rng(seed++);
        const c0 = Float32Array.from({ length: m * n }, () => (beta ? r() - 0.5 : NaN));
        const want = c0.slice();
        refGemm(m, n, k, a.codes, a.scales, la, b.codes, b.scales, lb, beta, want, n);
        eachPath((cfg) => {
          const got = runNative(m, n, k, a, b, beta, c0);
          for (let i = 0; i < want.length; i++) {
            if (!Object.is(got[i]! + 0, want[i]! + 0)) assert.fail(`[${m},${n},${k}] layouts ${la}/${lb} beta ${beta} ${cfg}: C[${i}] = ${got[i]}, expected ${want[i]}`);
          }
        });
      }
    }
  }
});

test('native fp8Gemm matches the reference to float32 summation-order tolerance on arbitrary codes', opts, () => {
  let seed = 100;
  for (const [m, n, k] of SHAPES) {
    for (const [la, lb] of [[0, 2], [0, 3], [1, 1], [0, 0], [1, 3], [3, 1]] as const) {
      const a = operand(seed++, m, k, la, anyCode);
      const b = operand(seed++, n, k, lb, anyCode);
      const mag = magnitude(m, n, k, a, b);
      const c0 = new Float32Array(m * n).fill(NaN);
      const want = c0.slice();
      refGemm(m, n, k, a.codes, a.scales, la, b.codes, b.scales, lb, 0, want, n);
      eachPath((cfg) => {
        const got = runNative(m, n, k, a, b, 0, c0);
        for (let i = 0; i < want.length; i++) {
          const d = Math.abs(got[i]! - want[i]!);
          if (!(d <= 8e-6 * mag[i]!)) assert.fail(`[${m},${n},${k}] layouts ${la}/${lb} ${cfg}: C[${i}] = ${got[i]}, expected ${want[i]} (magnitude ${mag[i]})`);
        }
      });
    }
  }
});

test('native fp8Gemm: NaN codes give NaN, k = 0 gives +0 / leaves C, bad arguments throw', opts, () => {
  const a = operand(7, 3, 130, 0, smallCode);
  const b = operand(8, 4, 130, 2, smallCode);
  a.codes[1 * 130 + 129] = 0x7f;
  eachPath((cfg) => {
    const c = runNative(3, 4, 130, a, b, 0, new Float32Array(12));
    for (let j = 0; j < 4; j++) {
      assert.ok(Number.isNaN(c[4 + j]!), `${cfg}: NaN row`);
      assert.ok(Number.isFinite(c[j]!), `${cfg}: finite row`);
    }
    const z = Float32Array.of(NaN, NaN, 5, 5);
    A.fp8Gemm(2, 1, 0, new Uint8Array(0), new Float32Array(0), 0, new Uint8Array(0), new Float32Array(0), 0, 0, z.subarray(0, 2), 1);
    A.fp8Gemm(2, 1, 0, new Uint8Array(0), new Float32Array(0), 0, new Uint8Array(0), new Float32Array(0), 0, 1, z.subarray(2), 1);
    assert.deepEqual(Array.from(z), [0, 0, 5, 5]);
  });
  const c = new Float32Array(12);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes, a.scales, 4, b.codes, b.scales, 2, 0, c, 4), /aLayout/);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes.subarray(1), a.scales, 0, b.codes, b.scales, 2, 0, c, 4), /aCodes/);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes, a.scales, 0, b.codes, b.scales.subarray(1), 2, 0, c, 4), /bScales/);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes, a.scales, 0, b.codes, b.scales, 2, 0.5, c, 4), /beta/);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes, a.scales, 0, b.codes, b.scales, 2, 0, c, 3), /ldc/);
  assert.throws(() => A.fp8Gemm(3, 4, 130, a.codes, a.scales, 0, b.codes, b.scales, 2, 0, c.subarray(1), 4), /'c'/);
  assert.throws(() => refGemm(3, 4, 130, a.codes, a.scales, 0, b.codes, b.scales.subarray(1), 2, 0, c, 4), /B has/);
});

test('native fp8GemmBatch equals the separate fp8Gemm calls bit for bit (expert-like batches, overlapping C in order)', opts, () => {
  // per-expert problems as the grouped experts issue them: varying m (Fprop / Dgrad) or k (Wgrad)
  const cases: Array<{ la: number; lb: number; dims: Array<[number, number, number]> }> = [
    { la: 0, lb: 2, dims: [[37, 64, 256], [0, 64, 256], [130, 64, 256], [5, 64, 256], [300, 64, 256]] },
    { la: 0, lb: 3, dims: [[20, 96, 129], [77, 96, 129], [1, 96, 129]] },
    { la: 1, lb: 1, dims: [[40, 48, 300], [40, 48, 0], [40, 48, 7], [40, 48, 513]] },
  ];
  let seed = 500;
  for (const { la, lb, dims } of cases) {
    const n = dims[0]![1];
    const as = dims.map(([m, , k]) => operand(seed++, m, k, la, anyCode));
    const bs = dims.map(([, nn, k]) => operand(seed++, nn, k, lb, anyCode));
    const flat = Int32Array.from(dims.flat());
    for (const beta of [0, 1] as const) {
      const r = rng(seed++);
      const c0 = dims.map(([m]) => Float32Array.from({ length: m * n }, () => (beta ? r() - 0.5 : NaN)));
      eachPath((cfg) => {
        const want = c0.map((c, i) => runNative(dims[i]![0], n, dims[i]![2], as[i]!, bs[i]!, beta, c));
        const got = c0.map((c) => c.slice());
        A.fp8GemmBatch(flat, as.map((o) => o.codes), as.map((o) => o.scales), la, bs.map((o) => o.codes), bs.map((o) => o.scales), lb, beta, got, n);
        for (let i = 0; i < dims.length; i++) {
          for (let q = 0; q < want[i]!.length; q++) {
            if (!Object.is(got[i]![q]! + 0, want[i]![q]! + 0)) assert.fail(`problem ${i} ${JSON.stringify(dims[i])} layouts ${la}/${lb} beta ${beta} ${cfg}: C[${q}] = ${got[i]![q]}, expected ${want[i]![q]}`);
          }
        }
      });
    }
  }
  // overlapping outputs run in order: C = A0 B0^T, then C += A1 B1^T (beta 1 for both here)
  const a0 = operand(901, 30, 200, 0, smallCode), a1 = operand(902, 30, 200, 0, smallCode);
  const b0 = operand(903, 40, 200, 2, smallCode), b1 = operand(904, 40, 200, 2, smallCode);
  const start = Float32Array.from({ length: 1200 }, (_, i) => (i % 7) - 3);
  const want = start.slice();
  refGemm(30, 40, 200, a0.codes, a0.scales, 0, b0.codes, b0.scales, 2, 1, want, 40);
  refGemm(30, 40, 200, a1.codes, a1.scales, 0, b1.codes, b1.scales, 2, 1, want, 40);
  eachPath((cfg) => {
    const c = start.slice();
    A.fp8GemmBatch(Int32Array.of(30, 40, 200, 30, 40, 200), [a0.codes, a1.codes], [a0.scales, a1.scales], 0, [b0.codes, b1.codes], [b0.scales, b1.scales], 2, 1, [c, c], 40);
    for (let i = 0; i < c.length; i++) if (!Object.is(c[i]! + 0, want[i]! + 0)) assert.fail(`overlapping ${cfg}: C[${i}] = ${c[i]}, expected ${want[i]}`);
  });
  const c = new Float32Array(1200);
  assert.throws(() => A.fp8GemmBatch(Int32Array.of(30, 40, 200), [a0.codes], [a0.scales], 0, [b0.codes], [b0.scales.subarray(1)], 2, 0, [c], 40), /bScales\[0\]/);
  assert.throws(() => A.fp8GemmBatch(Int32Array.of(30, 40, 200, 30, 40, 200), [a0.codes], [a0.scales], 0, [b0.codes], [b0.scales], 2, 0, [c], 40), /one array per problem/);
  assert.throws(() => A.fp8GemmBatch(Int32Array.of(30, 40, 200), [a0.codes], [a0.scales], 0, [b0.codes], [b0.scales], 2, 0, [c], 39), /ldc/);
  assert.throws(() => A.fp8GemmBatch(Int32Array.of(30, 40), [a0.codes], [a0.scales], 0, [b0.codes], [b0.scales], 2, 0, [c], 40), /triples/);
});

test('reference fp8Gemm is the exact oracle on the fp8-linear fixture operands (Fprop, Dgrad, Wgrad), bit for bit', () => {
  const G = readTensors(fixturePath('fp8-linear/gemm.safetensors'));
  const f32 = (name: string): Float32Array => G[name]!.contiguous().f32();
  const [M, K] = G.x!.shape as [number, number];
  const N = G.w!.shape[0]!;
  const check = (p: { a: Fp8GemmOperand; b: Fp8GemmOperand }, la: number, lb: number, aOp: Op, bOp: Op, name: string): void => {
    const want = fp8GemmRef(p.a, p.b);
    const got = new Float32Array(p.a.rows * p.b.rows);
    refGemm(p.a.rows, p.b.rows, p.a.inner, aOp.codes, aOp.scales, la, bOp.codes, bOp.scales, lb, 0, got, p.b.rows);
    assert.deepEqual(got, want, name);
    assert.deepEqual(got, f32(name), `${name} (fixture)`);
  };
  // Fprop: X [M, K] tiles (layout 0), W [N, K] blocks (layout 2)
  const fp = fpropOperands(f32('x'), f32('w'), M, K, N);
  check(fp, 0, 2, { codes: fp.a.codes, scales: fp.a.scales, layout: 0 }, { codes: fp.b.codes, scales: fp.b.scales, layout: 2 }, 'fprop.y');
  // Dgrad: dY tiles (layout 0); B = W^T from the stored W [N, K] codes and block scales (layout 3)
  const dg = dgradOperands(f32('dy'), f32('w'), M, K, N);
  check(dg, 0, 3, { codes: dg.a.codes, scales: dg.a.scales, layout: 0 }, { codes: fp.b.codes, scales: fp.b.scales, layout: 3 }, 'dgrad.dx');
  // Wgrad: dY^T and X^T as the stored dY [M, N] / X [M, K] codes with 128x1 tile scales (layout 1)
  const wg = wgradOperands(f32('dy'), f32('x'), M, K, N, false);
  const colsOp = (o: Fp8GemmOperand, rows: number, cols: number): Op => ({ codes: transpose(o.codes, cols, rows), scales: transpose(o.scales, cols, Math.ceil(rows / 128)), layout: 1 });
  check(wg, 1, 1, colsOp(wg.a, M, N), colsOp(wg.b, M, K), 'wgrad.dw');
});
