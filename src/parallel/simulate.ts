/**
 * Discrete-event simulator of a pipeline schedule (docs/DUALPIPE.md §5, §8; fixtures README
 * "Simulator output", format `dsv3-pipeline-sim/1`): per-op durations in, per-rank timeline,
 * makespan, busy time, bubble and peak activations out, for DualPipe / DualPipeV (DeepSeek-V3
 * report §3.2.1, Figure 5), 1F1B and ZB1P, next to the Table 2 bubble (bubble.ts).
 *
 * Two execution models:
 * - `dataflow`: each rank runs its `compute` list in order; an op starts when the rank is free
 *   and its inputs have arrived (docs/DUALPIPE.md §5.1): F needs the F of the previous stage (same
 *   stream and micro-batch), B the local F (earlier in the list) and, unless last stage, the B of
 *   the next stage; W its B; FB both. A producer on another rank adds `latency`. This is the
 *   "send eagerly, block only on needed receives" runtime of §5.4 / §10.
 * - `batched`: replays `program`, the reference runtime protocol of §5.4: posts are instant, a
 *   `wait` issues every posted p2p op at the rank's current time and completes when all of them
 *   have; compute ops run back to back. `rendezvous` (NCCL-like, default): a message completes at
 *   max(send issue, recv issue) + latency on both sides; `eager`: the send completes at its issue,
 *   the receive at max(recv issue, send issue + latency). The k-th send a → b matches the k-th
 *   receive b ← a (§5.4 invariant: one FIFO channel per directed rank pair).
 *
 * Times are simulated on an exact integer grid (time-grid.ts). Malformed schedules (a backward
 * before its forward, a W popping the wrong queued backward, unmatched messages, a program that
 * uses data it has not received) and deadlocks raise a DsvError naming the rank and the op.
 */
import { DsvError } from '../errors.js';
import { table2Bubble } from './bubble.js';
import type { ComputeOp, P2pOp, PipelineAlgo, PipelineSchedule, ProgramOp } from './schedule-types.js';
import { TimeGrid } from './time-grid.js';
import { type Ctx, makeCtx, neighbor, type Op, p2pName, type Part, part, resolve, tag } from './sim-ops.js';

/** Op durations (F, full B, W, overlapped pair FB; a split b costs B − W) and the p2p latency. */
export interface SimTimes {
  F: number;
  B: number;
  W: number;
  FB: number;
  latency: number;
}
export type SimMode = 'dataflow' | 'batched';
export type SimSend = 'rendezvous' | 'eager';
/** [start, end, label]; labels `F3`, `b2'`, `W0`, `F3&B1'` (trailing ' = chunk 1). */
export type TimelineEntry = [number, number, string];

/** One result record of `sim_expected.json` (without its `time_setting` name). */
export interface SimResult {
  algo: PipelineAlgo;
  ranks: number;
  stages: number;
  microbatches: number;
  mode: SimMode;
  send: SimSend | null;
  times: SimTimes;
  makespan: number;
  busy: number[];
  finish: number[];
  bubble: number[];
  table2_bubble: number;
  peak_activations_to_B: number[];
  peak_activations_to_W: number[];
  timeline: TimelineEntry[][];
}

/**
 * Per-rank order checks (F before its backward, each once; every W pops the oldest queued split
 * backward, FIFO over both chunks, docs/DUALPIPE.md §5.1) and peak live activations (§8.4): a
 * (chunk, mb) is alive from the start of its F to the end of its backward (`toB`), or to the end
 * of its W when split (`toW`). Ops of a rank do not overlap, so the op order decides the peak.
 */
