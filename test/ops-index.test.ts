// Indexing and shape ops: embedding, indexSelect, indexAdd (the MoE combine), gather,
// scatterAdd, topk, cat, split. Forward values, gradients, and input validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../src/engine/tensor.js';
import { f32ArrayToBf16, bf16ArrayToF32 } from '../src/engine/dtype.js';
import * as ops from '../src/engine/ops/index.js';
import { assertClose } from './helpers/compare.js';
import { gradcheck } from './helpers/gradcheck.js';
import { distinctValues, randInts, randTensor, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';
import { withBackend } from '../src/engine/backend.js';
import { nativeAddon } from '../src/engine/native.js';

const r = rng(5);

test('embedding: rows, shape, gradient index-adds (repeated ids), range errors', () => {
  const w = randTensor(r, [10, 4]);
  const ids = Tensor.fromI32(Int32Array.from([3, 0, 3, 9, 1, 3]), [2, 3]);
  const y = ops.embedding(w, ids);
  assert.deepEqual(y.shape, [2, 3, 4]);
  const wd = w.toF32Array();
  assertClose(y, Array.from(ids.i32()).flatMap((i) => Array.from(wd.subarray(i * 4, i * 4 + 4))), 0, 'rows');
  assert.deepEqual(ops.embedding(w, Int32Array.of(2, 2)).shape, [2, 4]);
  gradcheck((t) => ops.embedding(t, ids), [w], { name: 'embedding' });
  const p = Tensor.param(wd.slice(), [10, 4]);
  backward(ops.sum(ops.embedding(p, ids)));
  assert.deepEqual(Array.from(p.grad!.toF32Array().filter((_, i) => i % 4 === 0)), [1, 1, 0, 3, 0, 0, 0, 0, 0, 1]);
  // a bf16 table (inference) gives the bf16 values exactly
  const wb = new Tensor(f32ArrayToBf16(wd), [10, 4], 'bf16');
  const wr = bf16ArrayToF32(wb.raw('bf16'));
  assertClose(ops.embedding(wb, Int32Array.of(7)), wr.subarray(28, 32), 0, 'bf16 rows');
  assert.throws(() => ops.embedding(w, Int32Array.of(1, 10)), (e: Error) => e instanceof RangeError && /id 10 .*vocabulary of 10/.test(e.message));
  assert.throws(() => ops.embedding(w, Int32Array.of(-1)), RangeError);
  assert.throws(() => ops.embedding(w, Tensor.from([1], [1])), /ids must be int32, got f32/);
});

test('indexSelect and indexAdd: forward and gradients along each dim', () => {
  const x = randTensor(r, [4, 3, 5]);
  for (const dim of [0, 1, 2]) {
    const n = x.shape[dim]!;
    const idx = Int32Array.from([n - 1, 0, n - 1, 1 % n]);
    const y = ops.indexSelect(x, dim, idx);
    const want = x.shape.slice();
    want[dim] = 4;
    assert.deepEqual(y.shape, want);
    // reference: slice + cat
    const ref = ops.cat(Array.from(idx, (i) => x.slice(dim, i, i + 1)), dim);
    assertClose(y, ref, 0, `indexSelect dim ${dim}`);
    gradcheck((t) => ops.indexSelect(t, dim, idx), [x], { name: `indexSelect ${dim}` });
    const src = randTensor(r, want);
    const z = ops.indexAdd(x, dim, idx, src);
    // reference: explicit loops over [outer, n, inner]
    const outer = x.shape.slice(0, dim).reduce((p, q) => p * q, 1);
    const inner = x.shape.slice(dim + 1).reduce((p, q) => p * q, 1);
    const acc = x.toF32Array();
    const sd = src.toF32Array();
    for (let o = 0; o < outer; o++) {
      idx.forEach((i, j) => {
        for (let e = 0; e < inner; e++) acc[(o * n + i) * inner + e]! += sd[(o * 4 + j) * inner + e]!;
      });
    }
    assertClose(z, acc, 1e-6, `indexAdd dim ${dim}`);
    gradcheck((a, b) => ops.indexAdd(a, dim, idx, b), [x, src], { name: `indexAdd ${dim}` });
  }
  assert.throws(() => ops.indexSelect(x, 0, Int32Array.of(4)), /indexSelect: index 4 at position 0 is out of range for dim 0 of size 4/);
  assert.throws(() => ops.indexAdd(x, 1, Int32Array.of(0), randTensor(r, [4, 2, 5])), /src \[4, 2, 5\] must have shape \[4, 1, 5\]/);
});

test('indexAdd as the MoE combine: tokens gathered per expert and added back weighted', () => {
  // 5 tokens, 2 experts, top-2 routing with repeated tokens per expert
  const h = randTensor(r, [5, 3]);
  const rows = Int32Array.from([0, 2, 4, 1, 2, 3]);
  const gate = randTensor(r, [6, 1]);
  gradcheck((x, g) => {
    const picked = ops.indexSelect(x, 0, rows);
    return ops.indexAdd(x, 0, rows, ops.mul(ops.silu(picked), g));
  }, [h, gate], { name: 'moe combine' });
});

test('gather and scatterAdd: torch semantics, gradients', () => {
  const x = randTensor(r, [3, 4, 5]);
  const xd = x.toF32Array();
  for (const dim of [0, 1, 2]) {
    const ishape = [2, 3, 4];
    const idx = Tensor.fromI32(randInts(r, 24, x.shape[dim]!), ishape);
    const y = ops.gather(x, dim, idx);
    assert.deepEqual(y.shape, ishape);
    const id = idx.i32();
    const want: number[] = [];
    for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 4; c++) {
      const co = [a, b, c];
      co[dim] = id[(a * 3 + b) * 4 + c]!;
      want.push(xd[(co[0]! * 4 + co[1]!) * 5 + co[2]!]!);
    }
    assertClose(y, want, 0, `gather dim ${dim}`);
    gradcheck((t) => ops.gather(t, dim, idx), [x], { name: `gather ${dim}` });
    const src = randTensor(r, ishape);
    const z = ops.scatterAdd(x, dim, idx, src).toF32Array();
    const ref = xd.slice();
    const sd = src.toF32Array();
    for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 4; c++) {
      const co = [a, b, c];
      co[dim] = id[(a * 3 + b) * 4 + c]!;
      ref[(co[0]! * 4 + co[1]!) * 5 + co[2]!]! += sd[(a * 3 + b) * 4 + c]!;
    }
    assertClose(z, ref, 1e-6, `scatterAdd dim ${dim}`);
    gradcheck((a, b) => ops.scatterAdd(a, dim, idx, b), [x, src], { name: `scatterAdd ${dim}` });
  }
  assert.throws(() => ops.gather(x, 1, Tensor.fromI32(Int32Array.of(4), [1, 1, 1])), /gather: index 4 .* dim 1 of size 4/);
  assert.throws(() => ops.gather(x, 0, Tensor.fromI32(new Int32Array(2), [2])), /as many dims/);
});

