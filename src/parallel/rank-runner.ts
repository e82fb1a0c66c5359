/**
 * One pipeline rank executing its compute list (docs/DUALPIPE.md §5; DeepSeek-V3 report §3.2.1),
 * shared by the single-process executor (executor.ts) and the worker runtime (workers.ts), which
 * differ only in how messages travel (`Mailbox`).
 *
 * Dataflow (docs/DUALPIPE.md §5.1): F of stage s on micro-batch j needs the activation of (s−1, j)
 * unless s = 0; B/b needs the local F's saved state and the input gradient of (s+1, j) unless s
 * is last; W pops the oldest entry of the rank's single W FIFO (both chunks, §5.1) and must find
 * the (chunk, mb) the schedule names; FB is F then a full B (§5.2). Sends are eager (§5.4's
 * dataflow model, which cannot deadlock on these schedules). Messages are tagged
 * (kind, stream, stage, mb) and carry a copy of the tensor; a received activation becomes a
 * fresh leaf that requires grad. When the producer and the consumer are the same rank
 * (DualPipeV's turn, §2.3) the hand-off is local.
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { LossReport } from '../objective/losses.js';
import type { ChunkMb, ComputeOp, PipelineSchedule } from './schedule-types.js';
import type { PipelineStage, StageForward, StageLossOptions, StageMicroBatch } from './stages.js';
import type { ParamRegistry } from '../model/param-registry.js';

/** A chunk of a rank: its stage and the stream (DualPipe: the chunk index; otherwise 0). */
export interface ChunkPlace {
  chunk: number;
  stream: number;
  stage: PipelineStage;
}

/** One pipeline rank: its parameters and the stages of its chunks. */
export interface PipelineRank {
  rank: number;
  params: ParamRegistry;
  chunks: ChunkPlace[];
}

/** Stream of a chunk (docs/DUALPIPE.md §2: DualPipe has one stream per chunk, the others one). */
export function streamOf(algo: PipelineSchedule['algo'], chunk: number): number {
  return algo === 'dualpipe' ? chunk : 0;
}

/** Index of (stream, mb) in the step's batch of micro-batches (docs/DUALPIPE.md §3). */
export function globalMb(schedule: PipelineSchedule, stream: number, mb: number): number {
  return stream * schedule.microbatches_per_stream + mb;
}

export type MsgKind = 'act' | 'grad';

/** The tag of a message: the activation (output of F) or input gradient (output of B) of
 * (stream, stage, mb). */
export function msgKey(kind: MsgKind, stream: number, stage: number, mb: number): string {
  return `${kind}:${stream}:${stage}:${mb}`;
}

/** (stream, stage) -> the rank holding it, from `schedule.rank_chunks`; every stage of every
 * stream must be held exactly once. */
export function stageHolders(schedule: PipelineSchedule): Map<string, number> {
  const holder = new Map<string, number>();
  schedule.rank_chunks.forEach((chunks, r) => {
    for (const c of chunks) {
      const k = `${streamOf(schedule.algo, c.chunk)}:${c.stage}`;
      if (holder.has(k)) throw new DsvError(`${schedule.algo} schedule: stage ${c.stage} of stream ${streamOf(schedule.algo, c.chunk)} is held by ranks ${holder.get(k)} and ${r}`);
      holder.set(k, r);
    }
  });
  const streams = schedule.algo === 'dualpipe' ? 2 : 1;
  for (let st = 0; st < streams; st++) {
    for (let s = 0; s < schedule.stages; s++) if (!holder.has(`${st}:${s}`)) throw new DsvError(`${schedule.algo} schedule: no rank holds stage ${s} of stream ${st}`);
  }
  return holder;
}

/** How a rank's messages travel. `send` hands over a tensor the receiver may keep. */
export interface Mailbox {
  has(key: string): boolean;
  take(key: string): Tensor;
  send(key: string, to: number, t: Tensor): void;
}

interface WEntry extends ChunkMb {
  closures: Array<() => void>;
}

