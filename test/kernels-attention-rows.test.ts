// Native flash attention with per-batch causal offsets and key/value batches (continuous
// batching: each batch row is a sequence at its own position reading its own latent-cache
// slot) against the pure-TypeScript reference, for every ISA this CPU has and 1 and 2
// threads; the reference itself against separate one-batch calls (what the per-batch
// arrays mean). Tolerances as in kernels-native.test.ts: 1e-5 x max|ref| forward, 3e-5 for
// gradients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import * as att from '../src/engine/reference/attention.js';
import type { AttentionParams } from '../src/engine/kernels.js';

const { A, opts, eachConfig } = nativeForTests();

let seed = 777;
function randArray(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    a[i] = (seed / 4294967296) * 4 - 2;
  }
  return a;
}

function close(got: Float32Array, want: Float32Array, what: string, rtol = 1e-5, floor = 0): void {
  let scale = floor;
  for (const v of want) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  const tol = rtol * scale + 1e-30;
  for (let i = 0; i < want.length; i++) {
    const x = got[i]!, y = want[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) {
      if (Object.is(x, y)) continue;
      assert.fail(`${what}[${i}]: ${x}, reference ${y}`);
    }
    if (!(Math.abs(x - y) <= tol)) assert.fail(`${what}[${i}]: ${x}, reference ${y} (|diff| ${Math.abs(x - y).toExponential(2)} > ${tol.toExponential(2)})`);
  }
}

interface RowsCase {
  name: string; H: number; KVH: number; tq: number; dqk: number; dv: number;
  /** per query batch: causal offset and the k/v batch it reads (null: kvBatch not given) */
  offs: number[]; kvb: number[] | null; kvBatches: number; tk: number; vInK?: boolean;
}

const CASES: RowsCase[] = [
  // the engine's decode step: one query row per sequence, all heads on one latent KV head, V inside K
  { name: 'decode rows at different positions in scattered slots (MLA)', H: 8, KVH: 1, tq: 1, dqk: 40, dv: 24,
    offs: [0, 99, 37, 64, 5], kvb: [3, 0, 5, 1, 2], kvBatches: 6, tk: 100, vInK: true },
  { name: 'decode rows past several key tiles, 576/512 dims', H: 4, KVH: 1, tq: 1, dqk: 576, dv: 512,
    offs: [200, 3, 129], kvb: [1, 2, 0], kvBatches: 3, tk: 201, vInK: true },
  { name: 'two queries share one slot', H: 2, KVH: 1, tq: 1, dqk: 16, dv: 16, offs: [10, 4], kvb: [0, 0], kvBatches: 1, tk: 11, vInK: true },
  { name: 'chunks of 3 tokens at different offsets (kvHeads=H)', H: 3, KVH: 3, tq: 3, dqk: 24, dv: 16,
    offs: [0, 70, 12, -1], kvb: null, kvBatches: 4, tk: 73 },
  { name: 'many batches (packed K/V path), per-batch offsets', H: 4, KVH: 4, tq: 40, dqk: 20, dv: 12,
    offs: [0, 30, 5, 60, 17, 2, 44, 9], kvb: null, kvBatches: 8, tk: 100 },
];

function setup(c: RowsCase): { p: AttentionParams; q: Float32Array; k: Float32Array; v: Float32Array; B: number } {
  const B = c.offs.length;
  const qRow = c.H * c.dqk, oRow = c.H * c.dv, kRow = c.KVH * c.dqk, vRow = c.vInK ? kRow : c.KVH * c.dv;
  const k = randArray(c.kvBatches * c.tk * kRow);
  const p: AttentionParams = {
    batch: B, heads: c.H, kvHeads: c.KVH, tq: c.tq, tk: c.tk, dqk: c.dqk, dv: c.dv, scale: 1 / Math.sqrt(c.dqk),
    causalOffset: 123456, // never used: causalOffsets is given
    causalOffsets: Int32Array.from(c.offs), kvBatch: c.kvb ? Int32Array.from(c.kvb) : null,
    qStrides: [c.tq * qRow, qRow, c.dqk], kStrides: [c.tk * kRow, kRow, c.dqk],
    vStrides: c.vInK ? [c.tk * kRow, kRow, c.dqk] : [c.tk * vRow, vRow, c.dv], oStrides: [c.tq * oRow, oRow, c.dv],
  };
  return { p, q: randArray(B * c.tq * qRow), k, v: c.vInK ? k : randArray(c.kvBatches * c.tk * vRow), B };
}

