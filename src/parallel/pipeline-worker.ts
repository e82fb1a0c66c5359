/**
 * Entry point of one pipeline rank on a worker thread (started by workers.ts; docs/DUALPIPE.md §5,
 * §10). The worker builds its rank's stages from the shared config and parameter source, runs
 * its compute list with a `RankRunner`, and talks to its neighbours over one MessagePort per
 * directed rank pair (docs/DUALPIPE.md §5.4: one FIFO channel per pair carries every message; ours
 * are tagged (kind, stream, stage, mb) and checked on receipt). Sends are eager, with the
 * Float32Array's buffer transferred; an op waits only for the messages it needs. A one-shot
 * worker runs one step and exits (workers.ts); a persistent one (train-pool.ts) keeps its rank,
 * channels and parameters across steps and serves 'weights', 'read' and 'step' requests in
 * order. Before waiting
 * the worker reports what it waits for and how many messages it has sent and received, and while
 * waiting it answers the main thread's probes with its current counts (deadlock detection,
 * workers.ts).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { useBackend } from '../engine/backend.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import { openCheckpoint } from '../io/checkpoint-read.js';
import type { ModelConfig } from '../model/config.js';
import { CheckpointParams, type ParamSource, RandomParams } from '../model/params.js';
import { buildPipelineRank, splitMicroBatches } from './executor.js';
import { describeOp, type Mailbox, type PipelineRank, RankRunner, stageHolders } from './rank-runner.js';
import type { PipelineSchedule } from './schedule-types.js';
import type { StageBuildOptions, StageLossOptions } from './stages.js';
import type { Seed } from '../data/rng.js';
import type { WeightMode } from '../model/params.js';

/** What workers.ts hands each worker. */
/** Where every worker takes its parameters (each builds only its own stages' tensors). */
export type WorkerParamSource = { kind: 'random'; seed: Seed } | { kind: 'checkpoint'; dir: string; weights?: WeightMode };

export interface PipelineWorkerData {
  cfg: ModelConfig;
  schedule: PipelineSchedule;
  rank: number;
  source: WorkerParamSource;
  build: StageBuildOptions;
  loss: StageLossOptions;
  /** One-shot mode: the step's tokens [rows, S+1] (empty for a persistent rank). */
  tokens: Int32Array;
  rows: number;
  /** A persistent rank (train-pool.ts) waits for requests instead of running one step. */
  persistent?: boolean;
  backend: 'native' | 'reference';
  /** Ports to send to, by peer rank; ports to receive from, by peer rank. */
  out: { peer: number; port: MessagePort }[];
  in: { peer: number; port: MessagePort }[];
}

/** [start, end, label] of one executed compute op, in ms since the epoch (`performance.timeOrigin` + `now()`:
 * one clock for all worker threads); labels as describeOp (`F3`, `b2'`, `W0`, `F3&B1'`). */
export type OpTiming = [number, number, string];

const now = (): number => performance.timeOrigin + performance.now();

/** A tensor message between ranks. */
interface TensorMsg {
  key: string;
  from: number;
  shape: number[];
  data: Float32Array;
}

function paramSource(src: WorkerParamSource, cfg: ModelConfig): { source: ParamSource; close: () => void } {
  if (src.kind === 'random') return { source: new RandomParams(src.seed, cfg.initializer_range), close: () => {} };
  const ckpt = openCheckpoint(src.dir);
  return { source: new CheckpointParams(ckpt, src.weights ?? 'auto'), close: () => ckpt.close() };
}

/** The worker's end of its p2p channels: persistent listeners, a message store, counters. */
interface PortIo {
  store: Map<string, Tensor>;
  outPorts: Map<number, MessagePort>;
  sent: number;
  delivered: number;
  wake: (() => void) | null;
  failure: Error | null;
}

