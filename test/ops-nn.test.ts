// Fused network ops: softmax / logSoftmax, rmsNorm, swiglu, crossEntropy, ropeInterleaved and
// attention. Forward against float64 JS formulas, gradients against finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { randInts, randTensor, randUniform, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

const r = rng(11);

function refSoftmaxRows(d: ArrayLike<number>, cols: number, log: boolean): number[] {
  const out: number[] = [];
  for (let o = 0; o < d.length; o += cols) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, d[o + j]!);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(d[o + j]! - m);
    for (let j = 0; j < cols; j++) out.push(log ? d[o + j]! - m - Math.log(s) : Math.exp(d[o + j]! - m) / s);
  }
  return out;
}

test('softmax / logSoftmax: forward along any dim, gradients', () => {
  const x = randTensor(r, [2, 3, 5], 2);
  for (const log of [false, true]) {
    const f = log ? ops.logSoftmax : ops.softmax;
    assertClose(f(x), refSoftmaxRows(x.toF32Array(), 5, log), 1e-5, `${log ? 'log' : ''}softmax last`);
    const moved = refSoftmaxRows(x.transpose(1, 2).toF32Array(), 3, log);
    const y = f(x, 1);
    assert.deepEqual(y.shape, [2, 3, 5]);
    assertClose(y.transpose(1, 2), moved, 1e-5, `${log ? 'log' : ''}softmax dim 1`);
    gradcheck((t) => f(t), [x], { name: 'softmax last' });
    gradcheck((t) => f(t, 0), [x], { name: 'softmax dim 0' });
    gradcheck((t) => f(t.transpose(0, 2)), [x], { name: 'softmax of a view' });
  }
  assert.throws(() => ops.softmax(x, 3), /softmax: dim 3 is out of range/);
});

test('rmsNorm: forward (y = x / rms(x) * w) and gradients', () => {
  const x = randTensor(r, [2, 3, 8]);
  const w = randTensor(r, [8]);
  const eps = 1e-6;
  const xd = x.toF32Array();
  const wd = w.toF32Array();
  const ref: number[] = [];
  for (let o = 0; o < xd.length; o += 8) {
    let ss = 0;
    for (let j = 0; j < 8; j++) ss += xd[o + j]! ** 2;
    const rs = 1 / Math.sqrt(ss / 8 + eps);
    for (let j = 0; j < 8; j++) ref.push(xd[o + j]! * rs * wd[j]!);
  }
  assertClose(ops.rmsNorm(x, w, eps), ref, 1e-5, 'rmsNorm');
  gradcheck((a, b) => ops.rmsNorm(a, b, eps), [x, w], { name: 'rmsNorm' });
  gradcheck((a, b) => ops.rmsNorm(a.transpose(0, 1), b, 1e-3), [x, w], { name: 'rmsNorm strided' });
  assert.throws(() => ops.rmsNorm(x, randTensor(r, [7])), /rmsNorm: weight \[7\] does not match the last dim of x \[2, 3, 8\]/);
});

test('swiglu: forward silu(g) * u and gradients', () => {
  const g = randTensor(r, [3, 7], 2);
  const u = randTensor(r, [3, 7]);
  const gd = g.toF32Array();
  const ud = u.toF32Array();
  assertClose(ops.swiglu(g, u), Array.from(gd, (z, i) => (z / (1 + Math.exp(-z))) * ud[i]!), 1e-6, 'swiglu');
  gradcheck(ops.swiglu, [g, u], { name: 'swiglu' });
  gradcheck((a, b) => ops.swiglu(a.transpose(0, 1), b.transpose(0, 1)), [g, u], { name: 'swiglu strided' });
  assert.throws(() => ops.swiglu(g, randTensor(r, [7, 3])), /swiglu: gate \[3, 7\] and up \[7, 3\] must have the same shape/);
});

