/**
 * Chained MTP drafting (inference/speculative.ts with D = 2 modules, paper §2.2 Eqs. 21-23):
 * the engine's depth-2 MTP logits against the model's Tensor path (mtpForward), greedy
 * speculative decoding with two drafts per round against plain greedy decoding (token for
 * token, EOS, stop, the maxNew edge, prefill chunks), and exact speculative sampling along the
 * chain (chi-square on the second and third tokens, where the depth-1 and depth-2 drafts are
 * verified).
 */
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../src/engine/autograd.js';
import { Tensor } from '../src/engine/tensor.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { Engine } from '../src/inference/engine.js';
import { generate } from '../src/inference/generate.js';
import { Sampler, type SamplingOptions } from '../src/inference/sampling.js';
import { SpeculativeDecoder } from '../src/inference/speculative.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { modelTolerance, relToMax } from './helpers/fixtures.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

/** Tiny random models with 2 MTP modules; a small vocabulary so that drafts get accepted. */
function model(V: number, seed: number, range = 0.02): DeepseekV3 {
  return DeepseekV3.randomInit(parseModelConfig(tinyConfigJson({ vocab_size: V, num_nextn_predict_layers: 2, initializer_range: range })), seed);
}

describe('engine: MTP depth 2', () => {
  it('equals the model\'s mtpForward logits (depth 1 and 2) to float32 tolerance', () => {
    const m = model(64, 11, 0.2);
    const V = 64;
    const D = m.cfg.hidden_size;
    const B = 2;
    const S = 9;
    const ids = Int32Array.from({ length: B * S }, (_, i) => (i * 37 + 5) % V);
    const want = noGrad(() => {
      const t = Tensor.fromI32(ids, [B, S]);
      return m.mtpForward(m.forward(t, { path: 'absorbed' }).hidden, t, { path: 'absorbed' });
    });
    assert.equal(want.length, 2);
    const e = new Engine(m, { rows: B * S, logitRows: B * S, maxLen: S, mtp: 2 });
    const cache = m.newCache(B, S, { mtp: true });
    e.forwardMain(ids, { B, T: S, start: 0 }, cache);
    let prev = e.ws.hidden.slice(0, B * S * D); // h^0 rows [B, S]
    let rowsPrev = S;
    for (const k of [1, 2]) {
      const T = S - k;
      const next = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        e.ws.hPrev.set(prev.subarray(b * rowsPrev * D, (b * rowsPrev + T) * D), b * T * D);
        next.set(ids.subarray(b * S + k, b * S + k + T), b * T);
      }
      e.forwardMtp(next, { B, T, start: 0 }, cache, k);
      prev = e.ws.h.slice(0, B * T * D);
      rowsPrev = T;
      const got = Tensor.fromF32(e.head(0, B * T).slice(), [B, T, V]);
      const err = relToMax(got, want[k - 1]!.logits!);
      assert.ok(err <= modelTolerance(), `depth ${k}: ${err.toExponential(3)}`);
    }
    assert.throws(() => e.forwardMtp(Int32Array.of(1), { B: 1, T: 1, start: 0 }, m.newCache(1, S, { mtp: true }), 3), /MTP module 3/);
  });
});

