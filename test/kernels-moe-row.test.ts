// One token's experts in one call (Kernels.moeRowBf16 / moeRowFp8, native/src/isa/moe_row.c):
//   - native against the separate native calls it replaces (gemmBf16 / linearFp8, siluMul,
//     down with alpha and beta 1, expert by expert): bit-identical, on 1 and 2 threads, every ISA
//     this CPU has, widths and D not multiples of 128 (partial FP8 blocks, GEMV tails), a zero
//     gate, one expert (the dense-MLP use);
//   - native against the pure-TypeScript reference (src/engine/reference/moe-row.ts): per output
//     |got - ref| <= 1e-5 * max|ref| (the FP8/bf16 linear tolerance of kernels-fp8-weight.test.ts);
//   - bad arguments: a RangeError naming the argument;
//   - the engine: a batch-1 decode session on bf16 and FP8 models gives the same logits, bit for
//     bit, with the fused call and with the separate calls (setMoeRowFused).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { nativeAddon, type NativeAddon } from '../src/engine/native.js';
import type { Kernels } from '../src/engine/kernels.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { encodeE4M3 } from '../src/engine/fp8/codec.js';
import { withBackend } from '../src/engine/backend.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { setMoeRowFused } from '../src/inference/moe-row.js';
import { DECODE_POOL_SPIN, useDecodePoolSpin } from '../src/inference/pool-spin.js';
import { randomModel } from '../src/inference/random-model.js';
import { loadModelConfig } from '../src/model/config.js';
import { requireNative } from './helpers/backends.js';
import { fixturePath } from './helpers/fixtures.js';
import { rng, randn, type Rng } from './helpers/random.js';

interface Experts {
  D: number;
  inters: Int32Array;
  alphas: Float32Array;
  bits: Uint16Array[];
  codes: Uint8Array[];
  scales: Float32Array[];
  x: Float32Array;
  h0: Float32Array;
}

function bf16Bits(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0]!;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

function makeExperts(r: Rng, D: number, widths: number[], alphas: number[]): Experts {
  const E = widths.length;
  const bits: Uint16Array[] = [];
  const codes: Uint8Array[] = [];
  const scales: Float32Array[] = [];
  for (let e = 0; e < E; e++) {
    for (const [rows, cols] of [[widths[e]!, D], [widths[e]!, D], [D, widths[e]!]] as const) {
      const sd = 1 / Math.sqrt(cols);
      bits.push(Uint16Array.from({ length: rows * cols }, () => bf16Bits(randn(r) * sd)));
      codes.push(Uint8Array.from({ length: rows * cols }, () => encodeE4M3(randn(r) * 100)));
      scales.push(Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => (sd / 100) * (0.5 + r())));
    }
  }
  return {
    D,
    inters: Int32Array.from(widths),
    alphas: Float32Array.from(alphas),
    bits,
    codes,
    scales,
    x: Float32Array.from({ length: D }, () => randn(r)),
    h0: Float32Array.from({ length: D }, () => randn(r)),
  };
}

const scratchLen = (c: Experts): number => 5 * c.inters.reduce((a, b) => a + b, 0) + 2 * c.D + 64;

/** The separate native calls the engine made before (ffn.ts expertAdd / mlpAdd), expert by expert. */
function separate(a: NativeAddon, c: Experts, fp8: boolean): Float32Array {
  const h = c.h0.slice();
  const D = c.D;
  for (let e = 0; e < c.inters.length; e++) {
    const I = c.inters[e]!;
    const g = new Float32Array(I), u = new Float32Array(I), act = new Float32Array(I);
    if (!fp8) {
      a.gemmBf16(false, true, 1, I, D, 1, c.x, D, c.bits[3 * e]!, D, 0, g, I);
      a.gemmBf16(false, true, 1, I, D, 1, c.x, D, c.bits[3 * e + 1]!, D, 0, u, I);
      a.siluMul(g, u, act, I);
      a.gemmBf16(false, true, 1, D, I, c.alphas[e]!, act, I, c.bits[3 * e + 2]!, I, 1, h, D);
    } else {
      a.linearFp8(1, I, D, c.x, c.codes[3 * e]!, c.scales[3 * e]!, 0, g);
      a.linearFp8(1, I, D, c.x, c.codes[3 * e + 1]!, c.scales[3 * e + 1]!, 0, u);
      a.siluMul(g, u, act, I);
      for (let j = 0; j < I; j++) act[j] = act[j]! * c.alphas[e]!;
      a.linearFp8(1, D, I, act, c.codes[3 * e + 2]!, c.scales[3 * e + 2]!, 1, h);
    }
  }
  return h;
}

