/**
 * A DecodeSession whose latent cache outlives one generation: each prefill keeps the cached
 * tokens that begin the new prompt (the conversation so far, in `dsv3 chat`) and computes only
 * the rest, so a chat turn costs its new tokens instead of the whole conversation. The cache is
 * cut back (DecodeSession.truncate) to the longest common prefix of the cached tokens and the
 * prompt, at most P - 1 tokens so that the last prompt token's logits are computed. `reset()` is
 * what the generation loop calls before its prefill: here it forgets nothing, since the prefill
 * checks the prefix token by token (the output is that of a fresh cache).
 */
import { DsvError } from '../errors.js';
import type { DecodeSession } from './decode-session.js';
import type { Decoder } from './generate.js';

export class PrefixReuseDecoder implements Decoder {
  /** The tokens in the session's cache, in order. */
  private cached: number[] = [];
  /** Prompt tokens the last prefill found in the cache. */
  reused = 0;

  constructor(readonly session: DecodeSession) {
    if (session.batch !== 1) throw new DsvError(`PrefixReuseDecoder: a batch of 1, got ${session.batch}`);
  }

  get batch(): number {
    return 1;
  }

  get V(): number {
    return this.session.V;
  }

  reset(): void {}

  /** Forgets every cached token (the next prefill computes the whole prompt). */
  clear(): void {
    this.cached = [];
    this.session.reset();
  }

  prefill(ids: Int32Array, T: number): Float32Array {
    if (!Number.isInteger(T) || T < 1 || ids.length !== T) throw new DsvError(`prefill: ${ids.length} ids do not form [1, ${T}]`);
    const lim = Math.min(this.cached.length, T - 1);
    let k = 0;
    while (k < lim && this.cached[k] === ids[k]) k++;
    this.session.truncate(k);
    this.cached.length = k;
    this.reused = k;
    const rest = ids.subarray(k);
    for (const t of rest) this.cached.push(t);
    return this.session.prefill(rest, rest.length);
  }

  step(tokens: Int32Array): Float32Array {
    this.cached.push(tokens[0]!);
    return this.session.step(tokens);
  }
}