/** `F3`, `b2'`, `F3&B1'` (the fixtures' labels; a trailing ' marks chunk 1). */
export function describeOp(op: ComputeOp): string {
  const tag = (c: ChunkMb): string => `${c.mb}${c.chunk === 1 ? "'" : ''}`;
  switch (op.op) {
    case 'F':
      return `F${tag(op)}`;
    case 'B':
      return `${op.split ? 'b' : 'B'}${tag(op)}`;
    case 'W':
      return `W${tag(op)}`;
    case 'FB':
      return `F${tag(op.f)}&B${tag(op.b)}`;
  }
}

export class RankRunner {
  /** Executed compute ops, in order (W with the (chunk, mb) it actually popped). */
  readonly executed: ComputeOp[] = [];
  /** Last-stage loss reports by global micro-batch. */
  readonly reports = new Map<number, LossReport>();
  /** Balance values of the non-last stages run here, by global micro-batch. */
  readonly balances = new Map<number, Map<number, number>[]>();
  /** Expert loads of the MoE layers run here, summed over micro-batches. */
  readonly loads = new Map<number, Int32Array>();
  private readonly saved = new Map<number, StageForward>();
  private readonly wq: WEntry[] = [];
  private readonly holder: Map<string, number>;
  private readonly tag: string;

  constructor(
    readonly schedule: PipelineSchedule,
    readonly rank: PipelineRank,
    private readonly mbs: readonly StageMicroBatch[],
    private readonly o: StageLossOptions,
    private readonly io: Mailbox,
  ) {
    this.holder = stageHolders(schedule);
    this.tag = `${schedule.algo} schedule (${schedule.ranks} ranks, ${schedule.microbatches} mb)`;
    if (mbs.length !== schedule.microbatches) throw new DsvError(`${this.tag}: ${mbs.length} micro-batches given`);
    const want = schedule.rank_chunks[rank.rank] ?? [];
    const same = want.length === rank.chunks.length && want.every((c, i) => rank.chunks[i]!.chunk === c.chunk && rank.chunks[i]!.stage.index === c.stage);
    if (!same) throw new DsvError(`${this.tag}: rank ${rank.rank} was built with chunks that are not the schedule's rank_chunks`);
    for (const c of rank.chunks) if (c.stage.count !== schedule.stages) throw new DsvError(`${this.tag}: rank ${rank.rank} holds a stage of a ${c.stage.count}-stage model`);
  }

  /** This rank's compute list. */
  get ops(): ComputeOp[] {
    const list = this.schedule.compute[this.rank.rank];
    if (!list) throw new DsvError(`${this.tag}: no compute list for rank ${this.rank.rank}`);
    return list;
  }

  /** Message keys `op` still waits for ([] when it can run now). */
  needs(op: ComputeOp): string[] {
    const f = (c: ChunkMb): string[] => {
      const p = this.place(c);
      const k = msgKey('act', p.stream, c.stage - 1, c.mb);
      return p.stage.first || this.io.has(k) ? [] : [k];
    };
    const b = (c: ChunkMb): string[] => {
      const p = this.place(c);
      const k = msgKey('grad', p.stream, c.stage + 1, c.mb);
      return p.stage.last || this.io.has(k) ? [] : [k];
    };
    if (op.op === 'F') return f(op);
    if (op.op === 'B') return b(op);
    if (op.op === 'FB') return [...f(op.f), ...b(op.b)];
    return [];
  }

  /** Runs `op` (its inputs must be there) and logs it. */
  exec(op: ComputeOp): void {
    switch (op.op) {
      case 'F':
        this.forward(op);
        this.executed.push({ ...op });
        return;
      case 'B':
        this.backward(op, op.split);
        this.executed.push({ ...op });
        return;
      case 'W':
        this.executed.push(this.weight(op));
        return;
      case 'FB':
        if (op.f.chunk === op.b.chunk) throw new DsvError(`${this.tag}: rank ${this.rank.rank} FB pairs two ops of chunk ${op.f.chunk}`);
        this.forward(op.f); // §5.2: semantically F, then a full B of the other chunk
        this.backward(op.b, false);
        this.executed.push({ op: 'FB', f: { ...op.f }, b: { ...op.b } });
        return;
    }
  }

  /** Checks that nothing is left over at the end of the compute list. */
  finish(): void {
    const r = this.rank.rank;
    if (this.wq.length > 0) throw new DsvError(`${this.tag}: rank ${r} ends with ${this.wq.length} queued weight-gradient entries never run by a W`);
    if (this.saved.size > 0) throw new DsvError(`${this.tag}: rank ${r} ends with ${this.saved.size} forward(s) never back-propagated`);
  }