function checkOrder(rank: number, ops: Op[]): { toB: number; toW: number } {
  const fDone = new Set<string>();
  const bDone = new Set<string>();
  const queue: Part[] = [];
  let aliveB = 0, aliveW = 0, toB = 0, toW = 0;
  ops.forEach((op, i) => {
    const at = `rank ${rank} op ${i} (${op.label})`;
    if (op.f) {
      const k = tag(op.f);
      if (fDone.has(k)) throw new DsvError(`schedule: ${at} repeats the forward of chunk ${op.f.chunk} mb ${op.f.mb}`);
      fDone.add(k);
      toB = Math.max(toB, ++aliveB);
      toW = Math.max(toW, ++aliveW);
    }
    if (op.b) {
      const k = tag(op.b);
      if (!fDone.has(k)) throw new DsvError(`schedule: ${at} is a backward before its forward (no earlier F${k} on rank ${rank})`);
      if (bDone.has(k)) throw new DsvError(`schedule: ${at} repeats the backward of chunk ${op.b.chunk} mb ${op.b.mb}`);
      bDone.add(k);
      aliveB--;
      if (op.b.split) queue.push(op.b);
      else aliveW--;
    }
    if (op.w) {
      const head = queue.shift();
      if (head === undefined) throw new DsvError(`schedule: ${at} has no queued split backward to pop`);
      if (head.chunk !== op.w.chunk || head.mb !== op.w.mb) throw new DsvError(`schedule: ${at} names W${tag(op.w)}, but the oldest queued split backward is b${tag(head)}`);
      aliveW--;
    }
  });
  if (queue.length > 0) throw new DsvError(`schedule: rank ${rank} ends with split backwards never followed by a W: ${queue.map((p) => 'b' + tag(p)).join(' ')}`);
  return { toB, toW };
}

interface RankRun {
  timeline: [number, number, string][];
  finish: number;
}

/** `dataflow` mode: as-soon-as-possible execution of each rank's compute list (ticks). */
function runDataflow(ctx: Ctx, ops: Op[][], lat: number): RankRun[] {
  const fEnd = new Map<string, number>();
  const bEnd = new Map<string, number>();
  const key = (p: Part, stage: number): string => `${p.stream}/${stage}/${p.mb}`;
  const runs: RankRun[] = ops.map(() => ({ timeline: [], finish: 0 }));
  const pc = ops.map(() => 0);
  /** Earliest start allowed by the inputs of `op` on `rank`, or a description of the missing one. */
  const ready = (rank: number, op: Op): number | string => {
    let t = 0;
    const need = (p: Part, delta: number, ends: Map<string, number>, what: string): string | null => {
      const from = neighbor(ctx, p, delta);
      if (from === null) return null;
      const end = ends.get(key(p, p.stage + delta));
      if (end === undefined) return `${what} of stage ${p.stage + delta}, mb ${p.mb} (rank ${from})`;
      t = Math.max(t, end + (from !== rank ? lat : 0));
      return null;
    };
    const miss = (op.f && need(op.f, -1, fEnd, 'the forward')) || (op.b && need(op.b, +1, bEnd, 'the backward'));
    return miss || t;
  };
  for (;;) {
    let progress = false;
    ops.forEach((list, rank) => {
      const run = runs[rank]!;
      while (pc[rank]! < list.length) {
        const op = list[pc[rank]!]!;
        const r = ready(rank, op);
        if (typeof r === 'string') break;
        const start = Math.max(run.finish, r);
        run.finish = start + op.dur;
        run.timeline.push([start, run.finish, op.label]);
        if (op.f) fEnd.set(key(op.f, op.f.stage), run.finish);
        if (op.b) bEnd.set(key(op.b, op.b.stage), run.finish);
        pc[rank]!++;
        progress = true;
      }
    });
    if (ops.every((list, rank) => pc[rank] === list.length)) return runs;
    if (!progress) {
      const stuck = ops.flatMap((list, rank) => (pc[rank]! < list.length ? [`rank ${rank} at op ${pc[rank]} (${list[pc[rank]!]!.label}) waits for ${String(ready(rank, list[pc[rank]!]!))}`] : []));
      throw new DsvError(`pipeline simulator (dataflow): deadlock, no op can start: ${stuck.join('; ')}`);
    }
  }
}

interface Posted {
  op: P2pOp;
  /** `ch#index`: the directed channel and the message's position on it */
  msg: string;
  issue?: number;
}

