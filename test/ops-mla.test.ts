// MLA's fused pieces: ropeTail (rotate the last dr channels, copy the rest) and mlaAttention
// (per-head keys [k^C ; shared k^R] assembled inside, values read in place): forward and
// gradients against the op-by-op composition (slice, ropeInterleaved, cat, expand, attention),
// finite differences, native == reference (also of the copyStrided / ropeRows kernels).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withBackend } from '../src/engine/backend.js';
import { loadNativeKernels } from '../src/engine/native.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { requireNative } from './helpers/backends.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { randData, randTensor, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

const r = rng(17);

function tables(T: number, half: number): { cos: Tensor; sin: Tensor } {
  const c = new Float32Array(T * half);
  const s = new Float32Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = t * Math.pow(10000, -i / half);
      c[t * half + i] = Math.cos(a);
      s[t * half + i] = Math.sin(a);
    }
  }
  return { cos: Tensor.fromF32(c, [T, half]), sin: Tensor.fromF32(s, [T, half]) };
}

/** Output and input gradients of f on parameter copies of xs, for output gradient R. */
function grads(xs: Tensor[], f: (...p: Tensor[]) => Tensor, R: Float32Array): Float32Array[] {
  const ps = xs.map((t) => Tensor.param(t.toF32Array(), t.shape));
  const y = f(...ps);
  backward(y, Tensor.fromF32(R, y.shape));
  return [y.toF32Array(), ...ps.map((p) => p.grad?.toF32Array() ?? new Float32Array(p.size))];
}

test('ropeTail equals slice + ropeInterleaved + cat, with gradients', () => {
  const [B, T, H, dn, dr] = [2, 5, 3, 4, 6];
  const x = randTensor(r, [B, T, H, dn + dr]);
  const { cos, sin } = tables(T, dr / 2);
  const R = randData(r, x.size);
  const fused = grads([x], (t) => ops.ropeTail(t, cos, sin, dr), R);
  const ref = grads([x], (t) => ops.cat([t.slice(3, 0, dn), ops.ropeInterleaved(t.slice(3, dn, dn + dr), cos, sin)], 3), R);
  fused.forEach((v, i) => assertClose(v, ref[i]!, 0, `ropeTail ${i}`));
  gradcheck((t) => ops.ropeTail(t, cos, sin, dr), [randTensor(r, [1, T, 2, 8])], { name: 'ropeTail' });
  // dr = d (everything rotated) and a transposed (non-contiguous) input
  const y = randTensor(r, [T, 2, dr]).transpose(0, 1);
  assertClose(ops.ropeTail(y, cos, sin, dr), ops.ropeInterleaved(y, cos, sin), 0, 'dr = d');
  assert.throws(() => ops.ropeTail(x, cos, sin, 5), /rotary dim 5 must be even/);
  assert.throws(() => ops.ropeTail(x, tables(T + 1, 3).cos, sin, dr), /cos \[6, 3\] must be \[5, 3\]/);
});

/** The unfused naive MLA attention: keys by cat/expand, values by slice. */
function composed(q: Tensor, kvb: Tensor, kPe: Tensor, dn: number, scale: number, causalOffset?: number): Tensor {
  const [B, S, H, W] = kvb.shape as [number, number, number, number];
  const dr = kPe.shape[3]!;
  const k = ops.cat([kvb.slice(3, 0, dn), kPe.expand([B, S, H, dr])], 3);
  return ops.attention(q, k, kvb.slice(3, dn, W), causalOffset === undefined ? { scale } : { scale, causalOffset });
}

