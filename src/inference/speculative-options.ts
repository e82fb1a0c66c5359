/**
 * The options and the result of a speculative generation (speculative.ts: `SpeculativeDecoder`,
 * MTP self-speculative decoding, paper section 5.4.3).
 */
import type { FinishReason } from './generate.js';
import type { Sampler } from './sampling.js';
import type { SpeculationPolicy } from './speculation-policy.js';

/** As in GenerateOptions (generate.ts): EOS (not kept) and the streaming callback (true: stop). */
export interface SpeculativeOptions {
  eos?: number;
  onToken?: (seq: number, token: number) => boolean | void;
  /** Choose tokens with this sampler (of batch 1, V = the model's) instead of argmax: exact
   * speculative sampling, see the module comment. */
  sampler?: Sampler;
  /** Keep the cache of the previous generation for the prompt tokens it begins with (a chat's
   * conversation so far): the main model and every module recompute from K tokens before the
   * common prefix ends (module k's row i reads tokens up to i + k), the rest is reused. The
   * output is that of a fresh cache. */
  reuse?: boolean;
  /** Ask this policy before each round whether to speculate or run a plain step (one main
   * forward, one token; speculation-policy.ts), and report each round's cost to it. Without
   * one every round speculates. The output is the same either way: plain steps emit the main
   * model's token as the verification does; the MTP modules catch up on the rows they skipped
   * (in one batched forward per module) before the next speculative round. */
  policy?: SpeculationPolicy;
}

export interface SpeculativeResult {
  /** prompt followed by the n generated tokens (fewer when EOS or `onToken` ended it). */
  ids: Int32Array;
  finish: FinishReason;
  /** Draft tokens proposed (verified by a main forward) and accepted, in all. */
  drafted: number;
  accepted: number;
  /** Per depth k = 1 .. K (index k-1): drafts of module k proposed and accepted. A depth-k
   * draft is accepted only when the drafts before it in its round were. */
  draftedByDepth: number[];
  acceptedByDepth: number[];
  /** Prompt tokens whose cache rows were reused (`reuse`). */
  reused: number;
  /** Forward passes of the main model after the prefill. */
  mainForwards: number;
  /** Of mainForwards: the plain one-token steps a `policy` chose (the rest speculated). */
  plainSteps: number;
  /** Wall time of the prefill (main + MTP) and of the rest of the generation. */
  prefillMs: number;
  decodeMs: number;
  /** Of decodeMs: the main model's verification forwards and the MTP draft steps. */
  verifyMs: number;
  draftMs: number;
}