function listen(d: PipelineWorkerData, holder: Map<string, number>): PortIo {
  const io: PortIo = { store: new Map(), outPorts: new Map(d.out.map((o) => [o.peer, o.port])), sent: 0, delivered: 0, wake: null, failure: null };
  for (const { peer, port: p } of d.in) {
    p.on('message', (m: TensorMsg) => {
      const [kind, stream, stage] = m.key.split(':');
      const producer = holder.get(`${stream}:${stage}`);
      if ((kind !== 'act' && kind !== 'grad') || m.from !== peer || producer !== peer) {
        io.failure ??= new DsvError(`rank ${d.rank}: message ${m.key} arrived from rank ${m.from} on the channel of rank ${peer}; its producer is rank ${producer}`);
      } else if (io.store.has(m.key)) {
        io.failure ??= new DsvError(`rank ${d.rank}: message ${m.key} received twice`);
      } else io.store.set(m.key, Tensor.fromF32(m.data, m.shape));
      io.delivered++;
      const w = io.wake;
      io.wake = null;
      w?.();
    });
  }
  return io;
}

/**
 * One step of the rank's compute list on tokens [rows, S+1]. Returns the 'done' message (the
 * rank's gradients copied out; the parameters' gradients are cleared for the next step).
 * Counters are cumulative over the worker's life (a persistent worker runs many steps; the
 * main thread's deadlock check compares sums of sent and received messages).
 */
async function runStep(port: MessagePort, d: PipelineWorkerData, built: PipelineRank, io: PortIo, tokens: Int32Array, rows: number, loss: StageLossOptions): Promise<{ msg: unknown; transfer: ArrayBuffer[] }> {
  const { schedule, rank } = d;
  io.failure = null;
  const mailbox: Mailbox = {
    has: (key) => io.store.has(key),
    take: (key) => {
      const t = io.store.get(key);
      if (!t) throw new DsvError(`rank ${rank}: message ${key} has not arrived`);
      io.store.delete(key);
      return t;
    },
    send: (key, to, t) => {
      if (to === rank) {
        // DualPipeV's turn: chunk 0's output is chunk 1's input on the same rank (§2.3)
        if (io.store.has(key)) throw new DsvError(`rank ${rank}: local message ${key} sent twice`);
        io.store.set(key, t);
        return;
      }
      const p = io.outPorts.get(to);
      if (!p) throw new DsvError(`rank ${rank}: no channel to rank ${to} for message ${key}`);
      const data = t.contiguous().f32();
      const msg: TensorMsg = { key, from: rank, shape: [...t.shape], data };
      p.postMessage(msg, [data.buffer as ArrayBuffer]);
      io.sent++;
    },
  };
  const mbs = splitMicroBatches(tokens, rows, schedule.microbatches, d.cfg.vocab_size);
  const runner = new RankRunner(schedule, built, mbs, loss, mailbox);
  const ops = runner.ops;
  /** Each executed op's [start, end, label] in ms on the clock every thread shares (the dualpipe experiment, DUALPIPE.md §10). */
  const timeline: OpTiming[] = [];
  // while waiting, answer the main thread's deadlock probes with the current counts
  let waiting: { op: number; waits: string[] } | null = null;
  const onProbe = (m: { type?: string; id?: number }): void => {
    if (m?.type === 'probe') port.postMessage({ type: 'probe-reply', rank, id: m.id, blocked: waiting !== null, sent: io.sent, delivered: io.delivered });
  };
  port.on('message', onProbe);
  try {
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      for (let need = runner.needs(op); need.length > 0; need = runner.needs(op)) {
        if (io.failure) throw io.failure;
        waiting = { op: i, waits: need };
        port.postMessage({ type: 'blocked', rank, op: i, waits: need, sent: io.sent, delivered: io.delivered });
        await new Promise<void>((resolve) => (io.wake = resolve));
        waiting = null;
      }
      if (io.failure) throw io.failure;
      const t0 = now();
      runner.exec(op);
      timeline.push([t0, now(), describeOp(op)]);
    }
  } finally {
    port.off('message', onProbe);
  }
  runner.finish();
  if (io.store.size > 0) throw new DsvError(`rank ${rank}: ${io.store.size} message(s) never used: ${[...io.store.keys()].slice(0, 4).join(', ')}`);
  const grads = new Map<string, Float32Array>();
  const missing: string[] = []; // no gradient at all here (AdamW skips a parameter no holder has one for)
  for (const [name, p] of built.params.params) {
    if (!p.grad) missing.push(name);
    grads.set(name, p.grad ? p.grad.contiguous().f32().slice() : new Float32Array(p.size));
  }
  built.params.zeroGrad();
  const transfer = [...grads.values()].map((g) => g.buffer as ArrayBuffer);
  const msg = { type: 'done', rank, sent: io.sent, delivered: io.delivered, executed: runner.executed, reports: runner.reports, balances: runner.balances, loads: runner.loads, grads, missing, timeline };
  return { msg, transfer };
}

