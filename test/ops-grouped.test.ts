// The fused MoE FFN op (groupedExperts: routed experts, optionally the shared expert) and the row gather/scatter kernels under it:
// forward and every gradient against the op-by-op composition (indexSelect, linear, swiglu,
// mul, indexAdd), finite differences, deferred weight gradients, native == reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withBackend } from '../src/engine/backend.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { referenceKernels } from '../src/engine/reference/index.js';
import { loadNativeKernels } from '../src/engine/native.js';
import { requireNative } from './helpers/backends.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { randData, randInts, randTensor, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

const r = rng(31);

/** Top-K distinct experts per token, random. */
function routingIdx(N: number, K: number, E: number): Int32Array {
  const idx = new Int32Array(N * K);
  for (let t = 0; t < N; t++) {
    const pool = Array.from({ length: E }, (_, e) => e);
    for (let j = 0; j < K; j++) idx[t * K + j] = pool.splice(Math.floor(r() * pool.length), 1)[0]!;
  }
  return idx;
}

interface Case {
  x: Tensor;
  gates: Tensor;
  idx: Int32Array;
  ws: Tensor[]; // gate[E], up[E], down[E]
  E: number;
}

function makeCase(N: number, D: number, I: number, E: number, K: number): Case {
  return {
    x: randTensor(r, [N, D]),
    gates: randTensor(r, [N, K]),
    idx: routingIdx(N, K, E),
    ws: [...Array.from({ length: E }, () => randTensor(r, [I, D], 0.3)), ...Array.from({ length: E }, () => randTensor(r, [I, D], 0.3)),
      ...Array.from({ length: E }, () => randTensor(r, [D, I], 0.3))],
    E,
  };
}

const split = (ws: readonly Tensor[], E: number) => ({ gate: ws.slice(0, E), up: ws.slice(E, 2 * E), down: ws.slice(2 * E) });

/** The same computation op by op (the unfused MoE path). */
function composed(x: Tensor, gates: Tensor, idx: Int32Array, ws: readonly Tensor[], E: number): Tensor {
  const [N, D] = x.shape as [number, number];
  const K = gates.shape[1]!;
  const { offsets, rows, slots } = ops.expertPlan(idx, K, E);
  const w = split(ws, E);
  const outs: Tensor[] = [];
  for (let e = 0; e < E; e++) {
    const a = offsets[e]!;
    const b = offsets[e + 1]!;
    if (a === b) continue;
    const xe = ops.indexSelect(x, 0, rows.subarray(a, b));
    outs.push(ops.linear(ops.swiglu(ops.linear(xe, w.gate[e]!), ops.linear(xe, w.up[e]!)), w.down[e]!));
  }
  const g = ops.indexSelect(gates.reshape([N * K]), 0, slots).reshape([N * K, 1]);
  return ops.indexAdd(Tensor.zeros([N, D]), 0, rows, ops.mul(ops.cat(outs, 0), g));
}

/** Output and every input gradient of f on parameter copies of c's tensors. */
function runGrads(c: Case, f: (x: Tensor, g: Tensor, ws: Tensor[]) => Tensor, R: Float32Array): Float32Array[] {
  const ps = [c.x, c.gates, ...c.ws].map((t) => Tensor.param(t.toF32Array(), t.shape));
  const y = f(ps[0]!, ps[1]!, ps.slice(2));
  backward(y, Tensor.fromF32(R, y.shape));
  return [y.toF32Array(), ...ps.map((p) => p.grad?.toF32Array() ?? new Float32Array(p.size))];
}

test('expertPlan groups (token, slot) pairs per expert in token order', () => {
  const p = ops.expertPlan(Int32Array.from([2, 0, 0, 1, 2, 1]), 2, 4);
  assert.deepEqual(Array.from(p.offsets), [0, 2, 4, 6, 6]);
  assert.deepEqual(Array.from(p.rows), [0, 1, 1, 2, 0, 2]);
  assert.deepEqual(Array.from(p.slots), [1, 2, 3, 5, 0, 4]);
  assert.throws(() => ops.expertPlan(Int32Array.of(4), 1, 4), /expert 4 at position 0 is out of range for 4 experts/);
});

