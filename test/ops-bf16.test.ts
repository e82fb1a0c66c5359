// BF16 mixed-precision training (src/model/precision-mode.ts; issue 13): the bf16 ops against
// a TypeScript oracle that rounds the operands to bf16 the same way (tight: float32 summation
// order) and against float32 (loose: the bf16 rounding of the operands), a finite-difference
// gradient check, the weights' bf16 copies (once per optimizer step), which ops a bf16 step
// runs, a short training run whose losses track float32's, and `dsv3 train --precision bf16`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { backward, noGrad } from '../src/engine/autograd.js';
import { BufferArena } from '../src/engine/arena.js';
import { withArena } from '../src/engine/active-arena.js';
import { bf16WeightCopyBytes, setBf16WeightCopies } from '../src/engine/bf16-weights.js';
import { withBackend } from '../src/engine/backend.js';
import { bf16WeightBits, invalidateBf16Weights } from '../src/engine/bf16-weights.js';
import { bf16ToF32, f32ToBf16 } from '../src/engine/dtype.js';
import * as ops from '../src/engine/ops/index.js';
import { Tensor } from '../src/engine/tensor.js';
import { loadMobyDick } from '../src/data/corpus.js';
import { prepareData, type PreparedData } from '../src/data/dataset.js';
import { parseTrainArgs } from '../src/cli/commands/train.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { trainingPrecision, withPrecision } from '../src/model/precision-mode.js';
import { fp8Enabled, withFp8 } from '../src/model/fp8-mode.js';
import { readMetrics, type StepRecord } from '../src/train/metrics.js';
import { AdamW } from '../src/train/optimizer.js';
import { applyUpdate, forwardLosses } from '../src/train/train-step.js';
import type { TrainOptions } from '../src/train/train-options.js';
import { train } from '../src/train/trainer.js';
import { assertClose } from './helpers/compare.js';
import { randTensor, rng } from './helpers/random.js';
import { tinyConfigJson, tinyTrainingArgs } from './helpers/tiny-config.js';

const rb = (x: number): number => bf16ToF32(f32ToBf16(x));
const roundAll = (a: Float32Array): Float32Array => a.map(rb);

/**
 * The oracle: C = op(A) op(B) with both operands rounded to bf16, summed in float64. Returns C
 * and mag = Σ|a b| per element (for the float32 summation-order bound 3e-7 (k + 4) mag).
 */
function oracle(ta: boolean, tb: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array): { c: Float64Array; mag: Float64Array } {
  const ar = roundAll(a);
  const br = roundAll(b);
  const c = new Float64Array(m * n);
  const mag = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let g = 0;
      for (let p = 0; p < k; p++) {
        const v = ar[ta ? p * m + i : i * k + p]! * br[tb ? j * k + p : p * n + j]!;
        s += v;
        g += Math.abs(v);
      }
      c[i * n + j] = s;
      mag[i * n + j] = g;
    }
  }
  return { c, mag };
}

/** |got - c| <= 3e-7 (k + 4) mag element by element: equal up to float32 summation order. */
function assertTight(got: Float32Array, o: { c: Float64Array; mag: Float64Array }, k: number, what: string): void {
  assert.equal(got.length, o.c.length);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i]! - o.c[i]!) <= 3e-7 * (k + 4) * o.mag[i]! + 1e-30)) assert.fail(`${what}[${i}]: ${got[i]} vs oracle ${o.c[i]}`);
  }
}

/**
 * The float32 comparison: bf16 keeps 8 significant bits, so each rounded operand carries a
 * relative error <= 2^-8 (unit roundoff), each product one <= 2^-7 + 2^-16, and
 * |bf16 result - exact| <= (2^-7 + 2^-16) Σ|a b| (+ float32 summation); the bound used is
 * 1.01 * 2^-7 Σ|a b| + 3e-7 (k + 4) Σ|a b|.
 */