test('crossEntropy: reductions, ignored rows, gradients', () => {
  const N = 6;
  const V = 9;
  const logits = randTensor(r, [N, V], 2);
  const targets = Int32Array.from([3, -1, 0, 8, -100, 5]);
  const ls = refSoftmaxRows(logits.toF32Array(), V, true);
  const rows = Array.from(targets, (t, i) => (t < 0 ? 0 : -ls[i * V + t]!));
  const total = rows.reduce((a, b) => a + b, 0);
  assertClose(ops.crossEntropy(logits, targets, 'none'), rows, 1e-5, 'none');
  assertClose(ops.crossEntropy(logits, targets, 'sum'), [total], 1e-5, 'sum');
  assertClose(ops.crossEntropy(logits, targets), [total / 4], 1e-5, 'mean over 4 non-ignored rows');
  assertClose(ops.crossEntropy(logits, Tensor.fromI32(targets, [N])), [total / 4], 1e-5, 'i32 tensor targets');
  for (const red of ['mean', 'sum', 'none'] as const) {
    gradcheck((t) => ops.crossEntropy(t, targets, red), [logits], { name: `crossEntropy ${red}` });
  }
  // [B, T, V] logits with [B, T] targets; ignored rows get no gradient
  const l3 = Tensor.param(randTensor(r, [2, 3, V]).toF32Array(), [2, 3, V]);
  const t3 = Tensor.fromI32(Int32Array.from([1, 2, -1, 4, 5, 6]), [2, 3]);
  assert.deepEqual(ops.crossEntropy(l3, t3, 'none').shape, [2, 3]);
  backward(ops.crossEntropy(l3, t3));
  assert.ok(l3.grad!.toF32Array().subarray(2 * V, 3 * V).every((v) => v === 0));
  // every row ignored: 0, not NaN
  assert.equal(ops.crossEntropy(logits, new Int32Array(N).fill(-1)).item(), 0);
  assert.throws(() => ops.crossEntropy(logits, Int32Array.from([0, 1, 2, 9, 0, 0])), /crossEntropy: target 9 at row 3 is out of range for a vocabulary of 9/);
  assert.throws(() => ops.crossEntropy(logits, new Int32Array(5)), /5 targets for logits \[6, 9\]/);
});

function refRope(x: Tensor, cos: Tensor, sin: Tensor): number[] {
  const xd = x.toF32Array();
  const cd = cos.toF32Array();
  const sd = sin.toF32Array();
  const T = x.shape[1]!;
  const dr = x.shape[x.ndim - 1]!;
  const mid = x.shape.slice(2, -1).reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let row = 0; row < xd.length / dr; row++) {
    const t = Math.floor(row / mid) % T;
    for (let i = 0; i < dr / 2; i++) {
      const a = xd[row * dr + 2 * i]!;
      const b = xd[row * dr + 2 * i + 1]!;
      const c = cd[t * (dr / 2) + i]!;
      const s = sd[t * (dr / 2) + i]!;
      out.push(a * c - b * s, a * s + b * c);
    }
  }
  return out;
}

function ropeTables(T: number, dr: number, base = 10000): { cos: Tensor; sin: Tensor } {
  const c = new Float32Array(T * (dr / 2));
  const s = new Float32Array(T * (dr / 2));
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < dr / 2; i++) {
      const th = t * base ** (-(2 * i) / dr);
      c[t * (dr / 2) + i] = Math.cos(th);
      s[t * (dr / 2) + i] = Math.sin(th);
    }
  }
  return { cos: Tensor.fromF32(c, [T, dr / 2]), sin: Tensor.fromF32(s, [T, dr / 2]) };
}

test('ropeInterleaved: forward, norm preservation, gradients, strided input', () => {
  const { cos, sin } = ropeTables(5, 8);
  const x = randTensor(r, [2, 5, 3, 8]);
  const y = ops.ropeInterleaved(x, cos, sin);
  assertClose(y, refRope(x, cos, sin), 1e-6, 'rope');
  // a rotation preserves each pair's norm; position 0 is the identity
  const xd = x.toF32Array();
  const yd = y.toF32Array();
  for (let i = 0; i < xd.length; i += 2) assert.ok(Math.abs(Math.hypot(xd[i]!, xd[i + 1]!) - Math.hypot(yd[i]!, yd[i + 1]!)) < 1e-5);
  assertClose(yd.subarray(0, 24), xd.subarray(0, 24), 1e-7, 'position 0');
  gradcheck((t) => ops.ropeInterleaved(t, cos, sin), [x], { name: 'rope' });
  // x as a slice of the last dim of a projection (the decoupled key k^R), [B, T, dr]
  const proj = randTensor(r, [2, 5, 12]);
  const kr = proj.slice(2, 4, 12);
  assertClose(ops.ropeInterleaved(kr, cos, sin), refRope(kr.contiguous(), cos, sin), 1e-6, 'rope strided');
  gradcheck((t) => ops.ropeInterleaved(t.slice(2, 4, 12), cos, sin), [proj], { name: 'rope strided' });
  assert.throws(() => ops.ropeInterleaved(randTensor(r, [2, 4, 8]), cos, sin), /cos \[5, 4\] must be \[4, 4\]/);
  assert.throws(() => ops.ropeInterleaved(randTensor(r, [2, 5, 7]), cos, sin), /must be even/);
});

