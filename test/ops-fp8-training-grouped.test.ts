// The FP8 grouped MoE FFN op (src/engine/ops/fp8-training-grouped.ts, paper §3.3 / Figure 6,
// docs/SPEC.md §2): forward and every gradient against an oracle that runs each expert (and the shared
// expert) through the FP8 Linear op (fp8TrainingLinear, itself checked against the exact FP8 GEMM of
// test/helpers/fp8-gemm-oracle.ts) on that expert's tokens only, with the SwiGLU inputs cached in
// FP8 for the backward (§3.3.3: `swigluDown`), on experts with 0, 1, 127 and
// 129 tokens (Wgrad tiles must restart at every expert's first token); deferWeightGrads giving
// the same weight gradients; the no-graph forward; and the result being close to, but not equal
// to, float32.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward, customOp, noGrad } from '../src/engine/autograd.js';
import { kernels } from '../src/engine/backend.js';
import { quantTiles1x128 } from '../src/engine/fp8/quant.js';
import { Tensor } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { fixturePath, readJson } from './helpers/fixtures.js';
import { randData, rng } from './helpers/random.js';
import { assertRowRel } from './helpers/compare.js';
import { expertRuns, setFp8KeepExpertY } from '../src/engine/ops/fp8-training-grouped.js';
import { nativeForTests } from './helpers/native-configs.js';
import { nativeAddon } from '../src/engine/native.js';

const TOL = readJson<{ fp8_linear: { gemm_outputs_row_rel_to_max: number } }>(fixturePath('tolerances.json')).fp8_linear.gemm_outputs_row_rel_to_max;
const rowRel = (got: Float32Array, exp: Float32Array, cols: number, what: string, tol = TOL): number => assertRowRel(got, exp, cols, tol, what);
const r = rng(88);


interface Case {
  N: number;
  D: number;
  K: number;
  E: number;
  x: Float32Array;
  gates: Float32Array;
  idx: Int32Array;
  /** gate[E], up[E], down[E], then (optionally) shared gate, up, down: data and shapes. */
  ws: { d: Float32Array; shape: [number, number] }[];
  shared: boolean;
}

/** Expert e gets counts[e] of the N·K (token, slot) pairs, in a random order. */
function makeCase(counts: number[], K: number, D: number, I: number, Is: number | null): Case {
  const P = counts.reduce((a, b) => a + b, 0);
  const N = P / K;
  assert.ok(Number.isInteger(N));
  const E = counts.length;
  const list = counts.flatMap((c, e) => Array<number>(c).fill(e));
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  const x = randData(r, N * D);
  for (let t = 0; t < N; t++) {
    const s = 2 ** Math.floor(r() * 6 - 3); // per-token magnitudes and an outlier channel
    for (let j = 0; j < D; j++) x[t * D + j]! *= j === 3 ? 30 * s : s;
  }
  const gates = new Float32Array(N * K).map(() => 0.1 + r());
  const w = (rows: number, cols: number) => ({ d: randData(r, rows * cols, 0.05), shape: [rows, cols] as [number, number] });
  const ws = [...counts.map(() => w(I, D)), ...counts.map(() => w(I, D)), ...counts.map(() => w(D, I))];
  if (Is !== null) ws.push(w(Is, D), w(Is, D), w(D, Is));
  return { N, D, K, E, x, gates, idx: Int32Array.from(list), ws, shared: Is !== null };
}

function weightsOf(c: Case, ts: Tensor[]): ops.ExpertWeights {
  const E = c.E;
  return {
    gate: ts.slice(0, E), up: ts.slice(E, 2 * E), down: ts.slice(2 * E, 3 * E),
    shared: c.shared ? { gate: ts[3 * E]!, up: ts[3 * E + 1]!, down: ts[3 * E + 2]! } : null,
  };
}

/** 1x128-tile FP8 values (quantise, dequantise) of a [rows, cols] tensor. */
function qdq(t: Tensor): Float32Array {
  const [rows, cols] = t.shape as [number, number];
  const out = new Float32Array(rows * cols);
  quantTiles1x128(t.contiguous().f32(), 0, cols, rows, cols, null, null, out);
  return out;
}

/**
 * The down projection of one expert on its SwiGLU, fp8TrainingLinear(swiglu(G, U), W2), with the
 * SwiGLU inputs cached in FP8 (paper §3.3.3): the backward takes the SwiGLU gradient at the
 * 1x128-tile FP8 values q(G), q(U); W2's Wgrad uses H's FP8 copy, as fp8TrainingLinear's.
 */
function swigluDown(G: Tensor, U: Tensor, W2: Tensor): Tensor {
  return customOp('fp8SwigluDown', [G, U, W2], (g, u, w2) => ops.fp8TrainingLinear(ops.swiglu(g, u), w2), (gy, g, u, w2) => {
    const n = g.size;
    const gq = qdq(g);
    const uq = qdq(u);
    const dH = ops.fp8LinearGradInput(gy, ops.quantizeFp8Weight(w2));
    const dW2 = ops.fp8LinearGradWeight(gy, ops.quantizeFp8Activation(ops.swiglu(g, u)));
    const dG = new Float32Array(n);
    const dU = new Float32Array(n);
    kernels().siluMulBackward(gq, uq, dH.contiguous().f32(), dG, dU, n);
    return [Tensor.fromF32(dG, g.shape), Tensor.fromF32(dU, u.shape), dW2];
  });
}

