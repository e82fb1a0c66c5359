/**
 * The baselines of the DeepSeek-V3 report's Table 2 (§3.2.1): 1F1B (PipeDream-flush, as in
 * Megatron-LM) and ZB1P, which is the Zero Bubble paper's handcrafted ZB-H1 (Qi et al., arXiv
 * 2401.10241, §2.1, Figure 3 top; see docs/DUALPIPE.md §7 and §9.3). One stage per rank, one stream
 * entering at rank 0 (docs/DUALPIPE.md §2.1). Compute lists only: these schedules carry no reference
 * p2p program.
 */
import { DsvError } from '../errors.js';
import type { BOp, ComputeOp, FOp, PipelineSchedule, WOp } from './schedule-types.js';

/** §4: 1F1B and ZB1P take any PP ≥ 1 ranks and N ≥ 1 micro-batches. */
export function checkBaselineSize(name: string, ranks: number, microbatches: number): void {
  if (!Number.isInteger(ranks) || ranks < 1) throw new DsvError(`${name} needs an integer number of ranks >= 1, got ${ranks}`);
  if (!Number.isInteger(microbatches) || microbatches < 1) {
    throw new DsvError(`${name} needs an integer number of micro-batches >= 1, got ${microbatches}`);
  }
}

/** Emits the compute ops of one rank of a one-stage-per-rank schedule. */
class RankOps {
  readonly ops: ComputeOp[] = [];
  private nextF = 0;
  private nextB = 0;
  private readonly wQueue: number[] = [];

  constructor(private readonly stage: number) {}

  F(): void {
    const op: FOp = { op: 'F', chunk: 0, mb: this.nextF++, stage: this.stage, dir: 'down' };
    this.ops.push(op);
  }

  /** A full backward B, or a split b whose weight-gradient work is queued for a later W. */
  B(split: boolean): void {
    const mb = this.nextB++;
    const op: BOp = { op: 'B', chunk: 0, mb, split, stage: this.stage, dir: 'down' };
    this.ops.push(op);
    if (split) this.wQueue.push(mb);
  }

  /** W of the oldest queued split backward (FIFO). */
  W(): void {
    const mb = this.wQueue.shift();
    if (mb === undefined) throw new Error('baseline schedule: W with an empty weight-gradient queue');
    const op: WOp = { op: 'W', chunk: 0, mb, stage: this.stage, dir: 'down' };
    this.ops.push(op);
  }

  get queued(): number {
    return this.wQueue.length;
  }
}

/** 1F1B rank i (docs/DUALPIPE.md §7.1): w = min(PP−1−i, N) warm-up forwards, N−w (F, B) pairs,
 * then the remaining w full backwards. */
function oneFOneBRank(ranks: number, microbatches: number, i: number): ComputeOp[] {
  const r = new RankOps(i);
  const w = Math.min(ranks - 1 - i, microbatches);
  for (let k = 0; k < w; k++) r.F();
  for (let k = 0; k < microbatches - w; k++) {
    r.F();
    r.B(false);
  }
  for (let k = 0; k < w; k++) r.B(false);
  return r.ops;
}

/** ZB-H1 rank i (docs/DUALPIPE.md §7.2): 1F1B's order with every backward split; the k-th split
 * backward is followed by a W once k ≥ i (the W's are delayed by the rank index), and the
 * remaining min(i, N) W's drain the queue at the end. */
function zb1pRank(ranks: number, microbatches: number, i: number): ComputeOp[] {
  const r = new RankOps(i);
  const w = Math.min(ranks - 1 - i, microbatches);
  let k = 0;
  const backward = (): void => {
    r.B(true);
    if (k >= i) r.W();
    k++;
  };
  for (let j = 0; j < w; j++) r.F();
  for (let j = 0; j < microbatches - w; j++) {
    r.F();
    backward();
  }
  for (let j = 0; j < w; j++) backward();
  while (r.queued > 0) r.W();
  return r.ops;
}

function baselineSchedule(
  algo: '1f1b' | 'zb1p',
  ranks: number,
  microbatches: number,
  rank: (ranks: number, microbatches: number, i: number) => ComputeOp[],
): PipelineSchedule {
  checkBaselineSize(algo === '1f1b' ? '1F1B' : 'ZB1P', ranks, microbatches);
  const compute: ComputeOp[][] = [];
  for (let i = 0; i < ranks; i++) compute.push(rank(ranks, microbatches, i));
  return {
    format: 'dsv3-pipeline-schedule/1',
    algo,
    ranks,
    stages: ranks,
    microbatches,
    microbatches_per_stream: microbatches,
    rank_chunks: Array.from({ length: ranks }, (_, i) => [{ chunk: 0, stage: i, dir: 'down' as const }]),
    compute,
  };
}

/** The 1F1B schedule (Table 2's 1F1B row: bubble (PP−1)(F+B)). */
export function oneFOneBSchedule(ranks: number, microbatches: number): PipelineSchedule {
  return baselineSchedule('1f1b', ranks, microbatches, oneFOneBRank);
}

/** The ZB1P (= ZB-H1) schedule (Table 2's ZB1P row: bubble (PP−1)(F+B−2W)). */
export function zb1pSchedule(ranks: number, microbatches: number): PipelineSchedule {
  return baselineSchedule('zb1p', ranks, microbatches, zb1pRank);
}