function assertBf16Bound(got: Float32Array, exact32: Float32Array, a: Float32Array, b: Float32Array, ta: boolean, tb: boolean,
  m: number, n: number, k: number, what: string): void {
  let worst = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let g = 0;
      for (let p = 0; p < k; p++) g += Math.abs(a[ta ? p * m + i : i * k + p]! * b[tb ? j * k + p : p * n + j]!);
      const d = Math.abs(got[i * n + j]! - exact32[i * n + j]!);
      if (!(d <= (1.01 * 2 ** -7 + 3e-7 * (k + 4)) * g)) assert.fail(`${what}[${i},${j}]: bf16 ${got[i * n + j]} vs float32 ${exact32[i * n + j]}`);
      worst = Math.max(worst, d / g);
    }
  }
  assert.ok(worst > 0, `${what}: bf16 must differ from float32 somewhere (rounding is applied)`);
}

test('bf16Linear: Fprop, Dgrad, Wgrad equal the bf16-rounded oracle (tight) and float32 within the bf16 bound', () => {
  const r = rng(3);
  for (const [M, K, N] of [[37, 29, 45], [130, 256, 96], [5, 400, 7]] as const) {
    const x = randTensor(r, [M, K], 1, true);
    const w = randTensor(r, [N, K], 0.2, true);
    const gy = randTensor(r, [M, N]);
    const y = ops.bf16Linear(x, w);
    backward(y, gy);
    const xd = x.f32(), wd = w.f32(), gd = gy.f32();
    // Fprop Y = X W^T, Dgrad dX = dY W, Wgrad dW = dY^T X
    assertTight(y.f32(), oracle(false, true, M, N, K, xd, wd), K, 'Y');
    assertTight(x.grad!.f32(), oracle(false, false, M, K, N, gd, wd), N, 'dX');
    assertTight(w.grad!.f32(), oracle(true, false, N, K, M, gd, xd), M, 'dW');
    // against float32
    const x2 = Tensor.param(xd.slice(), [M, K]);
    const w2 = Tensor.param(wd.slice(), [N, K]);
    const y32 = ops.linear(x2, w2);
    backward(y32, gy);
    assertBf16Bound(y.f32(), y32.f32(), xd, wd, false, true, M, N, K, 'Y vs fp32');
    assertBf16Bound(x.grad!.f32(), x2.grad!.f32(), gd, wd, false, false, M, K, N, 'dX vs fp32');
    assertBf16Bound(w.grad!.f32(), w2.grad!.f32(), gd, xd, true, false, N, K, M, 'dW vs fp32');
  }
});

test('bf16Linear: leading dims, strided x, deferred weight gradients, accumulation into .grad', () => {
  const r = rng(4);
  const x = randTensor(r, [2, 3, 40], 1, true);
  const w = randTensor(r, [24, 40], 0.2, true);
  const gy = randTensor(r, [2, 3, 24]);
  // a permuted (non-contiguous) view of x gives the same result as its contiguous copy
  const xt = randTensor(r, [40, 6]).permute([1, 0]);
  assert.deepEqual(ops.bf16Linear(xt, w).f32(), ops.bf16Linear(xt.contiguous(), w).f32());
  const y = ops.bf16Linear(x, w);
  assert.deepEqual(y.shape, [2, 3, 24]);
  const { weightGrads } = ops.deferWeightGrads(() => backward(y, gy));
  assert.equal(w.grad, null, 'dW deferred');
  assert.equal(weightGrads.length, 1);
  weightGrads[0]!();
  const first = w.grad!.f32().slice();
  assertTight(first, oracle(true, false, 24, 40, 6, gy.f32(), x.f32()), 6, 'deferred dW');
  backward(ops.bf16Linear(x, w), gy); // accumulates
  assertClose(w.grad!.f32(), first.map((v) => 2 * v), 1e-6, 'accumulated dW');
  assert.throws(() => ops.bf16Linear(x, randTensor(r, [24, 41])), /does not match weight/);
});

