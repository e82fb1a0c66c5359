/**
 * The main thread's side of the model worker (model-worker.ts): starts it, hands it jobs and
 * routes its messages back to each job's callbacks. `submit` returns at once; the text arrives
 * through `onText` as the worker produces it, then exactly one `onEnd`.
 */
import { Worker } from 'node:worker_threads';
import { DsvError } from '../errors.js';
import type { LeaveReason } from '../inference/batch-decoder.js';
import type { FromWorker, GenerationJob, ToWorker, WorkerInit } from './protocol.js';

export interface JobCallbacks {
  onText(text: string, tokens: number): void;
  /** The job ended: its last text and why; `error` when the worker refused it or failed. */
  onEnd(end: { text: string; reason: LeaveReason | 'error'; tokens: number; error?: string }): void;
}

export class ModelWorker {
  private readonly jobs = new Map<number, JobCallbacks>();
  private nextId = 1;
  private failure: string | null = null;
  private exited: Promise<void>;

  private constructor(
    private readonly worker: Worker,
    readonly maxBatch: number,
    readonly maxContext: number,
    readonly cacheBytes: number,
  ) {
    worker.on('message', (m: FromWorker) => this.receive(m));
    worker.on('error', (e) => this.fail(`the model worker failed: ${e.message}`));
    this.exited = new Promise((resolve) => worker.once('exit', () => {
      this.fail('the model worker exited');
      resolve();
    }));
  }

  /** Starts the worker and waits until the model is loaded (a DsvError with the worker's message if not). */
  static async start(init: WorkerInit): Promise<ModelWorker> {
    const worker = new Worker(new URL('./model-worker.js', import.meta.url), { workerData: init });
    const listeners: Array<[string, (...a: any[]) => void]> = [];
    const ready = await new Promise<Extract<FromWorker, { type: 'ready' }>>((resolve, reject) => {
      const on = (ev: string, f: (...a: any[]) => void): void => {
        listeners.push([ev, f]);
        worker.on(ev, f);
      };
      on('message', (m: FromWorker) => {
        if (m.type === 'ready') resolve(m);
        else if (m.type === 'fatal') reject(new DsvError(m.message));
      });
      on('error', (e: Error) => reject(new DsvError(`the model worker failed: ${e.message}`)));
      on('exit', (code: number) => reject(new DsvError(`the model worker exited (code ${code}) before the model was loaded`)));
    }).catch(async (e: unknown) => {
      await worker.terminate();
      throw e;
    }).finally(() => {
      for (const [ev, f] of listeners) worker.off(ev, f);
    });
    return new ModelWorker(worker, ready.maxBatch, ready.maxContext, ready.cacheBytes);
  }

  /** Jobs submitted and not ended. */
  get pending(): number {
    return this.jobs.size;
  }

  /** Why the worker cannot serve any more (null while it can). */
  get failed(): string | null {
    return this.failure;
  }

  /** Queues a job; returns its id (for `cancel`). */
  submit(job: Omit<GenerationJob, 'id'>, cb: JobCallbacks): number {
    const id = this.nextId++;
    if (this.failure !== null) {
      queueMicrotask(() => cb.onEnd({ text: '', reason: 'error', tokens: 0, error: this.failure! }));
      return id;
    }
    this.jobs.set(id, cb);
    this.send({ type: 'submit', job: { ...job, id } });
    return id;
  }

  /** Cancels a job (its onEnd follows with reason 'cancelled'); no-op once it ended. */
  cancel(id: number): void {
    if (this.jobs.has(id) && this.failure === null) this.send({ type: 'cancel', id });
  }

  /** Cancels every job in flight or waiting. */
  cancelAll(): void {
    for (const id of this.jobs.keys()) this.cancel(id);
  }

  /** Lets the worker finish its jobs and exit. */
  async close(): Promise<void> {
    if (this.failure === null) this.send({ type: 'close' });
    await this.exited;
  }

  /** Stops the worker now (jobs in flight end with an error). */
  async terminate(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }

  private send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private receive(m: FromWorker): void {
    if (m.type === 'fatal') return this.fail(m.message);
    if (m.type === 'ready') return;
    const cb = this.jobs.get(m.id);
    if (!cb) return;
    if (m.type === 'text') cb.onText(m.text, m.tokens);
    else {
      this.jobs.delete(m.id);
      if (m.type === 'done') cb.onEnd({ text: m.text, reason: m.reason, tokens: m.tokens });
      else cb.onEnd({ text: '', reason: 'error', tokens: 0, error: m.message });
    }
  }

  private fail(message: string): void {
    if (this.failure === null) this.failure = message;
    const jobs = [...this.jobs.values()];
    this.jobs.clear();
    for (const cb of jobs) cb.onEnd({ text: '', reason: 'error', tokens: 0, error: this.failure });
  }
}
