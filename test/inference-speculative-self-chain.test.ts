/**
 * Chained drafts from ONE MTP module (SpeculativeDecoder `chain`, Engine `mtpChain`; what vLLM /
 * SGLang do for DeepSeek-V3's single module): depth k > D reuses module D on its own output, each
 * depth in its own cache slot. Checked against a model with TWO modules whose second module is a
 * copy of the first: the chained engine gives the same depth-2 logits bit for bit, and chained
 * speculative decoding the same drafts, acceptances and tokens; greedy output equals plain greedy
 * at depths up to 4.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DecodeSession } from '../src/inference/decode-session.js';
import { Engine } from '../src/inference/engine.js';
import { generate } from '../src/inference/generate.js';
import { Sampler } from '../src/inference/sampling.js';
import { MAX_CHAIN_DEPTH, SpeculativeDecoder } from '../src/inference/speculative.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

/** A tiny random model with 2 MTP modules, module 2's weights overwritten by module 1's, and a
 * view of it that has module 1 only. */
function models(V: number, seed: number, range: number): { two: DeepseekV3; one: DeepseekV3 } {
  const two = DeepseekV3.randomInit(parseModelConfig(tinyConfigJson({ vocab_size: V, num_nextn_predict_layers: 2, initializer_range: range })), seed);
  const L = two.cfg.num_hidden_layers;
  const from = `model.layers.${L}.`;
  const to = `model.layers.${L + 1}.`;
  let copied = 0;
  for (const map of [two.params, two.buffers]) {
    for (const [name, t] of map) {
      if (!name.startsWith(from)) continue;
      const dst = map.get(to + name.slice(from.length));
      assert.ok(dst, `module 2 has ${to + name.slice(from.length)}`);
      dst.f32().set(t.contiguous().f32());
      copied++;
    }
  }
  assert.ok(copied > 10, `copied ${copied} tensors of module 1 into module 2`);
  const one = Object.create(two, { mtp: { value: two.mtp.slice(0, 1) } }) as DeepseekV3;
  return { two, one };
}