test('finite differences: on bf16-representable values the bf16 Linear is exact, and its gradients match central differences', () => {
  // With x, W and the projection R on the bf16 grid, every GEMM operand of Fprop, Dgrad and Wgrad
  // is exact in bf16, so the analytic bf16 gradients must match the float64 central differences of
  // L = Σ R ⊙ (x W^T) (a bilinear form: central differences are exact up to rounding).
  const r = rng(5);
  const [M, K, N] = [6, 9, 5];
  const x = Tensor.param(roundAll(randTensor(r, [M, K]).f32()), [M, K]);
  const w = Tensor.param(roundAll(randTensor(r, [N, K], 0.5).f32()), [N, K]);
  const R = Tensor.fromF32(roundAll(randTensor(r, [M, N]).f32()), [M, N]);
  backward(ops.bf16Linear(x, w), R);
  const L = (xs: Float64Array, ws: Float64Array): number => {
    let s = 0;
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let d = 0;
      for (let p = 0; p < K; p++) d += xs[i * K + p]! * ws[j * K + p]!;
      s += R.f32()[i * N + j]! * d;
    }
    return s;
  };
  const x64 = Float64Array.from(x.f32());
  const w64 = Float64Array.from(w.f32());
  const h = 1e-3;
  for (const [which, arr, grad] of [['x', x64, x.grad!.f32()], ['w', w64, w.grad!.f32()]] as const) {
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]!;
      arr[i] = v + h;
      const lp = L(x64, w64);
      arr[i] = v - h;
      const lm = L(x64, w64);
      arr[i] = v;
      const fd = (lp - lm) / (2 * h);
      assert.ok(Math.abs(fd - grad[i]!) <= 1e-6 * (1 + Math.abs(fd)), `d${which}[${i}]: analytic ${grad[i]} vs central difference ${fd}`);
    }
  }
});

const rr = rng(41);
function expertCase(N: number, D: number, I: number, E: number, K: number, shared: boolean): { x: Tensor; gates: Tensor; idx: Int32Array; ws: Tensor[] } {
  const idx = new Int32Array(N * K);
  for (let t = 0; t < N; t++) {
    const pool = Array.from({ length: E }, (_, e) => e);
    for (let j = 0; j < K; j++) idx[t * K + j] = pool.splice(Math.floor(rr() * pool.length), 1)[0]!;
  }
  const ws = [...Array.from({ length: 2 * E }, () => randTensor(rr, [I, D], 0.3)), ...Array.from({ length: E }, () => randTensor(rr, [D, I], 0.3))];
  if (shared) ws.push(randTensor(rr, [2 * I, D], 0.3), randTensor(rr, [2 * I, D], 0.3), randTensor(rr, [D, 2 * I], 0.3));
  return { x: randTensor(rr, [N, D]), gates: randTensor(rr, [N, K]), idx, ws };
}

function runExperts(c: ReturnType<typeof expertCase>, E: number, bf16: boolean, R: Tensor): Float32Array[] {
  const ps = [c.x, c.gates, ...c.ws].map((t) => Tensor.param(t.toF32Array(), t.shape));
  const ws = ps.slice(2);
  const w = { gate: ws.slice(0, E), up: ws.slice(E, 2 * E), down: ws.slice(2 * E, 3 * E), shared: ws.length > 3 * E ? { gate: ws[3 * E]!, up: ws[3 * E + 1]!, down: ws[3 * E + 2]! } : null };
  const y = ops.groupedExperts(ps[0]!, ps[1]!, c.idx, w, { bf16 });
  backward(y, R);
  return [y.toF32Array(), ...ps.map((p) => p.grad?.toF32Array() ?? new Float32Array(p.size))];
}

test('groupedExperts bf16: native equals the TypeScript reference kernels (bf16 rounding, float64 sums) and float32 within bf16 error', () => {
  const E = 6;
  for (const shared of [false, true]) {
    const c = expertCase(40, 48, 24, E, 2, shared);
    const R = randTensor(rr, [40, 48]);
    const nat = withBackend('native', () => runExperts(c, E, true, R));
    const ref = withBackend('reference', () => runExperts(c, E, true, R));
    const f32 = runExperts(c, E, false, R);
    const names = ['out', 'dx', 'dgates', ...c.ws.map((_, i) => `dW${i}`)];
    nat.forEach((a, i) => {
      // tight: the same roundings; only the float32 summation order differs (which can move an
      // intermediate across a bf16 rounding boundary in rare elements, hence 2e-4 not 1e-6)
      assertClose(a, ref[i]!, 2e-4, `${names[i]} (shared ${shared}) native vs reference`);
      // loose: bf16 operands (relative error 2^-8 per product) through two GEMM layers
      assertClose(a, f32[i]!, 3e-2, `${names[i]} (shared ${shared}) bf16 vs float32`);
    });
    assert.notDeepEqual(nat[0], f32[0], 'bf16 differs from float32');
  }
});

