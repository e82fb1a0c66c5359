// Native fused kernels (elementwise, softmax/log-softmax, RMSNorm, SwiGLU, cross-entropy,
// flash attention) against the pure-TypeScript reference kernels, on random inputs with
// awkward sizes, for every ISA this CPU has (setIsa) and 1 and 2 threads (setThreads).
//
// Tolerance: |native - ref| <= 1e-5 * max|ref| over each output array (plus exact equality of
// non-finite values). The reference accumulates in float64; the native kernels keep float32
// vector partial sums (blocked into double for long rows) and a ~1-ulp vectorised exp, so
// their error is a few float32 ulps of the array's scale. Attention gradients sum over up to
// a few hundred keys and heads in float32 and get 3e-5. binary (add/sub/mul/div) is exact.
//
// If the addon cannot load, the tests fail when CI (or DSV3_REQUIRE_NATIVE) is set and are
// skipped with the load error otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeForTests } from './helpers/native-configs.js';
import * as rows from '../src/engine/reference/rows.js';
import * as ew from '../src/engine/reference/elementwise.js';
import * as att from '../src/engine/reference/attention.js';
import type { AttentionParams, BinaryOp } from '../src/engine/kernels.js';

const { A, opts, eachConfig } = nativeForTests();

let seed = 12345;
function rand(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function randArray(n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}

/** |got - want| <= rtol * max(max|want|, floor) elementwise; `floor` is the scale of the terms
 * of a result that cancels to ~0 (e.g. RMSNorm's dx over one column). */
function close(got: Float32Array, want: Float32Array, what: string, rtol = 1e-5, floor = 0): void {
  let scale = floor;
  for (const v of want) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  const tol = rtol * scale + 1e-30;
  for (let i = 0; i < want.length; i++) {
    const x = got[i]!, y = want[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) {
      if (Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y))) continue;
      assert.fail(`${what}[${i}]: ${x}, reference ${y}`);
    }
    if (!(Math.abs(x - y) <= tol)) assert.fail(`${what}[${i}]: ${x}, reference ${y} (|diff| ${Math.abs(x - y).toExponential(2)} > ${tol.toExponential(2)})`);
  }
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) if (Number.isFinite(x)) m = Math.max(m, Math.abs(x));
  return m;
}

const SHAPES: Array<[number, number]> = [[1, 1], [3, 7], [7, 3], [2, 127], [5, 129], [4, 1000], [1, 4099], [127, 33], [64, 1000], [3, 20000]];
const SIZES = [1, 3, 7, 8, 127, 129, 1000, 4099, 300001];

test('binary and axpy match the reference (binary exactly), with aliasing', opts, () => {
  for (const n of SIZES) {
    const a = randArray(n), b = randArray(n, 0.5, 2);
    for (const op of [0, 1, 2, 3] as BinaryOp[]) {
      const want = new Float32Array(n);
      ew.binary(op, a, b, want, n);
      eachConfig((c) => {
        const out = new Float32Array(n);
        A.binary(op, a, b, out, n);
        assert.deepEqual(out, want, `binary op ${op} n=${n} ${c}`);
        const alias = a.slice();
        A.binary(op, alias, b, alias, n);
        assert.deepEqual(alias, want, `binary op ${op} n=${n} out===a ${c}`);
      });
    }
    const y0 = randArray(n), want = y0.slice();
    ew.axpy(0.37, a, want, n);
    eachConfig((c) => {
      const y = y0.slice();
      A.axpy(0.37, a, y, n);
      close(y, want, `axpy n=${n} ${c}`);
    });
  }
});

test('siluMul and siluMulBackward match the reference (including |g| up to 100)', opts, () => {
  for (const n of SIZES) {
    const g = randArray(n, -8, 8), u = randArray(n), dy = randArray(n);
    if (n > 4) [g[0], g[1], g[2], g[3]] = [-100, 100, -88.5, 0];
    const y = new Float32Array(n), dg = new Float32Array(n), du = new Float32Array(n);
    rows.siluMul(g, u, y, n);
    rows.siluMulBackward(g, u, dy, dg, du, n);
    eachConfig((c) => {
      const y2 = new Float32Array(n), dg2 = new Float32Array(n), du2 = new Float32Array(n);
      A.siluMul(g, u, y2, n);
      A.siluMulBackward(g, u, dy, dg2, du2, n);
      close(y2, y, `siluMul n=${n} ${c}`);
      close(dg2, dg, `siluMulBackward dg n=${n} ${c}`);
      close(du2, du, `siluMulBackward du n=${n} ${c}`);
    });
  }
});

