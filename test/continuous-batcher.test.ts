/**
 * The continuous batcher (src/inference/continuous-batcher.ts) against the one generation loop:
 * every sequence decoded in a batch with others — joining and leaving at different steps, with
 * different prompt lengths, at different positions in the same engine call — produces exactly the
 * tokens `generate()` gives for it alone on a DecodeSession, and logits within the model fixtures'
 * tolerance (2e-5 x max|expected|, tolerances.json); on the float32, FP8 and V2-routing
 * fixtures, on random bf16 / FP8 models, and under the reference kernels. Also the BatchDecoder
 * contract: admit throws a DsvError when full or when prompt + maxNew > maxContext, cancel frees
 * the slot (and the next sequence in it is unaffected by what it held), onDone runs exactly once
 * after the last onToken, EOS and stop, callbacks that admit or cancel.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withBackend } from '../src/engine/backend.js';
import { DsvError } from '../src/errors.js';
import type { LeaveReason, SequenceRequest } from '../src/inference/batch-decoder.js';
import { ContinuousBatcher } from '../src/inference/continuous-batcher.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { Engine } from '../src/inference/engine.js';
import { generate } from '../src/inference/generate.js';
import { randomModel } from '../src/inference/random-model.js';
import { argmax } from '../src/inference/sampling.js';
import { loadModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { fixturePath, modelTolerance } from './helpers/fixtures.js';

const TOL = modelTolerance();

function ids(n: number, seed: number, V: number): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % V;
  }
  return out;
}

interface Alone { tokens: number[]; logits: Float32Array; finish: string }

/** The sequence alone through generate() on a DecodeSession (the oracle). */
function alone(model: DeepseekV3, prompt: Int32Array, maxNew: number, o: { eos?: number; chunk?: number } = {}): Alone {
  const s = new DecodeSession(model, { maxLen: prompt.length + maxNew, ...(o.chunk ? { chunk: o.chunk } : {}) });
  const g = generate(s, prompt, prompt.length, { maxNew, logits: true, ...(o.eos !== undefined ? { eos: o.eos } : {}) });
  return { tokens: g.tokens[0]!, logits: g.logits!, finish: g.finish[0]! };
}

interface Job { at: number; prompt: Int32Array; maxNew: number; eos?: number }
interface Got { tokens: number[]; logits: Float32Array[]; done: Array<[LeaveReason, number]>; slot: number }

/** A greedy request that records its tokens, the logits of each choice and its onDone calls. */
function request(job: Job, got: Got, extra: Partial<SequenceRequest> = {}): SequenceRequest {
  return {
    prompt: job.prompt,
    maxNew: job.maxNew,
    ...(job.eos !== undefined ? { eos: job.eos } : {}),
    pick: (l, off, V) => {
      got.logits.push(l.slice(off, off + V));
      return argmax(l, off, V);
    },
    onToken: (t) => {
      assert.equal(got.done.length, 0, 'onToken after onDone');
      got.tokens.push(t);
    },
    onDone: (reason, n) => got.done.push([reason, n]),
    ...extra,
  };
}

/**
 * Runs the jobs through one batcher: job i is admitted at step job.at, or, when every slot is
 * taken then, as soon as one frees (in order). Returns what each job got.
 */
function runBatched(b: ContinuousBatcher, jobs: Job[]): Got[] {
  const got: Got[] = jobs.map(() => ({ tokens: [], logits: [], done: [], slot: -1 }));
  const waiting = jobs.map((_, i) => i);
  let maxActive = 0;
  for (let step = 0; step < 10_000; step++) {
    while (waiting.length > 0 && jobs[waiting[0]!]!.at <= step && b.active < b.maxBatch) {
      const i = waiting.shift()!;
      got[i]!.slot = b.admit(request(jobs[i]!, got[i]!));
    }
    maxActive = Math.max(maxActive, b.active);
    if (waiting.length === 0 && b.active === 0) break;
    b.step();
  }
  assert.equal(b.active, 0, 'everything finished');
  assert.ok(maxActive > 1, 'sequences overlapped');
  return got;
}