describe('greedy speculative decoding with 2 chained MTP modules', () => {
  const V = 12;
  const m = model(V, 5, 0.3);
  const plain = (prompt: Int32Array, n: number, eos?: number, stopAt?: number): number[] =>
    generate(new DecodeSession(m, { maxLen: prompt.length + n }), prompt, prompt.length, {
      maxNew: n,
      ...(eos === undefined ? {} : { eos }),
      ...(stopAt === undefined ? {} : { onToken: (_s: number, t: number) => t === stopAt }),
    }).tokens[0]!;

  it('equals plain greedy decoding token for token (prompts, lengths, prefill chunks), with drafts accepted at both depths', () => {
    const byDepth = [0, 0];
    for (const [P, n, chunk] of [[1, 80, 64], [7, 61, 3], [3, 1, 64], [3, 2, 64], [5, 3, 2], [20, 50, 4]] as const) {
      for (const seed of [1, 2, 3]) {
        const prompt = Int32Array.from({ length: P }, (_, i) => (i * seed * 7 + seed) % V);
        const spec = new SpeculativeDecoder(m, { maxLen: P + n, chunk });
        assert.equal(spec.depth, 2);
        const r = spec.generate(prompt, n);
        assert.deepEqual(Array.from(r.ids.subarray(P)), plain(prompt, n), `P ${P} n ${n} chunk ${chunk} seed ${seed}`);
        assert.equal(r.ids.length, P + n);
        assert.equal(r.accepted, r.acceptedByDepth[0]! + r.acceptedByDepth[1]!);
        assert.ok(r.acceptedByDepth[1]! <= r.acceptedByDepth[0]!);
        assert.equal(1 + r.mainForwards + r.accepted >= n, true, 'token accounting');
        byDepth[0] += r.acceptedByDepth[0]!;
        byDepth[1] += r.acceptedByDepth[1]!;
      }
    }
    assert.ok(byDepth[0]! > 0 && byDepth[1]! > 0, `accepted by depth ${byDepth}: both depths must be exercised`);
  });

  it('drafts what the model\'s Tensor-path MTP chain (mtpForward) drafts: per-depth counts of a simulation', () => {
    const argmaxLast = (t: Tensor): number => {
      const l = t.contiguous().f32();
      const off = l.length - V;
      let best = 0;
      for (let i = 1; i < V; i++) if (l[off + i]! > l[off + best]!) best = i;
      return best;
    };
    let deep = 0;
    for (const [P, n, seed] of [[5, 60, 1], [2, 23, 2], [7, 61, 3]] as const) {
      const prompt = Int32Array.from({ length: P }, (_, i) => (i * seed * 7 + seed) % V);
      const g = [...prompt, ...plain(prompt, n)];
      // simulate: a round at pos (t_pos known) drafts d_1 from tokens 0..pos and d_2 from 0..pos, d_1
      const drafted = [0, 0];
      const accepted = [0, 0];
      let pos = P;
      let produced = 1;
      while (produced < n) {
        const k = Math.min(2, n - produced);
        const seq = g.slice(0, pos + 1);
        const d1 = noGrad(() => {
          const t = Tensor.fromI32(Int32Array.from(seq), [1, seq.length]);
          return argmaxLast(m.mtpForward(m.forward(t, { path: 'absorbed' }).hidden, t, { path: 'absorbed' })[0]!.logits!);
        });
        const ds = [d1];
        if (k === 2) {
          const seq2 = [...seq, d1];
          ds.push(noGrad(() => {
            const t = Tensor.fromI32(Int32Array.from(seq2), [1, seq2.length]);
            return argmaxLast(m.mtpForward(m.forward(t, { path: 'absorbed' }).hidden, t, { path: 'absorbed' })[1]!.logits!);
          }));
        }
        let a = 0;
        for (; a < k; a++) {
          drafted[a]!++;
          if (ds[a] !== g[pos + 1 + a]) break;
          accepted[a]!++;
        }
        pos += a + 1;
        produced += a + 1;
      }
      // the simulation drafts with the model's own weights: the exact draft path
      const r = new SpeculativeDecoder(m, { maxLen: P + n, chunk: 3, draft: 'exact' }).generate(prompt, n);
      assert.deepEqual([r.draftedByDepth, r.acceptedByDepth], [drafted, accepted], `P ${P}`);
      deep += accepted[1]!;
    }
    assert.ok(deep > 0, 'depth-2 drafts accepted');
  });

  it('ends at EOS and at a stop token exactly where plain decoding does; depth 1 also', () => {
    const prompt = Int32Array.of(3, 1, 4, 1, 5);
    const ref = plain(prompt, 40);
    for (const cut of [0, 1, 2, 5, 13, 39]) {
      const t = ref[cut]!;
      for (const depth of [1, 2]) {
        const spec = new SpeculativeDecoder(m, { maxLen: 45, depth });
        const e = spec.generate(prompt, 40, { eos: t });
        assert.deepEqual(Array.from(e.ids.subarray(5)), plain(prompt, 40, t));
        assert.equal(e.finish, 'eos');
        const s = spec.generate(prompt, 40, { onToken: (_q, x) => x === t });
        assert.deepEqual(Array.from(s.ids.subarray(5)), plain(prompt, 40, undefined, t));
        assert.equal(s.finish, 'stop');
      }
    }
  });

  it('reuse (a chat\'s growing conversation): the output of a fresh cache, with the common prefix reused', () => {
    for (const depth of [1, 2]) {
      const spec = new SpeculativeDecoder(m, { maxLen: 200, depth, chunk: 5 });
      let conv = [2, 7, 1, 8];
      let reusedAny = 0;
      for (let turn = 0; turn < 6; turn++) {
        const prompt = Int32Array.from(conv);
        const n = 9 + turn;
        const eos = turn === 3 ? plain(prompt, n)[2] : undefined; // a turn that ends at EOS inside accepted drafts
        const r = spec.generate(prompt, n, { reuse: true, ...(eos === undefined ? {} : { eos }) });
        assert.deepEqual(Array.from(r.ids.subarray(prompt.length)), plain(prompt, n, eos), `depth ${depth} turn ${turn}`);
        // the drafts too are those of a fresh cache (stale MTP rows would change them, not the tokens)
        const fresh = new SpeculativeDecoder(m, { maxLen: 200, depth, chunk: 5 }).generate(prompt, n, eos === undefined ? {} : { eos });
        assert.deepEqual([r.draftedByDepth, r.acceptedByDepth], [fresh.draftedByDepth, fresh.acceptedByDepth], `drafts, depth ${depth} turn ${turn}`);
        reusedAny += r.reused;
        // the next turn: the reply plus new user tokens; turn 4 rewrites an earlier token
        conv = [...Array.from(r.ids), (turn * 5 + 1) % V, (turn * 3 + 2) % V];
        if (turn === 4) conv[3] = (conv[3]! + 1) % V;
      }
      assert.ok(reusedAny > 20, `reused ${reusedAny}`);
      spec.clear();
      assert.equal(spec.generate(Int32Array.from(conv), 3, { reuse: true }).reused, 0);
    }
  });

  it('checks the draft depth', () => {
    assert.throws(() => new SpeculativeDecoder(m, { maxLen: 8, depth: 3 }), /draft depth 3 is not in \[1, 2\]/);
    assert.throws(() => new SpeculativeDecoder(m, { maxLen: 8, depth: 0 }), /draft depth 0/);
    assert.equal(new SpeculativeDecoder(m, { maxLen: 8, depth: 1 }).generate(Int32Array.of(1, 2), 6).draftedByDepth.length, 1);
  });
});