test('groupedExperts equals the op-by-op composition: output and all gradients', () => {
  for (const [N, D, I, E, K] of [[37, 12, 8, 6, 2], [64, 16, 24, 8, 3], [5, 7, 3, 9, 4]] as const) {
    const c = makeCase(N, D, I, E, K);
    const R = randData(r, N * D);
    const fused = runGrads(c, (x, g, ws) => ops.groupedExperts(x, g, c.idx, split(ws, E)), R);
    const ref = runGrads(c, (x, g, ws) => composed(x, g, c.idx, ws, E), R);
    const names = ['out', 'dx', 'dgates', ...c.ws.map((_, i) => `dW[${i}]`)];
    fused.forEach((v, i) => assertClose(v, ref[i]!, 2e-5, `${names[i]} (N ${N}, E ${E}, K ${K})`, 1e-6));
  }
});

test('groupedExperts with a shared expert equals shared MLP + routed composition', () => {
  const [N, D, I, Is, E, K] = [50, 12, 8, 16, 6, 2];
  const c = makeCase(N, D, I, E, K);
  const sw = [randTensor(r, [Is, D], 0.3), randTensor(r, [Is, D], 0.3), randTensor(r, [D, Is], 0.3)];
  const all: Case = { ...c, ws: [...c.ws, ...sw] };
  const R = randData(r, N * D);
  const withShared = (ws: Tensor[]) => ({ ...split(ws.slice(0, 3 * E), E), shared: { gate: ws[3 * E]!, up: ws[3 * E + 1]!, down: ws[3 * E + 2]! } });
  const fused = runGrads(all, (x, g, ws) => ops.groupedExperts(x, g, c.idx, withShared(ws)), R);
  const ref = runGrads(all, (x, g, ws) => {
    const shared = ops.linear(ops.swiglu(ops.linear(x, ws[3 * E]!), ops.linear(x, ws[3 * E + 1]!)), ws[3 * E + 2]!);
    return ops.add(shared, composed(x, g, c.idx, ws.slice(0, 3 * E), E));
  }, R);
  fused.forEach((v, i) => assertClose(v, ref[i]!, 2e-5, `tensor ${i}`, 1e-6));
  const small = makeCase(5, 4, 3, 3, 2);
  const s3 = [randTensor(r, [2, 4]), randTensor(r, [2, 4]), randTensor(r, [4, 2])];
  gradcheck((x, g, ...ws) => ops.groupedExperts(x, g, small.idx, withSharedE(ws, 3)), [small.x, small.gates, ...small.ws, ...s3], { name: 'groupedExperts + shared' });
  assert.throws(() => ops.groupedExperts(small.x, small.gates, small.idx, { ...split(small.ws, 3), shared: { gate: s3[0]!, up: s3[2]!, down: s3[2]! } }), /up \(shared\) \[4, 2\] must be \[2, 4\]/);
});

function withSharedE(ws: Tensor[], E: number): ops.ExpertWeights {
  return { ...split(ws.slice(0, 3 * E), E), shared: { gate: ws[3 * E]!, up: ws[3 * E + 1]!, down: ws[3 * E + 2]! } };
}

test('groupedExperts: finite-difference gradients, frozen inputs, unused experts, errors', () => {
  const E = 4;
  const c = makeCase(6, 5, 3, E, 2);
  c.idx.set([0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0]); // experts 2 and 3 get no token
  gradcheck((x, g, ...ws) => ops.groupedExperts(x, g, c.idx, split(ws, E)), [c.x, c.gates, ...c.ws], { name: 'groupedExperts' });
  // no gradient asked for the input or the gates: weights still get theirs
  const ws = c.ws.map((t) => Tensor.param(t.toF32Array(), t.shape));
  backward(ops.sum(ops.groupedExperts(c.x, c.gates, c.idx, split(ws, E))));
  assert.ok(ws[0]!.grad && ws[2 * E]!.grad);
  assert.equal(ws[2]!.grad, null); // expert 2 saw no token: untouched
  assert.throws(() => ops.groupedExperts(c.x, c.gates, c.idx.subarray(1), split(c.ws, E)), /11 expert indices for gates \[6, 2\]/);
  const bad = split(c.ws, E);
  assert.throws(() => ops.groupedExperts(c.x, c.gates, c.idx, { ...bad, up: [...bad.up.slice(0, 3), bad.down[0]!] }), /up\[3\] \[5, 3\] must be \[3, 5\]/);
  assert.throws(() => ops.groupedExperts(c.x, c.gates, c.idx, { ...bad, down: bad.down.slice(1) }), /got 4, 4, 3/);
});

