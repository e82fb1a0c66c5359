/**
 * Persistent pipeline ranks for training (docs/DUALPIPE.md §2, §5, §10; DeepSeek-V3 report §3.2.1):
 * one worker thread per rank, started once, that keeps its stages, its parameters (replicas
 * included, §2.2) and its p2p channels across optimizer steps (pipeline-worker.ts, persistent
 * mode). Per step the pool sends the micro-batches, waits for every rank's 'done' (with the
 * deadlock check of workers.ts) and returns the losses, the summed expert loads and every
 * parameter's gradient summed over the ranks holding it (the replica all-reduce of §2.2, in rank
 * order as `allReduceGrads`).
 *
 * Where the optimizer runs: on the main thread, on one full copy of the model (pipeline-trainer.ts
 * applies clipping, AdamW and the bias update to it with the summed gradients), and `setWeights`
 * then copies the updated parameters and balance biases into every rank. Every replica of a
 * parameter receives the same float32 values, so replicas are bit-identical after every step by
 * construction (§2.2: "apply the identical optimizer update on both"); `readWeights` lets tests
 * check it. The cost is one transfer of each rank's parameters per step, which is small next to
 * a step at the sizes this CPU implementation trains.
 */
import { Worker } from 'node:worker_threads';
import { nativeAddon } from '../engine/native.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { mergeRankOutcomes, splitMicroBatches } from './executor.js';
import type { OpTiming, PipelineWorkerData, PoolRequest } from './pipeline-worker.js';
import type { PipelineSchedule } from './schedule-types.js';
import type { StageBuildOptions, StageLossOptions } from './stages.js';
import { awaitStep, type ErrorMsg, rankChannels, rankError, sumRankGrads, workerSettings, type WorkerStepResult } from './workers.js';

export interface TrainPoolOptions {
  build?: StageBuildOptions;
  /** DSV3_THREADS of each worker and the native pool size during a step (default 1). */
  threads?: number;
  backend?: 'native' | 'reference';
}

interface ReadyMsg {
  type: 'ready';
  rank: number;
  params: string[];
  buffers: string[];
}
interface WeightsMsg {
  type: 'weights';
  rank: number;
  params: Map<string, Float32Array>;
  buffers: Map<string, Float32Array>;
}

/** One message of `type` from each worker (or the first error / exit). */
function collect<T extends { type: string; rank: number }>(workers: readonly Worker[], type: string): Promise<T[]> {
  const out: (T | null)[] = workers.map(() => null);
  const offs: (() => void)[] = [];
  return new Promise<T[]>((resolve, reject) => {
    const end = (e: Error | null): void => {
      for (const off of offs) off();
      if (e) reject(e);
      else resolve(out as T[]);
    };
    workers.forEach((w, r) => {
      const onMsg = (m: T | ErrorMsg): void => {
        if (m.type === 'error') return end(rankError(m as ErrorMsg));
        if (m.type !== type) return;
        out[r] = m as T;
        if (out.every((x) => x !== null)) end(null);
      };
      const onErr = (e: unknown): void => end(e instanceof Error ? e : new Error(String(e)));
      const onExit = (code: number): void => end(new DsvError(`pipeline rank ${r}: worker exited (code ${code})`));
      w.on('message', onMsg);
      w.on('error', onErr);
      w.on('exit', onExit);
      offs.push(() => (w.off('message', onMsg), w.off('error', onErr), w.off('exit', onExit)));
    });
  });
}

export interface PoolStepResult extends WorkerStepResult {
  /** Parameters that got no gradient on any rank in the step. */
  noGrad: Set<string>;
  /** Per rank, each executed compute op's [start, end, label] in ms (one clock for all ranks). */
  timeline: OpTiming[][];
}

export class PipelineTrainPool {
  private closed = false;
  private busy = false;

  private constructor(
    readonly cfg: ModelConfig,
    readonly schedule: PipelineSchedule,
    private readonly workers: Worker[],
    /** Names of the parameters and buffers each rank holds. */
    readonly held: { params: string[]; buffers: string[] }[],
    private readonly threads: number,
    private readonly native: boolean,
  ) {}