function maxRelDiff(got: Float32Array, exp: Float32Array): number {
  let maxE = 0, maxD = 0;
  for (let i = 0; i < exp.length; i++) {
    maxD = Math.max(maxD, Math.abs(got[i]! - exp[i]!));
    maxE = Math.max(maxE, Math.abs(exp[i]!));
  }
  return maxD / maxE;
}

/** Each job's batched output equals its run alone: tokens exactly, logits within TOL. */
function checkAgainstAlone(model: DeepseekV3, jobs: Job[], got: Got[], chunk?: number): void {
  const V = model.cfg.vocab_size;
  jobs.forEach((job, i) => {
    const a = alone(model, job.prompt, job.maxNew, { ...(job.eos !== undefined ? { eos: job.eos } : {}), ...(chunk ? { chunk } : {}) });
    const g = got[i]!;
    assert.deepEqual(g.tokens, a.tokens, `job ${i}: tokens`);
    assert.deepEqual(g.done, [[a.finish, a.tokens.length]], `job ${i}: onDone once with generate's finish reason`);
    // one logits row per choice (the EOS choice included)
    const n = a.tokens.length + (a.finish === 'eos' ? 1 : 0);
    assert.equal(g.logits.length, n, `job ${i}: choices`);
    for (let k = 0; k < n; k++) {
      const err = maxRelDiff(g.logits[k]!, a.logits.subarray(k * V, (k + 1) * V));
      assert.ok(err <= TOL, `job ${i} token ${k}: logits ${err.toExponential(3)} > ${TOL}`);
    }
  });
}

/** Jobs with different prompt lengths, joining at different steps and leaving at different steps. */
function schedule(V: number): Job[] {
  return [
    { at: 0, prompt: ids(5, 1, V), maxNew: 14 },
    { at: 0, prompt: ids(11, 2, V), maxNew: 4 },
    { at: 2, prompt: ids(1, 3, V), maxNew: 9 },
    { at: 3, prompt: ids(23, 4, V), maxNew: 7 }, // waits for a slot (maxBatch 3), joins when job 1 leaves
    { at: 5, prompt: ids(8, 5, V), maxNew: 12 },
    { at: 9, prompt: ids(3, 6, V), maxNew: 1 },
  ];
}

for (const name of ['tiny-dense-moe', 'tiny-fp8', 'tiny-v2-routing']) {
  describe(`continuous batcher on ${name}`, () => {
    const model = DeepseekV3.load(fixturePath(name), { mtp: false });
    const V = model.cfg.vocab_size;

    it('each sequence equals generate() alone: tokens exactly, logits within tolerance', () => {
      const jobs = schedule(V);
      const b = new ContinuousBatcher(model, { maxBatch: 3, maxContext: 40 });
      checkAgainstAlone(model, jobs, runBatched(b, jobs));
    });

    it('the same with prompts prefilled in chunks of 4', () => {
      const jobs = schedule(V);
      const b = new ContinuousBatcher(model, { maxBatch: 3, maxContext: 40, chunk: 4 });
      checkAgainstAlone(model, jobs, runBatched(b, jobs), 4);
    });
  });
}

describe('continuous batcher on other storages and kernels', () => {
  const cfg = loadModelConfig(fixturePath('tiny-dense-moe/config.json'));

  for (const storage of ['bf16', 'fp8'] as const) {
    it(`random ${storage} weights: each sequence equals generate() alone`, () => {
      const model = randomModel(cfg, 7, storage);
      const jobs = schedule(cfg.vocab_size);
      checkAgainstAlone(model, jobs, runBatched(new ContinuousBatcher(model, { maxBatch: 4, maxContext: 40 }), jobs));
    });
  }

  it('reference kernels (the TypeScript oracle) give the same', () => {
    const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
    const jobs = schedule(cfg.vocab_size).slice(0, 4).map((j) => ({ ...j, maxNew: Math.min(j.maxNew, 5) }));
    withBackend('reference', () => checkAgainstAlone(model, jobs, runBatched(new ContinuousBatcher(model, { maxBatch: 2, maxContext: 40 }), jobs)));
  });
});