/** Float64 causal attention: q [B,T,H,d], k [B,S,Hk,d], v [B,S,Hk,dv]. */
function refAttention(q: Tensor, k: Tensor, v: Tensor, scale: number, off: number): number[] {
  const [B, T, H, d] = q.shape as number[];
  const [, S, Hk] = k.shape as number[];
  const dv = v.shape[3]!;
  const qd = q.toF32Array(), kd = k.toF32Array(), vd = v.toF32Array();
  const out = new Array<number>(B! * T! * H! * dv).fill(0);
  for (let b = 0; b < B!; b++) for (let t = 0; t < T!; t++) for (let h = 0; h < H!; h++) {
    const hk = Hk === 1 ? 0 : h;
    const sc: number[] = [];
    for (let j = 0; j < S! && j <= t + off; j++) {
      let s = 0;
      for (let e = 0; e < d!; e++) s += qd[((b * T! + t) * H! + h) * d! + e]! * kd[((b * S! + j) * Hk! + hk) * d! + e]!;
      sc.push(s * scale);
    }
    if (!sc.length) continue;
    const m = Math.max(...sc);
    const p = sc.map((s) => Math.exp(s - m));
    const z = p.reduce((a, c) => a + c, 0);
    for (let j = 0; j < sc.length; j++) {
      for (let e = 0; e < dv; e++) out[((b * T! + t) * H! + h) * dv + e]! += (p[j]! / z) * vd[((b * S! + j) * Hk! + hk) * dv + e]!;
    }
  }
  return out;
}

test('attention: forward (Hk = H and Hk = 1, causal offsets, strided views)', () => {
  const B = 2, T = 3, S = 5, H = 2, d = 4, dv = 3;
  const scale = 1 / Math.sqrt(d);
  for (const Hk of [H, 1]) {
    const q = randTensor(r, [B, T, H, d]);
    const k = randTensor(r, [B, S, Hk, d]);
    const v = randTensor(r, [B, S, Hk, dv]);
    const y = ops.attention(q, k, v, { scale });
    assert.deepEqual(y.shape, [B, T, H, dv]);
    assertClose(y, refAttention(q, k, v, scale, S - T), 1e-5, `attention Hk=${Hk}`);
    assertClose(ops.attention(q, k, v, { scale, causalOffset: 0 }), refAttention(q, k, v, scale, 0), 1e-5, `Hk=${Hk} offset 0`);
    assertClose(ops.attention(q, k, v, { scale, causalOffset: 100 }), refAttention(q, k, v, scale, 100), 1e-5, `Hk=${Hk} no mask`);
    // k and v as views into one projection [B, S, Hk, d + dv] (split on the last dim), q transposed
    const kv = randTensor(r, [B, S, Hk, d + dv]);
    const [kk, vv] = ops.split(kv, [d, dv], -1);
    const qt = randTensor(r, [B, H, T, d]).transpose(1, 2);
    assertClose(ops.attention(qt, kk!, vv!, { scale }), refAttention(qt, kk!, vv!, scale, S - T), 1e-5, `strided Hk=${Hk}`);
  }
  const q = randTensor(r, [1, 2, 2, 4]);
  assert.throws(() => ops.attention(q, randTensor(r, [1, 3, 3, 4]), randTensor(r, [1, 3, 3, 4]), { scale: 1 }), /k\/v heads must be 1 or 2/);
  assert.throws(() => ops.attention(q, randTensor(r, [1, 3, 1, 5]), randTensor(r, [1, 3, 1, 4]), { scale: 1 }), /head dims differ/);
  assert.throws(() => ops.attention(q, randTensor(r, [1, 3, 1, 4]), randTensor(r, [1, 4, 1, 4]), { scale: 1 }), /different lengths/);
});

test('attention: gradients (Hk = H, Hk = 1, causal offsets, strided views)', () => {
  const B = 2, T = 3, S = 4, H = 2, d = 4, dv = 3;
  const scale = 0.6;
  for (const Hk of [H, 1]) {
    const q = randTensor(r, [B, T, H, d]);
    const k = randTensor(r, [B, S, Hk, d]);
    const v = randTensor(r, [B, S, Hk, dv]);
    gradcheck((a, b, c) => ops.attention(a, b, c, { scale }), [q, k, v], { name: `attention Hk=${Hk}` });
    gradcheck((a, b, c) => ops.attention(a, b, c, { scale, causalOffset: -1 }), [q, k, v], { name: `attention Hk=${Hk} offset -1` });
    const kv = randTensor(r, [B, S, Hk, d + dv]);
    gradcheck((a, x) => {
      const [kk, vv] = ops.split(x, [d, dv], -1);
      return ops.attention(a.transpose(1, 2), kk!, vv!, { scale });
    }, [randTensor(r, [B, H, T, d]), kv], { name: `attention strided Hk=${Hk}` });
  }
});

test('random smoke: crossEntropy of random targets matches logSoftmax', () => {
  const logits = randUniform(r, [7, 13], -3, 3);
  const t = randInts(r, 7, 13);
  const ls = ops.logSoftmax(logits).toF32Array();
  const want = Array.from(t, (c, i) => -ls[i * 13 + c]!);
  assertClose(ops.crossEntropy(logits, t, 'none'), want, 1e-5, 'ce vs logSoftmax');
});