  /** Starts one worker per rank; each builds its stages (random values until `setWeights`). */
  static async start(cfg: ModelConfig, schedule: PipelineSchedule, o: TrainPoolOptions = {}): Promise<PipelineTrainPool> {
    const n = schedule.ranks;
    const { threads, backend } = workerSettings(o);
    const { outs, ins } = rankChannels(schedule);
    const workers: Worker[] = [];
    for (let r = 0; r < n; r++) {
      const data: PipelineWorkerData = {
        cfg, schedule, rank: r, source: { kind: 'random', seed: 0 }, build: o.build ?? {}, loss: { mtpLambda: 0, balanceAlpha: 0, balance: 'none' }, // each step sends its own
        tokens: new Int32Array(0), rows: 0, persistent: true, backend, out: outs[r]!, in: ins[r]!,
      };
      const ports = [...outs[r]!, ...ins[r]!].map((x) => x.port);
      workers.push(new Worker(new URL('./pipeline-worker.js', import.meta.url), { workerData: data, transferList: ports, env: { ...process.env, DSV3_THREADS: String(threads) } }));
    }
    try {
      const ready = await collect<ReadyMsg>(workers, 'ready');
      return new PipelineTrainPool(cfg, schedule, workers, ready.map((m) => ({ params: m.params, buffers: m.buffers })), threads, backend === 'native');
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
  }

  private check(what: string): void {
    if (this.closed) throw new DsvError(`pipeline pool: ${what} after close`);
    if (this.busy) throw new DsvError(`pipeline pool: ${what} while a step runs`);
  }

  /** Sends every rank the values of the parameters and buffers it holds (`value(name)`). */
  setWeights(value: (name: string, kind: 'param' | 'buffer') => Float32Array): void {
    this.check('setWeights');
    this.workers.forEach((w, r) => {
      const pick = (names: string[], kind: 'param' | 'buffer'): Map<string, Float32Array> => new Map(names.map((n) => [n, value(n, kind)]));
      const req: PoolRequest = { type: 'weights', params: pick(this.held[r]!.params, 'param'), buffers: pick(this.held[r]!.buffers, 'buffer') };
      w.postMessage(req);
    });
  }

  /** Every rank's current parameters and buffers (copies). */
  async readWeights(): Promise<{ params: Map<string, Float32Array>; buffers: Map<string, Float32Array> }[]> {
    this.check('readWeights');
    const req: PoolRequest = { type: 'read' };
    const p = collect<WeightsMsg>(this.workers, 'weights');
    for (const w of this.workers) w.postMessage(req);
    return (await p).map((m) => ({ params: m.params, buffers: m.buffers }));
  }

  /** One step on tokens [rows, S+1], cut into schedule.microbatches micro-batches (§3). */
  async step(tokens: Int32Array, rows: number, loss: StageLossOptions): Promise<PoolStepResult> {
    this.check('step');
    splitMicroBatches(tokens, rows, this.schedule.microbatches, this.cfg.vocab_size); // validate here, not in n workers
    const addon = this.native ? nativeAddon() : null;
    const prev = addon ? addon.info().threads : 0;
    addon?.setThreads(this.threads); // the native pool is process-wide (workers.ts)
    this.busy = true;
    try {
      const p = awaitStep(this.workers, this.schedule);
      const req: PoolRequest = { type: 'step', tokens, rows, loss };
      for (const w of this.workers) w.postMessage(req);
      const results = await p;
      // a parameter no holder has a gradient for keeps `.grad` null: AdamW then skips it (no
      // decay, no moment update), as in the sequential trainer
      const holders = new Map<string, number>();
      for (const r of results) for (const name of r.grads.keys()) holders.set(name, (holders.get(name) ?? 0) + 1);
      for (const r of results) for (const name of r.missing) holders.set(name, holders.get(name)! - 1);
      const noGrad = new Set([...holders].filter(([, k]) => k === 0).map(([name]) => name));
      return { ...mergeRankOutcomes(this.schedule, results), grads: sumRankGrads(results), noGrad, timeline: results.map((r) => r.timeline) };
    } catch (e) {
      await this.close(); // a rank's state is unknown after a failed step
      throw e;
    } finally {
      this.busy = false;
      if (addon) addon.setThreads(prev);
    }
  }

  /** Terminates the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