test('speculative sampling with 2 chained drafts: the 2nd and 3rd tokens are distributed as in plain sampling (chi-square)', () => {
  const V = 10;
  const m = model(V, 9, 0.3);
  const prompt = Int32Array.of(1, 7, 3);
  const P = prompt.length;
  const o: SamplingOptions = { temperature: 1, repetitionPenalty: 1.2, presencePenalty: 0.3 };
  // the exact distributions of tokens 2 and 3 under plain sampling (histories included)
  const s = new DecodeSession(m, { maxLen: P + 3 });
  const dist = (hist: number[]): Float64Array => {
    const h = new Sampler(o, { V });
    h.prompt(0, prompt);
    for (const t of hist) h.record(0, t);
    s.reset();
    return h.dist(s.prefill(Int32Array.from([...prompt, ...hist]), P + hist.length), 0, 0, new Float64Array(V)).slice();
  };
  const p1 = dist([]);
  const want2 = new Float64Array(V);
  const want3 = new Float64Array(V);
  for (let a = 0; a < V; a++) {
    const p2 = dist([a]);
    for (let b = 0; b < V; b++) {
      const w = p1[a]! * p2[b]!;
      want2[b] = want2[b]! + w;
      const p3 = dist([a, b]);
      for (let c = 0; c < V; c++) want3[c] = want3[c]! + w * p3[c]!;
    }
  }
  const spec = new SpeculativeDecoder(m, { maxLen: P + 3 });
  const N = 3000;
  const got2 = new Float64Array(V);
  const got3 = new Float64Array(V);
  const drafted = [0, 0];
  const accepted = [0, 0];
  for (let i = 0; i < N; i++) {
    const sampler = new Sampler(o, { V, seed: i });
    sampler.prompt(0, prompt);
    const r = spec.generate(prompt, 3, { sampler });
    got2[r.ids[P + 1]!]!++;
    got3[r.ids[P + 2]!]!++;
    for (const k of [0, 1]) {
      drafted[k]! += r.draftedByDepth[k]!;
      accepted[k]! += r.acceptedByDepth[k]!;
    }
  }
  for (const [name, want, got] of [['2nd', want2, got2], ['3rd', want3, got3]] as const) {
    const chi2 = want.reduce((acc, w, t) => acc + (got[t]! - w * N) ** 2 / (w * N), 0);
    // df = V - 1 = 9: P(chi2 > 35) < 1e-4
    assert.ok(want.every((w) => w * N > 5), `${name}: every cell expects > 5 draws`);
    assert.ok(chi2 < 35, `${name} token: chi-square ${chi2.toFixed(1)}, got ${Array.from(got)}, want ${Array.from(want, (w) => (w * N).toFixed(0))}`);
  }
  for (const k of [0, 1]) {
    const rate = accepted[k]! / drafted[k]!;
    assert.ok(drafted[k]! > 100 && rate > 0.1 && rate < 0.9, `depth ${k + 1}: acceptance ${accepted[k]}/${drafted[k]} must exercise both branches`);
  }
});
