/**
 * Pipeline schedules by name (DeepSeek-V3 report §3.2.1, Table 2; specification: docs/DUALPIPE.md):
 * `buildSchedule` dispatches to the generators, `checkScheduleSize` enforces the constraints of
 * docs/DUALPIPE.md §4, and `checkP2pPairing` verifies the message invariant of docs/DUALPIPE.md §5.4.
 */
import { DsvError } from '../errors.js';
import { checkBaselineSize, oneFOneBSchedule, zb1pSchedule } from './baselines.js';
import { checkDualPipeSize, dualPipeSchedule } from './dualpipe.js';
import { checkDualPipeVSize, dualPipeVSchedule } from './dualpipev.js';
import type { P2pOp, PipelineAlgo, PipelineSchedule } from './schedule-types.js';

export const PIPELINE_ALGOS: readonly PipelineAlgo[] = ['dualpipe', 'dualpipev', '1f1b', 'zb1p'];

function checkAlgo(algo: string): asserts algo is PipelineAlgo {
  if (!(PIPELINE_ALGOS as readonly string[]).includes(algo)) {
    throw new DsvError(`unknown pipeline schedule "${algo}", expected one of ${PIPELINE_ALGOS.join(', ')}`);
  }
}

/**
 * Throws a DsvError naming the value at fault when (ranks, microbatches) is not allowed for the
 * schedule (docs/DUALPIPE.md §4): DualPipe PP even ≥ 2 and N even ≥ 2·PP; DualPipeV R ≥ 1 and N ≥ 2R;
 * 1F1B and ZB1P PP ≥ 1 and N ≥ 1.
 */
export function checkScheduleSize(algo: string, ranks: number, microbatches: number): void {
  checkAlgo(algo);
  switch (algo) {
    case 'dualpipe':
      return checkDualPipeSize(ranks, microbatches);
    case 'dualpipev':
      return checkDualPipeVSize(ranks, microbatches);
    case '1f1b':
      return checkBaselineSize('1F1B', ranks, microbatches);
    case 'zb1p':
      return checkBaselineSize('ZB1P', ranks, microbatches);
  }
}

/** The schedule `algo` for `ranks` pipeline ranks and `microbatches` micro-batches per step. */
export function buildSchedule(algo: string, ranks: number, microbatches: number): PipelineSchedule {
  checkScheduleSize(algo, ranks, microbatches);
  switch (algo as PipelineAlgo) {
    case 'dualpipe':
      return dualPipeSchedule(ranks, microbatches);
    case 'dualpipev':
      return dualPipeVSchedule(ranks, microbatches);
    case '1f1b':
      return oneFOneBSchedule(ranks, microbatches);
    case 'zb1p':
      return zb1pSchedule(ranks, microbatches);
  }
}

function describe(m: P2pOp | undefined): string {
  return m === undefined ? 'nothing' : `${m.kind} of (chunk ${m.chunk}, mb ${m.mb})`;
}

/**
 * Verifies the invariant of docs/DUALPIPE.md §5.4: for every directed rank pair (a, b), the sequence
 * of (kind, chunk, mb) that a posts as sends to b equals the sequence b posts as receives from
 * a, so one FIFO channel per directed pair carries every message in order. Also checks that
 * every peer is another rank of the pipeline. Throws a DsvError describing the first mismatch.
 * Schedules without a program (1F1B, ZB1P) have no p2p ops and pass.
 */
export function checkP2pPairing(schedule: PipelineSchedule): void {
  const program = schedule.program;
  if (program === undefined) return;
  const n = schedule.ranks;
  if (program.length !== n) throw new DsvError(`${schedule.algo} schedule: program has ${program.length} ranks, expected ${n}`);
  // sends[a][b]: what a sends to b; recvs[b][a]: what b receives from a.
  const sends: P2pOp[][][] = Array.from({ length: n }, () => Array.from({ length: n }, () => []));
  const recvs: P2pOp[][][] = Array.from({ length: n }, () => Array.from({ length: n }, () => []));
  for (let r = 0; r < n; r++) {
    for (const op of program[r]!) {
      if (op.op !== 'send' && op.op !== 'recv') continue;
      if (!Number.isInteger(op.peer) || op.peer < 0 || op.peer >= n || op.peer === r) {
        throw new DsvError(`${schedule.algo} schedule: rank ${r} posts a ${op.op} with peer ${op.peer}, expected another rank in 0..${n - 1}`);
      }
      (op.op === 'send' ? sends : recvs)[r]![op.peer]!.push(op);
    }
  }
  for (let a = 0; a < n; a++) {
    for (let b = 0; b < n; b++) {
      const s = sends[a]![b]!;
      const rv = recvs[b]![a]!;
      for (let k = 0; k < Math.max(s.length, rv.length); k++) {
        const x = s[k];
        const y = rv[k];
        if (x === undefined || y === undefined || x.kind !== y.kind || x.chunk !== y.chunk || x.mb !== y.mb) {
          throw new DsvError(
            `${schedule.algo} schedule (${n} ranks, ${schedule.microbatches} mb): message ${k} from rank ${a} to rank ${b} is sent as ${describe(x)} but received as ${describe(y)}`,
          );
        }
      }
    }
  }
}