test('softmax / logSoftmax and their backwards match the reference; y may alias x', opts, () => {
  for (const [r, c] of SHAPES) {
    const x = randArray(r * c, -6, 6), dy = randArray(r * c);
    if (c > 5) x[2] = -Infinity; /* a masked entry */
    const n = r * c;
    const ys = new Float32Array(n), yl = new Float32Array(n), dxs = new Float32Array(n), dxl = new Float32Array(n);
    rows.softmax(x, ys, r, c);
    rows.logSoftmax(x, yl, r, c);
    rows.softmaxBackward(ys, dy, dxs, r, c);
    rows.logSoftmaxBackward(yl, dy, dxl, r, c);
    eachConfig((cfg) => {
      const what = `[${r},${c}] ${cfg}`;
      const out = new Float32Array(n);
      A.softmax(x, out, r, c);
      close(out, ys, `softmax ${what}`);
      const alias = x.slice();
      A.softmax(alias, alias, r, c);
      close(alias, ys, `softmax y===x ${what}`);
      A.logSoftmax(x, out, r, c);
      close(out, yl, `logSoftmax ${what}`);
      const alias2 = x.slice();
      A.logSoftmax(alias2, alias2, r, c);
      close(alias2, yl, `logSoftmax y===x ${what}`);
      A.softmaxBackward(ys, dy, out, r, c);
      close(out, dxs, `softmaxBackward ${what}`);
      A.logSoftmaxBackward(yl, dy, out, r, c);
      close(out, dxl, `logSoftmaxBackward ${what}`);
    });
  }
});

test('rmsNorm forward and backward (dw accumulates) match the reference', opts, () => {
  for (const [r, c] of SHAPES) {
    const n = r * c;
    const x = randArray(n, -3, 3), w = randArray(c, 0.5, 1.5), dy = randArray(n), dw0 = randArray(c);
    const y = new Float32Array(n), rstd = new Float32Array(r), dx = new Float32Array(n), dw = dw0.slice();
    rows.rmsNorm(x, w, y, rstd, r, c, 1e-6);
    rows.rmsNormBackward(x, w, rstd, dy, dx, dw, r, c);
    eachConfig((cfg) => {
      const y2 = new Float32Array(n), rstd2 = new Float32Array(r), dx2 = new Float32Array(n), dw2 = dw0.slice();
      A.rmsNorm(x, w, y2, rstd2, r, c, 1e-6);
      close(y2, y, `rmsNorm y [${r},${c}] ${cfg}`);
      close(rstd2, rstd, `rmsNorm rstd [${r},${c}] ${cfg}`);
      A.rmsNormBackward(x, w, rstd, dy, dx2, dw2, r, c);
      const terms = Math.max(...rstd) * 1.5; /* |rstd * dy * w| <= max rstd * 1 * 1.5 */
      close(dx2, dx, `rmsNormBackward dx [${r},${c}] ${cfg}`, 1e-5, terms);
      close(dw2, dw, `rmsNormBackward dw [${r},${c}] ${cfg}`);
    });
  }
});