  private place(c: ChunkMb): ChunkPlace {
    const r = this.rank.rank;
    const p = this.rank.chunks.find((x) => x.chunk === c.chunk);
    if (!p) throw new DsvError(`${this.tag}: rank ${r} has no chunk ${c.chunk}`);
    if (p.stage.index !== c.stage) throw new DsvError(`${this.tag}: rank ${r} chunk ${c.chunk} is stage ${p.stage.index}, an op names stage ${c.stage}`);
    if (!Number.isInteger(c.mb) || c.mb < 0 || c.mb >= this.schedule.microbatches_per_stream) {
      throw new DsvError(`${this.tag}: rank ${r} names micro-batch ${c.mb} of a stream of ${this.schedule.microbatches_per_stream}`);
    }
    return p;
  }

  private savedKey(c: ChunkMb): number {
    return c.chunk * this.schedule.microbatches_per_stream + c.mb;
  }

  private send(kind: MsgKind, stream: number, stage: number, mb: number, t: Tensor): void {
    const to = this.holder.get(`${stream}:${kind === 'act' ? stage + 1 : stage - 1}`)!;
    // a copy the receiver owns (what a link would deliver)
    this.io.send(msgKey(kind, stream, stage, mb), to, Tensor.fromF32(t.contiguous().f32().slice(), t.shape));
  }

  private forward(c: ChunkMb): void {
    const p = this.place(c);
    const s = p.stage;
    const key = this.savedKey(c);
    if (this.saved.has(key)) throw new DsvError(`${this.tag}: rank ${this.rank.rank} runs F of (chunk ${c.chunk}, mb ${c.mb}) twice`);
    let input: Tensor | null = null;
    if (!s.first) {
      const msg = this.io.take(msgKey('act', p.stream, s.index - 1, c.mb));
      input = Tensor.param(msg.contiguous().f32(), msg.shape); // a fresh leaf that requires grad (§5.1)
    }
    const g = globalMb(this.schedule, p.stream, c.mb);
    const f = s.forward(input, this.mbs[g]!, this.o);
    this.saved.set(key, f);
    if (f.report) this.reports.set(g, f.report);
    else {
      const list = this.balances.get(g) ?? [];
      list.push(f.balance);
      this.balances.set(g, list);
    }
    for (const [l, load] of f.loads) {
      const acc = this.loads.get(l);
      if (acc) for (let e = 0; e < acc.length; e++) acc[e]! += load[e]!;
      else this.loads.set(l, load.slice());
    }
    if (f.output) this.send('act', p.stream, s.index, c.mb, f.output);
  }

  private backward(c: ChunkMb, split: boolean): void {
    const p = this.place(c);
    const s = p.stage;
    const key = this.savedKey(c);
    const f = this.saved.get(key);
    if (!f) throw new DsvError(`${this.tag}: rank ${this.rank.rank} runs a backward of (chunk ${c.chunk}, mb ${c.mb}) before its forward`);
    this.saved.delete(key);
    const gradOut = s.last ? null : this.io.take(msgKey('grad', p.stream, s.index + 1, c.mb));
    const res = s.backward(f, gradOut, split);
    if (res.inputGrad) this.send('grad', p.stream, s.index, c.mb, res.inputGrad);
    if (split) this.wq.push({ chunk: c.chunk, mb: c.mb, stage: c.stage, dir: c.dir, closures: res.weightGrads });
  }

  private weight(c: ChunkMb): ComputeOp {
    const r = this.rank.rank;
    const e = this.wq.shift();
    if (!e) throw new DsvError(`${this.tag}: rank ${r} runs W of (chunk ${c.chunk}, mb ${c.mb}) with an empty weight-gradient queue`);
    if (e.chunk !== c.chunk || e.mb !== c.mb) {
      throw new DsvError(`${this.tag}: rank ${r} W names (chunk ${c.chunk}, mb ${c.mb}) but the oldest queued split backward is (chunk ${e.chunk}, mb ${e.mb})`);
    }
    for (const fn of e.closures) fn();
    return { op: 'W', chunk: e.chunk, mb: e.mb, stage: e.stage, dir: e.dir };
  }
}