test('groupedExperts: deferred weight gradients equal the immediate ones', () => {
  const E = 5;
  const c0 = makeCase(40, 8, 6, E, 2);
  const c: Case = { ...c0, ws: [...c0.ws, randTensor(r, [4, 8]), randTensor(r, [4, 8]), randTensor(r, [8, 4])] };
  const R = randData(r, 40 * 8);
  const now = runGrads(c, (x, g, ws) => ops.groupedExperts(x, g, c.idx, withSharedE(ws, E)), R);
  const ps = [c.x, c.gates, ...c.ws].map((t) => Tensor.param(t.toF32Array(), t.shape));
  const y = ops.groupedExperts(ps[0]!, ps[1]!, c.idx, withSharedE(ps.slice(2), E));
  const { weightGrads } = ops.deferWeightGrads(() => backward(y, Tensor.fromF32(R, y.shape)));
  assert.equal(weightGrads.length, 3 * E + 3);
  assert.equal(ps[2]!.grad, null);
  // another call in between reuses the op's scratch buffers: the closures must not see it
  const other: Case = { ...makeCase(40, 8, 6, E, 2), ws: c.ws.map((t) => randTensor(r, t.shape)) };
  runGrads(other, (x, g, ws) => ops.groupedExperts(x, g, c.idx, withSharedE(ws, E)), R);
  for (const f of weightGrads) f();
  assert.throws(() => weightGrads[0]!(), /already applied/);
  ps.forEach((p, i) => assertClose(p.grad!, now[i + 1]!, 1e-6, `grad ${i}`, 1e-7));
});

test('row gather/scatter kernels: native == reference', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  for (const [rows, srcRows, cols] of [[1, 1, 1], [7, 3, 5], [129, 40, 17], [1000, 300, 256], [4096, 2048, 64]] as const) {
    const src = randData(r, srcRows * cols);
    const idx = randInts(r, rows, srcRows);
    const scale = randData(r, rows);
    for (const sc of [null, scale]) {
      const a = new Float32Array(rows * cols).fill(NaN);
      const b = new Float32Array(rows * cols).fill(NaN);
      nat.gatherRows(src, idx, sc, a, rows, cols);
      referenceKernels.gatherRows(src, idx, sc, b, rows, cols);
      assertClose(a, b, 0, `gatherRows ${rows}x${cols}`);
      const rowsSrc = randData(r, rows * cols);
      const da = src.slice();
      const db = src.slice();
      nat.scatterAddRows(rowsSrc, idx, sc, da, rows, cols);
      referenceKernels.scatterAddRows(rowsSrc, idx, sc, db, rows, cols);
      assertClose(da, db, 1e-6, `scatterAddRows ${rows}x${cols}`, 1e-6);
    }
    const x = randData(r, rows * cols);
    const y = randData(r, rows * cols);
    const oa = new Float32Array(rows);
    const ob = new Float32Array(rows);
    nat.rowDot(x, y, oa, rows, cols);
    referenceKernels.rowDot(x, y, ob, rows, cols);
    assertClose(oa, ob, 1e-5, `rowDot ${rows}x${cols}`, 1e-5);
    const sa = x.slice();
    nat.scaleRows(sa, scale, sa, rows, cols); // in place
    const sb = new Float32Array(rows * cols);
    referenceKernels.scaleRows(x, scale, sb, rows, cols);
    assertClose(sa, sb, 0, `scaleRows ${rows}x${cols}`);
  }
  assert.throws(() => nat.gatherRows(new Float32Array(4), Int32Array.of(0, 1), null, new Float32Array(3), 2, 2), RangeError);
  assert.throws(() => nat.scatterAddRows(new Float32Array(4), Int32Array.of(0, 2), null, new Float32Array(4), 2, 2), RangeError);
});

test('groupedExperts: native == reference', (t) => {
  if (!requireNative(t)) return;
  const c0 = makeCase(300, 32, 16, 8, 3);
  const c: Case = { ...c0, ws: [...c0.ws, randTensor(r, [24, 32]), randTensor(r, [24, 32]), randTensor(r, [32, 24])] };
  const R = randData(r, 300 * 32);
  const f = () => runGrads(c, (x, g, ws) => ops.groupedExperts(x, g, c.idx, withSharedE(ws, 8)), R);
  const a = withBackend('native', f);
  const b = withBackend('reference', f);
  a.forEach((v, i) => assertClose(v, b[i]!, 1e-5, `tensor ${i}`, 1e-6));
});

