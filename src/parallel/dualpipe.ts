/**
 * DualPipe (DeepSeek-V3 report §3.2.1, Figure 5, Table 2): bidirectional pipeline parallelism
 * in which every rank holds two chunks and, in the steady state, overlaps the forward of one
 * chunk with the full backward of the other ("F&B", Figure 4).
 *
 * This file holds the per-rank program of docs/DUALPIPE.md §6.3 (shared with DualPipeV, see
 * dualpipev.ts) and the DualPipe placement of docs/DUALPIPE.md §2.2 / §6.1. The program is generated
 * exactly as DeepSeek's reference `dualpipe.py` issues it: compute ops interleaved with the
 * posted p2p operations and the batched waits of the reference runtime protocol (§5.4).
 */
import { DsvError } from '../errors.js';
import type { ChunkMb, ComputeOp, P2pOp, PipelineSchedule, ProgramOp, RankChunk } from './schedule-types.js';

/**
 * One chunk of a rank in a two-chunk schedule, with its message routing (docs/DUALPIPE.md §5.1,
 * §5.4): `prevRank` holds the previous stage of this chunk's stream (activations come from it,
 * input gradients go to it), `nextRank` the next stage (activations go to it, output gradients
 * come from it). `null` when the message does not exist: the first stage of a stream has no
 * previous rank, the last stage no next rank, and on DualPipeV's last rank the chunk 0 → chunk 1
 * hand-off is local.
 */
export interface RoutedChunk extends RankChunk {
  prevRank: number | null;
  nextRank: number | null;
}

/** The per-rank parameters of docs/DUALPIPE.md §6.1 and the rank's two chunks. */
export interface DualRankPlan {
  /** H: ranks from an end of the pipeline to the turn. */
  H: number;
  /** M: micro-batches per stream. */
  M: number;
  /** h: this rank's distance from its end (0 ≤ h ≤ H−1; h = H−1 is a turn rank). */
  h: number;
  /** Local index of the shallow chunk S (the reference's "phase 0"). */
  S: number;
  /** Local index of the deep chunk D (the reference's "phase 1"). */
  D: number;
  /** chunks[c]: chunk c of the rank (c = 0, 1). */
  chunks: [RoutedChunk, RoutedChunk];
}

/**
 * Emits one rank's compute list and program. Micro-batch numbers come from per-chunk counters
 * (F and B in order per chunk), W pops the rank's FIFO of split backwards (one queue shared by
 * both chunks, §5.1), and each posted message takes the next micro-batch of its
 * (direction, kind, chunk), as in the reference (§5.4).
 */
class DualProgramBuilder {
  readonly compute: ComputeOp[] = [];
  readonly program: ProgramOp[] = [];
  private pending = 0;
  private readonly nextF = [0, 0];
  private readonly nextB = [0, 0];
  private readonly wQueue: ChunkMb[] = [];
  private readonly msgMb = new Map<string, number>();

  constructor(private readonly chunks: [RoutedChunk, RoutedChunk]) {}

  private chunkMb(c: number, mb: number): ChunkMb {
    const { chunk, stage, dir } = this.chunks[c]!;
    return { chunk, mb, stage, dir };
  }

  private emit(op: ComputeOp): void {
    this.compute.push(op);
    this.program.push(op);
  }

  /** Post a p2p op (not issued until the next wait); a no-op when the message does not exist. */
  post(op: 'recv' | 'send', kind: 'act' | 'grad', c: number): void {
    const ch = this.chunks[c]!;
    // act: received from the previous stage, sent to the next; grad: the other way round.
    const fromPrev = (op === 'recv') === (kind === 'act');
    const peer = fromPrev ? ch.prevRank : ch.nextRank;
    if (peer === null) return;
    const key = `${op}/${kind}/${c}`;
    const mb = this.msgMb.get(key) ?? 0;
    this.msgMb.set(key, mb + 1);
    const p2p: P2pOp = { op, kind, chunk: ch.chunk, mb, peer };
    this.program.push(p2p);
    this.pending++;
  }

  /** Issue every posted op as one batch and block until all complete; nothing if none posted. */
  wait(): void {
    if (this.pending === 0) return;
    this.program.push({ op: 'wait' });
    this.pending = 0;
  }

