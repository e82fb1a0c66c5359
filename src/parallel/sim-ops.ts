/**
 * The simulator's view of a schedule (simulate.ts): each compute op resolved against the
 * placement of its rank's chunks (docs/DUALPIPE.md §2, §5.1) into the parts it forwards, backs
 * through or applies weight gradients for, with its duration; and the neighbouring stage's rank
 * of a part. Malformed ops (a chunk the rank does not hold, a wrong stage, a micro-batch out of
 * range, an F&B of one chunk) raise a DsvError naming the rank and the op.
 */
import { DsvError } from '../errors.js';
import type { ComputeOp, P2pOp, PipelineSchedule } from './schedule-types.js';

/** One chunk of one micro-batch, placed in its stream. */
export interface Part {
  chunk: number;
  mb: number;
  stream: number;
  stage: number;
}
/** A compute op resolved against its rank's chunks; durations in ticks. */
export interface Op {
  label: string;
  dur: number;
  f?: Part;
  b?: Part & { split: boolean };
  w?: Part;
}
export interface Ctx {
  s: PipelineSchedule;
  /** `stream/stage` → the rank and chunk holding it */
  where: Map<string, { rank: number; chunk: number }>;
  lastStage: number;
}

export const tag = (c: { chunk: number; mb: number }): string => `${c.mb}${c.chunk === 1 ? "'" : ''}`;
export const p2pName = (p: P2pOp): string => `${p.op} ${p.kind}(chunk ${p.chunk}, mb ${p.mb}) ${p.op === 'send' ? 'to' : 'from'} rank ${p.peer}`;

/** DualPipe has one stream per chunk (docs/DUALPIPE.md §2.2); the other schedules one stream. */
export function streamOf(s: PipelineSchedule, chunk: number): number {
  return s.algo === 'dualpipe' ? chunk : 0;
}

export function makeCtx(s: PipelineSchedule): Ctx {
  if (!Number.isInteger(s.ranks) || s.ranks < 1) throw new DsvError(`schedule: ranks must be an integer >= 1, got ${s.ranks}`);
  for (const field of ['rank_chunks', 'compute'] as const) {
    if (!Array.isArray(s[field]) || s[field].length !== s.ranks) throw new DsvError(`schedule: ${field} must have one entry per rank (${s.ranks})`);
  }
  const where = new Map<string, { rank: number; chunk: number }>();
  s.rank_chunks.forEach((chunks, rank) => {
    for (const rc of chunks) {
      const key = `${streamOf(s, rc.chunk)}/${rc.stage}`;
      if (where.has(key)) throw new DsvError(`schedule: stage ${rc.stage} of stream ${streamOf(s, rc.chunk)} is held twice (rank ${rank} chunk ${rc.chunk})`);
      where.set(key, { rank, chunk: rc.chunk });
    }
  });
  return { s, where, lastStage: s.stages - 1 };
}

/** The rank holding the stage `delta` away from `p` in its stream (null past either end). */
export function neighbor(ctx: Ctx, p: Part, delta: number): number | null {
  const stage = p.stage + delta;
  if (stage < 0 || stage > ctx.lastStage) return null;
  const at = ctx.where.get(`${p.stream}/${stage}`);
  if (at === undefined) throw new DsvError(`schedule: no rank holds stage ${stage} of stream ${p.stream}`);
  return at.rank;
}

export function part(ctx: Ctx, rank: number, c: { chunk: number; mb: number; stage?: number }, where: string): Part {
  const rc = ctx.s.rank_chunks[rank]!.find((x) => x.chunk === c.chunk);
  if (rc === undefined) throw new DsvError(`schedule: ${where} uses chunk ${c.chunk}, which rank ${rank} does not hold`);
  if (c.stage !== undefined && c.stage !== rc.stage) throw new DsvError(`schedule: ${where} names stage ${c.stage}, but chunk ${c.chunk} of rank ${rank} is stage ${rc.stage}`);
  if (!Number.isInteger(c.mb) || c.mb < 0 || c.mb >= ctx.s.microbatches_per_stream) {
    throw new DsvError(`schedule: ${where} has micro-batch ${c.mb}, outside 0..${ctx.s.microbatches_per_stream - 1}`);
  }
  return { chunk: c.chunk, mb: c.mb, stream: streamOf(ctx.s, c.chunk), stage: rc.stage };
}

export function resolve(ctx: Ctx, rank: number, op: ComputeOp, i: number, d: { F: number; B: number; b: number; W: number; FB: number }): Op {
  const where = `rank ${rank} compute op ${i} (${op.op})`;
  switch (op.op) {
    case 'F':
      return { label: `F${tag(op)}`, dur: d.F, f: part(ctx, rank, op, where) };
    case 'B':
      return { label: `${op.split ? 'b' : 'B'}${tag(op)}`, dur: op.split ? d.b : d.B, b: { ...part(ctx, rank, op, where), split: op.split } };
    case 'W':
      return { label: `W${tag(op)}`, dur: d.W, w: part(ctx, rank, op, where) };
    case 'FB':
      if (op.f.chunk === op.b.chunk) throw new DsvError(`schedule: ${where} pairs two ops of chunk ${op.f.chunk}; F&B overlaps two different chunks (docs/DUALPIPE.md §5.2)`);
      return { label: `F${tag(op.f)}&B${tag(op.b)}`, dur: d.FB, f: part(ctx, rank, op.f, where), b: { ...part(ctx, rank, op.b, where), split: false } };
    default:
      throw new DsvError(`schedule: ${where} is not a compute op`);
  }
}