describe('continuous batcher with a prefill budget', () => {
  const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
  const V = model.cfg.vocab_size;

  it('long prompts are prefilled over several steps; every sequence still equals generate() alone', () => {
    const jobs = schedule(V);
    const b = new ContinuousBatcher(model, { maxBatch: 3, maxContext: 40, chunk: 4, prefillBudget: 8 });
    checkAgainstAlone(model, jobs, runBatched(b, jobs), 4);
  });

  it('a decoding sequence gets a token every step while a 23-token prompt is prefilled 5 tokens a step', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 40, chunk: 4, prefillBudget: 5 });
    const first: Got = { tokens: [], logits: [], done: [], slot: -1 };
    const long: Got = { tokens: [], logits: [], done: [], slot: -1 };
    const fj: Job = { at: 0, prompt: ids(3, 41, V), maxNew: 12 };
    const lj: Job = { at: 0, prompt: ids(23, 42, V), maxNew: 4 };
    b.admit(request(fj, first));
    b.step(); // first's prompt (3 tokens) and its first token
    b.admit(request(lj, long));
    for (let k = 0; k < 5; k++) {
      b.step(); // 5 prompt tokens of `long` per step: 23 tokens are in after the fifth step
      assert.equal(first.tokens.length, 2 + k, 'the decoding sequence advanced');
      assert.equal(long.tokens.length, k < 4 ? 0 : 1, `long prompt after step ${k + 1}`);
    }
    while (b.step() > 0);
    assert.deepEqual(first.tokens, alone(model, fj.prompt, fj.maxNew).tokens);
    assert.deepEqual(long.tokens, alone(model, lj.prompt, lj.maxNew).tokens);
    assert.throws(() => new ContinuousBatcher(model, { maxBatch: 1, maxContext: 8, prefillBudget: 0 }), /prefillBudget/);
  });
});

