/**
 * Pipeline runtime on worker threads (docs/DUALPIPE.md §5, §10; DeepSeek-V3 report §3.2.1): one
 * worker per rank, each building its own stages from the same config and parameter source
 * (replicas identical, docs/DUALPIPE.md §2.2) and running its compute list (pipeline-worker.ts).
 * Activations and gradients travel as Float32Arrays with their buffers transferred, over one
 * MessageChannel per directed pair of neighbouring ranks (docs/DUALPIPE.md §5.4). Each worker runs with
 * DSV3_THREADS=1 (by default) so that the ranks, not a thread pool per rank, use the cores; the
 * native pool itself is process-wide, so it is sized to that for the step (see below).
 *
 * After the step each worker returns its executed ops, its losses and loads, and its parameters'
 * gradients; the main thread sums the gradients of every parameter over the ranks holding it
 * (the replica all-reduce of §2.2, and the embedding copy 1F1B/ZB1P keep on the last rank for
 * MTP, replicas.ts), in rank order, as `allReduceGrads` does.
 *
 * A deadlock is recognised without a timeout: a worker reports before it waits, with its counts
 * of messages sent and received. When every unfinished worker's report says it waits and the
 * reported sends equal the reported receipts, the main thread probes them; a worker answers only
 * while it waits (its thread is free then), and one that answers with the counts of its report
 * has received nothing since, so it waited all along. If all do, every worker was waiting at the
 * moment of the probe with no message in flight: none can ever be woken.
 */
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { kernels } from '../engine/backend.js';
import { nativeAddon } from '../engine/native.js';
import { referenceKernels } from '../engine/reference/index.js';
import type { Seed } from '../data/rng.js';
import { DsvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { WeightMode } from '../model/params.js';
import type { LossReport } from '../objective/losses.js';
import { mergeRankOutcomes, type PipelineStepResult, splitMicroBatches } from './executor.js';
import type { OpTiming, PipelineWorkerData, WorkerParamSource } from './pipeline-worker.js';
import { stageHolders } from './rank-runner.js';
import type { ComputeOp, PipelineSchedule } from './schedule-types.js';
import type { StageBuildOptions, StageLossOptions } from './stages.js';

export interface WorkerRunOptions {
  build?: StageBuildOptions;
  /** DSV3_THREADS of each worker (default 1). */
  threads?: number;
  /** Kernels of the workers (default: the ones active on the calling thread). */
  backend?: 'native' | 'reference';
}

export interface WorkerStepResult extends PipelineStepResult {
  /** Gradient of every parameter, summed over the ranks holding it (§2.2). */
  grads: Map<string, Float32Array>;
}

export interface DoneMsg {
  type: 'done';
  rank: number;
  sent: number;
  delivered: number;
  executed: ComputeOp[];
  reports: Map<number, LossReport>;
  balances: Map<number, Map<number, number>[]>;
  loads: Map<number, Int32Array>;
  grads: Map<string, Float32Array>;
  /** Parameters of this rank that got no gradient in the step. */
  missing: string[];
  /** Each executed compute op's [start, end, label] (ms, a clock shared by the threads). */
  timeline: OpTiming[];
}
interface BlockedMsg {
  type: 'blocked';
  rank: number;
  op: number;
  waits: string[];
  sent: number;
  delivered: number;
}
interface ProbeReply {
  type: 'probe-reply';
  rank: number;
  id: number;
  blocked: boolean;
  sent: number;
  delivered: number;
}
/** A rank's uncaught error, as its worker posts it. */
export interface ErrorMsg {
  type: 'error';
  rank: number;
  name: string;
  message: string;
  stack?: string;
}

/** The rank's error on this thread: a DsvError stays one line; anything else keeps its stack. */
export function rankError(m: ErrorMsg): Error {
  return m.name === 'DsvError' ? new DsvError(`pipeline rank ${m.rank}: ${m.message}`) : new Error(`pipeline rank ${m.rank}: ${m.name}: ${m.message}${m.stack ? `\n${m.stack}` : ''}`);
}

/** Directed rank pairs that exchange messages: neighbouring stages of a stream on two ranks. */
export function channelPairs(schedule: PipelineSchedule): [number, number][] {
  const holder = stageHolders(schedule);
  const pairs = new Set<string>();
  const streams = schedule.algo === 'dualpipe' ? 2 : 1;
  for (let st = 0; st < streams; st++) {
    for (let s = 0; s + 1 < schedule.stages; s++) {
      const a = holder.get(`${st}:${s}`)!;
      const b = holder.get(`${st}:${s + 1}`)!;
      if (a !== b) {
        pairs.add(`${a}>${b}`); // activations
        pairs.add(`${b}>${a}`); // gradients
      }
    }
  }
  return [...pairs].map((p) => p.split('>').map(Number) as [number, number]);
}

/** One end of a channel between two ranks: the peer rank and the port. */
export interface RankPort {
  peer: number;
  port: MessagePort;
}

/** One MessageChannel per directed pair of neighbouring ranks (docs/DUALPIPE.md §5.4): each rank's
 * sending ends (`outs`) and receiving ends (`ins`). */
export function rankChannels(schedule: PipelineSchedule): { outs: RankPort[][]; ins: RankPort[][] } {
  const outs: RankPort[][] = Array.from({ length: schedule.ranks }, () => []);
  const ins: RankPort[][] = Array.from({ length: schedule.ranks }, () => []);
  for (const [a, b] of channelPairs(schedule)) {
    const ch = new MessageChannel();
    outs[a]!.push({ peer: b, port: ch.port1 });
    ins[b]!.push({ peer: a, port: ch.port2 });
  }
  return { outs, ins };
}

/** The native threads of each worker (checked) and its kernels (default: the calling thread's). */
export function workerSettings(o: { threads?: number; backend?: 'native' | 'reference' }): { threads: number; backend: 'native' | 'reference' } {
  const threads = o.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new DsvError(`threads per pipeline worker must be an integer >= 1, got ${threads}`);
  return { threads, backend: o.backend ?? (kernels() === referenceKernels ? 'reference' : 'native') };
}

/**
 * One step of `schedule` with every rank on its own worker thread, on tokens [rows, S+1] cut into
 * schedule.microbatches micro-batches (as `PipelineExecutor.run`).
 */
export async function runPipelineWorkers(
  cfg: ModelConfig,
  schedule: PipelineSchedule,
  source: WorkerParamSource,
  tokens: Int32Array,
  rows: number,
  loss: StageLossOptions,
  o: WorkerRunOptions = {},
): Promise<WorkerStepResult> {
  splitMicroBatches(tokens, rows, schedule.microbatches, cfg.vocab_size); // validate here, not in n workers
  const n = schedule.ranks;
  const { threads, backend } = workerSettings(o);
  const { outs, ins } = rankChannels(schedule);
  const workers: Worker[] = [];
  for (let r = 0; r < n; r++) {
    const data: PipelineWorkerData = { cfg, schedule, rank: r, source, build: o.build ?? {}, loss, tokens, rows, backend, out: outs[r]!, in: ins[r]! };
    const ports = [...outs[r]!, ...ins[r]!].map((x) => x.port);
    workers.push(new Worker(new URL('./pipeline-worker.js', import.meta.url), { workerData: data, transferList: ports, env: { ...process.env, DSV3_THREADS: String(threads) } }));
  }
  // The native thread pool is one per process, shared by the workers (a kernel call that finds
  // it busy runs on the calling thread): its size is set to `threads` for the step, restored after.
  const addon = backend === 'native' ? nativeAddon() : null;
  const prevThreads = addon ? addon.info().threads : 0;
  addon?.setThreads(threads);
  let results: DoneMsg[];
  try {
    results = await awaitStep(workers, schedule);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    if (addon) addon.setThreads(prevThreads);
  }
  return { ...mergeRankOutcomes(schedule, results), grads: sumRankGrads(results) };
}

/** Gradient of every parameter summed over the ranks holding it, in rank order (§2.2). */
export function sumRankGrads(results: readonly DoneMsg[]): Map<string, Float32Array> {
  const grads = new Map<string, Float32Array>();
  for (const res of results) {
    for (const [name, g] of res.grads) {
      const acc = grads.get(name);
      if (!acc) grads.set(name, Float32Array.from(g, (x) => 0 + x)); // as allReduceGrads: 0 + g, then + g2 ...
      else if (acc.length !== g.length) throw new DsvError(`replicas of "${name}" disagree in size: ${acc.length} vs ${g.length}`);
      else for (let i = 0; i < g.length; i++) acc[i] = acc[i]! + g[i]!;
    }
  }
  return grads;
}

/**
 * Waits for every rank's 'done' of the step now running on `workers` (one-shot workers here,
 * persistent ones in train-pool.ts), with the deadlock check of the module comment; a rank's
 * error or exit rejects. Its listeners are removed once it settles.
 */
export function awaitStep(workers: readonly Worker[], schedule: PipelineSchedule): Promise<DoneMsg[]> {
  const n = workers.length;
  const done: (DoneMsg | null)[] = new Array(n).fill(null);
  const blocked: (BlockedMsg | null)[] = new Array(n).fill(null);
  const offs: (() => void)[] = [];
  const on = (w: Worker, ev: string, fn: (...a: any[]) => void): void => {
    w.on(ev, fn);
    offs.push(() => w.off(ev, fn));
  };
  return new Promise<DoneMsg[]>((resolve, reject) => {
    let settled = false;
    const fail = (e: Error): void => {
      if (settled) return;
      settled = true;
      for (const off of offs) off();
      reject(e);
    };
    // Deadlock check (see the module comment): when every unfinished rank's latest report says it
    // waits and all reported sends were received, probe them; if each answers still waiting with
    // the counts of its report, all of them were waiting at the moment of the probe with no
    // message in flight.
    let probe = 0;
    let replies = new Map<number, ProbeReply>();
    const suspect = (): boolean => {
      let sent = 0;
      let delivered = 0;
      for (let r = 0; r < n; r++) {
        const s = done[r] ?? blocked[r];
        if (!s) return false; // a rank is running
        sent += s.sent;
        delivered += s.delivered;
      }
      return sent === delivered;
    };
    const onState = (): void => {
      replies = new Map();
      if (!suspect()) return;
      probe++;
      workers.forEach((w, r) => {
        if (!done[r]) w.postMessage({ type: 'probe', id: probe });
      });
    };
    const onReply = (m: ProbeReply): void => {
      if (m.id !== probe) return;
      replies.set(m.rank, m);
      const open = blocked.map((b, r) => (done[r] ? null : b));
      if (open.some((b, r) => b && !replies.has(r))) return;
      const still = open.every((b, r) => !b || (replies.get(r)!.blocked && replies.get(r)!.sent === b.sent && replies.get(r)!.delivered === b.delivered));
      if (!still || !suspect()) return;
      const what = blocked.map((b, r) => (done[r] ? `rank ${r} done` : `rank ${r} at op ${b!.op} waits for ${b!.waits.join(', ')}`));
      fail(new DsvError(`${schedule.algo} schedule (${n} ranks, ${schedule.microbatches} mb) deadlocks on workers: ${what.join('; ')}`));
    };
    workers.forEach((w, r) => {
      on(w, 'message', (m: DoneMsg | BlockedMsg | ErrorMsg | ProbeReply) => {
        if (m.type === 'error') return fail(rankError({ ...m, rank: r }));
        if (m.type === 'probe-reply') return onReply(m);
        if (m.type === 'blocked') blocked[r] = m;
        else {
          done[r] = m;
          blocked[r] = null;
        }
        if (done.every((d) => d !== null)) {
          settled = true;
          for (const off of offs) off();
          resolve(done as DoneMsg[]);
        } else onState();
      });
      on(w, 'error', (e) => fail(e instanceof Error ? e : new Error(String(e))));
      on(w, 'exit', (code) => {
        if (!done[r]) fail(new DsvError(`pipeline rank ${r}: worker exited (code ${code}) before finishing its step`));
      });
    });
  });
}