test('bf16 weight copies: made once per optimizer step, refreshed after AdamW.step', () => {
  const r = rng(8);
  const w = randTensor(r, [16, 8], 1, true);
  const a = bf16WeightBits(w);
  assert.equal(bf16WeightBits(w), a, 'same epoch: the cached copy');
  assert.deepEqual(Array.from(a), Array.from(w.f32(), f32ToBf16));
  const before = a.slice();
  w.grad = randTensor(r, [16, 8]);
  new AdamW([w], { lr: 0.1 }).step();
  const b = bf16WeightBits(w);
  assert.deepEqual(Array.from(b), Array.from(w.f32(), f32ToBf16), 'refreshed from the updated weights');
  assert.notDeepEqual(Array.from(b), Array.from(before));
  // explicit invalidation after an in-place write
  w.f32().fill(1.5);
  invalidateBf16Weights();
  assert.ok(bf16WeightBits(w).every((v) => v === f32ToBf16(1.5)));
});

const CFG = parseModelConfig(tinyConfigJson(), 'tiny');
const [B, S] = [2, 24];
const lossOpts = { mtpLambda: 0.3, balanceAlpha: 1e-4, balance: 'aux-free' } as const;
function tokens(seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: B * (S + 1) }, () => Math.floor(r() * CFG.vocab_size));
}

/**
 * Parameter name -> the graph ops that consume it. Walks nodes; a node's input is a Tensor (a
 * leaf, or a non-leaf through its .node) or, where the graph refers to producers' nodes
 * directly, a node: both are handled.
 */
function consumers(root: Tensor): Map<string, Set<string>> {
  interface Node { name: string; inputs: readonly unknown[] }
  const out = new Map<string, Set<string>>();
  const seen = new Set<object>();
  const stack: Node[] = root.node ? [root.node as unknown as Node] : [];
  while (stack.length) {
    const node = stack.pop()!;
    if (seen.has(node)) continue;
    seen.add(node);
    for (const t of node.inputs) {
      if (!t) continue;
      if (!(t instanceof Tensor)) stack.push(t as Node);
      else if (t.node) stack.push(t.node as unknown as Node);
      else if (t.name) {
        if (!out.has(t.name)) out.set(t.name, new Set());
        out.get(t.name)!.add(node.name);
      }
    }
  }
  return out;
}

test('precision mode: bf16 step runs every Linear, the experts and the head on bf16 ops; gate, norms, embedding stay float32', () => {
  assert.equal(trainingPrecision(), 'fp32');
  withPrecision('bf16', () => {
    assert.equal(trainingPrecision(), 'bf16');
    assert.equal(fp8Enabled(), false);
    withFp8(() => assert.equal(trainingPrecision(), 'fp8'));
    assert.equal(trainingPrecision(), 'bf16');
  });
  assert.throws(() => withPrecision('fp16' as never, () => 0), /unknown precision 'fp16'/);
  const model = DeepseekV3.randomInit(CFG, 3);
  const f = forwardLosses(model, tokens(1), { ...lossOpts, precision: 'bf16' }, B);
  const c = consumers(f.terms.total);
  for (const n of model.linears.keys()) {
    const ops = [...(c.get(n) ?? [])];
    if (ops.length === 0) continue; // an expert that got no token
    const want = n === 'lm_head.weight' ? 'linearCrossEntropy' : /experts/.test(n) ? 'groupedExperts' : 'bf16Linear';
    assert.deepEqual(ops, [want], n);
  }
  assert.deepEqual([...c.get('model.layers.1.mlp.gate.weight')!], ['linear']);
  assert.deepEqual([...c.get('model.norm.weight')!], ['rmsNorm']);
  assert.deepEqual([...c.get('model.embed_tokens.weight')!], ['embedding']);
  assert.throws(() => forwardLosses(model, tokens(1), { ...lossOpts, fp8: true, precision: 'bf16' }, B), /contradicts precision 'bf16'/);
});

