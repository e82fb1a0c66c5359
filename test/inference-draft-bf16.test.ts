/**
 * The bf16 draft path of speculative decoding (src/inference/draft-bf16.ts): the MTP module and
 * the head it drafts with run on bf16 copies of the float32 weights, the main model does not.
 * On tiny-dense-moe (float32): the draft logits differ from the exact module's by bf16 rounding
 * only (and do differ: the copies are used), the main model's logits are bit-identical to an
 * engine without the option (the verification stays exact), and greedy speculative decoding
 * with bf16 drafts yields exactly plain greedy's tokens.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../src/engine/tensor.js';
import { kernels } from '../src/engine/backend.js';
import { bf16Linear } from '../src/inference/draft-bf16.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { Engine } from '../src/inference/engine.js';
import { generate } from '../src/inference/generate.js';
import { prepareLinear } from '../src/inference/linear.js';
import { SpeculativeDecoder } from '../src/inference/speculative.js';
import { DeepseekV3 } from '../src/model/model.js';
import { fixturePath, readTensors, relToMax } from './helpers/fixtures.js';

const dir = fixturePath('tiny-dense-moe');
const inputs = readTensors(fixturePath('tiny-dense-moe/inputs.safetensors'))['input_ids']!;
const model = DeepseekV3.load(dir);
const [B, S] = inputs.shape as [number, number];
const all = inputs.contiguous().i32();
const V = model.cfg.vocab_size;
const D = model.cfg.hidden_size;

/** Main logits of every position and the MTP module's draft logits, with or without bf16 drafts. */
function run(draftBf16: boolean): { main: Float32Array; mtp: Float32Array } {
  const e = new Engine(model, { rows: B * S, logitRows: B * S, maxLen: S, mtp: true, draftBf16 });
  const cache = model.newCache(B, S, { mtp: true });
  e.forwardMain(all, { B, T: S, start: 0 }, cache);
  const main = e.head(0, B * S).slice();
  const next = new Int32Array(B * (S - 1));
  for (let b = 0; b < B; b++) {
    e.ws.hPrev.set(e.ws.hidden.subarray(b * S * D, (b * S + S - 1) * D), b * (S - 1) * D);
    next.set(all.subarray(b * S + 1, (b + 1) * S), b * (S - 1));
  }
  e.forwardMtp(next, { B, T: S - 1, start: 0 }, cache);
  return { main, mtp: e.draftHead(0, B * (S - 1)).slice() };
}

describe('bf16 draft path', () => {
  it('drafts from bf16 copies (logits within bf16 rounding of the exact module) and leaves the main model exact', () => {
    const exact = run(false);
    const bf = run(true);
    assert.deepEqual(bf.main, exact.main, 'main-model logits must be bit-identical');
    const err = relToMax(Tensor.fromF32(bf.mtp, [B * (S - 1), V]), Tensor.fromF32(exact.mtp, [B * (S - 1), V]));
    assert.ok(err > 0, 'the draft logits should come from the bf16 copies');
    assert.ok(err < 3e-2, `draft logits differ by ${err.toExponential(3)}, more than bf16 rounding explains`);
  });

  it('copies only float32 weights, rounded to nearest even', () => {
    const w = prepareLinear(model.lmHead);
    const c = bf16Linear(kernels(), w);
    assert.equal(c.kind, 'bf16');
    const bits = new Uint16Array(w.f32!.length);
    kernels().bf16Round(w.f32!, bits, bits.length);
    assert.deepEqual(c.bits, bits);
    assert.equal(bf16Linear(kernels(), c), c, 'a bf16 weight is used as it is');
  });

  it('greedy speculative decoding with bf16 drafts equals plain greedy, token for token', () => {
    for (const [P, n] of [[3, 40], [8, 57], [1, 25]] as const) {
      const prompt = all.slice(0, P);
      const plain = generate(new DecodeSession(model, { maxLen: P + n }), prompt, P, { maxNew: n }).tokens[0]!;
      for (const draft of ['bf16', 'exact'] as const) {
        const r = new SpeculativeDecoder(model, { maxLen: P + n, draft }).generate(prompt, n);
        assert.deepEqual(Array.from(r.ids.subarray(P)), plain, `P ${P} n ${n} draft ${draft}`);
      }
    }
  });
});
