/**
 * Pipeline schedules as data: the per-rank operation lists of DualPipe, DualPipeV, 1F1B and
 * ZB1P (DeepSeek-V3 report §3.2.1, Figure 5, Table 2; specification: docs/DUALPIPE.md), in the
 * format of the golden files `test/fixtures/dualpipe/schedules/*.json`
 * (`format: "dsv3-pipeline-schedule/1"`). The generators (dualpipe.ts, ...) produce it, the
 * simulator (simulate.ts) and the pipeline runtime consume it.
 */

export type PipelineAlgo = 'dualpipe' | 'dualpipev' | '1f1b' | 'zb1p';
/** "down": activations flow from rank r to rank r+1; "up": from rank r to rank r-1. Chunk 0 is
 * always down, chunk 1 always up. */
export type StreamDir = 'down' | 'up';

/** A chunk held by a rank: its local index (0 or 1; always 0 for 1F1B/ZB1P), the stage it is
 * (position in the pipeline its micro-batches traverse, 0 = reads the input) and its direction. */
export interface RankChunk {
  chunk: number;
  stage: number;
  dir: StreamDir;
}

/** One chunk on one micro-batch (mb counts within the chunk's stream, from 0). */
export interface ChunkMb extends RankChunk {
  mb: number;
}

/** Forward of a chunk on a micro-batch. */
export interface FOp extends ChunkMb {
  op: 'F';
}
/** Backward: full (input + weight gradients) when split is false; with split true only the input
 * gradient, its weight-gradient work queued for a later W. */
export interface BOp extends ChunkMb {
  op: 'B';
  split: boolean;
}
/** Weight gradient of the oldest queued split B of this rank (FIFO over both chunks); chunk/mb
 * name which one it is. */
export interface WOp extends ChunkMb {
  op: 'W';
}
/** Forward of f overlapped with the full backward of b (two different chunks of the rank). */
export interface FBOp {
  op: 'FB';
  f: ChunkMb;
  b: ChunkMb;
}
export type ComputeOp = FOp | BOp | WOp | FBOp;

/** Point-to-point entries of a rank's program (docs/DUALPIPE.md §5.4): post a receive or a send of an
 * activation ("act", output of F) or an input gradient ("grad", output of B) of (chunk, mb) from
 * or to rank `peer`; `wait` issues every posted op as one batch and blocks until all complete. */
export interface P2pOp {
  op: 'recv' | 'send';
  kind: 'act' | 'grad';
  chunk: number;
  mb: number;
  peer: number;
}
export interface WaitOp {
  op: 'wait';
}
export type ProgramOp = ComputeOp | P2pOp | WaitOp;

/** A whole schedule (the fixture file format). */
export interface PipelineSchedule {
  format: 'dsv3-pipeline-schedule/1';
  algo: PipelineAlgo;
  ranks: number;
  /** distinct model stages: ranks, except dualpipev: 2 * ranks */
  stages: number;
  /** micro-batches in one step, all streams together */
  microbatches: number;
  /** dualpipe: microbatches / 2 per direction; otherwise = microbatches */
  microbatches_per_stream: number;
  rank_chunks: RankChunk[][];
  /** each rank's compute ops, in execution order */
  compute: ComputeOp[][];
  /** dualpipe and dualpipev only: compute ops interleaved with the p2p ops */
  program?: ProgramOp[][];
}