/** Static pairing of the p2p posts (§5.4 invariant): returns each post's channel key per rank. */
function pairMessages(ctx: Ctx, program: ProgramOp[][]): (string | null)[][] {
  const sends = new Map<string, P2pOp[]>();
  const recvs = new Map<string, P2pOp[]>();
  const keys = program.map((prog, rank) =>
    prog.map((op) => {
      if (op.op !== 'send' && op.op !== 'recv') return null;
      if (!Number.isInteger(op.peer) || op.peer < 0 || op.peer >= ctx.s.ranks || op.peer === rank) {
        throw new DsvError(`schedule: rank ${rank} posts ${p2pName(op)}, not another rank of 0..${ctx.s.ranks - 1}`);
      }
      const ch = op.op === 'send' ? `${rank}>${op.peer}` : `${op.peer}>${rank}`;
      const table = op.op === 'send' ? sends : recvs;
      const list = table.get(ch) ?? [];
      table.set(ch, list);
      list.push(op);
      return `${ch}#${list.length - 1}`;
    }),
  );
  for (const ch of new Set([...sends.keys(), ...recvs.keys()])) {
    const [a, b] = ch.split('>');
    const ss = sends.get(ch) ?? [];
    const rs = recvs.get(ch) ?? [];
    for (let k = 0; k < Math.max(ss.length, rs.length); k++) {
      const s = ss[k], r = rs[k];
      if (r === undefined) throw new DsvError(`schedule: rank ${a} posts ${p2pName(s!)} (its message ${k} to rank ${b}), which rank ${b} never receives`);
      if (s === undefined) throw new DsvError(`schedule: rank ${b} posts ${p2pName(r)} (its receive ${k} from rank ${a}), a message rank ${a} never sends`);
      if (s.kind !== r.kind || s.chunk !== r.chunk || s.mb !== r.mb) {
        throw new DsvError(`schedule: message ${k} from rank ${a} to rank ${b} is sent as ${s.kind}(chunk ${s.chunk}, mb ${s.mb}) but received as ${r.kind}(chunk ${r.chunk}, mb ${r.mb})`);
      }
    }
  }
  return keys;
}