describe('continuous batcher contract', () => {
  const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
  const V = model.cfg.vocab_size;
  const fresh = (): Got => ({ tokens: [], logits: [], done: [], slot: -1 });

  it('admit throws a DsvError when every slot is taken or the request cannot fit', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 16 });
    const j: Job = { at: 0, prompt: ids(4, 1, V), maxNew: 4 };
    assert.throws(() => b.admit(request({ ...j, prompt: ids(10, 1, V), maxNew: 7 }, fresh())), (e: Error) => e instanceof DsvError && /exceeds maxContext 16/.test(e.message));
    assert.throws(() => b.admit(request({ ...j, prompt: new Int32Array(0) }, fresh())), (e: Error) => e instanceof DsvError && /at least one token/.test(e.message));
    assert.throws(() => b.admit(request({ ...j, prompt: Int32Array.of(1, V) }, fresh())), (e: Error) => e instanceof DsvError && /outside the vocabulary/.test(e.message));
    assert.throws(() => b.admit(request({ ...j, maxNew: -1 }, fresh())), DsvError);
    assert.equal(b.active, 0, 'a rejected request takes no slot');
    assert.equal(b.admit(request(j, fresh())), 0);
    assert.equal(b.admit(request(j, fresh())), 1);
    assert.throws(() => b.admit(request(j, fresh())), (e: Error) => e instanceof DsvError && /all 2 slots are in use/.test(e.message));
    assert.equal(b.active, 2);
    assert.throws(() => new ContinuousBatcher(model, { maxBatch: 0, maxContext: 16 }), DsvError);
    assert.throws(() => new ContinuousBatcher(model, { maxBatch: 1, maxContext: model.cfg.max_position_embeddings + 1 }), /max_position_embeddings/);
  });

  it('cancel ends a sequence once, frees its slot, and the next sequence in it is unaffected', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 40 });
    const long: Job = { at: 0, prompt: ids(20, 9, V), maxNew: 15 };
    const other: Job = { at: 0, prompt: ids(6, 10, V), maxNew: 10 };
    const g0 = fresh(), g1 = fresh();
    const s0 = b.admit(request(long, g0));
    b.admit(request(other, g1));
    for (let k = 0; k < 5; k++) b.step();
    assert.equal(g0.tokens.length, 5);
    b.cancel(s0);
    assert.deepEqual(g0.done, [['cancelled', 5]]);
    assert.equal(b.active, 1);
    b.cancel(s0); // already left: no-op
    b.cancel(99);
    assert.equal(g0.done.length, 1, 'onDone exactly once');
    // a shorter sequence takes the freed slot: the 20 cached positions of the cancelled one must not leak into it
    const next: Job = { at: 0, prompt: ids(3, 11, V), maxNew: 8 };
    const g2 = fresh();
    assert.equal(b.admit(request(next, g2)), s0);
    while (b.step() > 0);
    assert.equal(g2.done.length, 1);
    assert.deepEqual(g2.tokens, alone(model, next.prompt, next.maxNew).tokens);
    assert.deepEqual(g1.tokens, alone(model, other.prompt, other.maxNew).tokens, 'the other sequence never noticed');
    assert.deepEqual(g1.done, [['length', 10]]);
  });

  it('a request cancelled before its prefill leaves without running', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 1, maxContext: 20 });
    const g = fresh();
    const s = b.admit(request({ at: 0, prompt: ids(5, 1, V), maxNew: 5 }, g));
    b.cancel(s);
    assert.deepEqual(g.done, [['cancelled', 0]]);
    assert.equal(b.step(), 0);
    assert.equal(g.logits.length, 0);
  });

  it('EOS ends a sequence (not reported), stop from onToken ends it after the token, maxNew 0 ends at once', () => {
    const p = ids(7, 12, V);
    const ref = alone(model, p, 10).tokens;
    const eos = ref[4]!; // the fifth token (or an earlier occurrence of it) ends the sequence
    const cut = ref.indexOf(eos);
    const b = new ContinuousBatcher(model, { maxBatch: 3, maxContext: 30 });
    const ge = fresh(), gs = fresh(), gz = fresh();
    b.admit(request({ at: 0, prompt: p, maxNew: 10, eos }, ge));
    let seen = 0;
    b.admit(request({ at: 0, prompt: p, maxNew: 10 }, gs, { onToken: (t) => { gs.tokens.push(t); return ++seen === 3; } }));
    b.admit(request({ at: 0, prompt: p, maxNew: 0 }, gz));
    while (b.step() > 0);
    assert.deepEqual(ge.tokens, ref.slice(0, cut));
    assert.deepEqual(ge.done, [['eos', cut]]);
    assert.deepEqual(gs.tokens, ref.slice(0, 3));
    assert.deepEqual(gs.done, [['stop', 3]]);
    assert.deepEqual(gz.done, [['length', 0]]);
    assert.deepEqual(gz.tokens, []);
  });

  it('callbacks may admit and cancel: a finished request hands its slot to the next one', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 30 });
    const queue: Job[] = [2, 3, 4].map((s) => ({ at: 0, prompt: ids(2 + s, s, V), maxNew: 3 + s }));
    const all: Array<{ job: Job; got: Got }> = [];
    const start = (job: Job, onToken?: (got: Got, t: number) => void): void => {
      const got = fresh();
      all.push({ job, got });
      b.admit(request(job, got, {
        onToken: (t) => {
          got.tokens.push(t);
          onToken?.(got, t);
        },
        onDone: (r, n) => {
          got.done.push([r, n]);
          const nx = queue.shift();
          if (nx) start(nx); // re-entrant admit from onDone
        },
      }));
    };
    const victim = fresh();
    let vs = -1;
    // the first sequence's third onToken cancels the victim (a later row of the same step)
    start({ at: 0, prompt: ids(4, 1, V), maxNew: 6 }, (got) => { if (got.tokens.length === 3) b.cancel(vs); });
    vs = b.admit(request({ at: 0, prompt: ids(9, 8, V), maxNew: 20 }, victim));
    assert.equal(vs, 1);
    while (b.active > 0) b.step();
    assert.deepEqual(victim.done, [['cancelled', 2]]);
    assert.equal(victim.logits.length, 2, 'the cancelled row made no choice in the step it was cancelled');
    assert.equal(all.length, 4);
    for (const { job, got } of all) {
      assert.deepEqual(got.tokens, alone(model, job.prompt, job.maxNew).tokens);
      assert.deepEqual(got.done, [['length', job.maxNew]]);
    }
  });

  it('a throwing callback does not derail the other sequences; step rethrows it at the end', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 30 });
    const bad: Job = { at: 0, prompt: ids(4, 21, V), maxNew: 6 };
    const good: Job = { at: 0, prompt: ids(7, 22, V), maxNew: 6 };
    const gb = fresh(), gg = fresh();
    const sb = b.admit(request(bad, gb, { onToken: (t) => { gb.tokens.push(t); if (gb.tokens.length === 2) throw new Error('client gone'); } }));
    b.admit(request(good, gg));
    b.step();
    assert.throws(() => b.step(), /client gone/);
    b.cancel(sb);
    assert.deepEqual(gb.done, [['cancelled', 2]]);
    while (b.step() > 0);
    assert.deepEqual(gg.tokens, alone(model, good.prompt, good.maxNew).tokens);
    assert.deepEqual(gg.done, [['length', 6]]);
  });

  it('a pick outside the vocabulary cancels that sequence only; the prompt is copied at admit', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 2, maxContext: 30 });
    const good: Job = { at: 0, prompt: ids(5, 23, V), maxNew: 5 };
    const want = alone(model, good.prompt, good.maxNew).tokens;
    const gb = fresh(), gg = fresh();
    b.admit(request({ at: 0, prompt: ids(3, 24, V), maxNew: 5 }, gb, { pick: () => V }));
    b.admit(request(good, gg));
    good.prompt.fill(0); // the caller reuses its buffer after admit
    assert.throws(() => b.step(), (e: Error) => e instanceof DsvError && /pick returned 320/.test(e.message));
    assert.deepEqual(gb.done, [['cancelled', 0]]);
    while (b.step() > 0);
    assert.deepEqual(gg.tokens, want);
  });

  it('cache memory is fixed at construction: maxBatch x maxContext slots', () => {
    const b = new ContinuousBatcher(model, { maxBatch: 3, maxContext: 50 });
    const c = model.cfg;
    assert.equal(b.memory().cache, c.num_hidden_layers * 3 * 50 * (c.kv_lora_rank + c.qk_rope_head_dim) * 4);
  });
});