  private takeF(c: number): ChunkMb {
    return this.chunkMb(c, this.nextF[c]!++);
  }

  private takeB(c: number): ChunkMb {
    return this.chunkMb(c, this.nextB[c]!++);
  }

  /** fwd(c, recv, send) of §5.4. */
  fwd(c: number, recv = true, send = true): void {
    if (recv) this.post('recv', 'act', c);
    this.wait();
    this.emit({ op: 'F', ...this.takeF(c) });
    if (send) this.post('send', 'act', c);
  }

  /** bwd(c, split, recv, send) of §5.4: a full B, or a split b whose W work is queued. */
  bwd(c: number, split = false, recv = true, send = true): void {
    if (recv) this.post('recv', 'grad', c);
    this.wait();
    const b = this.takeB(c);
    this.emit({ op: 'B', chunk: b.chunk, mb: b.mb, split, stage: b.stage, dir: b.dir });
    if (split) this.wQueue.push(b);
    if (send) this.post('send', 'grad', c);
  }

  /** fwdbwd(cf, cb, recv_f) of §5.4: the overlapped pair F&B (paper Figure 4), backward full. */
  fwdbwd(cf: number, cb: number, recvF = true): void {
    if (recvF) this.post('recv', 'act', cf);
    this.post('recv', 'grad', cb);
    this.wait();
    this.emit({ op: 'FB', f: this.takeF(cf), b: this.takeB(cb) });
    this.post('send', 'act', cf);
    this.post('send', 'grad', cb);
  }

  /** weight() of §5.4: W of the oldest queued split backward. */
  weight(): void {
    this.wait();
    const w = this.wQueue.shift();
    if (w === undefined) throw new Error('dual schedule: W with an empty weight-gradient queue');
    this.emit({ op: 'W', ...w });
  }

  /** Sanity check of §6.2's counts: M forwards and M backwards per chunk, every W popped. */
  finish(M: number): void {
    this.wait();
    for (const c of [0, 1]) {
      if (this.nextF[c] !== M || this.nextB[c] !== M) {
        throw new Error(`dual schedule: chunk ${c} ran ${this.nextF[c]} F and ${this.nextB[c]} B, expected ${M} each`);
      }
    }
    if (this.wQueue.length !== 0) throw new Error(`dual schedule: ${this.wQueue.length} weight-gradient works left`);
  }
}

/**
 * The exact per-rank program of docs/DUALPIPE.md §6.3 (the eight steps of §6.2, names as in the
 * reference `dualpipe.py`), for DualPipe and DualPipeV alike: only the plan (§6.1) differs.
 */
export function dualRankProgram(plan: DualRankPlan): { compute: ComputeOp[]; program: ProgramOp[] } {
  const { H, M, h, S, D } = plan;
  const turn = h === H - 1;
  const p = new DualProgramBuilder(plan.chunks);

  // Step 1 (nF0): warm-up forwards of the shallow chunk.
  for (let k = 0; k < 2 * (H - h - 1); k++) p.fwd(S);

  // Step 2 (nF0F1): alternate F(S), F(D); the receive of each next F(S) is posted ahead.
  p.post('recv', 'act', S);
  for (let k = 0; k <= h; k++) {
    p.fwd(S, false, turn);
    p.post('recv', 'act', S);
    p.fwd(D, true, !turn || k < h);
    if (!turn) p.post('send', 'act', S);
  }

  // Step 3 (nB1W1F1): zero-bubble split backward of D, its W, then the next F(D).
  for (let k = 0; k < H - h - 1; k++) {
    p.bwd(D, true);
    p.post('recv', 'act', D);
    p.weight();
    p.fwd(D, false);
  }

  // Step 4 (nF0B1F1B0), the main loop: overlapped pairs F&B (paper Figure 4). On a turn rank
  // the first pair is a plain F(S) then a full B(D).
  for (let k = 0; k <= M - 2 * H + h; k++) {
    if (k === 0 && turn) {
      p.fwd(S, false, false);
      p.post('send', 'act', D);
      p.bwd(D, false, true, false);
      p.post('send', 'act', S);
      p.post('send', 'grad', D);
    } else {
      p.fwdbwd(S, D, k > 0);
    }
    p.fwdbwd(D, S);
  }

  // Step 5 (nB1F1B0): B(D), then F(D)&B(S).
  for (let k = 0; k < H - h - 1; k++) {
    p.bwd(D);
    p.fwdbwd(D, S);
  }

  // Step 6 (nB1B0): alternate B(D), B(S); the first h+1 full, the last h+1 split.
  for (let k = 0; k <= 2 * h + 1; k++) p.bwd(k % 2 === 0 ? D : S, k >= h + 1);

  // Step 7 (nWB0): W, then a split B(S).
  for (let k = 0; k < H - h - 1; k++) {
    p.weight();
    p.bwd(S, true);
  }

  // Step 8 (nW): drain the weight-gradient queue; the final wait issues the last sends.
  for (let k = 0; k <= h; k++) p.weight();
  p.finish(M);
  return { compute: p.compute, program: p.program };
}

