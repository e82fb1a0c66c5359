/**
 * The generation loop's token choice on hand-made logits: top-k, top-p (after top-k), min-p and
 * temperature give the exact distributions; the repetition (CTRL/HF) and frequency / presence
 * (OpenAI) penalties the exact logits; the seeded sampler is reproducible and draws with the
 * filtered probabilities; generate() ends sequences at EOS, at a stop from onToken, or at maxNew.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate, type Decoder } from '../src/inference/generate.js';
import { applyPenalties, draw, Sampler, tokenProbs, type SamplingOptions } from '../src/inference/sampling.js';

const P4 = [0.5, 0.25, 0.125, 0.125];
const logits4 = (): Float32Array => Float32Array.from(P4, Math.log);

function probs(o: SamplingOptions, row = logits4()): number[] {
  return Array.from(tokenProbs(row, o, new Float64Array(row.length)));
}

function close(got: number[], want: number[], tol = 1e-6): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `[${i}] ${got[i]} vs ${want[i]} (${got.join(', ')})`);
}

test('temperature, top-k, top-p and min-p: exact distributions on hand-made logits', () => {
  close(probs({ temperature: 1 }), P4);
  close(probs({ temperature: 1, topK: 2 }), [2 / 3, 1 / 3, 0, 0]);
  close(probs({ temperature: 1, topK: 1 }), [1, 0, 0, 0]);
  close(probs({ temperature: 1, topK: 4 }), P4);
  close(probs({ temperature: 1, topP: 0.5 }), [1, 0, 0, 0]); // 0.5 reaches 0.5
  close(probs({ temperature: 1, topP: 0.7 }), [2 / 3, 1 / 3, 0, 0]);
  close(probs({ temperature: 1, topP: 0.8 }), [0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0]);
  // top-p applies to the distribution renormalised after top-k: over [.5, .25, .125]/.875 the
  // first two already hold 0.857 >= 0.8
  close(probs({ temperature: 1, topK: 3, topP: 0.8 }), [2 / 3, 1 / 3, 0, 0]);
  close(probs({ temperature: 1, minP: 0.3 }), [2 / 3, 1 / 3, 0, 0]); // p >= 0.15
  close(probs({ temperature: 1, minP: 0.6 }), [1, 0, 0, 0]);
  close(probs({ temperature: 1, minP: 0.2 }), P4);
  close(probs({ temperature: 1, minP: 1 }), [1, 0, 0, 0]);
  // temperature 2: p ∝ sqrt(p)
  const s = P4.map(Math.sqrt);
  const z = s.reduce((a, b) => a + b);
  close(probs({ temperature: 2 }), s.map((x) => x / z));
  close(probs({ temperature: 0.5 }), [16, 4, 1, 1].map((x) => x / 22));
  // ties: top-k keeps the lower ids first
  close(probs({ temperature: 1, topK: 3 }, Float32Array.of(0, 1, 1, 1, 0)), [0, 1 / 3, 1 / 3, 1 / 3, 0]);
});

test('repetition (CTRL/HF) and frequency / presence (OpenAI) penalties: exact logits', () => {
  const row = Float32Array.of(2, -1, 0.5, 3, 1);
  applyPenalties(row, { temperature: 0, repetitionPenalty: 2 }, new Set([0, 1]), new Map());
  assert.deepEqual(Array.from(row), [1, -2, 0.5, 3, 1]);
  const r2 = Float32Array.of(2, -1, 0.5, 3, 1);
  applyPenalties(r2, { temperature: 0, frequencyPenalty: 0.5, presencePenalty: 0.25 }, [], new Map([[3, 2], [2, 1]]));
  assert.deepEqual(Array.from(r2), [2, -1, -0.25, 1.75, 1]);
  const r3 = Float32Array.of(2, -1, 0.5, 3, 1);
  applyPenalties(r3, { temperature: 0, repetitionPenalty: 2, frequencyPenalty: 1, presencePenalty: 0.5 }, new Set([3, 1]), new Map([[3, 1]]));
  assert.deepEqual(Array.from(r3), [2, -2, 0.5, 0, 1]); // 3 / 2 - 1 - 0.5
});

test('the sampler: greedy with a repetition penalty avoids seen tokens; prompt history counts', () => {
  const flat = Float32Array.of(1, 1, 1);
  const s = new Sampler({ temperature: 0, repetitionPenalty: 2 }, { V: 3 });
  s.prompt(0, [0]);
  assert.deepEqual([s.pick(flat, 0, 3, 0), s.pick(flat, 0, 3, 0), s.pick(flat, 0, 3, 0)], [1, 2, 0]);
  const f = new Sampler({ temperature: 0, presencePenalty: 1 }, { V: 3, batch: 2 });
  f.prompt(0, [0, 1]); // presence counts generated tokens only
  assert.deepEqual([f.pick(flat, 0, 3, 0), f.pick(flat, 0, 3, 0), f.pick(flat, 0, 3, 1)], [0, 1, 0]);
  const plain = new Sampler({ temperature: 0 }, { V: 3 });
  assert.equal(plain.pick(Float32Array.of(0, 5, 1, 9, 2), 1, 3), 2); // a row at an offset
  assert.throws(() => new Sampler({ temperature: 1, topP: 0 }, { V: 3 }), /topP/);
});

test('the seeded sampler: reproducible, and draws follow the filtered distribution', () => {
  const row = logits4();
  const o: SamplingOptions = { temperature: 1, topK: 3 };
  const run = (seed: number, n: number): number[] => {
    const s = new Sampler(o, { V: 4, seed });
    return Array.from({ length: n }, () => s.pick(row, 0, 4));
  };
  assert.deepEqual(run(7, 50), run(7, 50));
  assert.notDeepEqual(run(7, 50), run(8, 50));
  const N = 40000;
  const hist = [0, 0, 0, 0];
  for (const t of run(1, N)) hist[t]!++;
  const want = [0.5, 0.25, 0.125].map((p) => p / 0.875);
  assert.equal(hist[3], 0, 'top-k removed token 3');
  for (let i = 0; i < 3; i++) {
    const sd = Math.sqrt((want[i]! * (1 - want[i]!)) / N);
    assert.ok(Math.abs(hist[i]! / N - want[i]!) < 5 * sd, `token ${i}: ${hist[i]! / N} vs ${want[i]}`);
  }
  assert.equal(draw(Float64Array.of(0, 0.5, 0, 0.5), 0), 1);
  assert.equal(draw(Float64Array.of(0, 0.5, 0, 0.5), 0.5), 3);
  assert.equal(draw(Float64Array.of(0, 0.5, 0, 0.5), 0.999999999), 3);
});

/** A decoder whose next token is (last token + 1) mod V, for each of B sequences. */
function counter(B: number, V: number): Decoder {
  const out = new Float32Array(B * V);
  const logitsAfter = (ids: ArrayLike<number>, stride: number, at: number): Float32Array => {
    out.fill(0);
    for (let b = 0; b < B; b++) out[b * V + ((ids[b * stride + at]! + 1) % V)] = 1;
    return out;
  };
  return { batch: B, V, reset() {}, prefill: (ids, T) => logitsAfter(ids, T, T - 1), step: (t) => logitsAfter(t, 1, 0) };
}

