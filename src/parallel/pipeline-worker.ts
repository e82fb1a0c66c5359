/**
 * Entry point of one pipeline rank on a worker thread (started by workers.ts; DUALPIPE.md §5,
 * §10). The worker builds its rank's stages from the shared config and parameter source, runs
 * its compute list with a `RankRunner`, and talks to its neighbours over one MessagePort per
 * directed rank pair (DUALPIPE.md §5.4: one FIFO channel per pair carries every message; ours
 * are tagged (kind, stream, stage, mb) and checked on receipt). Sends are eager, with the
 * Float32Array's buffer transferred; an op waits only for the messages it needs. Before waiting
 * the worker reports what it waits for and how many messages it has sent and received, and while
 * waiting it answers the main thread's probes with its current counts (deadlock detection,
 * workers.ts).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { useBackend } from '../engine/backend.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { CheckpointParams, type ParamSource, RandomParams } from '../model/params.js';
import { buildPipelineRank, splitMicroBatches } from './executor.js';
import { type Mailbox, type PipelineRank, RankRunner, stageHolders } from './rank-runner.js';
import type { PipelineSchedule } from './schedule-types.js';
import type { StageBuildOptions, StageLossOptions } from './stages.js';
import type { WorkerParamSource } from './workers.js';

/** What workers.ts hands each worker. */
export interface PipelineWorkerData {
  cfg: ModelConfig;
  schedule: PipelineSchedule;
  rank: number;
  source: WorkerParamSource;
  build: StageBuildOptions;
  loss: StageLossOptions;
  tokens: Int32Array;
  rows: number;
  backend: 'native' | 'reference';
  /** Ports to send to, by peer rank; ports to receive from, by peer rank. */
  out: { peer: number; port: MessagePort }[];
  in: { peer: number; port: MessagePort }[];
}

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

async function main(port: MessagePort, d: PipelineWorkerData): Promise<void> {
  useBackend(d.backend);
  const { schedule, rank } = d;
  const src = paramSource(d.source, d.cfg);
  let built: PipelineRank;
  try {
    built = buildPipelineRank(d.cfg, schedule, rank, src.source, d.build);
  } finally {
    src.close();
  }
  const holder = stageHolders(schedule);
  const store = new Map<string, Tensor>();
  const outPorts = new Map(d.out.map((o) => [o.peer, o.port]));
  let sent = 0;
  let delivered = 0;
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  for (const { peer, port: p } of d.in) {
    p.on('message', (m: TensorMsg) => {
      const [kind, stream, stage] = m.key.split(':');
      const producer = holder.get(`${stream}:${stage}`);
      if ((kind !== 'act' && kind !== 'grad') || m.from !== peer || producer !== peer) {
        failure ??= new DsvError(`rank ${rank}: message ${m.key} arrived from rank ${m.from} on the channel of rank ${peer}; its producer is rank ${producer}`);
      } else if (store.has(m.key)) {
        failure ??= new DsvError(`rank ${rank}: message ${m.key} received twice`);
      } else store.set(m.key, Tensor.fromF32(m.data, m.shape));
      delivered++;
      const w = wake;
      wake = null;
      w?.();
    });
  }
  const mailbox: Mailbox = {
    has: (key) => store.has(key),
    take: (key) => {
      const t = store.get(key);
      if (!t) throw new DsvError(`rank ${rank}: message ${key} has not arrived`);
      store.delete(key);
      return t;
    },
    send: (key, to, t) => {
      if (to === rank) {
        // DualPipeV's turn: chunk 0's output is chunk 1's input on the same rank (§2.3)
        if (store.has(key)) throw new DsvError(`rank ${rank}: local message ${key} sent twice`);
        store.set(key, t);
        return;
      }
      const p = outPorts.get(to);
      if (!p) throw new DsvError(`rank ${rank}: no channel to rank ${to} for message ${key}`);
      const data = t.contiguous().f32();
      const msg: TensorMsg = { key, from: rank, shape: [...t.shape], data };
      p.postMessage(msg, [data.buffer as ArrayBuffer]);
      sent++;
    },
  };
  const mbs = splitMicroBatches(d.tokens, d.rows, schedule.microbatches, d.cfg.vocab_size);
  const runner = new RankRunner(schedule, built, mbs, d.loss, mailbox);
  const ops = runner.ops;
  // while waiting, answer the main thread's deadlock probes with the current counts
  let waiting: { op: number; waits: string[] } | null = null;
  const onProbe = (m: { type?: string; id?: number }): void => {
    if (m?.type === 'probe') port.postMessage({ type: 'probe-reply', rank, id: m.id, blocked: waiting !== null, sent, delivered });
  };
  port.on('message', onProbe);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    for (let need = runner.needs(op); need.length > 0; need = runner.needs(op)) {
      if (failure) throw failure;
      waiting = { op: i, waits: need };
      port.postMessage({ type: 'blocked', rank, op: i, waits: need, sent, delivered });
      await new Promise<void>((resolve) => (wake = resolve));
      waiting = null;
    }
    if (failure) throw failure;
    runner.exec(op);
  }
  port.off('message', onProbe);
  runner.finish();
  if (store.size > 0) throw new DsvError(`rank ${rank}: ${store.size} message(s) never used: ${[...store.keys()].slice(0, 4).join(', ')}`);
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of built.params.params) grads.set(name, p.grad ? p.grad.contiguous().f32().slice() : new Float32Array(p.size));
  for (const p of [...d.in, ...d.out]) p.port.close();
  const transfer = [...grads.values()].map((g) => g.buffer as ArrayBuffer);
  port.postMessage({ type: 'done', rank, sent, delivered, executed: runner.executed, reports: runner.reports, balances: runner.balances, loads: runner.loads, grads }, transfer);
}

if (parentPort) {
  const port = parentPort;
  const d = workerData as PipelineWorkerData;
  main(port, d).catch((e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    port.postMessage({ type: 'error', rank: d.rank, name: err.name, message: err.message, stack: err.stack ?? '' });
    for (const p of [...d.in, ...d.out]) p.port.close();
  });
}
