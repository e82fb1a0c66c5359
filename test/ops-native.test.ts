// native == reference for every kernel-backed op: the same op, forward and backward, run under
// withBackend('native') and withBackend('reference') on random inputs with awkward sizes
// (1, 3, 7, 127, 129, 1000), compared with a relative tolerance scaled by magnitude.
// Without the addon these tests fail under CI / DSV3_REQUIRE_NATIVE and are skipped otherwise.
import { test, type TestContext } from 'node:test';
import { withBackend } from '../src/engine/backend.js';
import { f32ArrayToBf16 } from '../src/engine/dtype.js';
import { Tensor, shapeSize } from '../src/engine/tensor.js';
import * as ops from '../src/engine/ops/index.js';
import { requireNative } from './helpers/backends.js';
import { assertClose } from './helpers/compare.js';
import { randData, randInts, rng } from './helpers/random.js';
import { backward } from '../src/engine/autograd.js';

const r = rng(99);

interface Case {
  name: string;
  shapes: number[][];
  /** The op on parameters built from the inputs (layout transforms go inside). */
  fn: (...xs: Tensor[]) => Tensor;
  /** Input scale (default 1). */
  scale?: number;
  rtol?: number;
  /** Absolute tolerance, for results that cancel terms of order 1 (default 0). */
  atol?: number;
}

/** Forward + backward (gradient R) of c on the active backend: [out, ...input grads]. */
function run(c: Case, inputs: Float32Array[], R: Float32Array | null): Float32Array[] {
  const ps = inputs.map((d, i) => Tensor.param(d.slice(), c.shapes[i]!));
  const y = c.fn(...ps);
  backward(y, Tensor.fromF32(R ?? new Float32Array(y.size).fill(1), y.shape));
  return [y.toF32Array(), ...ps.map((p) => p.grad?.toF32Array() ?? new Float32Array(0))];
}

function compare(t: TestContext, cases: Case[]): void {
  if (!requireNative(t)) return;
  for (const c of cases) {
    const inputs = c.shapes.map((s) => randData(r, shapeSize(s), c.scale ?? 1));
    const probe = withBackend('reference', () => noGradSize(c, inputs));
    const R = randData(r, probe);
    const nat = withBackend('native', () => run(c, inputs, R));
    const ref = withBackend('reference', () => run(c, inputs, R));
    nat.forEach((a, i) => assertClose(a, ref[i]!, c.rtol ?? 1e-5, `${c.name}: ${i === 0 ? 'forward' : `grad of input ${i - 1}`}`, c.atol ?? 0));
  }
}

/** Output size of a case (one forward on the reference backend). */
function noGradSize(c: Case, inputs: Float32Array[]): number {
  return c.fn(...inputs.map((d, i) => Tensor.fromF32(d, c.shapes[i]!))).size;
}

const tr = (t: Tensor): Tensor => t.transpose(-1, -2);

test('native == reference: elementwise (binary, axpy via gradient accumulation)', (t) => {
  const cases: Case[] = [];
  for (const n of [1, 3, 7, 127, 129, 1000]) {
    cases.push({ name: `add/mul/sub/div ${n}`, shapes: [[n], [n]], fn: (a, b) => ops.div(ops.sub(ops.mul(ops.add(a, b), a), b), ops.add(ops.exp(b), 1)) });
  }
  cases.push({ name: 'fan-out accumulation [129, 7]', shapes: [[129, 7]], fn: (a) => ops.add(ops.mul(a, a), ops.scale(a, 3)) });
  compare(t, cases);
});

test('native == reference: matmul (trans flags, batches, awkward sizes)', (t) => {
  const cases: Case[] = [];
  const dims: [number, number, number][] = [[1, 1, 1], [3, 7, 1], [7, 3, 127], [129, 127, 3], [1, 129, 1000], [127, 1, 129], [33, 65, 1000]];
  for (const [m, k, n] of dims) {
    cases.push({ name: `matmul NN ${m}x${k}x${n}`, shapes: [[m, k], [k, n]], fn: ops.matmul, rtol: 2e-5 });
    cases.push({ name: `matmul TT ${m}x${k}x${n}`, shapes: [[k, m], [n, k]], fn: (a, b) => ops.matmul(tr(a), tr(b)), rtol: 2e-5 });
  }
  cases.push({ name: 'matmul folded batch [3,7,129]@[129,127]', shapes: [[3, 7, 129], [129, 127]], fn: ops.matmul, rtol: 2e-5 });
  cases.push({ name: 'matmul broadcast batch [2,1,3,7]@[3,7,129]^T', shapes: [[2, 1, 3, 7], [3, 129, 7]], fn: (a, b) => ops.matmul(a, tr(b)), rtol: 2e-5 });
  compare(t, cases);
});