test('crossEntropy forward/backward match the reference over large vocabularies; ignored rows', opts, () => {
  for (const [r, v] of [[1, 1], [3, 7], [5, 129], [9, 4099], [4, 32000], [2, 129280], [40, 1000]] as Array<[number, number]>) {
    const logits = randArray(r * v, -8, 8), dloss = randArray(r, 0.1, 1);
    const targets = new Int32Array(r);
    for (let i = 0; i < r; i++) targets[i] = i % 4 === 1 ? -1 : Math.floor(rand() * v);
    const loss = new Float32Array(r), lse = new Float32Array(r), dl = new Float32Array(r * v);
    rows.crossEntropy(logits, targets, loss, lse, r, v);
    rows.crossEntropyBackward(logits, targets, lse, dloss, dl, r, v);
    eachConfig((cfg) => {
      const loss2 = new Float32Array(r), lse2 = new Float32Array(r), dl2 = new Float32Array(r * v).fill(NaN);
      A.crossEntropy(logits, targets, loss2, lse2, r, v);
      close(loss2, loss, `crossEntropy loss [${r},${v}] ${cfg}`);
      close(lse2, lse, `crossEntropy lse [${r},${v}] ${cfg}`);
      A.crossEntropyBackward(logits, targets, lse, dloss, dl2, r, v);
      close(dl2, dl, `crossEntropyBackward [${r},${v}] ${cfg}`);
      const alias = logits.slice(); /* dlogits written over the logits */
      A.crossEntropyBackward(alias, targets, lse, dloss, alias, r, v);
      close(alias, dl, `crossEntropyBackward in place [${r},${v}] ${cfg}`);
    });
  }
});

test('row and elementwise bindings reject short buffers and bad targets with RangeError', opts, () => {
  const x = new Float32Array(12), small = new Float32Array(11);
  assert.throws(() => A.softmax(x, small, 3, 4), (e: Error) => e instanceof RangeError && /'y'/.test(e.message));
  assert.throws(() => A.rmsNorm(x, new Float32Array(3), x, new Float32Array(3), 3, 4, 1e-6), (e: Error) => e instanceof RangeError && /'w'/.test(e.message));
  assert.throws(() => A.binary(0, x, small, x, 12), (e: Error) => e instanceof RangeError && /'b'/.test(e.message));
  assert.throws(() => A.binary(7, x, x, x, 12), RangeError);
  assert.throws(() => A.softmax(x, x, -1, 4), RangeError);
  assert.throws(() => A.softmax(x, new Int32Array(12), 3, 4), TypeError);
  const t = new Int32Array([0, 4, 1]);
  assert.throws(() => A.crossEntropy(x, t, new Float32Array(3), new Float32Array(3), 3, 4),
    (e: Error) => e instanceof RangeError && /target 4 at row 1/.test(e.message));
  assert.throws(() => A.crossEntropyBackward(x, t, new Float32Array(3), new Float32Array(3), x, 3, 4),
    (e: Error) => e instanceof RangeError && /target 4 at row 1/.test(e.message));
  assert.throws(() => A.crossEntropy(x, new Int32Array(2), new Float32Array(3), new Float32Array(3), 3, 4),
    (e: Error) => e instanceof RangeError && /'targets'/.test(e.message));
  // empty buffers are valid for empty calls
  const e = new Float32Array(0);
  A.softmax(e, e, 0, 5);
  A.binary(0, e, e, e, 0);
  A.crossEntropy(e, new Int32Array(0), e, e, 0, 10);
  A.rmsNormBackward(e, new Float32Array(5), e, e, e, new Float32Array(5), 0, 5);
});

// ---- attention -----------------------------------------------------------------------------

interface AttCase {
  name: string; B: number; H: number; KVH: number; tq: number; tk: number; dqk: number; dv: number; off: number;
  /** V is a view of K's buffer (its first dv columns), as in MLA's absorbed form */
  vInK?: boolean;
  /** extra elements of padding per token row (q/out: a wider packed buffer) */
  pad?: number;
}

