/**
 * The model worker of `dsv3 serve` (a worker_threads Worker, started by worker-client.ts): loads
 * the checkpoint and drives a BatchDecoder (inference/batch-decoder.ts) off the server's event
 * loop, so the HTTP server keeps answering (health, validation, 429s) while tokens are computed.
 *
 * Loop: submitted jobs wait in arrival order; whenever the decoder has a free slot the oldest
 * waiting job is admitted; while any sequence is in flight the decoder steps, one `step` per
 * event-loop turn (setImmediate), so cancel messages are read between steps. Each token is
 * detokenized at once (TextStream: whole UTF-8 characters, stop strings that end the sequence)
 * and its text posted to the main thread as soon as it is final.
 *
 * The decoder is made in one place, `makeDecoder`: the continuous batcher
 * (inference/continuous-batcher.ts), so the sequences in flight advance together, one batched
 * forward per step, each in its own latent-cache slot. Prompts are prefilled at most
 * PREFILL_BUDGET tokens per step, so a long new prompt does not stall the streams in flight.
 * (SequentialDecoder, one sequence at a time, is the simple reference implementation the tests
 * hold the contract to.)
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as path from 'node:path';
import { loadTokenizerJson, type Tokenizer } from '../data/tokenizer/index.js';
import type { BatchDecoder } from '../inference/batch-decoder.js';
import { ContinuousBatcher } from '../inference/continuous-batcher.js';
import { Sampler } from '../inference/sampling.js';
import { TextStream } from '../inference/text-stream.js';
import { DeepseekV3 } from '../model/model.js';
import type { FromWorker, GenerationJob, ToWorker, WorkerInit } from './protocol.js';

/** Most prompt tokens prefilled in one step while other sequences decode. */
const PREFILL_BUDGET = 256;

/** The BatchDecoder the server runs. */
function makeDecoder(model: DeepseekV3, init: WorkerInit): BatchDecoder & { cacheBytes?: number } {
  return new ContinuousBatcher(model, { maxBatch: init.maxBatch, maxContext: init.maxContext, prefillBudget: PREFILL_BUDGET });
}

const port = parentPort!;
const post = (m: FromWorker): void => port.postMessage(m);

interface Running {
  slot: number;
}

function start(init: WorkerInit): void {
  let model: DeepseekV3;
  let tok: Tokenizer;
  let dec: BatchDecoder & { cacheBytes?: number };
  try {
    tok = loadTokenizerJson(path.join(init.dir, 'tokenizer.json'));
    model = DeepseekV3.load(init.dir, { mtp: false });
    dec = makeDecoder(model, init);
  } catch (e) {
    post({ type: 'fatal', message: (e as Error).message });
    return;
  }
  const V = model.cfg.vocab_size;
  const eos = tok.eosId;
  const bytesOf = (id: number): Uint8Array => tok.decodeBytes([id]);
  const waiting: GenerationJob[] = [];
  const running = new Map<number, Running>();
  let closing = false;
  let scheduled = false;

  const admit = (job: GenerationJob): void => {
    const sampler = new Sampler(job.sampling, { V, seed: job.seed });
    sampler.prompt(0, job.prompt);
    const stream = new TextStream(bytesOf, job.stops);
    const entry: Running = { slot: -1 };
    let n = 0;
    running.set(job.id, entry);
    try {
      entry.slot = dec.admit({
        prompt: job.prompt,
        maxNew: job.maxNew,
        pick: sampler.pick,
        ...(eos === undefined ? {} : { eos }),
        onToken: (t) => {
          const text = stream.push(t);
          n++;
          if (text !== '') post({ type: 'text', id: job.id, text, tokens: n });
          return stream.stopped !== null;
        },
        onDone: (reason, generated) => {
          running.delete(job.id);
          post({ type: 'done', id: job.id, text: reason === 'cancelled' ? '' : stream.finish(), reason, tokens: generated });
        },
      });
    } catch (e) {
      running.delete(job.id);
      post({ type: 'rejected', id: job.id, message: (e as Error).message });
    }
  };

  const pump = (): void => {
    scheduled = false;
    try {
      while (waiting.length > 0 && dec.active < dec.maxBatch) admit(waiting.shift()!);
      if (dec.active > 0) dec.step();
    } catch (e) {
      post({ type: 'fatal', message: `decoding failed: ${(e as Error).message}` });
      process.exit(1);
    }
    schedule();
  };

  const schedule = (): void => {
    if (scheduled) return;
    if (dec.active > 0 || waiting.length > 0) {
      scheduled = true;
      setImmediate(pump);
    } else if (closing) port.close();
  };

  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') {
      waiting.push(m.job);
      schedule();
    } else if (m.type === 'cancel') {
      const w = waiting.findIndex((j) => j.id === m.id);
      if (w >= 0) {
        waiting.splice(w, 1);
        post({ type: 'done', id: m.id, text: '', reason: 'cancelled', tokens: 0 });
      } else {
        const r = running.get(m.id);
        if (r && r.slot >= 0) dec.cancel(r.slot);
      }
      schedule();
    } else if (m.type === 'close') {
      closing = true;
      schedule();
    }
  });
  post({ type: 'ready', maxBatch: dec.maxBatch, maxContext: dec.maxContext, cacheBytes: dec.cacheBytes ?? 0 });
}

start(workerData as WorkerInit);
