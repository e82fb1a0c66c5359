/**
 * The simplest correct `BatchDecoder` (inference/batch-decoder.ts): the fast engine runs one
 * sequence per forward (batch 1), and the sequences in flight take turns. Each of the `maxBatch`
 * slots owns a latent cache of `maxContext` positions (paper §2.1.2: c^KV and k^R only),
 * allocated when the decoder is built, so cache memory is fixed; one Engine (one workspace, one
 * set of prepared weights) serves every slot. A `step` advances every sequence in flight by one
 * token, one after the other: a newly admitted one is prefilled (in chunks, as DecodeSession
 * does) and picks its first token, the others feed their last token and pick the next. The
 * tokens are those of the generation loop (generate.ts) on a DecodeSession: same forwards, same
 * pick, same EOS / stop / length rules.
 *
 * This is what `dsv3 serve` runs until the continuous batcher (several sequences in one forward)
 * replaces it: the worker only sees the BatchDecoder interface (model-worker.ts).
 */
import { DsvError } from '../errors.js';
import type { BatchDecoder, LeaveReason, SequenceRequest } from '../inference/batch-decoder.js';
import { Engine } from '../inference/engine.js';
import type { StepShape } from '../inference/mla.js';
import type { LatentCache } from '../model/latent-cache.js';
import type { DeepseekV3 } from '../model/model.js';

export interface SequentialDecoderOptions {
  /** Slots: sequences in flight at once. */
  maxBatch: number;
  /** Positions per slot (prompt + generated tokens). */
  maxContext: number;
  /** Most prompt tokens per prefill forward (default 64, as DecodeSession). */
  chunk?: number;
}

interface Slot {
  req: SequenceRequest;
  /** Whether the prompt is in the cache (the first token was picked). */
  prefilled: boolean;
  /** The last picked token, fed by the next step. */
  next: Int32Array;
  generated: number;
}

export class SequentialDecoder implements BatchDecoder {
  readonly maxBatch: number;
  readonly maxContext: number;
  private readonly engine: Engine;
  private readonly caches: LatentCache[];
  private readonly slots: Array<Slot | null>;
  private readonly chunk: number;
  private readonly ids: Int32Array;
  private readonly shape: StepShape = { B: 1, T: 1, start: 0 };
  private readonly V: number;
  private live = 0;

  constructor(readonly model: DeepseekV3, o: SequentialDecoderOptions) {
    const max = model.cfg.max_position_embeddings;
    if (!Number.isInteger(o.maxBatch) || o.maxBatch < 1) throw new DsvError(`SequentialDecoder: maxBatch must be an integer >= 1, got ${o.maxBatch}`);
    if (!Number.isInteger(o.maxContext) || o.maxContext < 2 || o.maxContext > max) {
      throw new DsvError(`SequentialDecoder: maxContext must be an integer in [2, ${max}] (max_position_embeddings), got ${o.maxContext}`);
    }
    this.maxBatch = o.maxBatch;
    this.maxContext = o.maxContext;
    this.chunk = Math.max(2, Math.min(o.chunk ?? 64, o.maxContext));
    this.V = model.cfg.vocab_size;
    this.engine = new Engine(model, { rows: this.chunk, logitRows: 2, maxLen: o.maxContext, mtp: false });
    this.caches = Array.from({ length: o.maxBatch }, () => model.newCache(1, o.maxContext));
    this.slots = new Array<Slot | null>(o.maxBatch).fill(null);
    this.ids = new Int32Array(this.chunk);
  }

  get active(): number {
    return this.live;
  }

  /** Bytes of the slots' latent caches (fixed at construction). */
  get cacheBytes(): number {
    return this.caches.reduce((s, c) => s + c.bytes, 0);
  }

  admit(req: SequenceRequest): number {
    const P = req.prompt.length;
    if (P < 1) throw new DsvError('admit: the prompt has no tokens');
    if (!Number.isInteger(req.maxNew) || req.maxNew < 0) throw new DsvError(`admit: maxNew must be an integer >= 0, got ${req.maxNew}`);
    if (P + req.maxNew > this.maxContext) throw new DsvError(`admit: ${P} prompt tokens + ${req.maxNew} new exceed the context of ${this.maxContext}`);
    for (const id of req.prompt) if (!(id >= 0 && id < this.V)) throw new DsvError(`admit: token id ${id} is outside the vocabulary [0, ${this.V})`);
    const slot = this.slots.indexOf(null);
    if (slot < 0) throw new DsvError(`admit: all ${this.maxBatch} slots are in use`);
    this.caches[slot]!.length = 0;
    this.slots[slot] = { req, prefilled: false, next: new Int32Array(1), generated: 0 };
    this.live++;
    return slot;
  }

  cancel(slot: number): void {
    if (this.slots[slot]) this.leave(slot, 'cancelled');
  }

  step(): number {
    for (let s = 0; s < this.slots.length; s++) {
      const q = this.slots[s];
      if (!q) continue;
      if (q.req.maxNew === 0) {
        this.leave(s, 'length');
        continue;
      }
      const logits = q.prefilled ? this.decode(s, q) : this.prefill(s, q);
      q.prefilled = true;
      const t = q.req.pick(logits, 0, this.V);
      if (t === q.req.eos) {
        this.leave(s, 'eos');
        continue;
      }
      q.generated++;
      q.next[0] = t;
      if (q.req.onToken(t) === true) this.leave(s, 'stop');
      else if (q.generated === q.req.maxNew) this.leave(s, 'length');
    }
    return this.live;
  }

  /** The prompt of slot `s` into its cache, in chunks; the last prompt token's logits [V] (a view). */
  private prefill(s: number, q: Slot): Float32Array {
    const cache = this.caches[s]!;
    const ids = q.req.prompt;
    const T = ids.length;
    let last: Float32Array | null = null;
    for (let t0 = 0; t0 < T; t0 += this.chunk) {
      const c = Math.min(this.chunk, T - t0);
      this.ids.set(ids.subarray(t0, t0 + c));
      const start = cache.length;
      this.engine.forwardMain(this.ids, { B: 1, T: c, start }, cache);
      cache.length = start + c;
      if (t0 + c === T) last = this.engine.head(c - 1, 1, c);
    }
    return last!;
  }

  /** One token of slot `s` at its next position; its logits [V] (a view). */
  private decode(s: number, q: Slot): Float32Array {
    const cache = this.caches[s]!;
    this.shape.start = cache.length;
    this.engine.forwardMain(q.next, this.shape, cache);
    cache.length++;
    return this.engine.head(0, 1);
  }

  private leave(s: number, reason: LeaveReason): void {
    const q = this.slots[s]!;
    this.slots[s] = null;
    this.live--;
    q.req.onDone(reason, q.generated);
  }
}