/** `batched` mode: replay of the reference p2p protocol (docs/DUALPIPE.md §5.4), in ticks. */
function runBatched(ctx: Ctx, program: ProgramOp[][], ops: Op[][], send: SimSend, lat: number, d: Parameters<typeof resolve>[4]): RankRun[] {
  const keys = pairMessages(ctx, program);
  const sendIssue = new Map<string, number>();
  const recvIssue = new Map<string, number>();
  // every program ends with a final wait (§5.4); an empty wait does nothing
  const progs = program.map((p) => [...p, { op: 'wait' } as ProgramOp]);
  const st = progs.map(() => ({ pc: 0, time: 0, n: 0, pending: [] as Posted[], timeline: [] as [number, number, string][], have: new Set<string>(), done: new Set<string>() }));
  /** Completion tick of a posted op, or undefined while its peer has not issued the match. */
  const completion = (p: Posted): number | undefined => {
    const own = p.issue!;
    if (p.op.op === 'send') {
      if (send === 'eager') return own;
      const peer = recvIssue.get(p.msg);
      return peer === undefined ? undefined : Math.max(own, peer) + lat;
    }
    const peer = sendIssue.get(p.msg);
    if (peer === undefined) return undefined;
    return send === 'eager' ? Math.max(own, peer + lat) : Math.max(own, peer) + lat;
  };
  const where = (rank: number): string => {
    const s = st[rank]!;
    const op = progs[rank]![s.pc]!;
    if (op.op !== 'wait') return `entry ${s.pc} (${op.op})`;
    const open = s.pending.filter((p) => completion(p) === undefined).map((p) => p2pName(p.op));
    return `entry ${s.pc} (wait), whose ${open.join(', ')} has no issued match yet`;
  };
  for (;;) {
    let progress = false;
    progs.forEach((prog, rank) => {
      const s = st[rank]!;
      while (s.pc < prog.length) {
        const op = prog[s.pc]!;
        if (op.op === 'send' || op.op === 'recv') {
          const c = part(ctx, rank, op, `rank ${rank} program entry ${s.pc} (${op.op})`);
          const delta = (op.op === 'send') === (op.kind === 'act') ? +1 : -1;
          if (neighbor(ctx, c, delta) !== op.peer) throw new DsvError(`schedule: rank ${rank} posts ${p2pName(op)}, but that message belongs to rank ${neighbor(ctx, c, delta)}`);
          if (op.op === 'send' && !s.done.has(`${op.kind}/${tag(op)}`)) {
            throw new DsvError(`schedule: rank ${rank} posts ${p2pName(op)} before computing it`);
          }
          s.pending.push({ op, msg: keys[rank]![s.pc]! });
        } else if (op.op === 'wait') {
          for (const p of s.pending) {
            if (p.issue !== undefined) continue;
            p.issue = s.time;
            (p.op.op === 'send' ? sendIssue : recvIssue).set(p.msg, s.time);
            progress = true;
          }
          const ends = s.pending.map(completion);
          if (ends.some((e) => e === undefined)) return;
          s.time = Math.max(s.time, ...(ends as number[]));
          for (const p of s.pending) if (p.op.op === 'recv') s.have.add(`${p.op.kind}/${tag(p.op)}`);
          s.pending = [];
        } else {
          const o = ops[rank]![s.n++];
          const label = resolve(ctx, rank, op as ComputeOp, s.pc, d).label;
          if (o === undefined || o.label !== label) {
            throw new DsvError(`schedule: rank ${rank} program entry ${s.pc} (${label}) differs from compute op ${s.n - 1} (${o?.label ?? 'none'})`);
          }
          const needs: [Part | undefined, number, string][] = [[o.f, -1, 'act'], [o.b, +1, 'grad']];
          for (const [p, delta, kind] of needs) {
            const from = p && neighbor(ctx, p, delta);
            if (p && from !== null && from !== rank && !s.have.has(`${kind}/${tag(p)}`)) {
              throw new DsvError(`schedule: rank ${rank} runs ${o.label} (program entry ${s.pc}) before receiving its ${kind}(chunk ${p.chunk}, mb ${p.mb}) from rank ${from}`);
            }
          }
          s.timeline.push([s.time, s.time + o.dur, o.label]);
          s.time += o.dur;
          if (o.f) s.done.add(`act/${tag(o.f)}`);
          if (o.b) s.done.add(`grad/${tag(o.b)}`);
        }
        s.pc++;
        progress = true;
      }
    });
    if (st.every((s, rank) => s.pc === progs[rank]!.length)) break;
    if (!progress) {
      const stuck = st.flatMap((s, rank) => (s.pc < progs[rank]!.length ? [`rank ${rank} blocked at program ${where(rank)}`] : []));
      throw new DsvError(`pipeline simulator (batched, ${send}): deadlock: ${stuck.join('; ')}`);
    }
  }
  st.forEach((s, rank) => {
    if (s.n !== ops[rank]!.length) throw new DsvError(`schedule: rank ${rank} program runs ${s.n} compute ops, its compute list has ${ops[rank]!.length}`);
  });
  return st.map((s) => ({ timeline: s.timeline, finish: s.time }));
}

/**
 * Simulate one step of `schedule` (docs/DUALPIPE.md §5, §8) with the given op durations, in `dataflow`
 * or `batched` mode (`send` defaults to `rendezvous` in batched mode; must be absent in dataflow).
 */
