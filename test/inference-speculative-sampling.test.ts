/**
 * Exact speculative sampling with the MTP draft (inference/speculative.ts) on tiny-dense-moe:
 * the distribution of the second sampled token (decided by the accept / residual step)
 * matches the exact distribution of plain sampling (chi-square), with penalties in play; with temperature 0 and penalties it gives plain decoding's
 * tokens exactly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { Sampler, type SamplingOptions } from '../src/inference/sampling.js';
import { SpeculativeDecoder } from '../src/inference/speculative.js';
import { DeepseekV3 } from '../src/model/model.js';
import { fixturePath, readTensors } from './helpers/fixtures.js';
import { assertChiSquareFit } from './helpers/chi-square.js';

const model = DeepseekV3.load(fixturePath('tiny-dense-moe'));
const V = model.cfg.vocab_size;
const prompt = readTensors(fixturePath('tiny-dense-moe/inputs.safetensors'))['input_ids']!.contiguous().i32().slice(0, 4);

/** The exact distribution of the second sampled token under plain sampling with options o:
 * sum over t1 of p(t1) p(t2 | t1), the histories (for the penalties) included. */
function exactSecond(o: SamplingOptions): Float64Array {
  const s = new DecodeSession(model, { maxLen: 8 });
  const base = new Sampler(o, { V });
  base.prompt(0, prompt);
  const p1 = base.dist(s.prefill(prompt, 4), 0, 0, new Float64Array(V)).slice();
  const out = new Float64Array(V);
  const p2 = new Float64Array(V);
  for (let t1 = 0; t1 < V; t1++) {
    if (p1[t1]! <= 0) continue;
    const h = new Sampler(o, { V });
    h.prompt(0, prompt);
    h.record(0, t1);
    s.reset();
    h.dist(s.prefill(Int32Array.from([...prompt, t1]), 5), 0, 0, p2);
    for (let t2 = 0; t2 < V; t2++) out[t2] = out[t2]! + p1[t1]! * p2[t2]!;
  }
  return out;
}

test('speculative sampling: the second token (accepted draft or residual draw) is distributed as in plain sampling (chi-square)', () => {
  const o: SamplingOptions = { temperature: 1, repetitionPenalty: 1.3, presencePenalty: 0.5 };
  const want = exactSecond(o);
  const spec = new SpeculativeDecoder(model, { maxLen: 8 });
  const N = 2000;
  const got = new Float64Array(V);
  let drafted = 0;
  let accepted = 0;
  for (let i = 0; i < N; i++) {
    const sampler = new Sampler(o, { V, seed: i });
    sampler.prompt(0, prompt);
    const r = spec.generate(prompt, 2, { sampler });
    got[r.ids[5]!]!++;
    drafted += r.drafted;
    accepted += r.accepted;
  }
  assertChiSquareFit(want, got, N);
  const rate = accepted / drafted;
  assert.ok(rate > 0.1 && rate < 0.9, `acceptance ${rate}: both the accept and the residual branch must be exercised`);
});

test('speculative with a temperature-0 sampler and penalties: plain decoding\'s tokens exactly', () => {
  const o: SamplingOptions = { temperature: 0, repetitionPenalty: 1.5, frequencyPenalty: 0.3 };
  const n = 40;
  const a = new Sampler(o, { V });
  a.prompt(0, prompt);
  const plain = generate(new DecodeSession(model, { maxLen: 4 + n }), prompt, 4, { maxNew: n, pick: a.pick }).tokens[0]!;
  const b = new Sampler(o, { V });
  b.prompt(0, prompt);
  const r = new SpeculativeDecoder(model, { maxLen: 4 + n }).generate(prompt, n, { sampler: b });
  assert.deepEqual(Array.from(r.ids.subarray(4)), plain);
  assert.ok(r.accepted > 0 && r.accepted < r.drafted);
});
