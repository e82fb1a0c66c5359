/**
 * The inference engine's DecodeSession against the model and the golden fixtures: prefill +
 * one cached step per token gives `decode.logits`, and greedy generation gives `greedy.ids`
 * (exact) and `greedy.logits`, within tolerances.json (2e-5 x max|expected|), on the
 * float32, FP8, V2-routing and V2-greedy fixtures; also under the reference kernels, with a
 * prefill split into chunks, and with the model's own decodeStep as the oracle.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withBackend } from '../src/engine/backend.js';
import { Tensor } from '../src/engine/tensor.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { DeepseekV3 } from '../src/model/model.js';
import { runForward } from '../src/inference/run-forward.js';
import { fixturePath, type ModelFixtureMeta, modelTolerance, readJson, readTensors, relToMax } from './helpers/fixtures.js';

const FIXTURES = ['tiny-dense-moe', 'tiny-fp8', 'tiny-v2-routing', 'tiny-v2-greedy'];
const TOL = modelTolerance();

/** Session decode logits [B, S, V]: prefill N tokens (every token's logits), then one step per token. */
function sessionDecode(model: DeepseekV3, ids: Tensor, N: number, chunk?: number): Tensor {
  const [B, S] = ids.shape as [number, number];
  const V = model.cfg.vocab_size;
  const all = ids.contiguous().i32();
  const s = new DecodeSession(model, { batch: B, maxLen: S, ...(chunk ? { chunk } : {}) });
  const prompt = new Int32Array(B * N);
  for (let b = 0; b < B; b++) prompt.set(all.subarray(b * S, b * S + N), b * N);
  const out = new Float32Array(B * S * V);
  const first = s.prefill(prompt, N, { all: true });
  for (let b = 0; b < B; b++) out.set(first.subarray(b * N * V, (b + 1) * N * V), b * S * V);
  const tok = new Int32Array(B);
  for (let t = N; t < S; t++) {
    for (let b = 0; b < B; b++) tok[b] = all[b * S + t]!;
    const l = s.step(tok);
    for (let b = 0; b < B; b++) out.set(l.subarray(b * V, (b + 1) * V), (b * S + t) * V);
  }
  return Tensor.fromF32(out, [B, S, V]);
}

function sessionGreedy(model: DeepseekV3, ids: Tensor, P: number, n: number): { ids: Tensor; logits: Tensor } {
  const [B, S] = ids.shape as [number, number];
  const all = ids.contiguous().i32();
  const prompt = new Int32Array(B * P);
  for (let b = 0; b < B; b++) prompt.set(all.subarray(b * S, b * S + P), b * P);
  const s = new DecodeSession(model, { batch: B, maxLen: P + n });
  const g = generate(s, prompt, P, { maxNew: n, logits: true });
  const out = new Int32Array(B * (P + n));
  for (let b = 0; b < B; b++) out.set([...prompt.subarray(b * P, (b + 1) * P), ...g.tokens[b]!], b * (P + n));
  return { ids: Tensor.fromI32(out, [B, P + n]), logits: Tensor.fromF32(g.logits!, [B, n, model.cfg.vocab_size]) };
}

for (const name of FIXTURES) {
  describe(`inference session on ${name}`, () => {
    const dir = fixturePath(name);
    const meta = readJson<ModelFixtureMeta>(fixturePath(`${name}/meta.json`));
    const expected = readTensors(fixturePath(`${name}/expected.safetensors`));
    const ids = readTensors(fixturePath(`${name}/inputs.safetensors`))['input_ids']!;
    const model = DeepseekV3.load(dir, { mtp: false });

    it('prefill + cached steps give decode.logits', () => {
      const got = sessionDecode(model, ids, meta.decode_prefill);
      const err = relToMax(got, expected['decode.logits']!);
      assert.ok(err <= TOL, `decode.logits: ${err.toExponential(3)} > ${TOL}`);
      const model2 = runForward(model, ids, { path: 'absorbed', prefill: meta.decode_prefill });
      assert.ok(relToMax(got, model2['decode.logits']!) <= TOL, 'agrees with the model');
    });

    it('greedy gives greedy.ids exactly and greedy.logits', () => {
      const g = sessionGreedy(model, ids, meta.greedy_prompt_len, meta.greedy_new_tokens);
      assert.deepEqual(g.ids.toArray(), expected['greedy.ids']!.toArray());
      const err = relToMax(g.logits, expected['greedy.logits']!);
      assert.ok(err <= TOL, `greedy.logits: ${err.toExponential(3)} > ${TOL}`);
    });

    it('a prefill in chunks of 2 gives the same decode.logits', () => {
      const got = sessionDecode(model, ids, ids.shape[1]!, 2);
      assert.ok(relToMax(got, expected['decode.logits']!) <= TOL);
    });

    it('reference kernels give the same decode.logits', () => {
      const got = withBackend('reference', () => sessionDecode(model, ids, meta.decode_prefill));
      assert.ok(relToMax(got, expected['decode.logits']!) <= TOL);
    });
  });
}

describe('inference session bookkeeping', () => {
  const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });

  it('truncate rolls the cache back: re-decoding a token gives the same logits', () => {
    const s = new DecodeSession(model, { maxLen: 8 });
    s.prefill(Int32Array.of(3, 1, 4), 3);
    const a = s.step(Int32Array.of(1)).slice();
    s.step(Int32Array.of(5));
    s.truncate(3);
    const b = s.step(Int32Array.of(1)).slice();
    assert.equal(s.length, 4);
    assert.deepEqual(Array.from(b), Array.from(a));
  });

  it('rejects a step past the cache length and out-of-vocabulary ids', () => {
    const s = new DecodeSession(model, { maxLen: 2 });
    s.prefill(Int32Array.of(3, 1), 2);
    assert.throws(() => s.step(Int32Array.of(1)), /exceed the cache length/);
    s.reset();
    assert.throws(() => s.prefill(Int32Array.of(model.cfg.vocab_size), 1), /outside the vocabulary/);
  });
});
