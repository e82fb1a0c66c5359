/**
 * The model is differentiable end to end: on the train-step fixture, the gradients of
 * LM + MTP + sequence-wise balance loss (assembled here from the model's outputs, as the
 * fixtures README defines them) reproduce every `grad.*`; the absorbed MLA path gives the
 * naive path's gradients; every parameter that takes part receives a gradient.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { add, crossEntropy, div, mean, mul, scale, sum } from '../src/engine/ops/index.js';
import { DeepseekV3 } from '../src/model/model.js';
import type { AttentionPath } from '../src/model/mla.js';
import type { Routing } from '../src/model/router.js';
import { fixturePath, readJson, readTensors } from './helpers/fixtures.js';
import { backward } from '../src/engine/autograd.js';

interface StepMeta {
  hyperparameters: { mtp_lambda: number; balance_alpha: number };
  losses: { total: number; lm: number };
}

/** L_Bal of one layer: alpha * sum_i f_i P_i per sequence, averaged over the B sequences. */
function balanceLoss(r: Routing, batch: number, alpha: number): Tensor {
  const E = r.experts;
  const K = r.topK;
  const T = r.tokens / batch;
  let total: Tensor | null = null;
  for (let b = 0; b < batch; b++) {
    const f = new Float32Array(E);
    for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) f[r.topkIdx[(b * T + t) * K + k]!]! += E / (K * T);
    const s = r.scores.slice(0, b * T, (b + 1) * T);
    const P = mean(div(s, sum(s, -1, true)), 0);
    const l = scale(sum(mul(P, Tensor.fromF32(f, [E]))), alpha / batch);
    total = total ? add(total, l) : l;
  }
  return total!;
}

/** LM + lambda * MTP + balance loss of tokens [B, S+1] (the README's train-step recipe). */
function trainLoss(m: DeepseekV3, tokens: Tensor, meta: StepMeta, path: AttentionPath): Tensor {
  const [B, S1] = tokens.shape as [number, number];
  const S = S1 - 1;
  const V = m.cfg.vocab_size;
  const ids = tokens.slice(1, 0, S).contiguous();
  const { logits, hidden, routing } = m.forward(ids, { path });
  let loss = crossEntropy(logits.reshape([B * S, V]), tokens.slice(1, 1, S1).contiguous().reshape([B * S]));
  const [mtp] = m.mtpForward(hidden, ids, { path });
  const tgt = tokens.slice(1, 2, S1).contiguous().reshape([B * (S - 1)]);
  loss = add(loss, scale(crossEntropy(mtp!.logits!.reshape([B * (S - 1), V]), tgt), meta.hyperparameters.mtp_lambda));
  const all = [...routing.values(), mtp!.routing!];
  for (const r of all) loss = add(loss, balanceLoss(r, B, meta.hyperparameters.balance_alpha));
  return loss;
}

describe('model gradients', () => {
  const dir = fixturePath('train-step');
  const meta = readJson<StepMeta>(fixturePath('train-step/meta.json'));
  const tokens = readTensors(fixturePath('train-step/batch.safetensors'))['tokens']!;
  const expected = readTensors(fixturePath('train-step/expected.safetensors'));

  it('reproduce every grad.* of the train-step fixture (2e-5 x the largest gradient)', () => {
    const m = DeepseekV3.load(dir);
    const loss = trainLoss(m, tokens, meta, 'naive');
    assert.ok(Math.abs(loss.item() - meta.losses.total) <= 1e-5 * meta.losses.total, `loss ${loss.item()} vs ${meta.losses.total}`);
    backward(loss);
    let gmax = 0;
    for (const [k, v] of Object.entries(expected)) if (k.startsWith('grad.')) for (const x of v.toF32Array()) gmax = Math.max(gmax, Math.abs(x));
    const names = Object.keys(expected).filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
    assert.deepEqual(names.sort(), [...m.params.keys()].sort());
    for (const name of names) {
      const p = m.params.get(name)!;
      const g = (p.grad ?? Tensor.zeros(p.shape)).f32();
      const e = expected[`grad.${name}`]!.f32();
      let d = 0;
      for (let i = 0; i < e.length; i++) d = Math.max(d, Math.abs(g[i]! - e[i]!));
      assert.ok(d <= 2e-5 * gmax, `${name}: max|diff| ${d} > 2e-5 * ${gmax}`);
    }
  });

  it('absorbed path: same loss and gradients as the naive path', () => {
    const grads: Record<string, Map<string, Float32Array>> = {};
    const losses: Record<string, number> = {};
    for (const path of ['naive', 'absorbed'] as const) {
      const m = DeepseekV3.load(dir);
      const loss = trainLoss(m, tokens, meta, path);
      losses[path] = loss.item();
      backward(loss);
      grads[path] = new Map([...m.params].map(([k, p]) => [k, p.grad ? p.grad.f32() : new Float32Array(p.size)]));
    }
    assert.ok(Math.abs(losses['naive']! - losses['absorbed']!) <= 1e-6 * losses['naive']!);
    let gmax = 0;
    for (const g of grads['naive']!.values()) for (const x of g) gmax = Math.max(gmax, Math.abs(x));
    for (const [k, a] of grads['naive']!) {
      const b = grads['absorbed']!.get(k)!;
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * gmax, `${k}[${i}]: ${a[i]} vs ${b[i]}`);
    }
  });

  it('every parameter gets a gradient except routed experts that received no token', () => {
    const m = DeepseekV3.load(dir);
    const [B, S1] = tokens.shape as [number, number];
    const ids = tokens.slice(1, 0, S1 - 1).contiguous();
    const { logits, routing } = m.forward(ids);
    backward(crossEntropy(logits.reshape([B * (S1 - 1), m.cfg.vocab_size]), tokens.slice(1, 1, S1).contiguous().reshape([-1])));
    for (const [name, p] of m.params) {
      const ex = /^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\./.exec(name);
      const mtp = name.startsWith(`model.layers.${m.cfg.num_hidden_layers}.`);
      const idle = ex && !mtp ? routing.get(Number(ex[1]))!.load[Number(ex[2])] === 0 : false;
      if (mtp || idle) assert.equal(p.grad, null, `${name} should have no gradient`);
      else assert.ok(p.grad && p.grad.f32().some((x) => x !== 0), `${name} has no gradient`);
    }
  });
});