test('bf16 step: loss and gradients close to float32 (not equal)', () => {
  const run = (precision: 'fp32' | 'bf16'): { loss: number; grads: Float32Array[] } => {
    const model = DeepseekV3.randomInit(CFG, 4);
    const f = forwardLosses(model, tokens(2), { ...lossOpts, precision }, B);
    backward(f.terms.total);
    return { loss: f.terms.total.item(), grads: model.parameters().map((p) => p.grad?.f32().slice() ?? new Float32Array(p.size)) };
  };
  const a = run('fp32');
  const b = run('bf16');
  const rel = Math.abs(a.loss - b.loss) / a.loss;
  assert.ok(rel > 0 && rel < 5e-3, `relative loss difference ${rel}`);
  let dot = 0, na = 0, nb = 0;
  a.grads.forEach((g, i) => g.forEach((v, j) => {
    const u = b.grads[i]![j]!;
    dot += v * u;
    na += v * v;
    nb += u * u;
  }));
  const cos = dot / Math.sqrt(na * nb);
  assert.ok(cos > 0.999, `cosine of bf16 and float32 gradients ${cos}`);
});

test('bf16 steps in a poisoning arena equal plain allocation bit for bit (no bf16 copy outlives its step)', () => {
  const run = (arena: BufferArena | null): number[] => {
    const model = DeepseekV3.randomInit(CFG, 6);
    const opt = new AdamW(model.parameters(), { lr: 3e-3 });
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      withArena(arena, () => {
        const f = forwardLosses(model, tokens(10 + s), { ...lossOpts, precision: 'bf16' }, B);
        losses.push(f.terms.total.item());
        backward(f.terms.total);
        applyUpdate(model, opt, new Map([...f.routing].map(([l, r]) => [l, Int32Array.from(r.load)] as const)), { lr: 3e-3, maxGradNorm: 1, balance: 'aux-free', bias: { gamma: 1e-3 } });
      });
      arena?.reset();
    }
    return [...losses, ...model.parameters().flatMap((p) => Array.from(p.f32().subarray(0, 64)))];
  };
  const plain = run(null);
  // per-use bf16 weight copies (the default): made in the arena and given back after each GEMM;
  // a copy read after its release would read the poison (NaN)
  const made = bf16WeightCopyBytes();
  assert.deepEqual(run(new BufferArena({ poison: true, minElems: 64 })), plain);
  assert.equal(bf16WeightCopyBytes(), made, 'per-use mode: no persistent bf16 weight copy made inside a step arena');
  // one copy per weight held all step (DSV3_BF16_WEIGHTS=step): the same bits
  const was = setBf16WeightCopies('step');
  try {
    assert.deepEqual(run(new BufferArena({ poison: true, minElems: 64 })), plain);
    assert.ok(bf16WeightCopyBytes() > made, 'step mode keeps persistent copies');
  } finally {
    setBf16WeightCopies(was);
  }
  assert.ok(plain.every(Number.isFinite));
});

let cached: PreparedData | null = null;
function tinyData(): PreparedData {
  cached ??= prepareData({ corpus: { name: 'moby-slice', documents: loadMobyDick().documents.slice(3, 6).map((d) => d.slice(0, 6000)) }, vocabSize: 320, cacheDir: null, valFraction: 0.1, seqLen: 16 });
  return cached;
}