describe('engine: several sequences at their own positions and slots in one forward', () => {
  const model = DeepseekV3.load(fixturePath('tiny-dense-moe'), { mtp: false });
  const V = model.cfg.vocab_size;

  it('chunks of 3 tokens of two sequences (slots 2 and 0, positions 5 and 9) equal each sequence alone', () => {
    const cache = model.newCache(3, 40);
    const eng = new Engine(model, { rows: 16, logitRows: 8, maxLen: 40 });
    const a = ids(8, 31, V), b = ids(12, 32, V); // prefixes of 5 and 9 tokens, then 3 tokens each
    const one = (seq: Int32Array, slot: number, n: number): void => {
      eng.forwardMain(seq.subarray(0, n), { B: 1, T: n, start: 0, slots: Int32Array.of(slot), starts: Int32Array.of(0) }, cache);
    };
    one(a, 2, 5);
    one(b, 0, 9);
    const chunk = Int32Array.from([...a.subarray(5, 8), ...b.subarray(9, 12)]);
    eng.forwardMain(chunk, { B: 2, T: 3, start: 0, slots: Int32Array.of(2, 0), starts: Int32Array.of(5, 9) }, cache);
    const got = eng.head(0, 6).slice();
    const check = (seq: Int32Array, row0: number): void => {
      const s = new DecodeSession(model, { maxLen: seq.length });
      const all = s.prefill(seq, seq.length, { all: true });
      for (let t = 0; t < 3; t++) {
        const want = all.subarray((seq.length - 3 + t) * V, (seq.length - 2 + t) * V);
        const err = maxRelDiff(got.subarray((row0 + t) * V, (row0 + t + 1) * V), want);
        assert.ok(err <= TOL, `row ${row0 + t}: ${err.toExponential(3)} > ${TOL}`);
      }
    };
    check(a, 0);
    check(b, 3);
    // a slot twice in one call, or positions past the cache, are refused
    assert.throws(() => eng.forwardMain(chunk, { B: 2, T: 3, start: 0, slots: Int32Array.of(1, 1), starts: Int32Array.of(0, 0) }, cache), /appears twice/);
    assert.throws(() => eng.forwardMain(chunk, { B: 2, T: 3, start: 0, slots: Int32Array.of(1, 0), starts: Int32Array.of(0, 38) }, cache), /exceed the cache length/);
  });
});
