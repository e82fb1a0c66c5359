/**
 * Continuous batching on the inference engine (issue 11; the contract: batch-decoder.ts).
 * Independent sequences share one Engine and one LatentCache of maxBatch slots x maxContext
 * positions, both allocated once (paper §2.1.2: a slot costs (d_c + d_h^R) floats per token per
 * layer). Each step:
 *
 *   1. every newly admitted prompt is prefilled into its slot (chunks of `chunk` tokens, one
 *      engine call per chunk) and its first token is picked from the last prompt token's logits
 *      (with `prefillBudget`, at most that many prompt tokens per step: a long prompt then takes
 *      several steps, and its sequence produces no token until it is in);
 *   2. every other sequence in flight feeds its previous token: ONE engine call for all of them,
 *      each row at its own position in its own slot (StepShape slots/starts; the attention
 *      kernel's per-batch causalOffsets and kvBatch), so each weight is read once per step for all
 *      rows (GEMMs over the rows, each routed expert on the rows that chose it), then one LM-head
 *      GEMM for all rows;
 *   3. each sequence picks its next token (its own `pick`: greedy or its sampler), and leaves on
 *      EOS, when onToken says stop, or at maxNew tokens, freeing its slot at once.
 *
 * This is the token sequence `generate()` produces for the same prompt alone on a DecodeSession
 * (same prefill chunks, then one token per step): test/continuous-batcher.test.ts checks it token
 * for token, and the logits to float32 tolerance.
 *
 * Callbacks run synchronously inside admit/step/cancel and may call admit or cancel themselves
 * (a finished request's onDone admitting the next queued one, say): a slot freed in onDone can be
 * taken at once, and the new prompt is prefilled by the next step. A callback that throws does
 * not stop the step for the other sequences; step() rethrows the first such error at its end.
 */
import { DsvError } from '../errors.js';
import type { LatentCache } from '../model/latent-cache.js';
import type { DeepseekV3 } from '../model/model.js';
import type { BatchDecoder, LeaveReason, SequenceRequest } from './batch-decoder.js';
import { Engine } from './engine.js';
import type { StepShape } from './mla.js';
import type { PhaseProfiler } from './profile.js';

export interface ContinuousBatcherOptions {
  /** Cache slots: the most sequences in flight at once. */
  maxBatch: number;
  /** Positions per slot (prompt + generated tokens). */
  maxContext: number;
  /** Most prompt tokens per prefill call (default 64, as DecodeSession). */
  chunk?: number;
  /**
   * Most prompt tokens prefilled per step (default: no limit, every new prompt is prefilled
   * whole in the step after its admission). With a limit, a long prompt is prefilled over
   * several steps (in admission order) and its sequence produces no token until it is done, so
   * the sequences already decoding are not held up by it for more than this many tokens' work.
   */
  prefillBudget?: number;
  profiler?: PhaseProfiler;
}

interface Sequence {
  readonly req: SequenceRequest;
  readonly slot: number;
  /** Tokens generated (reported through onToken). */
  generated: number;
  /** The token to feed next (the last one picked); -1 until the prompt is prefilled. */
  next: number;
  /** The step whose prefill picked its first token (it joins the batched forward from the next step). */
  prefilledAt: number;
  /** Prompt tokens already in the cache. */
  prefilled: number;
}

export class ContinuousBatcher implements BatchDecoder {
  readonly maxBatch: number;
  readonly maxContext: number;
  readonly chunk: number;
  readonly prefillBudget: number;
  readonly engine: Engine;
  /** maxBatch slots x maxContext positions; slot s's length is cache.lengths[s]. */
  readonly cache: LatentCache;
  readonly V: number;
  private readonly seqs: Array<Sequence | null>;
  /** Slots admitted and not yet prefilled, in admission order. */
  private readonly pending: Sequence[] = [];
  private live = 0;
  private steps = 0;
  // per-step scratch (no allocation per step)
  private readonly ids: Int32Array;
  private readonly slots: Int32Array;
  private readonly starts: Int32Array;
  private readonly rows: Array<Sequence | null>;
  private readonly shape: StepShape;
  private readonly prefillSlot = new Int32Array(1);
  private readonly prefillStart = new Int32Array(1);
  private readonly prefillShape: StepShape;

  /** Bytes of the latent cache (all slots; fixed at construction). */
  get cacheBytes(): number {
    return this.cache.bytes;
  }

