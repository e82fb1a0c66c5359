/**
 * The messages between the HTTP server (main thread) and the model worker (model-worker.ts).
 * The main thread tokenizes and validates; the worker owns the model and the BatchDecoder, picks
 * the tokens, detokenizes them (text-stream.ts: whole UTF-8 characters, stop strings) and streams
 * the text back as it becomes final.
 */
import type { LeaveReason } from '../inference/batch-decoder.js';
import type { SamplingOptions } from '../inference/sampling.js';

/** What the worker is started with (workerData). */
export interface WorkerInit {
  /** The checkpoint directory (resolved). */
  dir: string;
  maxBatch: number;
  maxContext: number;
}

/** One generation request. */
export interface GenerationJob {
  id: number;
  /** Prompt token ids (validated: at least one, in the vocabulary, fits the context with maxNew). */
  prompt: Int32Array;
  maxNew: number;
  sampling: SamplingOptions;
  seed: number;
  /** Stop strings: the text ends before the first one (not included). */
  stops: string[];
}

export type ToWorker =
  | { type: 'submit'; job: GenerationJob }
  | { type: 'cancel'; id: number }
  /** Ends the worker after its jobs are done (the server cancels what should not finish). */
  | { type: 'close' };

export type FromWorker =
  | { type: 'ready'; maxBatch: number; maxContext: number; cacheBytes: number }
  /** Text that became final; `tokens`: tokens generated so far. */
  | { type: 'text'; id: number; text: string; tokens: number }
  /** The job left: the last text (held back until now), the reason and the tokens generated. */
  | { type: 'done'; id: number; text: string; reason: LeaveReason; tokens: number }
  /** The job could not run (the decoder refused it). */
  | { type: 'rejected'; id: number; message: string }
  /** The worker failed (loading, or a step threw): every job is lost. */
  | { type: 'fatal'; message: string };