for (const c of CASES) {
  test(`attention with per-batch offsets / kv batches: ${c.name}`, () => {
    const { p, q, k, v, B } = setup(c);
    const oRow = c.H * c.dv;
    const out = new Float32Array(B * c.tq * oRow), lse = new Float32Array(B * c.H * c.tq);
    att.attention(p, q, k, v, out, lse);
    // the meaning: batch b alone, with its own offset, over its own k/v batch
    for (let b = 0; b < B; b++) {
      const kb = c.kvb ? c.kvb[b]! : b;
      const one: AttentionParams = { ...p, batch: 1, causalOffset: c.offs[b]!, causalOffsets: null, kvBatch: null };
      const o1 = new Float32Array(c.tq * oRow), l1 = new Float32Array(c.H * c.tq);
      att.attention(one, q.subarray(b * p.qStrides[0]), k.subarray(kb * p.kStrides[0]), v.subarray(kb * p.vStrides[0]), o1, l1);
      assert.deepEqual(out.subarray(b * c.tq * oRow, (b + 1) * c.tq * oRow), o1, `batch ${b} out`);
      assert.deepEqual(lse.subarray(b * c.H * c.tq, (b + 1) * c.H * c.tq), l1, `batch ${b} lse`);
    }
  });

  test(`native attention with per-batch offsets / kv batches: ${c.name}`, opts, () => {
    const { p, q, k, v, B } = setup(c);
    const no = B * c.tq * c.H * c.dv;
    const out = new Float32Array(no), lse = new Float32Array(B * c.H * c.tq);
    att.attention(p, q, k, v, out, lse);
    let dq: Float32Array | null = null, dk: Float32Array | null = null, dv: Float32Array | null = null;
    const dout = randArray(no);
    if (!c.kvb) {
      dq = new Float32Array(q.length), dk = new Float32Array(k.length), dv = c.vInK ? dk : new Float32Array(v.length);
      att.attentionBackward(p, q, k, v, out, lse, dout, dq, dk, dv);
    }
    eachConfig((cfg) => {
      const out2 = new Float32Array(no).fill(NaN), lse2 = new Float32Array(lse.length).fill(NaN);
      A.attention(p, q, k, v, out2, lse2);
      close(out2, out, `out ${cfg}`);
      close(lse2, lse, `lse ${cfg}`);
      if (dq && dk && dv) {
        const dq2 = new Float32Array(q.length), dk2 = new Float32Array(k.length), dv2 = c.vInK ? dk2 : new Float32Array(v.length);
        A.attentionBackward(p, q, k, v, out, lse, dout, dq2, dk2, dv2);
        let floor = 0;
        for (const a of [dq, dk, dv]) for (const x of a) floor = Math.max(floor, Math.abs(x));
        close(dq2, dq, `dq ${cfg}`, 3e-5, floor);
        close(dk2, dk, `dk ${cfg}`, 3e-5, floor);
        if (!c.vInK) close(dv2, dv, `dv ${cfg}`, 3e-5);
      }
    });
  });
}

test('per-batch attention arrays are validated', opts, () => {
  const c = CASES[0]!;
  const { p, q, k, v, B } = setup(c);
  const out = new Float32Array(B * c.H * c.dv), lse = new Float32Array(B * c.H);
  const bad = (extra: Partial<AttentionParams>, re: RegExp, type: ErrorConstructor = RangeError): void => {
    assert.throws(() => A.attention({ ...p, ...extra }, q, k, v, out, lse), (e: Error) => e instanceof type && re.test(e.message), re.source);
  };
  bad({ causalOffsets: new Int32Array(B - 1) }, /causalOffsets/);
  bad({ kvBatch: new Int32Array(B - 1) }, /kvBatch/);
  bad({ causalOffsets: new Float32Array(B) as unknown as Int32Array }, /causalOffsets.*Int32Array/, TypeError);
  bad({ kvBatch: Int32Array.from([0, 0, 0, 0, -1]) }, /kvBatch values must be >= 0/);
  bad({ causalOffsets: Int32Array.from([0, 0, 1 << 23, 0, 0]) }, /causalOffsets values/);
  // a kv batch past the buffer: k's extent check names it
  bad({ kvBatch: Int32Array.from([0, 0, 0, 0, 6]) }, /'k'/);
  const dq = new Float32Array(q.length), dk = new Float32Array(k.length);
  assert.throws(() => A.attentionBackward(p, q, k, v, out, lse, out, dq, dk, dk), /kvBatch is forward only/);
  assert.throws(() => att.attentionBackward(p, q, k, v, out, lse, out, dq, dk, dk), /kvBatch is forward only/);
  // null and undefined mean "not given"
  A.attention({ ...p, causalOffsets: null, kvBatch: undefined, causalOffset: 5 }, q, k, v, out, lse);
});