test('mlaAttention equals the composition (cat, expand, slice, attention), with gradients', () => {
  for (const [B, T, S, H, dn, dr, dv, off] of [[2, 7, 7, 3, 4, 2, 5, undefined], [1, 3, 9, 2, 6, 4, 3, 6], [2, 33, 33, 4, 8, 4, 8, undefined]] as const) {
    const q = randTensor(r, [B, T, H, dn + dr]);
    const kvb = randTensor(r, [B, S, H, dn + dv]);
    const kPe = randTensor(r, [B, S, 1, dr]);
    const R = randData(r, B * T * H * dv);
    const scale = 1 / Math.sqrt(dn + dr);
    const opts = off === undefined ? { scale } : { scale, causalOffset: off };
    const fused = grads([q, kvb, kPe], (a, b, c) => ops.mlaAttention(a, b, c, opts), R);
    const ref = grads([q, kvb, kPe], (a, b, c) => composed(a, b, c, dn, scale, off), R);
    ['out', 'dq', 'dkvb', 'dkPe'].forEach((n, i) => assertClose(fused[i]!, ref[i]!, 1e-6, `${n} (T ${T}, S ${S})`, 1e-7));
  }
  const q = randTensor(r, [1, 4, 2, 5]);
  const kvb = randTensor(r, [1, 4, 2, 6]);
  const kPe = randTensor(r, [1, 4, 2]); // [B, S, dr] is accepted too
  gradcheck((a, b, c) => ops.mlaAttention(a, b, c, { scale: 0.5 }), [q, kvb, kPe], { name: 'mlaAttention' });
  assert.throws(() => ops.mlaAttention(q, randTensor(r, [1, 4, 3, 6]), kPe, { scale: 1 }), /inconsistent shapes/);
});

test('mlaAttention: native == reference', (t) => {
  if (!requireNative(t)) return;
  const [B, T, H, dn, dr, dv] = [2, 70, 4, 16, 8, 16];
  const xs = [randTensor(r, [B, T, H, dn + dr]), randTensor(r, [B, T, H, dn + dv]), randTensor(r, [B, T, 1, dr])];
  const R = randData(r, B * T * H * dv);
  const f = () => grads(xs, (a, b, c) => ops.mlaAttention(a, b, c, { scale: 0.2 }), R);
  const a = withBackend('native', f);
  const b = withBackend('reference', f);
  a.forEach((v, i) => assertClose(v, b[i]!, 1e-5, `tensor ${i}`, 1e-6));
});

test('copyStrided and ropeRows kernels: native == reference', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  // [n0, n1, cols, ss0, ss1, ds0, ds1]: key assembly, broadcast source, head reduction, odd sizes
  const cases: [number, number, number, number, number, number, number][] = [
    [300, 8, 32, 8 * 64, 64, 8 * 48, 48], [300, 8, 16, 16, 0, 8 * 48, 48], [300, 8, 16, 8 * 48, 48, 16, 0], [7, 3, 5, 20, 6, 15, 5], [1, 1, 1, 0, 0, 0, 0],
  ];
  for (const [n0, n1, cols, ss0, ss1, ds0, ds1] of cases) {
    const src = randData(r, (n0 - 1) * ss0 + (n1 - 1) * ss1 + cols);
    const dlen = (n0 - 1) * ds0 + (n1 - 1) * ds1 + cols;
    for (const acc of [false, true]) {
      const init = randData(r, dlen + 3);
      const a = init.slice();
      const b = init.slice();
      nat.copyStrided(src, a, n0, n1, cols, ss0, ss1, ds0, ds1, acc);
      referenceKernels.copyStrided(src, b, n0, n1, cols, ss0, ss1, ds0, ds1, acc);
      assertClose(a, b, acc ? 1e-6 : 0, `copyStrided ${n0}x${n1}x${cols} acc ${acc}`, acc ? 1e-6 : 0);
    }
  }
  assert.throws(() => nat.copyStrided(new Float32Array(10), new Float32Array(10), 2, 2, 3, 5, 3, 5, 3, false), RangeError);
  for (const [rows, cols, start, dr, mid, T] of [[1000, 48, 32, 16, 8, 125], [64, 6, 0, 6, 1, 16], [10, 9, 3, 4, 2, 3]] as const) {
    const x = randData(r, rows * cols);
    const cs = randData(r, T * (dr / 2));
    const sn = randData(r, T * (dr / 2));
    for (const inv of [false, true]) {
      const a = new Float32Array(rows * cols);
      const b = new Float32Array(rows * cols);
      nat.ropeRows(x, a, rows, cols, start, dr, mid, T, cs, sn, inv);
      referenceKernels.ropeRows(x, b, rows, cols, start, dr, mid, T, cs, sn, inv);
      assertClose(a, b, 0, `ropeRows ${rows}x${cols} inverse ${inv}`);
      const c = x.slice();
      nat.ropeRows(c, c, rows, cols, start, dr, mid, T, cs, sn, inv); // in place
      assertClose(c, b, 0, 'ropeRows in place');
    }
  }
  assert.throws(() => nat.ropeRows(new Float32Array(8), new Float32Array(8), 2, 4, 2, 3, 1, 2, new Float32Array(4), new Float32Array(4), false), RangeError);
});