const CASES: AttCase[] = [
  { name: 'kvHeads=H prefill', B: 2, H: 3, KVH: 3, tq: 37, tk: 37, dqk: 16, dv: 8, off: 0 },
  { name: 'kvHeads=1 across key tiles', B: 2, H: 4, KVH: 1, tq: 70, tk: 70, dqk: 20, dv: 12, off: 0 },
  { name: 'multi-chunk (last chunk one row), awkward dims', B: 2, H: 2, KVH: 2, tq: 129, tk: 129, dqk: 33, dv: 7, off: 0, pad: 5 },
  { name: 'prefix cache (causalOffset = tk - tq)', B: 1, H: 2, KVH: 2, tq: 5, tk: 130, dqk: 24, dv: 24, off: 125 },
  { name: 'negative offset (rows without keys)', B: 1, H: 2, KVH: 1, tq: 10, tk: 10, dqk: 8, dv: 8, off: -3 },
  { name: 'decode tq=1, kvHeads=1, V inside K', B: 1, H: 8, KVH: 1, tq: 1, tk: 1000, dqk: 40, dv: 24, off: 999, vInK: true },
  { name: 'decode tq=1, kvHeads=H', B: 2, H: 3, KVH: 3, tq: 1, tk: 300, dqk: 32, dv: 16, off: 299 },
  { name: 'absorbed MLA dims (576/512), V inside K', B: 1, H: 4, KVH: 1, tq: 3, tk: 80, dqk: 576, dv: 512, off: 77, vInK: true },
  { name: 'one (b, kv head): split key range', B: 1, H: 4, KVH: 1, tq: 200, tk: 200, dqk: 32, dv: 16, off: 0 },
  { name: 'd = 192 training shape', B: 1, H: 2, KVH: 2, tq: 96, tk: 96, dqk: 192, dv: 128, off: 0 },
  // >= 4 (batch, kv head)s a thread: the forward runs whole (b, h)s from packed K/V (and
  // prefetches the next one's rows), the backward packs K/V and sums dK/dV in scratch
  { name: 'many (b, h): packed K/V, awkward dims', B: 3, H: 4, KVH: 4, tq: 129, tk: 129, dqk: 27, dv: 13, off: 0, pad: 3 },
  { name: 'many (b, h): prefix cache, tq < tk', B: 2, H: 4, KVH: 4, tq: 40, tk: 100, dqk: 24, dv: 20, off: 60 },
  { name: 'many (b, h): negative offset, T = 7', B: 4, H: 2, KVH: 2, tq: 7, tk: 7, dqk: 9, dv: 5, off: -2 },
  { name: 'many (b, h): kvHeads=1 groups, V inside K', B: 8, H: 3, KVH: 1, tq: 3, tk: 3, dqk: 12, dv: 8, off: 0, vInK: true },
  { name: 'many (b, h): tq = 1, kvHeads=1 (2 rows a chunk)', B: 8, H: 2, KVH: 1, tq: 1, tk: 4, dqk: 16, dv: 16, off: 3 },
  { name: 'one query, one key (dq is exactly 0)', B: 2, H: 3, KVH: 3, tq: 1, tk: 1, dqk: 8, dv: 8, off: 0 },
];

function setup(c: AttCase): { p: AttentionParams; q: Float32Array; k: Float32Array; v: Float32Array; dout: Float32Array; nq: number; nk: number; nv: number; no: number } {
  const pad = c.pad ?? 0;
  const qRow = c.H * c.dqk + pad, oRow = c.H * c.dv + pad, kRow = c.KVH * c.dqk + pad;
  const vRow = c.vInK ? kRow : c.KVH * c.dv;
  const nq = c.B * c.tq * qRow, no = c.B * c.tq * oRow, nk = c.B * c.tk * kRow, nv = c.vInK ? nk : c.B * c.tk * vRow;
  const p: AttentionParams = {
    batch: c.B, heads: c.H, kvHeads: c.KVH, tq: c.tq, tk: c.tk, dqk: c.dqk, dv: c.dv,
    scale: 1 / Math.sqrt(c.dqk), causalOffset: c.off,
    qStrides: [c.tq * qRow, qRow, c.dqk], kStrides: [c.tk * kRow, kRow, c.dqk],
    vStrides: c.vInK ? [c.tk * kRow, kRow, c.dqk] : [c.tk * vRow, vRow, c.dv], oStrides: [c.tq * oRow, oRow, c.dv],
  };
  const k = randArray(nk, -2, 2);
  return { p, q: randArray(nq, -2, 2), k, v: c.vInK ? k : randArray(nv, -2, 2), dout: randArray(no), nq, nk, nv, no };
}