/** The oracle: the shared expert and every routed expert on its own tokens, through fp8TrainingLinear. */
function oracle(c: Case, x: Tensor, gates: Tensor, w: ops.ExpertWeights): Tensor {
  const { N, D, K, E } = c;
  const ffn = (h: Tensor, g: Tensor, u: Tensor, d: Tensor): Tensor => swigluDown(ops.fp8TrainingLinear(h, g), ops.fp8TrainingLinear(h, u), d);
  const { offsets, rows, slots } = ops.expertPlan(c.idx, K, E);
  const outs: Tensor[] = [];
  for (let e = 0; e < E; e++) {
    const a = offsets[e]!;
    const b = offsets[e + 1]!;
    if (a < b) outs.push(ffn(ops.indexSelect(x, 0, rows.subarray(a, b)), w.gate[e]!, w.up[e]!, w.down[e]!));
  }
  const g = ops.indexSelect(gates.reshape([N * K]), 0, slots).reshape([N * K, 1]);
  const base = w.shared ? ffn(x, w.shared.gate, w.shared.up, w.shared.down) : Tensor.zeros([N, D]);
  return ops.indexAdd(base, 0, rows, ops.mul(ops.cat(outs, 0), g));
}

type Op = (x: Tensor, gates: Tensor, w: ops.ExpertWeights) => Tensor;

/** Output, dx, dgates and every weight gradient of op on fresh parameters of c. */
function run(c: Case, op: Op, R: Float32Array, defer = false): Float32Array[] {
  const x = Tensor.param(c.x.slice(), [c.N, c.D]);
  const gates = Tensor.param(c.gates.slice(), [c.N, c.K]);
  const ws = c.ws.map((w) => Tensor.param(w.d.slice(), w.shape));
  const y = op(x, gates, weightsOf(c, ws));
  const g = Tensor.fromF32(R.slice(), y.shape);
  if (!defer) backward(y, g);
  else {
    const { weightGrads } = ops.deferWeightGrads(() => backward(y, g));
    assert.ok(x.grad && gates.grad, 'dX and dgates come with the B part');
    assert.ok(ws.every((w) => w.grad === null), 'weight gradients wait for their closures');
    assert.ok(weightGrads.length > 0);
    for (const f of weightGrads) f();
  }
  return [y.f32(), x.grad!.f32(), gates.grad!.f32(), ...ws.map((w) => w.grad?.f32() ?? new Float32Array(w.size))];
}

const fp8Op = (c: Case): Op => (x, g, w) => ops.fp8GroupedExperts(x, g, c.idx, w);
const oracleOp = (c: Case): Op => (x, g, w) => oracle(c, x, g, w);

// experts with 0, 1, 127 and 129 tokens (plus a small one); D and I cross a 128 boundary
const CASES: [number[], number, number, number, number | null][] = [
  [[0, 1, 127, 129, 3], 2, 160, 144, 136],
  [[129, 0, 127, 1], 1, 130, 40, null],
];

test('fp8GroupedExperts: output and all gradients match per-expert fp8TrainingLinear (experts with 0, 1, 127, 129 tokens)', () => {
  for (const [counts, K, D, I, Is] of CASES) {
    const c = makeCase(counts, K, D, I, Is);
    const R = randData(r, c.N * c.D);
    const got = run(c, fp8Op(c), R);
    const exp = run(c, oracleOp(c), R);
    const names = ['out', 'dx', 'dgates', ...c.ws.map((_, i) => `dW[${i}]`)];
    // dgates[t, j] = dout[t] · Y[p] sums with cancellation in another order: relative to the largest
    const cols = [D, D, c.N * K, ...c.ws.map((w) => w.shape[1])];
    got.forEach((v, i) => rowRel(v, exp[i]!, cols[i]!, `${names[i]} (counts ${counts.join(',')})`));
    // the expert with no token gets no weight gradient
    const empty = counts.indexOf(0);
    assert.ok(got[3 + empty]!.every((v) => v === 0) && got[3 + c.E + empty]!.every((v) => v === 0));
  }
});

test('fp8GroupedExperts: deferWeightGrads gives the same gradients; the no-graph forward is the same', () => {
  const c = makeCase([0, 1, 127, 129, 3], 2, 160, 144, 136);
  const R = randData(r, c.N * c.D);
  const now = run(c, fp8Op(c), R);
  const later = run(c, fp8Op(c), R, true);
  later.forEach((v, i) => assert.deepEqual(v, now[i]!, `tensor ${i}`));
  const y = noGrad(() => ops.fp8GroupedExperts(Tensor.fromF32(c.x, [c.N, c.D]), Tensor.fromF32(c.gates, [c.N, c.K]), c.idx, weightsOf(c, c.ws.map((w) => Tensor.fromF32(w.d, w.shape)))));
  assert.deepEqual(y.f32(), now[0]!);
});

