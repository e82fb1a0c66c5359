/**
 * DualPipeV: the "cut-in-half" V-shaped variant of DualPipe (Sea AI Lab; DeepSeek's DualPipe
 * repository, `dualpipev.py`; the DualPipeV row of docs/DUALPIPE.md §8.1's Table 2). Not in the
 * DeepSeek-V3 paper itself (docs/DUALPIPE.md §9.8).
 *
 * R ranks, 2R stages, one stream (docs/DUALPIPE.md §2.3): a micro-batch goes down through chunk 0 of
 * ranks 0..R−1, turns on rank R−1 (chunk 0 → chunk 1, a local hand-off) and comes back up
 * through chunk 1 of ranks R−1..0; rank 0 computes the loss. Each rank runs the §6.3 program
 * with H = R, M = N, h = i, S = chunk 0, D = chunk 1 (§6.1): the same compute sequence as rank i
 * of DualPipe with 2R ranks and 2N micro-batches.
 */
import { DsvError } from '../errors.js';
import { assembleDualSchedule, type RoutedChunk } from './dualpipe.js';
import type { PipelineSchedule } from './schedule-types.js';

/** §4: DualPipeV takes any R ≥ 1 ranks and N ≥ 2R (= number of stages) micro-batches, N may be
 * odd (the bound is the reference code's, §9.1). */
export function checkDualPipeVSize(ranks: number, microbatches: number): void {
  if (!Number.isInteger(ranks) || ranks < 1) {
    throw new DsvError(`DualPipeV needs an integer number of ranks >= 1, got ${ranks}`);
  }
  if (!Number.isInteger(microbatches) || microbatches < 2 * ranks) {
    throw new DsvError(
      `DualPipeV with ${ranks} ranks (${2 * ranks} stages) needs an integer number of micro-batches >= 2 * ranks = ${2 * ranks}, got ${microbatches}`,
    );
  }
}

/** DualPipeV rank i's chunks (§2.3): chunk 0 = stage i (down), chunk 1 = stage 2R−1−i (up). On
 * the last rank the turn between them is local, so neither routes a message to the other. */
function dualPipeVChunks(ranks: number, i: number): [RoutedChunk, RoutedChunk] {
  const last = i === ranks - 1;
  return [
    { chunk: 0, stage: i, dir: 'down', prevRank: i > 0 ? i - 1 : null, nextRank: last ? null : i + 1 },
    { chunk: 1, stage: 2 * ranks - 1 - i, dir: 'up', prevRank: last ? null : i + 1, nextRank: i > 0 ? i - 1 : null },
  ];
}

/** The DualPipeV schedule for `ranks` ranks and `microbatches` micro-batches: every rank's
 * compute list and program (compute + p2p ops, docs/DUALPIPE.md §6.3). */
export function dualPipeVSchedule(ranks: number, microbatches: number): PipelineSchedule {
  checkDualPipeVSize(ranks, microbatches);
  return assembleDualSchedule('dualpipev', ranks, 2 * ranks, microbatches, microbatches,
    (i) => ({ H: ranks, M: microbatches, h: i, S: 0, D: 1, chunks: dualPipeVChunks(ranks, i) }));
}