test('gemmBatch: native == reference, every layout, uneven sizes, overlapping outputs', (t) => {
  if (!requireNative(t)) return;
  const nat = loadNativeKernels()!;
  for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    const sizes = [[37, 16, 24], [5, 16, 24], [0, 16, 24], [64, 16, 0], [129, 16, 24], [1, 16, 24]];
    const lda = 150;
    const ldb = 30;
    const ldc = 20;
    const dims = Int32Array.from(sizes.flat());
    const as = sizes.map(([m, , k]) => randData(r, (ta ? k! : m!) * lda + 1));
    const bs = sizes.map(() => randData(r, 40 * ldb));
    for (const beta of [0, 1]) {
      const base = randData(r, 200 * ldc * sizes.length);
      // C regions: disjoint slices of one buffer
      const views = (buf: Float32Array) => sizes.map((_, i) => buf.subarray(i * 200 * ldc, (i + 1) * 200 * ldc));
      const ca = base.slice();
      const cb = base.slice();
      nat.gemmBatch(ta, tb, dims, 0.5, as, lda, bs, ldb, beta, views(ca), ldc);
      referenceKernels.gemmBatch(ta, tb, dims, 0.5, as, lda, bs, ldb, beta, views(cb), ldc);
      assertClose(ca, cb, 1e-5, `gemmBatch ${ta} ${tb} beta ${beta}`, 1e-5);
      // overlapping C regions (the same one twice, accumulating): run in order
      const shared = new Float32Array(200 * ldc);
      const twice = Int32Array.of(...sizes[0]!, ...sizes[0]!);
      nat.gemmBatch(ta, tb, twice, 1, [as[0]!, as[0]!], lda, [bs[0]!, bs[0]!], ldb, 1, [shared, shared], ldc);
      const ref = new Float32Array(200 * ldc);
      referenceKernels.gemm(ta, tb, 37, 16, 24, 2, as[0]!, lda, bs[0]!, ldb, 0, ref, ldc);
      assertClose(shared, ref, 1e-5, 'overlapping outputs accumulate', 1e-5);
    }
  }
  assert.throws(() => nat.gemmBatch(false, false, Int32Array.of(4, 4, 4), 1, [new Float32Array(15)], 4, [new Float32Array(16)], 4, 0, [new Float32Array(16)], 4), /as\[0\]/);
  assert.throws(() => nat.gemmBatch(false, false, Int32Array.of(4, 4, 4), 1, [new Float32Array(16)], 3, [new Float32Array(16)], 4, 0, [new Float32Array(16)], 4), /lda >= 4/);
  assert.throws(() => nat.gemmBatch(false, false, Int32Array.of(4, 4), 1, [], 4, [], 4, 0, [], 4), TypeError);
});

test('groupedExperts bf16 with inputAgain (x recomputed by rmsNormAgain in the backward) gives the same output and gradients, bit for bit', () => {
  const [N, D, I, Is, E, K] = [40, 16, 8, 16, 5, 2];
  const c = makeCase(N, D, I, E, K);
  const hd = randData(r, N * D);
  const nw = randData(r, D);
  const sw = [randTensor(r, [Is, D], 0.3), randTensor(r, [Is, D], 0.3), randTensor(r, [D, Is], 0.3)];
  const R = randData(r, N * D);
  const run = (again: boolean, wrongLength = false): { out: Float32Array[]; calls: number } => {
    const h = Tensor.param(hd.slice(), [N, D]);
    const g = Tensor.param(nw.slice(), [D]);
    const gates = Tensor.param(c.gates.f32().slice(), [N, K]);
    const ws = [...c.ws, ...sw].map((w) => Tensor.param(w.f32().slice(), w.shape));
    const x = ops.rmsNorm(h, g, 1e-6);
    const rc = ops.rmsNormAgain(h, g, 1e-6);
    assert.ok(rc);
    let calls = 0;
    const inputAgain = again ? { from: rc.from, x: () => (calls++, wrongLength ? new Float32Array(3) : rc.x()) } : null;
    const y = ops.groupedExperts(x, gates, c.idx, withSharedE(ws, E), { bf16: true, inputAgain });
    backward(ops.sum(ops.mul(y, Tensor.fromF32(R, [N, D]))));
    return { out: [y.f32(), h.grad!.f32(), g.grad!.f32(), gates.grad!.f32(), ...ws.map((w) => w.grad!.f32())].map((a) => a.slice()), calls };
  };
  const kept = run(false);
  const again = run(true);
  assert.equal(again.calls, 1, 'x is recomputed once, in the backward');
  assert.equal(kept.calls, 0);
  again.out.forEach((v, i) => assert.deepEqual(v, kept.out[i], `tensor ${i} differs`));
  assert.throws(() => run(true, true), /recomputed x has 3 elements, expected 640/);
});