test('native == reference: linear (NT forward, split backward, bf16 weights)', (t) => {
  const cases: Case[] = [];
  for (const [rows, inF, outF] of [[1, 1, 1], [3, 7, 129], [129, 127, 7], [7, 1000, 3], [2, 129, 1000]] as const) {
    cases.push({ name: `linear ${rows}x${inF}->${outF}`, shapes: [[rows, inF], [outF, inF]], fn: ops.linear, rtol: 2e-5 });
  }
  cases.push({ name: 'linear 3-D x, transposed w', shapes: [[2, 3, 127], [127, 129]], fn: (x, w) => ops.linear(x, tr(w)), rtol: 2e-5 });
  const wbits = f32ArrayToBf16(randData(r, 129 * 127));
  const wb = new Tensor(wbits, [129, 127], 'bf16');
  cases.push({ name: 'linear bf16 weights [7,127]->129', shapes: [[7, 127]], fn: (x) => ops.linear(x, wb), rtol: 2e-5 });
  compare(t, cases);
});

test('native == reference: softmax, logSoftmax, rmsNorm, swiglu', (t) => {
  const cases: Case[] = [];
  for (const [rows, cols] of [[1, 1], [3, 7], [7, 127], [129, 3], [2, 1000], [1, 129]] as const) {
    cases.push({ name: `softmax ${rows}x${cols}`, shapes: [[rows, cols]], fn: (x) => ops.softmax(x), scale: 3 });
    cases.push({ name: `logSoftmax ${rows}x${cols}`, shapes: [[rows, cols]], fn: (x) => ops.logSoftmax(x), scale: 3 });
    cases.push({ name: `rmsNorm ${rows}x${cols}`, shapes: [[rows, cols], [cols]], fn: (x, w) => ops.rmsNorm(x, w, 1e-6), atol: 1e-6 });
    cases.push({ name: `swiglu ${rows}x${cols}`, shapes: [[rows, cols], [rows, cols]], fn: ops.swiglu, scale: 2 });
  }
  cases.push({ name: 'softmax dim 0 [129, 7]', shapes: [[129, 7]], fn: (x) => ops.softmax(x, 0) });
  compare(t, cases);
});

test('native == reference: crossEntropy (ignored rows, large vocab)', (t) => {
  const cases: Case[] = [];
  for (const [N, V] of [[1, 1], [3, 7], [7, 129], [129, 127], [5, 1000]] as const) {
    const targets = randInts(r, N, V);
    for (let i = 1; i < N; i += 3) targets[i] = -1;
    for (const red of ['mean', 'sum', 'none'] as const) {
      cases.push({ name: `crossEntropy ${N}x${V} ${red}`, shapes: [[N, V]], fn: (x) => ops.crossEntropy(x, targets, red), scale: 3 });
    }
  }
  compare(t, cases);
});

test('native == reference: attention (Hk = 1 and H, offsets, strided views)', (t) => {
  const cases: Case[] = [];
  const configs = [
    { B: 1, T: 1, S: 1, H: 1, d: 1, dv: 1 },
    { B: 2, T: 3, S: 7, H: 3, d: 7, dv: 3 },
    { B: 1, T: 129, S: 129, H: 2, d: 16, dv: 8 },
    { B: 1, T: 7, S: 127, H: 4, d: 33, dv: 17 },
  ];
  for (const { B, T, S, H, d, dv } of configs) {
    for (const Hk of [H, 1]) {
      const scale = 1 / Math.sqrt(d);
      cases.push({ name: `attention B${B} T${T} S${S} H${H} Hk${Hk}`, shapes: [[B, T, H, d], [B, S, Hk, d], [B, S, Hk, dv]],
        fn: (q, k, v) => ops.attention(q, k, v, { scale }) });
      cases.push({ name: `attention offset 0, strided kv, Hk${Hk}`, shapes: [[B, H, T, d], [B, S, Hk, d + dv]],
        fn: (q, kv) => {
          const [k, v] = ops.split(kv, [d, dv], -1);
          return ops.attention(q.transpose(1, 2), k!, v!, { scale, causalOffset: Math.min(0, S - T) });
        } });
    }
  }
  compare(t, cases);
});