  constructor(readonly model: DeepseekV3, opts: ContinuousBatcherOptions) {
    const { maxBatch, maxContext } = opts;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new DsvError(`continuous batcher: maxBatch must be a positive integer, got ${maxBatch}`);
    if (!Number.isInteger(maxContext) || maxContext < 2) throw new DsvError(`continuous batcher: maxContext must be an integer >= 2, got ${maxContext}`);
    const maxPos = model.cfg.max_position_embeddings;
    if (maxContext > maxPos) throw new DsvError(`continuous batcher: maxContext ${maxContext} exceeds the model's max_position_embeddings ${maxPos}`);
    const chunk = opts.chunk ?? 64;
    if (!Number.isInteger(chunk) || chunk < 1) throw new DsvError(`continuous batcher: chunk must be a positive integer, got ${chunk}`);
    this.maxBatch = maxBatch;
    this.maxContext = maxContext;
    this.chunk = Math.min(chunk, maxContext);
    const budget = opts.prefillBudget ?? Infinity;
    if (!(budget === Infinity || (Number.isInteger(budget) && budget >= 1))) {
      throw new DsvError(`continuous batcher: prefillBudget must be a positive integer, got ${budget}`);
    }
    this.prefillBudget = budget;
    this.V = model.cfg.vocab_size;
    this.engine = new Engine(model, { rows: Math.max(maxBatch, this.chunk), logitRows: maxBatch, maxLen: maxContext });
    this.engine.profiler = opts.profiler ?? null;
    this.cache = model.newCache(maxBatch, maxContext);
    this.seqs = new Array<Sequence | null>(maxBatch).fill(null);
    this.ids = new Int32Array(Math.max(maxBatch, this.chunk));
    this.slots = new Int32Array(maxBatch);
    this.starts = new Int32Array(maxBatch);
    this.rows = new Array<Sequence | null>(maxBatch).fill(null);
    this.shape = { B: 1, T: 1, start: 0, slots: this.slots, starts: this.starts };
    this.prefillShape = { B: 1, T: 1, start: 0, slots: this.prefillSlot, starts: this.prefillStart };
  }

  get active(): number {
    return this.live;
  }

  /** Cache bytes (fixed at construction) and engine workspace bytes. */
  memory(): { cache: number; workspace: number } {
    return { cache: this.cache.bytes, workspace: this.engine.ws.bytes };
  }

  admit(req: SequenceRequest): number {
    const p = req.prompt;
    if (!(p instanceof Int32Array) || p.length < 1) throw new DsvError('admit: the prompt must be an Int32Array of at least one token id');
    if (!Number.isInteger(req.maxNew) || req.maxNew < 0) throw new DsvError(`admit: maxNew must be an integer >= 0, got ${req.maxNew}`);
    if (p.length + req.maxNew > this.maxContext) {
      throw new DsvError(`admit: prompt (${p.length} tokens) + maxNew (${req.maxNew}) = ${p.length + req.maxNew} exceeds maxContext ${this.maxContext}`);
    }
    for (let i = 0; i < p.length; i++) {
      const id = p[i]!;
      if (!(id >= 0 && id < this.V)) throw new DsvError(`admit: prompt token ${i} (id ${id}) is outside the vocabulary [0, ${this.V})`);
    }
    const slot = this.seqs.indexOf(null);
    if (slot < 0) throw new DsvError(`admit: all ${this.maxBatch} slots are in use (maxBatch ${this.maxBatch}); wait for a sequence to finish`);
    // the prompt is read at the next step: keep a copy, so the caller may reuse its buffer
    const seq: Sequence = { req: { ...req, prompt: p.slice() }, slot, generated: 0, next: -1, prefilledAt: -1, prefilled: 0 };
    this.seqs[slot] = seq;
    this.cache.lengths[slot] = 0;
    this.pending.push(seq);
    this.live++;
    return slot;
  }

  cancel(slot: number): void {
    const seq = Number.isInteger(slot) && slot >= 0 && slot < this.maxBatch ? this.seqs[slot] : null;
    if (seq) this.leave(seq, 'cancelled');
  }