function fused(k: Pick<Kernels, 'moeRowBf16' | 'moeRowFp8'>, c: Experts, fp8: boolean): Float32Array {
  const h = c.h0.slice();
  const scratch = new Float32Array(scratchLen(c)).fill(NaN);
  if (!fp8) k.moeRowBf16(c.D, c.inters, c.alphas, c.bits, c.x, h, scratch);
  else k.moeRowFp8(c.D, c.inters, c.alphas, c.codes, c.scales, c.x, h, scratch);
  return h;
}

function firstDiff(got: Float32Array, want: Float32Array): number {
  for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) return i;
  return -1;
}

const CASES: { D: number; widths: number[]; alphas: number[] }[] = [
  { D: 256, widths: [128, 384, 256], alphas: [0.5, 0.25, 1] },
  { D: 200, widths: [100, 300, 129], alphas: [0.7, 0, 1] }, // partial blocks; a zero gate
  { D: 512, widths: [640, 384, 1024], alphas: [0.3, 0.2, 1] }, // several 128-row tasks per expert and per output
  { D: 130, widths: [517], alphas: [1] }, // one expert: the dense MLP
];

function isas(a: NativeAddon): ('avx512' | 'avx2' | 'scalar')[] {
  const i = a.info();
  return [...(i.avx512 ? ['avx512' as const] : []), ...(i.avx2 ? ['avx2' as const] : []), 'scalar' as const];
}

test('moeRow native equals the separate native calls bit for bit (bf16, FP8; ISAs; 1 and 2 threads)', (t: TestContext) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()!;
  const r = rng(12);
  const cases = CASES.map((c) => makeExperts(r, c.D, c.widths, c.alphas));
  const isa0 = a.info().isa as 'avx512' | 'avx2' | 'scalar';
  const th0 = a.info().threads;
  try {
    for (const isa of isas(a)) {
      assert.ok(a.setIsa(isa));
      for (const threads of [1, 2]) {
        a.setThreads(threads);
        for (const c of cases) {
          for (const fp8 of [false, true]) {
            const want = separate(a, c, fp8);
            const got = fused(a as unknown as Kernels, c, fp8);
            const i = firstDiff(got, want);
            assert.equal(i, -1, `${isa} ${threads}T ${fp8 ? 'fp8' : 'bf16'} D=${c.D} widths=${[...c.inters]}: h[${i}] ${got[i]} vs ${want[i]}`);
          }
        }
      }
    }
  } finally {
    a.setIsa(isa0);
    a.setThreads(th0);
  }
});

test('moeRow native against the reference kernel (1e-5 of max|h|)', (t: TestContext) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()!;
  const r = rng(7);
  for (const cs of CASES) {
    const c = makeExperts(r, cs.D, cs.widths, cs.alphas);
    for (const fp8 of [false, true]) {
      const want = fused(referenceKernels, c, fp8);
      const got = fused(a as unknown as Kernels, c, fp8);
      let mx = 0;
      for (const v of want) mx = Math.max(mx, Math.abs(v));
      for (let i = 0; i < want.length; i++) {
        assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 * mx, `${fp8 ? 'fp8' : 'bf16'} D=${c.D}: h[${i}] ${got[i]} vs reference ${want[i]} (max ${mx})`);
      }
      // and the reference is the same composition as the separate reference calls: it changed h
      assert.ok(firstDiff(want, c.h0) !== -1);
    }
  }
});