test('topk: descending values, ties by lower index, any dim, gradients', () => {
  const x = Tensor.from([1, 3, 3, 2, 5, 5, 0, 3], [2, 4]);
  const { values, indices } = ops.topk(x, 3);
  assert.deepEqual(values.toArray(), [3, 3, 2, 5, 5, 3]);
  assert.deepEqual(indices.toArray(), [1, 2, 3, 0, 1, 3]);
  assert.equal(indices.dtype, 'i32');
  const nan = ops.topk(Tensor.from([NaN, 1, -Infinity, 2], [4]), 3);
  assert.deepEqual(nan.indices.toArray(), [3, 1, 2]);
  // against a sort, for small and large k (the two code paths), along dim 0 too
  const n = 200;
  const big = Tensor.fromF32(distinctValues(r, 3 * n, 0.01), [3, n]);
  for (const k of [1, 8, 64, 65, 200]) {
    const t = ops.topk(big, k);
    const bd = big.toF32Array();
    for (let row = 0; row < 3; row++) {
      const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => bd[row * n + b]! - bd[row * n + a]!);
      assert.deepEqual(t.indices.toArray().slice(row * k, (row + 1) * k), order.slice(0, k), `k=${k} row ${row}`);
    }
  }
  const col = ops.topk(big.transpose(0, 1).contiguous(), 2, 0);
  assert.deepEqual(col.indices.shape, [2, 3]);
  assert.deepEqual(col.indices.transpose(0, 1).toArray(), ops.topk(big, 2).indices.toArray());
  const xs = Tensor.fromF32(distinctValues(r, 24, 0.1), [2, 3, 4]);
  gradcheck((t) => ops.topk(t, 2).values, [xs], { name: 'topk values' });
  gradcheck((t) => ops.topk(t, 2, 1).values, [xs], { name: 'topk values dim 1' });
  assert.throws(() => ops.topk(x, 5), /topk: k = 5 is out of range for dim -1 of size 4/);
});