for (const c of CASES) {
  test(`attention forward/backward: ${c.name}`, opts, () => {
    const { p, q, k, v, dout, nq, nk, nv, no } = setup(c);
    const out = new Float32Array(no), lse = new Float32Array(c.B * c.H * c.tq);
    att.attention(p, q, k, v, out, lse);
    // with V inside K, dk and dv are one buffer too: the reference (and the contract) sum them
    const dq = new Float32Array(nq), dk = new Float32Array(nk), dv = c.vInK ? dk : new Float32Array(nv);
    att.attentionBackward(p, q, k, v, out, lse, dout, dq, dk, dv);
    eachConfig((cfg) => {
      const out2 = new Float32Array(no).fill(NaN), lse2 = new Float32Array(lse.length).fill(NaN);
      A.attention(p, q, k, v, out2, lse2);
      // padding columns (not in the view) are never written; the reference leaves them 0
      const oRow = c.H * c.dv + (c.pad ?? 0);
      for (let i = 0; i < no; i++) if (i % oRow >= c.H * c.dv) out2[i] = 0;
      close(out2, out, `out ${cfg}`);
      close(lse2, lse, `lse ${cfg}`);
      const dq2 = new Float32Array(nq).fill(7), dk2 = new Float32Array(nk).fill(7);
      const dv2 = c.vInK ? dk2 : new Float32Array(nv).fill(7);
      if (c.pad) { // padding is not part of any view: the reference leaves it 0, the kernel leaves it alone
        for (const [a, row, w] of [[dq2, c.H * c.dqk + c.pad, c.H * c.dqk], [dk2, c.KVH * c.dqk + c.pad, c.KVH * c.dqk]] as Array<[Float32Array, number, number]>)
          for (let i = 0; i < a.length; i++) if (i % row >= w) a[i] = 0;
      }
      A.attentionBackward(p, q, k, v, out, lse, dout, dq2, dk2, dv2);
      // dq and dk are sums of the same terms (probability x score gradient x a row of K or
      // Q), which cancel exactly where one key is visible (softmax of one score: dq = 0): the
      // largest gradient of the three is their scale
      const floor = Math.max(maxAbs(dq), maxAbs(dk), maxAbs(dv));
      close(dq2, dq, `dq ${cfg}`, 3e-5, floor);
      close(dk2, dk, `dk ${cfg}`, 3e-5, floor);
      if (!c.vInK) close(dv2, dv, `dv ${cfg}`, 3e-5);
    });
  });
}

test('attention bindings validate kvHeads and buffer extents', opts, () => {
  const c: AttCase = { name: '', B: 1, H: 4, KVH: 4, tq: 4, tk: 4, dqk: 8, dv: 8, off: 0 };
  const { p, q, k, v, no } = setup(c);
  const out = new Float32Array(no), lse = new Float32Array(16);
  assert.throws(() => A.attention({ ...p, kvHeads: 2 }, q, k, v, out, lse), (e: Error) => e instanceof RangeError && /kvHeads/.test(e.message));
  assert.throws(() => A.attention(p, q.subarray(1), k, v, out, lse), (e: Error) => e instanceof RangeError && /'q'/.test(e.message));
  assert.throws(() => A.attention(p, q, k, v, out, lse.subarray(1)), (e: Error) => e instanceof RangeError && /'lse'/.test(e.message));
  assert.throws(() => A.attentionBackward(p, q, k, v, out, lse, out, q, k, v.subarray(3)), (e: Error) => e instanceof RangeError && /'dv'/.test(e.message));
  assert.throws(() => A.attention({ ...p, qStrides: [1, 2] as unknown as [number, number, number] }, q, k, v, out, lse), TypeError);
  assert.throws(() => A.attention({ ...p, tq: -1 }, q, k, v, out, lse), RangeError);
});

test('attention with no keys (tk = 0): out 0, lse -inf, dq 0', opts, () => {
  const c: AttCase = { name: '', B: 2, H: 2, KVH: 1, tq: 3, tk: 0, dqk: 4, dv: 4, off: 0 };
  const { p, q, k, v, dout, no } = setup(c);
  eachConfig((cfg) => {
    const out = new Float32Array(no).fill(NaN), lse = new Float32Array(12), dq = new Float32Array(q.length).fill(NaN);
    A.attention(p, q, k, v, out, lse);
    assert.deepEqual(out, new Float32Array(no), `out ${cfg}`);
    assert.deepEqual(lse, new Float32Array(12).fill(-Infinity), `lse ${cfg}`);
    A.attentionBackward(p, q, k, v, out, lse, dout, dq, new Float32Array(0), new Float32Array(0));
    assert.deepEqual(dq, new Float32Array(q.length), `dq ${cfg}`);
  });
});