test('generate: EOS, stop from onToken and maxNew end each sequence; tokens are streamed in order', () => {
  const seen: Array<[number, number]> = [];
  const g = generate(counter(3, 10), Int32Array.of(1, 4, 6), 1, {
    maxNew: 6,
    eos: 9,
    onToken: (b, t) => {
      seen.push([b, t]);
      return b === 1 && t === 6;
    },
  });
  assert.deepEqual(g.tokens, [[2, 3, 4, 5, 6, 7], [5, 6], [7, 8]]);
  assert.deepEqual(g.finish, ['length', 'stop', 'eos']);
  assert.deepEqual(seen.filter(([b]) => b === 0).map(([, t]) => t), [2, 3, 4, 5, 6, 7]);
  assert.deepEqual(seen.slice(0, 3), [[0, 2], [1, 5], [2, 7]]);
});

test('top-k / top-p / min-p on random logits with ties equal a sort-based reference', () => {
  const ref = (row: Float32Array, o: SamplingOptions): number[] => {
    const V = row.length;
    const mx = Math.max(...row);
    const w = Array.from(row, (l) => Math.exp((l - mx) / o.temperature));
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => w[b]! - w[a]! || a - b);
    let keep = o.topK ? Math.min(o.topK, V) : V;
    if ((o.topP ?? 1) < 1) {
      const z = order.slice(0, keep).reduce((a, i) => a + w[i]!, 0);
      let cum = 0;
      for (let j = 0; j < keep; j++) {
        cum += w[order[j]!]!;
        if (cum >= o.topP! * z) {
          keep = j + 1;
          break;
        }
      }
    }
    const kept = new Set(order.slice(0, keep));
    const f = w.map((x, i) => (kept.has(i) && x >= (o.minP ?? 0) ? x : 0));
    const z = f.reduce((a, b) => a + b, 0);
    return f.map((x) => x / z);
  };
  let seed = 12345;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let trial = 0; trial < 200; trial++) {
    const V = 1 + Math.floor(rand() * 40);
    const row = Float32Array.from({ length: V }, () => Math.round(rand() * 8) / 2 - 2); // many ties
    const o: SamplingOptions = { temperature: 0.5 + rand() * 2, topK: Math.floor(rand() * (V + 2)), topP: rand() < 0.3 ? 1 : 0.05 + rand() * 0.95, minP: rand() < 0.5 ? 0 : rand() * 0.5 };
    close(probs(o, row), ref(row, o), 1e-9);
  }
});
