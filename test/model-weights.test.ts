/** Linear weight formats: FP8 block-row GEMM equals float32 with the dequantised weight; bf16. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { dequantFp8Weight } from '../src/engine/fp8/checkpoint-weights.js';
import { linear, sum, mul } from '../src/engine/ops/index.js';
import { bf16Linear, denseRows, f32Linear, fp8Linear, linearBf16, linearBytes, linearFp8, weightRows, applyLinear } from '../src/model/weights.js';
import { randTensor, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

/** Random FP8 codes (no NaN codes) and block scales for a [out, in] weight. */
function randomFp8(out: number, inF: number, seed: number): { codes: Uint8Array; scaleInv: Float32Array } {
  const r = rng(seed);
  const codes = new Uint8Array(out * inF);
  for (let i = 0; i < codes.length; i++) {
    let c = Math.floor(r() * 256);
    if ((c & 0x7f) === 0x7f) c ^= 1;
    codes[i] = c;
  }
  const scaleInv = Float32Array.from({ length: Math.ceil(out / 128) * Math.ceil(inF / 128) }, () => Math.fround(1e-3 * (0.5 + r())));
  return { codes, scaleInv };
}

describe('FP8 linear (weight stays 1 byte/element)', () => {
  const N = 300; // three block rows, the last partial
  const K = 200; // two block columns, the last partial
  const { codes, scaleInv } = randomFp8(N, K, 7);
  const w = fp8Linear('test.weight', codes, scaleInv, N, K);
  const dense = Tensor.fromF32(dequantFp8Weight(codes, scaleInv, N, K), [N, K]);

  it('decodes exactly float32(e4m3(code) * scale_inv[block])', () => {
    assert.deepEqual(denseRows(w), dense.f32());
    assert.deepEqual(denseRows(w, 130, 260), dense.f32().slice(130 * K, 260 * K));
    assert.equal(linearBytes(w), N * K + scaleInv.length * 4);
  });

  for (const M of [1, 3, 37]) {
    it(`y = x W^T equals the float32 product with the dequantised weight (M = ${M})`, () => {
      // The FP8 kernel decodes inside its own (GEMV or packed) loop, so its float32 sums may be
      // ordered differently from the dense GEMM: equal up to rounding, row by row.
      const x = randTensor(rng(M), [M, K]);
      const got = linearFp8(x, w).f32();
      const want = linear(x, dense).f32();
      for (let i = 0; i < M; i++) {
        let d = 0;
        let m = 0;
        for (let j = 0; j < N; j++) {
          d = Math.max(d, Math.abs(got[i * N + j]! - want[i * N + j]!));
          m = Math.max(m, Math.abs(want[i * N + j]!));
        }
        assert.ok(d <= 1e-6 * m, `row ${i}: max |diff| ${d} vs max |y| ${m}`);
      }
    });
  }

  it('gradient w.r.t. the input matches the dense layer (weights frozen)', () => {
    const r = rng(3);
    const x1 = randTensor(r, [2, 5, K], 1, true);
    const x2 = Tensor.param(x1.f32().slice(), x1.shape);
    const g = randTensor(r, [2, 5, N]);
    backward(sum(mul(applyLinear(x1, w), g)));
    backward(sum(mul(linear(x2, dense), g)));
    const a = x1.grad!.f32();
    const b = x2.grad!.f32();
    let d = 0;
    let m = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i]! - b[i]!));
      m = Math.max(m, Math.abs(b[i]!));
    }
    assert.ok(d <= 1e-6 * m, `${d} vs max ${m}`);
  });

  it('rejects a scale_inv of the wrong block grid, naming the tensor', () => {
    assert.throws(() => fp8Linear('a.weight', codes, new Float32Array(4), N, K), /a\.weight_scale_inv: expected shape \[3, 2\]/);
  });
});

describe('bf16 and f32 linear weights', () => {
  it('bf16 bits go through gemmBf16 like linear on a bf16 tensor', () => {
    const r = rng(11);
    const wf = randTensor(r, [24, 40]);
    const bits = wf.to('bf16').raw('bf16');
    const x = randTensor(r, [3, 40]);
    const w = bf16Linear('b.weight', bits, 24, 40);
    assert.deepEqual(linearBf16(x, w).f32(), linear(x, new Tensor(bits, [24, 40], 'bf16')).f32());
    assert.equal(linearBytes(w), 24 * 40 * 2);
  });

  it('f32 weightRows is a differentiable view of the parameter', () => {
    const p = randTensor(rng(2), [6, 4], 1, true);
    const w = f32Linear('c.weight', p);
    backward(sum(weightRows(w, 2, 4)));
    const g = p.grad!.f32();
    for (let i = 0; i < 24; i++) assert.equal(g[i], i >= 8 && i < 16 ? 1 : 0);
  });
});