test('a short bf16 training run tracks float32: same loss curve within 1%, recorded in run.json and metrics', () => {
  const dirs = [0, 1].map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-bf16-')));
  try {
    const opts = (out: string, over: Partial<TrainOptions>): TrainOptions => ({
      model: CFG, steps: 16, batch: 2, seq: 16, lr: 3e-3, warmup: 2, seed: 5, balance: 'aux-free', balanceAlpha: 1e-4,
      bias: { gamma: 1e-3 }, mtpLambda: 0.3, evalEvery: 16, evalBatches: 1, ckptEvery: 0, out, quiet: true, prepared: tinyData(), ...over,
    });
    const f32 = train(opts(dirs[0]!, {}));
    const bf = train(opts(dirs[1]!, { precision: 'bf16' }));
    assert.equal(bf.status, 'done');
    assert.equal(bf.losses.length, 16);
    bf.losses.forEach((l, i) => assert.ok(Math.abs(l - f32.losses[i]!) / f32.losses[i]! < 0.01, `step ${i + 1}: bf16 ${l} vs fp32 ${f32.losses[i]}`));
    assert.notDeepEqual(bf.losses, f32.losses);
    const mean = (a: number[]): number => a.reduce((s, v) => s + v, 0) / a.length;
    assert.ok(mean(bf.losses.slice(-4)) < mean(bf.losses.slice(0, 4)), 'bf16 loss goes down');
    assert.equal(JSON.parse(fs.readFileSync(path.join(dirs[1]!, 'run.json'), 'utf8')).precision, 'bf16');
    const steps = readMetrics(path.join(dirs[1]!, 'metrics.jsonl')).filter((r): r is StepRecord => r.type === 'step');
    assert.ok(steps.length === 16 && steps.every((s) => s.precision === 'bf16' && s.fp8 === undefined));
    assert.ok(readMetrics(path.join(dirs[0]!, 'metrics.jsonl')).every((r) => r.type !== 'step' || r.precision === undefined));
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
});

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
function dsv3(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

test('dsv3 train --precision bf16 end to end; --precision fp8 is --fp8; conflicts are usage errors', () => {
  assert.equal(parseTrainArgs(['--precision', 'bf16']).precision, 'bf16');
  assert.equal(parseTrainArgs(['--precision', 'fp8']).fp8, true);
  assert.equal(parseTrainArgs(['--fp8']).precision, 'fp8');
  assert.equal(parseTrainArgs(['--precision', 'fp32']).precision, undefined);
  assert.throws(() => parseTrainArgs(['--fp8', '--precision', 'bf16']), /--fp8 \(an alias of --precision fp8\) contradicts --precision bf16/);
  assert.throws(() => parseTrainArgs(['--precision', 'bf16', '--pipeline', '1f1b']), /--precision bf16 cannot be combined with --pipeline 1f1b/);
  assert.match(dsv3(['train', '--help']).stdout, /--precision fp32\|bf16\|fp8/);
  const bad = dsv3(['train', '--precision', 'half']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--precision must be fp32, bf16 or fp8, got 'half'/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-bf16-cli-'));
  try {
    const run = path.join(dir, 'run');
    const t = dsv3(['train', '--precision', 'bf16', ...tinyTrainingArgs(dir), '--steps', '2', '--batch', '2', '--seq', '16', '--eval-every', '0', '--out', run, '--quiet']);
    assert.equal(t.status, 0, t.stderr);
    const res = JSON.parse(t.stdout.trim()) as { status: string; final_loss: number };
    assert.equal(res.status, 'done');
    assert.ok(Number.isFinite(res.final_loss));
    assert.equal(JSON.parse(fs.readFileSync(path.join(run, 'run.json'), 'utf8')).precision, 'bf16');
    assert.equal(JSON.parse(fs.readFileSync(path.join(run, 'run.json'), 'utf8')).moment_dtype, 'bf16'); // the bf16 default (issue 13: peak RSS)
    const b32 = dsv3(['bench', 'train', '--precision', 'bf16', '--moment-dtype', 'f32', '--config', path.join(dir, 'config.json'), '--batch', '1', '--seq', '8', '--steps', '1', '--warmup-steps', '0', '--json']);
    assert.equal(b32.status, 0, b32.stderr);
    assert.equal((JSON.parse(b32.stdout.trim().split('\n').pop()!) as { moment_dtype: string }).moment_dtype, 'f32');
    const bench = dsv3(['bench', 'train', '--precision', 'bf16', '--config', path.join(dir, 'config.json'), '--batch', '1', '--seq', '8', '--steps', '1', '--warmup-steps', '0', '--json']);
    assert.equal(bench.status, 0, bench.stderr);
    const j = JSON.parse(bench.stdout.trim().split('\n').pop()!) as { precision: string; fp8: boolean; loss_first: number; kernels_ms: Record<string, number> };
    assert.equal(j.precision, 'bf16');
    assert.equal(j.fp8, false);
    assert.equal((j as unknown as { moment_dtype: string }).moment_dtype, 'bf16');
    assert.ok(Number.isFinite(j.loss_first));
    // the bf16 GEMMs (B in bf16 bits; A too where it was rounded once for two GEMMs) carry the step
    const bf = Object.entries(j.kernels_ms).filter(([k]) => /^gemm(Batch)?Bf16(Ab)?$/.test(k)).reduce((a, [, v]) => a + v, 0);
    assert.ok('gemmBf16Ab' in j.kernels_ms && !('gemm' in j.kernels_ms && j.kernels_ms['gemm']! > bf), JSON.stringify(j.kernels_ms));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  noGrad(() => 0);
});

test('swigluWith bf16: forward as float32, backward on the bf16 copies of g and u (native and reference kernels), FD on bf16 values', () => {
  const n = 3000;
  const gv = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 3);
  const uv = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11) * 2);
  const dyv = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.05));
  const round = (a: Float32Array): Float32Array => a.map((x) => bf16ToF32(f32ToBf16(x)));
  for (const backend of ['native', 'reference'] as const) {
    withBackend(backend, () => {
      const grads = (bf16: boolean, g0: Float32Array, u0: Float32Array): { y: Float32Array; dg: Float32Array; du: Float32Array } => {
        const g = Tensor.param(g0.slice(), [n]);
        const u = Tensor.param(u0.slice(), [n]);
        const y = ops.swigluWith(g, u, { bf16 });
        backward(y, Tensor.fromF32(dyv.slice(), [n]));
        return { y: y.toF32Array(), dg: g.grad!.toF32Array(), du: u.grad!.toF32Array() };
      };
      const a = grads(true, gv, uv);
      const full = grads(false, gv, uv);
      const rounded = grads(false, round(gv), round(uv));
      assert.deepEqual(a.y, full.y, `${backend}: the forward changed`);
      // the backward is exactly float32 swiglu's backward at the bf16-rounded g and u
      assert.deepEqual(a.dg, rounded.dg, `${backend}: dg`);
      assert.deepEqual(a.du, rounded.du, `${backend}: du`);
      assert.notDeepEqual(a.dg, full.dg, `${backend}: the bf16 copies were not used`);
    });
  }
  // finite differences of sum(dy * swiglu) on bf16-representable g, u (where the copies are exact)
  const g0 = round(gv.subarray(0, 64));
  const u0 = round(uv.subarray(0, 64));
  const g = Tensor.param(g0.slice(), [64]);
  const u = Tensor.param(u0.slice(), [64]);
  backward(ops.swigluWith(g, u, { bf16: true }), Tensor.fromF32(dyv.slice(0, 64), [64]));
  const f = (gg: Float64Array, uu: Float64Array): number => {
    let s = 0;
    for (let i = 0; i < 64; i++) s += dyv[i]! * (gg[i]! / (1 + Math.exp(-gg[i]!))) * uu[i]!;
    return s;
  };
  const h = 1e-3;
  for (const i of [0, 7, 31, 63]) {
    const gp = Float64Array.from(g0);
    const gm = Float64Array.from(g0);
    gp[i]! += h;
    gm[i]! -= h;
    const up = Float64Array.from(u0);
    const um = Float64Array.from(u0);
    up[i]! += h;
    um[i]! -= h;
    const G = Float64Array.from(g0);
    const U = Float64Array.from(u0);
    assert.ok(Math.abs((f(gp, U) - f(gm, U)) / (2 * h) - g.grad!.f32()[i]!) < 1e-3, `dg[${i}]`);
    assert.ok(Math.abs((f(G, up) - f(G, um)) / (2 * h) - u.grad!.f32()[i]!) < 1e-3, `du[${i}]`);
  }
});