test('moeRow rejects bad arguments with a RangeError naming them', (t: TestContext) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()!;
  const c = makeExperts(rng(3), 64, [32, 48], [0.5, 1]);
  const h = c.h0.slice();
  const sc = new Float32Array(scratchLen(c));
  assert.throws(() => a.moeRowBf16(c.D, c.inters, c.alphas, c.bits, c.x, h, sc.subarray(1)), (e: Error) => e instanceof RangeError && /'scratch'/.test(e.message));
  assert.throws(() => a.moeRowBf16(c.D, c.inters, c.alphas, c.bits.slice(0, 5), c.x, h, sc), (e: Error) => /weights\[5\]/.test(e.message));
  assert.throws(() => a.moeRowBf16(c.D, c.inters, c.alphas, [c.bits[0]!.subarray(1), ...c.bits.slice(1)], c.x, h, sc), (e: Error) => e instanceof RangeError && /weights\[0\]/.test(e.message));
  assert.throws(() => a.moeRowFp8(c.D, c.inters, c.alphas, c.codes, c.scales.map((s) => s.subarray(1)), c.x, h, sc), (e: Error) => e instanceof RangeError && /scales\[0\]/.test(e.message));
  assert.throws(() => a.moeRowBf16(c.D, new Int32Array([32, 0]), c.alphas, c.bits, c.x, h, sc), (e: Error) => e instanceof RangeError && /inters\[1\]/.test(e.message));
  assert.throws(() => a.moeRowBf16(c.D, new Int32Array(0), c.alphas, c.bits, c.x, h, sc), (e: Error) => e instanceof RangeError && /'inters'/.test(e.message));
  const big = new Float32Array(scratchLen(c) + 64);
  assert.throws(() => a.moeRowBf16(c.D, c.inters, c.alphas, c.bits, c.x, big.subarray(0, 64), big.subarray(32)), (e: Error) => e instanceof RangeError && /overlap/.test(e.message));
  assert.throws(() => referenceKernels.moeRowBf16(c.D, c.inters, c.alphas, c.bits, c.x, h, sc.subarray(1)), RangeError);
});

test('batch-1 decode: fused experts give the same logits as the separate calls (bf16, FP8)', (t: TestContext) => {
  if (!requireNative(t)) return;
  const cfg = loadModelConfig(fixturePath('tiny-dense-moe/config.json'));
  for (const storage of ['bf16', 'fp8'] as const) {
    const model = randomModel(cfg, 5, storage, { mtp: false });
    const run = (on: boolean): Float32Array[] => {
      const was = setMoeRowFused(on);
      try {
        return withBackend('native', () => {
          const s = new DecodeSession(model, { batch: 1, maxLen: 16, chunk: 4 });
          const out = [s.prefill(Int32Array.from([1, 5, 9]), 3).slice()];
          for (const id of [4, 8, 15, 16, 23]) out.push(s.step(Int32Array.from([id])).slice());
          return out;
        });
      } finally {
        setMoeRowFused(was);
      }
    };
    const want = run(false);
    const got = run(true);
    for (let s = 0; s < want.length; s++) {
      const i = firstDiff(got[s]!, want[s]!);
      assert.equal(i, -1, `${storage} step ${s}: logit ${i} ${got[s]![i]} vs ${want[s]![i]}`);
    }
  }
});

test('setPoolSpin sets the pool idle spin and returns the previous value; decoding shortens it', (t: TestContext) => {
  if (!requireNative(t)) return;
  const a = nativeAddon()!;
  useDecodePoolSpin();
  const prev = a.setPoolSpin(123) as number;
  if (!process.env.DSV3_POOL_SPIN) assert.equal(prev, DECODE_POOL_SPIN);
  assert.equal(a.setPoolSpin(-5), 123);
  assert.equal(a.setPoolSpin(prev), 0);
});
