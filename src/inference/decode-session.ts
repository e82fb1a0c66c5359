/**
 * DecodeSession: incremental decoding of B sequences with MLA's latent cache (paper section
 * 2.1.2) on the inference engine. Everything a step needs is allocated when the session is
 * created (workspace, cache, RoPE tables, decoded kv_b_proj for bf16/FP8); a decode step then
 * runs ~10 fused kernel calls per layer plus the selected experts and allocates nothing.
 *
 *   const s = new DecodeSession(model, { maxLen: 160 });
 *   let logits = s.prefill(promptIds, promptLen);       // [B, V] logits of the last prompt token
 *   logits = s.step(Int32Array.of(next));              // [B, V] of the new token
 *
 * Returned logits are views of the session's buffer, valid until its next call. The numbers
 * equal `DeepseekV3.decodeStep` (absorbed path) to float32 rounding (test/inference-session).
 */
import { DsvError } from '../errors.js';
import { LatentCache } from '../model/latent-cache.js';
import type { DeepseekV3 } from '../model/model.js';
import { Engine } from './engine.js';
import type { Decoder } from './generate.js';
import type { StepShape } from './mla.js';
import type { PhaseProfiler } from './profile.js';

export interface DecodeSessionOptions {
  /** Sequences decoded together (default 1). */
  batch?: number;
  /** Cache positions per sequence (prompt + generated tokens). */
  maxLen: number;
  /** Most tokens per sequence in one forward call; longer prefills run in chunks (default 64). */
  chunk?: number;
  /** Also prepare MTP modules and their cache slots (speculative decoding): true is the first
   * module, a number modules 1 .. that depth. */
  mtp?: boolean | number;
  /** Most rows one `engine.head` call computes per sequence (default 2). */
  logitRows?: number;
  profiler?: PhaseProfiler;
  /** MTP modules on bf16 copies of float32 weights (EngineOptions.draftBf16). */
  draftBf16?: boolean;
  /** MTP depths past the model's modules reuse its last module (EngineOptions.mtpChain). */
  mtpChain?: boolean;
}

/** The fast engine as a `Decoder` of the generation loop (generate.ts). */
export class DecodeSession implements Decoder {
  readonly engine: Engine;
  readonly cache: LatentCache;
  readonly batch: number;
  readonly chunk: number;
  readonly V: number;
  /** Token ids of one chunk, [B, chunk]. */
  private readonly ids: Int32Array;
  private readonly stepShape: StepShape = { B: 1, T: 1, start: 0 };

  constructor(readonly model: DeepseekV3, opts: DecodeSessionOptions) {
    const B = opts.batch ?? 1;
    const chunk = Math.max(2, Math.min(opts.chunk ?? 64, opts.maxLen));
    if (!Number.isInteger(B) || B < 1) throw new DsvError(`batch must be a positive integer, got ${B}`);
    if (!Number.isInteger(opts.maxLen) || opts.maxLen < 1) throw new DsvError(`maxLen must be a positive integer, got ${opts.maxLen}`);
    this.batch = B;
    this.chunk = chunk;
    this.V = model.cfg.vocab_size;
    this.engine = new Engine(model, { rows: B * chunk, logitRows: B * Math.max(2, opts.logitRows ?? 2), maxLen: opts.maxLen, mtp: opts.mtp ?? false, draftBf16: opts.draftBf16 ?? false, mtpChain: opts.mtpChain ?? false });
    this.engine.profiler = opts.profiler ?? null;
    // one cache slot per main layer and per planned MTP depth (chained depths included)
    const cfg = model.cfg;
    this.cache = new LatentCache(cfg.num_hidden_layers + this.engine.mtps.length, B, opts.maxLen, cfg.kv_lora_rank, cfg.qk_rope_head_dim);
    this.ids = new Int32Array(B * chunk);
  }

  /** Tokens already in the cache (the next token's position). */
  get length(): number {
    return this.cache.length;
  }

  /** Forgets every token (keeps the buffers). */
  reset(): void {
    this.cache.length = 0;
  }

  /** Drops cached tokens from position `len` on (their cache rows are overwritten later). */
  truncate(len: number): void {
    if (!(Number.isInteger(len) && len >= 0 && len <= this.cache.length)) throw new DsvError(`truncate: ${len} is not in [0, ${this.cache.length}]`);
    this.cache.length = len;
  }

  /**
   * Runs ids [B, T] (row-major) through the model after the cached tokens, in chunks. Returns
   * the logits [B, V] of each sequence's last token (a view), or with `all` a new [B, T, V]
   * array of every token's logits.
   */
  prefill(ids: Int32Array, T: number, opts: { all?: boolean } = {}): Float32Array {
    const B = this.batch;
    if (!Number.isInteger(T) || T < 1 || ids.length !== B * T) throw new DsvError(`prefill: ${ids.length} ids do not form [${B}, ${T}]`);
    const V = this.V;
    const all = opts.all ? new Float32Array(B * T * V) : null;
    let last: Float32Array | null = null;
    for (let t0 = 0; t0 < T; t0 += this.chunk) {
      const c = Math.min(this.chunk, T - t0);
      for (let b = 0; b < B; b++) this.ids.set(ids.subarray(b * T + t0, b * T + t0 + c), b * c);
      const start = this.cache.length;
      this.engine.forwardMain(this.ids, { B, T: c, start }, this.cache);
      this.cache.length = start + c;
      if (all) {
        for (let b = 0; b < B; b++) {
          for (let t = 0; t < c; t += 2) {
            const n = Math.min(2, c - t);
            all.set(this.engine.head(b * c + t, n), (b * T + t0 + t) * V);
          }
        }
      } else if (t0 + c === T) last = this.engine.head(c - 1, B, c);
    }
    return all ?? last!;
  }

  /** One decode step: tokens [B] at position `length`; returns their logits [B, V] (a view). */
  step(tokens: Int32Array): Float32Array {
    const B = this.batch;
    if (tokens.length !== B) throw new DsvError(`step: ${tokens.length} tokens for a batch of ${B}`);
    const start = this.cache.length;
    this.stepShape.B = B;
    this.stepShape.start = start;
    this.engine.forwardMain(tokens, this.stepShape, this.cache);
    this.cache.length = start + 1;
    const l = this.engine.head(0, B);
    this.engine.profiler?.endStep();
    return l;
  }
}
