import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/engine/tensor.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import {
  auxBalanceLoss,
  expertLoad,
  maxVio,
  sequenceBalanceLoss,
  updateBalanceBias,
  type BiasEmaState,
} from '../src/objective/balance.js';
import { backward } from '../src/engine/autograd.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/train-step/', import.meta.url));

test('updateBalanceBias (sign, γ = 0.001) reproduces bias_updated.* from the fixture loads', () => {
  const model = SafetensorsFile.open(FIX + 'model.safetensors');
  const exp = SafetensorsFile.open(FIX + 'expected.safetensors');
  for (const j of [1, 2]) {
    const name = `model.layers.${j}.mlp.gate.e_score_correction_bias`;
    const load = exp.get(`load.layers.${j}`).data as Int32Array;
    // the loads are the counts of the stored top-k choices
    assert.deepEqual(Array.from(expertLoad(exp.get(`router.layers.${j}.topk_idx`).data as Int32Array, 8)), Array.from(load));
    const bias = model.getF32(name).slice();
    updateBalanceBias(bias, load, { gamma: 0.001 });
    const want = exp.getF32('bias_updated.' + name);
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(bias[i]! - want[i]!) <= 1e-7, `${name}[${i}]`);
  }
  model.close();
  exp.close();
});

test('updateBalanceBias: sign(0) = 0, proportional, EMA and bounds', () => {
  const b = new Float32Array(4);
  updateBalanceBias(b, [2, 2, 2, 2], { gamma: 0.5 });
  assert.deepEqual(Array.from(b), [0, 0, 0, 0]);
  updateBalanceBias(b, [1, 2, 3, 2], { gamma: 0.5 });
  assert.deepEqual(Array.from(b), [0.5, 0, -0.5, 0]);

  const p = new Float32Array(4);
  updateBalanceBias(p, [4, 2, 2, 0], { mode: 'proportional', gamma: 1 });
  assert.deepEqual(Array.from(p), [-0.25, 0, 0, 0.25]);

  const ema: BiasEmaState = { ema: null };
  const e = new Float32Array(2);
  updateBalanceBias(e, [3, 1], { gamma: 1, emaBeta: 0.5 }, ema);
  assert.deepEqual(ema.ema, [3, 1]);
  assert.deepEqual(Array.from(e), [-1, 1]);
  // EMA (0.5·[3,1] + 0.5·[0,4] = [1.5, 2.5]) still says expert 0 is underloaded
  updateBalanceBias(e, [0, 4], { gamma: 1, emaBeta: 0.5 }, ema);
  assert.deepEqual(ema.ema, [1.5, 2.5]);
  assert.deepEqual(Array.from(e), [0, 0]);

  const c = Float32Array.from([0.9, -0.9]);
  updateBalanceBias(c, [0, 10], { gamma: 0.5, bounds: [-1, 1] });
  assert.deepEqual(Array.from(c), [1, -1]);
  assert.throws(() => updateBalanceBias(new Float32Array(3), [1, 2], { gamma: 1e-3 }), /3 experts/);
});

test('maxVio = (max − mean) / mean', () => {
  assert.equal(maxVio([2, 2, 2, 2]), 0);
  assert.equal(maxVio([4, 2, 2, 0]), 1);
  assert.equal(maxVio([0, 0]), 0);
});

/** Eqs. 17–20 written out directly in float64. */
function balanceRef(s: number[], idx: number[], B: number, T: number, E: number, K: number, alpha: number): number {
  let tot = 0;
  for (let b = 0; b < B; b++) {
    const f = new Array<number>(E).fill(0);
    const P = new Array<number>(E).fill(0);
    for (let t = 0; t < T; t++) {
      for (let k = 0; k < K; k++) f[idx[(b * T + t) * K + k]!]! += E / (K * T);
      let den = 0;
      for (let i = 0; i < E; i++) den += s[(b * T + t) * E + i]!;
      for (let i = 0; i < E; i++) P[i]! += s[(b * T + t) * E + i]! / den / T;
    }
    for (let i = 0; i < E; i++) tot += alpha * f[i]! * P[i]!;
  }
  return tot / B;
}

function pseudo(n: number, seed: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 0.05 + (0.9 * x) / 2147483648;
  });
}

test('sequenceBalanceLoss matches eqs. 17–20 and its gradient matches finite differences', () => {
  const B = 2, T = 5, E = 6, K = 2, alpha = 0.01;
  const s = pseudo(B * T * E, 7);
  const idx: number[] = [];
  for (let r = 0; r < B * T; r++) {
    const row = s.slice(r * E, (r + 1) * E);
    const order = row.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]);
    idx.push(order[0]![1], order[1]![1]);
  }
  const scores = Tensor.param(Float32Array.from(s), [B, T, E], 'scores');
  const loss = sequenceBalanceLoss(scores, Int32Array.from(idx), alpha);
  const ref = balanceRef(Array.from(Float32Array.from(s)), idx, B, T, E, K, alpha);
  assert.ok(Math.abs(loss.item() - ref) <= 1e-6 * ref, `${loss.item()} vs ${ref}`);
  backward(loss);
  const g = scores.grad!.f32();
  const s32 = Array.from(Float32Array.from(s));
  for (let j = 0; j < s.length; j += 7) {
    const h = 1e-4;
    const up = s32.slice();
    const dn = s32.slice();
    up[j]! += h;
    dn[j]! -= h;
    const fd = (balanceRef(up, idx, B, T, E, K, alpha) - balanceRef(dn, idx, B, T, E, K, alpha)) / (2 * h);
    assert.ok(Math.abs(g[j]! - fd) <= 1e-6 * Math.max(1e-3, Math.abs(fd)) + 1e-9, `grad[${j}] ${g[j]} vs ${fd}`);
  }
  // perfectly uniform routing and scores give α·Σ_i (1)(1/E) = α
  const u = Tensor.fromF32(new Float32Array(1 * 4 * 4).fill(0.5), [1, 4, 4]);
  const uidx = Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3]);
  assert.ok(Math.abs(sequenceBalanceLoss(u, uidx, 0.1).item() - 0.1) < 1e-7);
});

test('auxBalanceLoss treats the batch as one sequence', () => {
  const B = 2, T = 3, E = 4, K = 1;
  const s = pseudo(B * T * E, 3);
  // sequence 0 always picks expert 0, sequence 1 always expert 1: per sequence badly balanced,
  // over the batch somewhat less so
  const idx = [0, 0, 0, 1, 1, 1];
  const t = Tensor.fromF32(Float32Array.from(s), [B, T, E]);
  const aux = auxBalanceLoss(t, Int32Array.from(idx), 0.01).item();
  const ref = balanceRef(Array.from(Float32Array.from(s)), idx, 1, B * T, E, K, 0.01);
  assert.ok(Math.abs(aux - ref) <= 1e-6 * ref);
  const seq = sequenceBalanceLoss(t, Int32Array.from(idx), 0.01).item();
  assert.ok(seq > aux);
});
