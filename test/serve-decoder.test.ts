/**
 * The sequential BatchDecoder of `dsv3 serve` (src/serve/sequential-decoder.ts) against the
 * contract of inference/batch-decoder.ts and the generation loop: several sequences in flight,
 * admitted between steps, give token for token what generate() gives each one alone on a
 * DecodeSession (greedy and seeded sampling, prompts longer than a prefill chunk); EOS, a stop
 * from onToken and max tokens end a sequence with the right reason and exactly one onDone after
 * its last onToken; cancel frees the slot; admit refuses a full decoder, a prompt that does not
 * fit, an empty prompt and ids outside the vocabulary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DsvError } from '../src/errors.js';
import type { LeaveReason, SequenceRequest } from '../src/inference/batch-decoder.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { argmax, Sampler } from '../src/inference/sampling.js';
import { DeepseekV3 } from '../src/model/model.js';
import { SequentialDecoder } from '../src/serve/sequential-decoder.js';
import { fixturePath } from './helpers/fixtures.js';

const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
const V = model.cfg.vocab_size;

function prompt(n: number, salt: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 37 + salt * 11 + 5) % V);
}

interface Trace {
  tokens: number[];
  done: Array<[LeaveReason, number]>;
  tokensAfterDone: number;
}

function request(p: Int32Array, maxNew: number, o: { eos?: number; stopAfter?: number; seed?: number; temperature?: number } = {}): { req: SequenceRequest; trace: Trace } {
  const trace: Trace = { tokens: [], done: [], tokensAfterDone: 0 };
  const sampler = o.temperature ? new Sampler({ temperature: o.temperature, topK: 20 }, { V, seed: o.seed ?? 0 }) : null;
  const req: SequenceRequest = {
    prompt: p,
    maxNew,
    pick: sampler ? sampler.pick : argmax,
    ...(o.eos === undefined ? {} : { eos: o.eos }),
    onToken: (t) => {
      if (trace.done.length > 0) trace.tokensAfterDone++;
      trace.tokens.push(t);
      return o.stopAfter !== undefined && trace.tokens.length === o.stopAfter;
    },
    onDone: (reason, n) => {
      trace.done.push([reason, n]);
    },
  };
  return { req, trace };
}

function alone(p: Int32Array, maxNew: number, o: { eos?: number; seed?: number; temperature?: number } = {}): { tokens: number[]; finish: string } {
  const s = new DecodeSession(model, { maxLen: p.length + maxNew });
  const sampler = o.temperature ? new Sampler({ temperature: o.temperature, topK: 20 }, { V, seed: o.seed ?? 0 }) : null;
  const g = generate(s, p, p.length, { maxNew, ...(sampler ? { pick: sampler.pick } : {}), ...(o.eos === undefined ? {} : { eos: o.eos }) });
  return { tokens: g.tokens[0]!, finish: g.finish[0]! };
}

test('sequences in flight together, joining between steps, equal generate() alone (greedy and sampled)', () => {
  const dec = new SequentialDecoder(model, { maxBatch: 3, maxContext: 200 });
  assert.equal(dec.maxBatch, 3);
  assert.equal(dec.maxContext, 200);
  assert.equal(dec.cacheBytes, 3 * model.newCache(1, 200).bytes);
  const a = request(prompt(5, 1), 12);
  const b = request(prompt(70, 2), 9); // longer than one 64-token prefill chunk
  const c = request(prompt(3, 3), 15, { temperature: 0.9, seed: 7 });
  dec.admit(a.req);
  assert.equal(dec.active, 1);
  dec.step();
  dec.step();
  dec.admit(b.req); // joins after two steps of a
  dec.step();
  dec.admit(c.req);
  assert.equal(dec.active, 3);
  let steps = 0;
  while (dec.step() > 0) steps++;
  assert.ok(steps < 20);
  assert.equal(dec.active, 0);
  for (const [x, p, n, o] of [[a, prompt(5, 1), 12, {}], [b, prompt(70, 2), 9, {}], [c, prompt(3, 3), 15, { temperature: 0.9, seed: 7 }]] as const) {
    const ref = alone(p, n, o);
    assert.deepEqual(x.trace.tokens, ref.tokens);
    assert.deepEqual(x.trace.done, [['length', n]]);
    assert.equal(x.trace.tokensAfterDone, 0);
  }
});

test('EOS, a stop from onToken and max tokens: the reason, the count, one onDone after the last token', () => {
  const p = prompt(6, 4);
  const ref = alone(p, 10);
  const eos = ref.tokens[4]!; // the fifth greedy token, as EOS: four tokens come out
  const firstEos = ref.tokens.indexOf(eos);
  const dec = new SequentialDecoder(model, { maxBatch: 4, maxContext: 64 });
  const e = request(p, 10, { eos });
  const s = request(p, 10, { stopAfter: 3 });
  const l = request(p, 10);
  const z = request(p, 0);
  for (const x of [e, s, l, z]) dec.admit(x.req);
  while (dec.step() > 0);
  assert.deepEqual(e.trace.tokens, ref.tokens.slice(0, firstEos));
  assert.deepEqual(e.trace.done, [['eos', firstEos]]);
  assert.deepEqual(alone(p, 10, { eos }).tokens, e.trace.tokens);
  assert.deepEqual(s.trace.tokens, ref.tokens.slice(0, 3));
  assert.deepEqual(s.trace.done, [['stop', 3]]);
  assert.deepEqual(l.trace.done, [['length', 10]]);
  assert.deepEqual(z.trace.tokens, []);
  assert.deepEqual(z.trace.done, [['length', 0]]);
});

test('cancel frees the slot (onDone cancelled, once); admit refuses what the contract forbids', () => {
  const dec = new SequentialDecoder(model, { maxBatch: 2, maxContext: 32 });
  const a = request(prompt(4, 5), 20);
  const b = request(prompt(4, 6), 20);
  const sa = dec.admit(a.req);
  const sb = dec.admit(b.req);
  assert.notEqual(sa, sb);
  assert.throws(() => dec.admit(request(prompt(4, 7), 2).req), (e: Error) => e instanceof DsvError && /slots/.test(e.message));
  dec.step();
  dec.step();
  dec.cancel(sa);
  dec.cancel(sa); // already left: no-op
  assert.deepEqual(a.trace.done, [['cancelled', 2]]);
  assert.equal(dec.active, 1);
  const c = request(prompt(4, 5), 5);
  assert.equal(dec.admit(c.req), sa, 'the freed slot is reused');
  while (dec.step() > 0);
  assert.deepEqual(c.trace.tokens, alone(prompt(4, 5), 5).tokens, 'a reused slot starts from an empty cache');
  assert.deepEqual(b.trace.done, [['length', 20]]);
  assert.equal(a.trace.tokensAfterDone, 0);
  assert.throws(() => dec.admit(request(prompt(30, 1), 3).req), /exceed the context of 32/);
  assert.throws(() => dec.admit(request(new Int32Array(0), 3).req), /no tokens/);
  assert.throws(() => dec.admit(request(Int32Array.of(1, V), 3).req), new RegExp(`token id ${V} is outside`));
  assert.throws(() => new SequentialDecoder(model, { maxBatch: 0, maxContext: 32 }), /maxBatch/);
  assert.throws(() => new SequentialDecoder(model, { maxBatch: 1, maxContext: 10_000 }), /max_position_embeddings/);
});