test('cat and split: forward, gradients, errors', () => {
  const a = randTensor(r, [2, 3, 4]);
  const b = randTensor(r, [2, 1, 4]);
  const c = randTensor(r, [2, 2, 4]);
  const y = ops.cat([a, b, c], 1);
  assert.deepEqual(y.shape, [2, 6, 4]);
  assertClose(y.slice(1, 0, 3), a, 0, 'part a');
  assertClose(y.slice(1, 3, 4), b, 0, 'part b');
  assertClose(y.slice(1, 4, 6), c, 0, 'part c');
  gradcheck((p, q, s) => ops.cat([p, q, s], 1), [a, b, c], { name: 'cat dim 1' });
  gradcheck((p, q) => ops.cat([p.transpose(0, 2), q.transpose(0, 2)], 0), [a, randTensor(r, [2, 3, 1])], { name: 'cat views' });
  const parts = ops.split(y, [3, 1, 2], 1);
  assert.deepEqual(parts.map((p) => p.shape), [[2, 3, 4], [2, 1, 4], [2, 2, 4]]);
  assertClose(parts[0]!, a, 0, 'split a');
  assertClose(parts[2]!, c, 0, 'split c');
  gradcheck((t) => ops.split(t, [1, 3], -1), [a], { name: 'split' });
  gradcheck((t) => {
    const [p, q] = ops.split(t, [2, 2], 2);
    return ops.mul(p!, q!);
  }, [a], { name: 'split parts used together' });
  assert.throws(() => ops.cat([a, randTensor(r, [3, 1, 4])], 1), /cat: shapes \[2, 3, 4\], \[3, 1, 4\] differ outside dim 1/);
  assert.throws(() => ops.split(a, [1, 1], 1), /split: sizes \[1, 1\] sum to 2, but dim 1 of \[2, 3, 4\] has size 3/);
});

test('embedding: packed rows (one gatherRows call) and row-strided weights copy the rows exactly, on both backends', () => {
  const V = 9, D = 5;
  const wr = Float32Array.from({ length: V * 2 * D }, (_, i) => (i % 7 === 3 ? -0 : Math.sin(i) * 1e3));
  const ids = Int32Array.of(4, 0, 8, 4, 2);
  for (const backend of nativeAddon() ? (['reference', 'native'] as const) : (['reference'] as const)) {
    withBackend(backend, () => {
      const packed = Tensor.fromF32(wr.slice(0, V * D), [V, D]);
      const wide = Tensor.fromF32(wr.slice(), [V, 2 * D]);
      const strided = ops.split(wide, [D, D], 1)[1]!; // rows 2D apart, offset D
      for (const [w, rowAt] of [[packed, (v: number) => v * D], [strided, (v: number) => v * 2 * D + D]] as const) {
        const y = ops.embedding(w, ids).f32();
        const want = new Float32Array(ids.length * D);
        ids.forEach((v, i) => want.set(wr.subarray(rowAt(v), rowAt(v) + D), i * D));
        assert.deepEqual(new Uint32Array(y.buffer, y.byteOffset, y.length), new Uint32Array(want.buffer), `${backend}`);
      }
    });
  }
});