export function simulateSchedule(schedule: PipelineSchedule, times: SimTimes, mode: SimMode, send?: SimSend | null): SimResult {
  if (mode !== 'dataflow' && mode !== 'batched') throw new DsvError(`pipeline simulator: mode must be "dataflow" or "batched", got ${String(mode)}`);
  if (mode === 'dataflow' && send != null) throw new DsvError('pipeline simulator: "send" applies to batched mode only');
  const sendMode: SimSend | null = mode === 'batched' ? (send ?? 'rendezvous') : null;
  if (sendMode !== null && sendMode !== 'rendezvous' && sendMode !== 'eager') throw new DsvError(`pipeline simulator: send must be "rendezvous" or "eager", got ${String(sendMode)}`);
  const grid = new TimeGrid({ F: times.F, B: times.B, W: times.W, FB: times.FB, latency: times.latency });
  const t = { F: grid.ticks(times.F), B: grid.ticks(times.B), W: grid.ticks(times.W), FB: grid.ticks(times.FB) };
  if (t.W > t.B) throw new DsvError(`pipeline simulator: W (${times.W}) is part of the full backward B (${times.B}), so W <= B`);
  const d = { ...t, b: t.B - t.W };
  const ctx = makeCtx(schedule);
  const ops = schedule.compute.map((list, rank) => list.map((op, i) => resolve(ctx, rank, op, i, d)));
  const peaks = ops.map((list, rank) => checkOrder(rank, list));
  const lat = grid.ticks(times.latency);
  let runs: RankRun[];
  if (sendMode === null) runs = runDataflow(ctx, ops, lat);
  else {
    const program = schedule.program;
    if (!Array.isArray(program) || program.length !== schedule.ranks) throw new DsvError(`pipeline simulator: batched mode needs the schedule's program (one list per rank); ${schedule.algo} has none`);
    runs = runBatched(ctx, program, ops, sendMode, lat, d);
  }
  const busy = ops.map((list) => list.reduce((a, o) => a + o.dur, 0));
  const makespan = Math.max(0, ...runs.map((r) => r.finish));
  return {
    algo: schedule.algo,
    ranks: schedule.ranks,
    stages: schedule.stages,
    microbatches: schedule.microbatches,
    mode,
    send: sendMode,
    times: { F: times.F, B: times.B, W: times.W, FB: times.FB, latency: times.latency },
    makespan: grid.time(makespan),
    busy: busy.map((b) => grid.time(b)),
    finish: runs.map((r) => grid.time(r.finish)),
    bubble: busy.map((b) => grid.time(makespan - b)),
    table2_bubble: grid.time(table2Bubble(schedule.algo, schedule.stages, t)),
    peak_activations_to_B: peaks.map((p) => p.toB),
    peak_activations_to_W: peaks.map((p) => p.toW),
    timeline: runs.map((r) => r.timeline.map(([a, b, l]): TimelineEntry => [grid.time(a), grid.time(b), l])),
  };
}

/**
 * Dataflow replay (as `dataflow` mode, latency `latency`) of `schedule` with each compute op's own
 * duration, `durations[rank][i]` for op i of the rank's compute list, in integer ticks (e.g. µs
 * of a measured run): the step a runtime with no messaging cost would take with those op times
 * (the comparison of measured and simulated timelines that docs/DUALPIPE.md §10 asks for).
 */
export function replaySchedule(schedule: PipelineSchedule, durations: readonly (readonly number[])[], latency = 0): { makespan: number; finish: number[]; busy: number[]; timeline: TimelineEntry[][] } {
  const ctx = makeCtx(schedule);
  const zero = { F: 0, B: 0, b: 0, W: 0, FB: 0 };
  const ops = schedule.compute.map((list, rank) => {
    const d = durations[rank];
    if (!d || d.length !== list.length) throw new DsvError(`pipeline replay: rank ${rank} has ${list.length} compute ops, ${d?.length ?? 0} durations given`);
    return list.map((op, i) => {
      const dur = d[i]!;
      if (!Number.isSafeInteger(dur) || dur < 0) throw new DsvError(`pipeline replay: rank ${rank} op ${i}: duration must be an integer number of ticks >= 0, got ${dur}`);
      return { ...resolve(ctx, rank, op, i, zero), dur };
    });
  });
  ops.forEach((list, rank) => checkOrder(rank, list));
  if (!Number.isSafeInteger(latency) || latency < 0) throw new DsvError(`pipeline replay: latency must be an integer number of ticks >= 0, got ${latency}`);
  const runs = runDataflow(ctx, ops, latency);
  return {
    makespan: Math.max(0, ...runs.map((r) => r.finish)),
    finish: runs.map((r) => r.finish),
    busy: ops.map((list) => list.reduce((a, o) => a + o.dur, 0)),
    timeline: runs.map((r) => r.timeline.map(([a, b, l]): TimelineEntry => [a, b, l])),
  };
}