/** Copies the main thread's values into the rank's parameters and buffers (every one it holds). */
function setWeights(built: PipelineRank, params: Map<string, Float32Array>, buffers: Map<string, Float32Array>): void {
  for (const [kind, held, given] of [['parameter', built.params.params, params], ['buffer', built.params.buffers, buffers]] as const) {
    for (const [name, t] of held) {
      const v = given.get(name);
      if (!v) throw new DsvError(`rank ${built.rank}: no value sent for its ${kind} "${name}"`);
      if (v.length !== t.size) throw new DsvError(`rank ${built.rank}: ${kind} "${name}" has ${t.size} elements, ${v.length} were sent`);
      t.f32().set(v);
    }
  }
}

async function main(port: MessagePort, d: PipelineWorkerData): Promise<void> {
  useBackend(d.backend);
  const src = paramSource(d.source, d.cfg);
  let built: PipelineRank;
  try {
    built = buildPipelineRank(d.cfg, d.schedule, d.rank, src.source, d.build);
  } finally {
    src.close();
  }
  const holder = stageHolders(d.schedule);
  const io = listen(d, holder);
  if (!d.persistent) {
    const { msg, transfer } = await runStep(port, d, built, io, d.tokens, d.rows, d.loss);
    for (const p of [...d.in, ...d.out]) p.port.close();
    port.postMessage(msg, transfer);
    return;
  }
  // persistent rank (train-pool.ts): report the names held, then serve requests in order
  port.postMessage({ type: 'ready', rank: d.rank, params: [...built.params.params.keys()], buffers: [...built.params.buffers.keys()] });
  let chain = Promise.resolve();
  // after a failure every later request fails too (a 'weights' error must not let a step run)
  let broken: Error | null = null;
  const fail = (e: unknown): void => {
    const err = e instanceof Error ? e : new Error(String(e));
    broken ??= err;
    port.postMessage({ type: 'error', rank: d.rank, name: err.name, message: err.message, stack: err.stack ?? '' });
  };
  port.on('message', (m: PoolRequest) => {
    if (m.type === 'probe') return; // answered by the running step's listener
    chain = chain.then(async () => {
      if (broken) throw broken;
      if (m.type === 'weights') setWeights(built, m.params, m.buffers);
      else if (m.type === 'read') {
        const params = new Map([...built.params.params].map(([n, t]) => [n, t.f32().slice()]));
        const buffers = new Map([...built.params.buffers].map(([n, t]) => [n, t.f32().slice()]));
        port.postMessage({ type: 'weights', rank: d.rank, params, buffers });
      } else if (m.type === 'step') {
        const { msg, transfer } = await runStep(port, d, built, io, m.tokens, m.rows, m.loss);
        port.postMessage(msg, transfer);
      }
    }).catch(fail);
  });
}

/** Requests of the train pool to a persistent rank (train-pool.ts). */
export type PoolRequest =
  | { type: 'probe'; id: number }
  | { type: 'weights'; params: Map<string, Float32Array>; buffers: Map<string, Float32Array> }
  | { type: 'read' }
  | { type: 'step'; tokens: Int32Array; rows: number; loss: StageLossOptions };

if (parentPort) {
  const port = parentPort;
  const d = workerData as PipelineWorkerData;
  main(port, d).catch((e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    port.postMessage({ type: 'error', rank: d.rank, name: err.name, message: err.message, stack: err.stack ?? '' });
    for (const p of [...d.in, ...d.out]) p.port.close();
  });
}
