/**
 * The contract of continuous batching (issue 11): several independent sequences advance together
 * through the engine, one token each per step, each in its own latent-cache slot (paper §2.1.2:
 * only c^KV and k^R are cached, so a slot costs (d_c + d_h^R) floats per token per layer). A new
 * request joins between steps; a finished or cancelled one leaves and frees its slot. Cache memory
 * is fixed when the decoder is built (maxBatch slots x maxContext positions) and never grows.
 *
 * `dsv3 serve` drives a BatchDecoder from its model worker; any implementation (the continuous
 * batcher, or one request at a time) must keep this contract:
 *   - `admit` never blocks: it throws DsvError when no slot is free or the request cannot fit;
 *   - every admitted request gets exactly one `onDone`, after its last `onToken`;
 *   - callbacks run synchronously inside `admit`/`step`/`cancel`.
 */
import type { FinishReason } from './generate.js';

/** Why a sequence left the batch: generate's reasons, or cancelled by its client. */
export type LeaveReason = FinishReason | 'cancelled';

export interface SequenceRequest {
  /** Prompt token ids (at least one). */
  prompt: Int32Array;
  /** Most new tokens; prompt.length + maxNew must be <= the decoder's maxContext. */
  maxNew: number;
  /** Picks the next token from logits[off .. off+V) (argmax, or a Sampler's pick: sampling.ts). */
  pick: (logits: Float32Array, off: number, V: number) => number;
  /** The sequence ends when it produces this id (which is not reported). */
  eos?: number;
  /** Each new token as soon as it is chosen; returning true ends the sequence ('stop'). */
  onToken: (token: number) => boolean | void;
  /** Called exactly once when the sequence leaves, with the number of tokens it generated. */
  onDone: (reason: LeaveReason, generated: number) => void;
}

export interface BatchDecoder {
  /** Cache slots: the most sequences in flight at once. */
  readonly maxBatch: number;
  /** Positions per slot (prompt + generated tokens). */
  readonly maxContext: number;
  /** Sequences in flight now. */
  readonly active: number;
  /** Takes a free slot for `req` and returns its id; its prompt is prefilled by the next `step`. */
  admit(req: SequenceRequest): number;
  /** Ends the sequence in `slot` now (onDone 'cancelled') and frees the slot; no-op if it already left. */
  cancel(slot: number): void;
  /** Advances every sequence in flight by one token (prefilling newly admitted prompts first);
   * returns how many are still in flight. */
  step(): number;
}