test('fp8GroupedExperts: quantisation is on (differs from float32 groupedExperts) but close to it', () => {
  const c = makeCase([0, 1, 127, 129, 3], 2, 160, 144, 136);
  const R = randData(r, c.N * c.D);
  const fp8 = run(c, fp8Op(c), R);
  const f32 = run(c, (x, g, w) => ops.groupedExperts(x, g, c.idx, w), R);
  fp8.forEach((v, i) => {
    if (v.every((e) => e === 0)) return; // the expert without tokens
    assert.notDeepEqual(v, f32[i]!, `tensor ${i} is quantised`);
    rowRel(v, f32[i]!, v.length, `tensor ${i} close to float32`, 0.1);
  });
});

test('fp8GroupedExperts: keeping the forward Y for dgate (no VDPBF16PS) equals recomputing it, bit for bit, on every ISA', () => {
  const counts = [0, 1, 127, 129, 3];
  const c = makeCase(counts, 2, 160, 144, 136);
  const R = randData(r, c.N * c.D);
  // the recompute runs the down projection in runs of experts of about half the pairs (peak RSS):
  // one GEMM batch per non-empty run that keeping Y saves
  const offsets = Int32Array.from([0, ...counts.map((_, e) => counts.slice(0, e + 1).reduce((a, b) => a + b, 0))]);
  const P = offsets[counts.length]!;
  const saved = expertRuns(offsets, counts.length, Math.ceil(P / 2)).filter(([e0, e1]) => offsets[e1]! > offsets[e0]!).length;
  assert.ok(saved >= 2, 'the case splits the recompute into runs');
  const check = (label: string): void => {
    try {
      // the down projection's batches run again when Y is recomputed (counted on the backend)
      const K = kernels() as { fp8GemmBatch: (...a: unknown[]) => unknown };
      const orig = K.fp8GemmBatch;
      let calls = 0;
      K.fp8GemmBatch = (...a: unknown[]) => (calls++, orig.apply(K, a));
      let re: Float32Array[], kept: Float32Array[], nRe: number, nKept: number;
      try {
        setFp8KeepExpertY('recompute');
        re = run(c, fp8Op(c), R);
        nRe = calls;
        setFp8KeepExpertY('keep');
        kept = run(c, fp8Op(c), R);
        nKept = calls - nRe;
      } finally {
        K.fp8GemmBatch = orig;
      }
      assert.equal(nRe, nKept + saved, `${label}: ${saved} fewer GEMM batches with Y kept`);
      kept.forEach((v, i) => assert.deepEqual(v, re[i]!, `${label}: tensor ${i}`));
      assert.ok(re[2]!.some((v) => v !== 0), 'dgates are computed');
      setFp8KeepExpertY('auto');
      const auto = run(c, fp8Op(c), R);
      auto.forEach((v, i) => assert.deepEqual(v, re[i]!, `${label} (auto): tensor ${i}`));
    } finally {
      setFp8KeepExpertY('auto');
    }
  };
  if (kernels().name !== 'native' || !nativeAddon()) return check(kernels().name);
  const { eachConfig } = nativeForTests();
  eachConfig((cfg) => {
    check(cfg);
  });
});

test('fp8GroupedExperts keeps no weight codes from forward to backward (made again from the unchanged weights: same bits, arena poison, deferred too)', async () => {
  const { BufferArena } = await import('../src/engine/arena.js');
  const { withArena } = await import('../src/engine/active-arena.js');
  const c = makeCase([0, 1, 127, 129, 3], 2, 160, 144, 136);
  const R = randData(r, c.N * c.D);
  const plain = run(c, fp8Op(c), R);
  const weightCodeBytes = c.ws.reduce((s, w) => s + w.d.length, 0);
  for (const defer of [false, true]) {
    const arena = new BufferArena({ poison: true, minElems: 16 });
    let inUseAfterForward = 0;
    const op: Op = (x, g, w) => {
      const y = ops.fp8GroupedExperts(x, g, c.idx, w);
      inUseAfterForward = arena.stats().inUseBytes;
      return y;
    };
    const got = withArena(arena, () => run(c, op, R, defer).map((v) => v.slice()));
    got.forEach((v, i) => assert.deepEqual(v, plain[i]!, `tensor ${i} (arena, poison, defer ${defer})`));
    // what the forward leaves in use: out, the FP8 caches of x, G, U, H (1 byte per element) and their scales
    const P = c.idx.length;
    const cached = c.N * c.D * 4 + c.N * c.D + 3 * P * 144 + 3 * c.N * 136;
    assert.ok(inUseAfterForward < cached * 1.3 + 65536, `in use after forward ${inUseAfterForward} B; the caches ~${cached} B`);
    assert.ok(inUseAfterForward + weightCodeBytes > cached * 1.3 + 65536, 'the bound would catch kept weight codes');
  }
});
