/**
 * The generation loop, one for every caller (`dsv3 forward --greedy`, `dsv3 generate`, the
 * decode benchmark, tests): prefill the prompt into the latent cache (paper §2.1.1: only c^KV
 * and k^R are cached), then pick each sequence's next token from its last logits (argmax, or a
 * `Sampler`: sampling.ts) and feed it back, one decode step at a time. Each token is streamed to
 * `onToken` as it is chosen; a sequence ends at its EOS, when `onToken` says stop (a stop string:
 * text-stream.ts) or after maxNew tokens. What computes the logits is a `Decoder`: the fast engine
 * (`DecodeSession`) or the model's differentiable Tensor path (`ModelDecoder`, the reference).
 * MTP self-speculative decoding (greedy, or speculative sampling) has its own loop with the same
 * contract (speculative.ts).
 */
import { noGrad } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { LatentCache } from '../model/latent-cache.js';
import type { AttentionPath } from '../model/mla.js';
import type { DeepseekV3 } from '../model/model.js';
import { argmax } from './sampling.js';

/** Next-token logits of B sequences over a cache. */
export interface Decoder {
  readonly batch: number;
  /** Vocabulary size: each sequence's logits row has V entries. */
  readonly V: number;
  /** Forgets every cached token. */
  reset(): void;
  /** Appends ids [B, T] (row-major) to the cache; returns the last token's logits [B, V]. */
  prefill(ids: Int32Array, T: number): Float32Array;
  /** Appends one token per sequence; returns their logits [B, V]. */
  step(tokens: Int32Array): Float32Array;
}

export interface GenerateOptions {
  /** Most tokens to generate per sequence. */
  maxNew: number;
  /** Picks sequence `seq`'s next token from logits[off .. off+V) (default: argmax, greedy
   * decoding; `Sampler.pick` for sampling and penalties, sampling.ts). */
  pick?: (logits: Float32Array, off: number, V: number, seq: number) => number;
  /** A sequence ends when it produces this id (which is not kept). */
  eos?: number;
  /** Keep the logits [B, maxNew, V] that chose each token (rows after a sequence ended stay 0). */
  logits?: boolean;
  /**
   * Called with every new token as soon as it is chosen (streaming), in sequence order; returning
   * true ends that sequence after this token (a stop string, text-stream.ts).
   */
  onToken?: (seq: number, token: number) => boolean | void;
}

/** Why a sequence ended: its EOS, `onToken` said stop, or maxNew tokens. */
export type FinishReason = 'eos' | 'stop' | 'length';

export interface Generation {
  /** The new tokens of each sequence (up to, not including, its EOS). */
  tokens: number[][];
  /** [B, maxNew, V] with `logits`, else null. */
  logits: Float32Array | null;
  finish: FinishReason[];
}

/** Generates after prompt [B, P] (row-major ids); see the module comment. */
export function generate(dec: Decoder, prompt: Int32Array, P: number, o: GenerateOptions): Generation {
  const { batch: B, V } = dec;
  const n = o.maxNew;
  if (!Number.isInteger(P) || P < 1 || prompt.length !== B * P) throw new DsvError(`generate: ${prompt.length} prompt ids do not form [${B}, ${P}] with P >= 1`);
  if (!Number.isInteger(n) || n < 0) throw new DsvError(`generate: maxNew must be an integer >= 0, got ${n}`);
  const pick = o.pick ?? argmax;
  const tokens: number[][] = Array.from({ length: B }, () => []);
  const logits = o.logits ? new Float32Array(B * n * V) : null;
  const done = new Uint8Array(B);
  const next = new Int32Array(B);
  const finish: FinishReason[] = new Array<FinishReason>(B).fill('length');
  if (n === 0) return { tokens, logits, finish };
  dec.reset();
  let l = dec.prefill(prompt, P);
  for (let k = 0; k < n; k++) {
    let live = 0;
    for (let b = 0; b < B; b++) {
      if (done[b]) continue;
      logits?.set(l.subarray(b * V, (b + 1) * V), (b * n + k) * V);
      const t = pick(l, b * V, V, b);
      next[b] = t; // a finished sequence keeps feeding its last token; its output is not read
      if (t === o.eos) {
        done[b] = 1;
        finish[b] = 'eos';
        continue;
      }
      tokens[b]!.push(t);
      if (o.onToken?.(b, t) === true) {
        done[b] = 1;
        finish[b] = 'stop';
        continue;
      }
      live++;
    }
    if (live === 0 || k + 1 === n) break;
    l = dec.step(next);
  }
  return { tokens, logits, finish };
}

/**
 * The model's own differentiable forward as a Decoder (`DeepseekV3.prefill` / `decodeStep`,
 * naive or absorbed MLA): the reference the fast engine is tested against, and what
 * `dsv3 forward --greedy` runs for the fixtures.
 */
export class ModelDecoder implements Decoder {
  readonly V: number;
  private cache: LatentCache;

  constructor(
    readonly model: DeepseekV3,
    readonly batch: number,
    private readonly maxLen: number,
    private readonly path: AttentionPath = 'absorbed',
  ) {
    this.V = model.cfg.vocab_size;
    this.cache = model.newCache(batch, maxLen);
  }

  reset(): void {
    this.cache = this.model.newCache(this.batch, this.maxLen);
  }

  prefill(ids: Int32Array, T: number): Float32Array {
    return this.lastRows(noGrad(() => this.model.prefill(Tensor.fromI32(ids, [this.batch, T]), this.cache, { path: this.path })));
  }

  step(tokens: Int32Array): Float32Array {
    return this.lastRows(noGrad(() => this.model.decodeStep(tokens, this.cache, { path: this.path })));
  }

  /** logits [B, T, V] → the last position's rows [B, V]. */
  private lastRows(logits: Tensor): Float32Array {
    const T = logits.shape[1]!;
    return T === 1 ? logits.contiguous().f32() : logits.slice(1, T - 1, T).contiguous().f32();
  }
}
