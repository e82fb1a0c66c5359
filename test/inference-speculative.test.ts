/**
 * The engine's MTP step against the fixture's `mtp.logits`, and greedy self-speculative
 * decoding (MTP draft, two-row verification, cache rollback) against plain greedy decoding:
 * the same token ids, exactly, on tiny-dense-moe.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate, ModelDecoder } from '../src/inference/generate.js';
import { Engine } from '../src/inference/engine.js';
import { SpeculativeDecoder } from '../src/inference/speculative.js';
import { DeepseekV3 } from '../src/model/model.js';
import { fixturePath, type ModelFixtureMeta, modelTolerance, readJson, readTensors, relToMax } from './helpers/fixtures.js';

const TOL = modelTolerance();
const dir = fixturePath('tiny-dense-moe');
const meta = readJson<ModelFixtureMeta>(fixturePath('tiny-dense-moe/meta.json'));
const expected = readTensors(fixturePath('tiny-dense-moe/expected.safetensors'));
const inputs = readTensors(fixturePath('tiny-dense-moe/inputs.safetensors'))['input_ids']!;
const model = DeepseekV3.load(dir);
const [B, S] = inputs.shape as [number, number];
const all = inputs.contiguous().i32();
const row = (b: number, n = S): Int32Array => all.slice(b * S, b * S + n);

describe('MTP step of the engine', () => {
  it('gives mtp.logits', () => {
    const V = model.cfg.vocab_size;
    const D = model.cfg.hidden_size;
    const e = new Engine(model, { rows: B * S, logitRows: B * S, maxLen: S, mtp: true });
    const cache = model.newCache(B, S, { mtp: true });
    e.forwardMain(all, { B, T: S, start: 0 }, cache);
    const next = new Int32Array(B * (S - 1));
    for (let b = 0; b < B; b++) {
      e.ws.hPrev.set(e.ws.hidden.subarray(b * S * D, (b * S + S - 1) * D), b * (S - 1) * D);
      next.set(all.subarray(b * S + 1, (b + 1) * S), b * (S - 1));
    }
    e.forwardMtp(next, { B, T: S - 1, start: 0 }, cache);
    const got = Tensor.fromF32(e.head(0, B * (S - 1)).slice(), [B, S - 1, V]);
    const err = relToMax(got, expected['mtp.logits']!);
    assert.ok(err <= TOL, `mtp.logits: ${err.toExponential(3)} > ${TOL}`);
  });
});

describe('greedy self-speculative decoding', () => {
  it('gives the fixture greedy.ids', () => {
    const P = meta.greedy_prompt_len;
    const n = meta.greedy_new_tokens;
    const spec = new SpeculativeDecoder(model, { maxLen: P + n });
    const want = expected['greedy.ids']!.contiguous().i32();
    for (let b = 0; b < B; b++) {
      const r = spec.generate(row(b, P), n);
      assert.deepEqual(Array.from(r.ids), Array.from(want.subarray(b * (P + n), (b + 1) * (P + n))));
      assert.ok(r.accepted <= r.drafted && r.mainForwards === r.drafted);
      assert.ok(1 + r.mainForwards + r.accepted >= n && r.mainForwards + r.accepted <= n, 'token accounting');
    }
  });

  for (const [P, n, chunk] of [[1, 60, 64], [S, 40, 4], [3, 1, 64], [3, 2, 64]] as const) {
    it(`equals plain greedy decoding: prompt ${P}, ${n} tokens, prefill chunk ${chunk}`, () => {
      const spec = new SpeculativeDecoder(model, { maxLen: P + n, chunk });
      const plain = new DecodeSession(model, { maxLen: P + n });
      for (let b = 0; b < B; b++) {
        const r = spec.generate(row(b, P), n);
        const g = [...row(b, P), ...generate(plain, row(b, P), P, { maxNew: n }).tokens[0]!];
        assert.deepEqual(Array.from(r.ids), g);
        const m = [...row(b, P), ...generate(new ModelDecoder(model, 1, P + n, 'absorbed'), row(b, P), P, { maxNew: n }).tokens[0]!];
        assert.deepEqual(Array.from(r.ids), m);
      }
    });
  }

  it('needs room for the last draft row in the cache, and the MTP module', () => {
    const spec = new SpeculativeDecoder(model, { maxLen: 10 });
    assert.throws(() => spec.generate(row(0, 5), 6), /exceed the cache length/);
    assert.equal(spec.generate(row(0, 5), 5).ids.length, 10);
    assert.throws(() => new SpeculativeDecoder(DeepseekV3.load(dir, { mtp: false }), { maxLen: 8 }), /MTP module/);
  });
});