/**
 * §4: DualPipe needs an even number of ranks PP ≥ 2 and an even number of micro-batches
 * N ≥ 2·PP (the paper asks only divisibility by 2; the bound is the reference code's, §9.1).
 */
export function checkDualPipeSize(ranks: number, microbatches: number): void {
  if (!Number.isInteger(ranks) || ranks < 2 || ranks % 2 !== 0) {
    throw new DsvError(`DualPipe needs an even number of ranks >= 2, got ${ranks}`);
  }
  if (!Number.isInteger(microbatches) || microbatches % 2 !== 0 || microbatches < 2 * ranks) {
    throw new DsvError(
      `DualPipe with ${ranks} ranks needs an even number of micro-batches >= 2 * ranks = ${2 * ranks}, got ${microbatches}`,
    );
  }
}

/** DualPipe rank i's chunks (§2.2): chunk 0 = stage i of the down stream, chunk 1 = stage PP−1−i
 * of the up stream; every stage is on two ranks. */
function dualPipeChunks(ranks: number, i: number): [RoutedChunk, RoutedChunk] {
  return [
    { chunk: 0, stage: i, dir: 'down', prevRank: i > 0 ? i - 1 : null, nextRank: i < ranks - 1 ? i + 1 : null },
    { chunk: 1, stage: ranks - 1 - i, dir: 'up', prevRank: i < ranks - 1 ? i + 1 : null, nextRank: i > 0 ? i - 1 : null },
  ];
}

/**
 * The DualPipe schedule for `ranks` ranks (= stages) and `microbatches` micro-batches, N/2 per
 * direction (§3): every rank's compute list and its program (compute + p2p ops, §6.3).
 * Rank i and rank PP−1−i run mirror-image programs (§6.1): for the second half of the ranks the
 * shallow chunk S is chunk 1.
 */
export function dualPipeSchedule(ranks: number, microbatches: number): PipelineSchedule {
  checkDualPipeSize(ranks, microbatches);
  const H = ranks / 2;
  const M = microbatches / 2;
  return assembleDualSchedule('dualpipe', ranks, ranks, microbatches, M, (i) => {
    const firstHalf = i < H;
    return { H, M, h: Math.min(i, ranks - 1 - i), S: firstHalf ? 0 : 1, D: firstHalf ? 1 : 0, chunks: dualPipeChunks(ranks, i) };
  });
}

/** A two-chunk schedule (DualPipe or DualPipeV) from each rank's plan: the rank's chunks and
 * its program (dualRankProgram), in the fixture format. */
export function assembleDualSchedule(algo: 'dualpipe' | 'dualpipev', ranks: number, stages: number, microbatches: number,
  perStream: number, planOf: (rank: number) => DualRankPlan): PipelineSchedule {
  const rankChunks: RankChunk[][] = [];
  const compute: ComputeOp[][] = [];
  const program: ProgramOp[][] = [];
  for (let i = 0; i < ranks; i++) {
    const plan = planOf(i);
    const r = dualRankProgram(plan);
    rankChunks.push(plan.chunks.map(({ chunk, stage, dir }) => ({ chunk, stage, dir })));
    compute.push(r.compute);
    program.push(r.program);
  }
  return {
    format: 'dsv3-pipeline-schedule/1', algo, ranks, stages, microbatches, microbatches_per_stream: perStream,
    rank_chunks: rankChunks, compute, program,
  };
}