describe('chained drafts from one MTP module', () => {
  it('engine: depth 2 chained on module 1 equals a real module 2 with module 1\'s weights, bit for bit', () => {
    const { two, one } = models(64, 3, 0.2);
    const V = 64;
    const D = two.cfg.hidden_size;
    const S = 9;
    const ids = Int32Array.from({ length: S }, (_, i) => (i * 37 + 5) % V);
    const logits: Float32Array[][] = [];
    for (const [m, opts] of [[two, { mtp: 2 }], [one, { mtp: 2, mtpChain: true }]] as const) {
      const e = new Engine(m, { rows: S, logitRows: S, maxLen: S, ...opts });
      const cache = two.newCache(1, S, { mtp: true }); // L + 2 slots
      e.forwardMain(ids, { B: 1, T: S, start: 0 }, cache);
      let prev = e.ws.hidden.slice(0, S * D);
      const out: Float32Array[] = [];
      for (const k of [1, 2]) {
        const T = S - k;
        e.ws.hPrev.set(prev.subarray(0, T * D));
        e.forwardMtp(ids.slice(k, k + T), { B: 1, T, start: 0 }, cache, k);
        prev = e.ws.h.slice(0, T * D);
        out.push(e.head(0, T).slice());
      }
      logits.push(out);
    }
    assert.deepEqual(logits[1], logits[0]);
    assert.throws(() => new Engine(one, { rows: 4, logitRows: 4, maxLen: 8, mtp: 2 }), /needs 2 MTP module/);
  });

  it('speculative greedy: the same drafts, acceptances and tokens as the two-module model, and plain greedy\'s tokens', () => {
    const V = 12;
    const { two, one } = models(V, 5, 0.3);
    const plain = (prompt: Int32Array, n: number): number[] =>
      generate(new DecodeSession(one, { maxLen: prompt.length + n }), prompt, prompt.length, { maxNew: n }).tokens[0]!;
    let second = 0;
    for (const [P, n, chunk] of [[1, 70, 64], [7, 61, 3], [3, 2, 64], [20, 50, 4]] as const) {
      for (const seed of [1, 2]) {
        const prompt = Int32Array.from({ length: P }, (_, i) => (i * seed * 7 + seed) % V);
        const want = plain(prompt, n);
        const real = new SpeculativeDecoder(two, { maxLen: P + n, chunk, depth: 2, draft: 'exact' }).generate(prompt, n);
        const chained = new SpeculativeDecoder(one, { maxLen: P + n, chunk, depth: 2, draft: 'exact', chain: true }).generate(prompt, n);
        assert.deepEqual(Array.from(chained.ids.subarray(P)), want, `P ${P} n ${n} chunk ${chunk} seed ${seed}`);
        assert.deepEqual([chained.draftedByDepth, chained.acceptedByDepth], [real.draftedByDepth, real.acceptedByDepth]);
        assert.deepEqual(Array.from(real.ids), Array.from(chained.ids));
        second += chained.acceptedByDepth[1]!;
      }
    }
    assert.ok(second > 0, 'chained depth-2 drafts were accepted');
  });

  it('speculative greedy at chained depths 3 and 4 equals plain greedy, with deep drafts accepted', () => {
    const V = 4; // a tiny vocabulary and large weights: drafts agree often enough to reach depth 3
    const one = DeepseekV3.randomInit(parseModelConfig(tinyConfigJson({ vocab_size: V, initializer_range: 1 })), 9);
    assert.equal(one.mtp.length, 1);
    let deep = 0;
    for (const [P, n, chunk] of [[1, 80, 64], [7, 61, 3], [3, 3, 64], [20, 50, 4]] as const) {
      for (const seed of [1, 2]) {
        const prompt = Int32Array.from({ length: P }, (_, i) => (i * seed * 7 + seed) % V);
        const want = generate(new DecodeSession(one, { maxLen: P + n }), prompt, P, { maxNew: n }).tokens[0]!;
        for (const depth of [3, 4]) {
          const r = new SpeculativeDecoder(one, { maxLen: P + n, chunk, depth, chain: true }).generate(prompt, n);
          assert.deepEqual(Array.from(r.ids.subarray(P)), want, `depth ${depth} P ${P} n ${n} chunk ${chunk} seed ${seed}`);
          assert.equal(r.draftedByDepth.length, depth);
          for (let k = 1; k < depth; k++) assert.ok(r.acceptedByDepth[k]! <= r.acceptedByDepth[k - 1]!);
          deep += r.acceptedByDepth[2]!;
        }
      }
    }
    assert.ok(deep > 0, 'depth-3 drafts were accepted');
  });

  it('sampling with chained drafts: valid tokens, and a fixed seed gives the same output twice', () => {
    const V = 12;
    const { one } = models(V, 7, 0.3);
    const prompt = Int32Array.of(1, 2, 3);
    const run = (): number[] => {
      const s = new Sampler({ temperature: 0.8 }, { V, seed: 9 });
      return Array.from(new SpeculativeDecoder(one, { maxLen: 64, depth: 3, chain: true }).generate(prompt, 40, { sampler: s }).ids);
    };
    const a = run();
    assert.equal(a.length, 43);
    assert.ok(a.every((t) => t >= 0 && t < V));
    assert.deepEqual(run(), a);
  });

  it('checks the depth: without chain at most the model\'s modules, with chain at most MAX_CHAIN_DEPTH', () => {
    const { one } = models(12, 1, 0.02);
    assert.throws(() => new SpeculativeDecoder(one, { maxLen: 8, depth: 2 }), /draft depth 2 is not in \[1, 1\]/);
    assert.throws(() => new SpeculativeDecoder(one, { maxLen: 8, depth: MAX_CHAIN_DEPTH + 1, chain: true }), /draft depth 9 is not in \[1, 8\] \(chained drafts\)/);
    assert.equal(new SpeculativeDecoder(one, { maxLen: 16, depth: MAX_CHAIN_DEPTH, chain: true }).depth, MAX_CHAIN_DEPTH);
  });
});