  step(): number {
    this.steps++;
    // 1. prefill the prompts admitted since the last step (within the budget); a prompt done
    //    picks its sequence's first token
    let budget = this.prefillBudget;
    while (this.pending.length > 0 && budget > 0) {
      const seq = this.pending[0]!;
      if (this.seqs[seq.slot] !== seq) { // cancelled before its prefill finished
        this.pending.shift();
        continue;
      }
      if (seq.req.maxNew === 0) {
        this.pending.shift();
        this.safely(() => this.leave(seq, 'length'));
        continue;
      }
      const logits = this.prefill(seq, budget);
      budget -= seq.prefilled - this.lastPrefillFrom;
      if (!logits) break; // the budget ran out inside this prompt
      this.pending.shift();
      this.emitSafely(seq, logits, 0);
    }
    // 2. one forward for every sequence that already has a token to feed
    let n = 0;
    for (const seq of this.seqs) {
      if (!seq || seq.next < 0 || seq.prefilledAt === this.steps) continue;
      this.rows[n] = seq;
      this.ids[n] = seq.next;
      this.slots[n] = seq.slot;
      this.starts[n] = this.cache.lengths[seq.slot]!;
      n++;
    }
    if (n > 0) {
      this.shape.B = n;
      this.engine.forwardMain(this.ids, this.shape, this.cache);
      for (let j = 0; j < n; j++) this.cache.lengths[this.slots[j]!]!++;
      const logits = this.engine.head(0, n);
      this.engine.profiler?.endStep();
      for (let j = 0; j < n; j++) {
        const seq = this.rows[j]!;
        this.rows[j] = null;
        // a callback of an earlier row may have cancelled this one
        if (this.seqs[seq.slot] === seq) this.emitSafely(seq, logits, j * this.V);
      }
    }
    const err = this.callbackError;
    if (err !== null) {
      this.callbackError = null;
      throw err;
    }
    return this.live;
  }

  /** The first error a callback (pick, onToken, onDone) threw during this step, rethrown at its end. */
  private callbackError: unknown = null;

  /**
   * emit, but a throwing callback does not stop the step: every other sequence still gets its
   * token (their cache rows are already written), and step() rethrows the first error at the end.
   */
  private emitSafely(seq: Sequence, logits: Float32Array, off: number): void {
    // (no closure per row and step: this runs for every sequence on every step)
    try {
      this.emit(seq, logits, off);
    } catch (e) {
      if (this.callbackError === null) this.callbackError = e;
    }
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (this.callbackError === null) this.callbackError = e;
    }
  }

  /** Where the last prefill call started in its prompt. */
  private lastPrefillFrom = 0;

  /**
   * Runs up to `budget` more tokens of seq's prompt through the model into its slot, in chunks;
   * returns the last prompt token's logits [1, V] once the whole prompt is in, else null.
   */
  private prefill(seq: Sequence, budget: number): Float32Array | null {
    const p = seq.req.prompt;
    const T = p.length;
    const sh = this.prefillShape;
    this.prefillSlot[0] = seq.slot;
    this.lastPrefillFrom = seq.prefilled;
    const end = Math.min(T, seq.prefilled + budget);
    let logits: Float32Array | null = null;
    for (let t0 = seq.prefilled; t0 < end; t0 += this.chunk) {
      const c = Math.min(this.chunk, end - t0);
      this.ids.set(p.subarray(t0, t0 + c), 0);
      this.prefillStart[0] = t0;
      sh.T = c;
      this.engine.forwardMain(this.ids, sh, this.cache);
      this.cache.lengths[seq.slot] = t0 + c;
      seq.prefilled = t0 + c;
      if (t0 + c === T) logits = this.engine.head(c - 1, 1);
    }
    if (logits) seq.prefilledAt = this.steps;
    return logits;
  }

  /** seq picks its next token from logits[off .. off+V) and reports it, or leaves. */
  private emit(seq: Sequence, logits: Float32Array, off: number): void {
    const req = seq.req;
    const t = req.pick(logits, off, this.V);
    if (!(Number.isInteger(t) && t >= 0 && t < this.V)) {
      // feeding it would fail the next step for every sequence: this one leaves instead
      this.leave(seq, 'cancelled');
      throw new DsvError(`pick returned ${t} for the sequence in slot ${seq.slot}, not a token id in [0, ${this.V}); the sequence was cancelled`);
    }
    if (t === req.eos) {
      this.leave(seq, 'eos');
      return;
    }
    seq.generated++;
    seq.next = t;
    const stop = req.onToken(t) === true;
    if (this.seqs[seq.slot] !== seq) return; // onToken cancelled it
    if (stop) this.leave(seq, 'stop');
    else if (seq.generated >= req.maxNew) this.leave(seq, 'length');
  }

  /** Frees seq's slot, then reports onDone (which may admit into it). */
  private leave(seq: Sequence, reason: LeaveReason): void {
    if (this.seqs[seq.slot] !== seq) return;
    this.seqs[seq.slot] = null;
    this.cache.lengths[seq.slot] = 0;
    this.live--;
    seq.req.onDone(reason, seq.generated);
  }
}
