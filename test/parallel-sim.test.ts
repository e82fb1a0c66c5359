/**
 * The pipeline-schedule simulator (src/parallel/simulate.ts) against the golden
 * `test/fixtures/dualpipe/sim_expected.json` (docs/DUALPIPE.md §8; fixtures README, format
 * `dsv3-pipeline-sim/1`): every entry — schedule file × time setting × mode × send — reproduced
 * exactly, full timeline included. Then the Table 2 formulas (bubble.ts; DeepSeek-V3 §3.2.1,
 * Table 2) against the simulated numbers where docs/DUALPIPE.md §8.3 says they are exact, and
 * malformed schedules that must fail with a clear DsvError instead of hanging.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DsvError } from '../src/errors.js';
import { exactMakespan, exactRankBubble, table2Bubble, table2IsExact, table2Memory } from '../src/parallel/bubble.js';
import type { ComputeOp, PipelineSchedule, ProgramOp } from '../src/parallel/schedule-types.js';
import { simulateSchedule, type SimMode, type SimResult, type SimSend, type SimTimes } from '../src/parallel/simulate.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/dualpipe/', import.meta.url));

type Expected = SimResult & { time_setting: string };
const expected = JSON.parse(readFileSync(FIX + 'sim_expected.json', 'utf8')) as {
  format: string;
  time_settings: Record<string, SimTimes>;
  results: Expected[];
};

const cache = new Map<string, PipelineSchedule>();
function schedule(algo: string, ranks: number, mb: number): PipelineSchedule {
  const name = `${algo}_r${ranks}_mb${mb}.json`;
  let s = cache.get(name);
  if (s === undefined) {
    s = JSON.parse(readFileSync(FIX + 'schedules/' + name, 'utf8')) as PipelineSchedule;
    cache.set(name, s);
  }
  return structuredClone(s);
}

const run = (e: Expected): SimResult =>
  simulateSchedule(schedule(e.algo, e.ranks, e.microbatches), expected.time_settings[e.time_setting]!, e.mode as SimMode, e.send as SimSend | null);

test('sim_expected.json is the dsv3-pipeline-sim/1 format and covers every schedule file', () => {
  assert.equal(expected.format, 'dsv3-pipeline-sim/1');
  assert.equal(expected.results.length, 150);
  const named = new Set(expected.results.map((e) => `${e.algo}_r${e.ranks}_mb${e.microbatches}.json`));
  assert.deepEqual([...named].sort(), readdirSync(FIX + 'schedules').filter((f) => f.endsWith('.json')).sort());
});

for (const e of expected.results) {
  test(`simulate ${e.algo} ${e.ranks}x${e.microbatches} ${e.time_setting} ${e.mode}${e.send ? ' ' + e.send : ''} reproduces sim_expected.json`, () => {
    assert.deepEqual({ time_setting: e.time_setting, ...run(e) }, e);
  });
}

test('Table 2 formulas are exact where docs/DUALPIPE.md §8.3 says so (dataflow, latency 0)', () => {
  let checked = 0;
  for (const e of expected.results) {
    const t = expected.time_settings[e.time_setting]!;
    if (e.mode !== 'dataflow' || t.latency !== 0 || !table2IsExact(e.algo, e.stages, e.microbatches, t)) continue;
    const r = run(e);
    assert.equal(r.table2_bubble, table2Bubble(e.algo, e.stages, t));
    assert.equal(Math.max(...r.bubble), r.table2_bubble, `${e.algo} ${e.ranks}x${e.microbatches}: worst rank = Table 2`);
    assert.deepEqual(r.bubble, r.bubble.map((_, i) => exactRankBubble(e.algo, e.stages, i, t)));
    assert.equal(r.makespan, exactMakespan(e.algo, e.stages, e.microbatches, t));
    checked++;
  }
  assert.equal(checked, 44); // every T1 and T2 dataflow case is in the exact regime
});

test('peak activations match Table 2 / docs/DUALPIPE.md §8.4', () => {
  for (const e of expected.results) {
    const r = run(e);
    const act = table2Memory(e.algo, e.stages).activationsPerDevice;
    if (e.algo === '1f1b' || e.algo === 'zb1p') {
      assert.deepEqual(r.peak_activations_to_B, r.peak_activations_to_B.map((_, i) => e.stages - i)); // rank i: PP − i
      if (e.algo === 'zb1p') assert.deepEqual(r.peak_activations_to_W, r.peak_activations_to_W.map(() => act));
    } else {
      assert.deepEqual(r.peak_activations_to_B, r.peak_activations_to_B.map(() => act)); // PP + 1 on every rank
    }
  }
});

test('batched replay is never faster than dataflow, and equal at latency 0 (docs/DUALPIPE.md §8.6)', () => {
  for (const e of expected.results) {
    if (e.mode !== 'batched') continue;
    const flow = simulateSchedule(schedule(e.algo, e.ranks, e.microbatches), expected.time_settings[e.time_setting]!, 'dataflow');
    const r = run(e);
    if (e.times.latency === 0) assert.equal(r.makespan, flow.makespan);
    else assert.ok(r.makespan >= flow.makespan);
  }
});

// ---- malformed schedules ----

const T1: SimTimes = { F: 1, B: 2, W: 1, FB: 3, latency: 0 };

/** A one-chunk schedule (stage = rank) from labels: compute `F0 B0 b0 W0`, program entries also
 * `send act 0 1` (kind, mb, peer), `recv grad 0 1`, `wait`. */
function tiny(compute: string[][], program?: string[][]): PipelineSchedule {
  const mbs = new Set(compute.flat().map((l) => Number(l.slice(1))));
  const op = (l: string, rank: number): ProgramOp => {
    const [name, kind, mb, peer] = l.split(' ');
    if (name === 'wait') return { op: 'wait' };
    if (name === 'send' || name === 'recv') return { op: name, kind: kind as 'act' | 'grad', chunk: 0, mb: Number(mb), peer: Number(peer) };
    const base = { chunk: 0, mb: Number(l.slice(1)), stage: rank, dir: 'down' as const };
    if (l[0] === 'F') return { op: 'F', ...base };
    if (l[0] === 'W') return { op: 'W', ...base };
    return { op: 'B', split: l[0] === 'b', ...base };
  };
  return {
    format: 'dsv3-pipeline-schedule/1',
    algo: '1f1b',
    ranks: compute.length,
    stages: compute.length,
    microbatches: mbs.size,
    microbatches_per_stream: mbs.size,
    rank_chunks: compute.map((_, r) => [{ chunk: 0, stage: r, dir: 'down' }]),
    compute: compute.map((ls, r) => ls.map((l) => op(l, r) as ComputeOp)),
    ...(program ? { program: program.map((ls, r) => ls.map((l) => op(l, r))) } : {}),
  };
}

function throwsDsv(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DsvError, `expected a DsvError, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

test('a backward before its forward is rejected, naming rank and op', () => {
  const s = schedule('1f1b', 2, 4);
  const c = s.compute[0]!;
  c.splice(c.findIndex((o) => o.op === 'B'), 1);
  c.unshift({ op: 'B', chunk: 0, mb: 0, split: false, stage: 0, dir: 'down' });
  throwsDsv(() => simulateSchedule(s, T1, 'dataflow'), /rank 0 op 0 \(B0\) is a backward before its forward/);
});

test('a W that does not pop the oldest queued split backward is rejected', () => {
  const s = schedule('zb1p', 4, 8);
  const c = s.compute[3]!;
  const [i, j] = c.flatMap((o, k) => (o.op === 'W' ? [k] : [])).slice(0, 2) as [number, number];
  [c[i], c[j]] = [c[j]!, c[i]!];
  throwsDsv(() => simulateSchedule(s, T1, 'dataflow'), /rank 3 op \d+ \(W1\) names W1, but the oldest queued split backward is b0/);
});

test('a cyclic dataflow dependency is reported as a deadlock, not a hang', () => {
  // rank 1 runs F1 before B0, but rank 0 only produces F1 after B0, which needs rank 1's B0
  const s = tiny([['F0', 'B0', 'F1', 'B1'], ['F0', 'F1', 'B0', 'B1']]);
  throwsDsv(() => simulateSchedule(s, T1, 'dataflow'), /deadlock.*rank 0 at op 1 \(B0\) waits for the backward of stage 1, mb 0 \(rank 1\).*rank 1 at op 1 \(F1\)/);
});

test('batched: a receive of a message that is never sent is rejected', () => {
  const s = schedule('dualpipe', 2, 4);
  const prog = s.program![0]!;
  const last = prog.map((o) => o.op === 'send' && o.peer === 1).lastIndexOf(true);
  prog.splice(last, 1);
  throwsDsv(() => simulateSchedule(s, T1, 'batched', 'rendezvous'), /rank 1 posts recv \w+\(chunk \d, mb \d\) from rank 0 .*a message rank 0 never sends/);
  const s2 = schedule('dualpipe', 2, 4);
  s2.program![0]!.splice(s2.program![0]!.findIndex((o) => o.op === 'send'), 1);
  throwsDsv(() => simulateSchedule(s2, T1, 'batched', 'eager'), /message 0 from rank 0 to rank 1 is sent as .* but received as/);
});

test('batched: waits that block each other are reported as a deadlock (rendezvous and eager)', () => {
  const compute = [['F0', 'B0'], ['F0', 'B0']];
  const ok = tiny(compute, [
    ['F0', 'send act 0 1', 'wait', 'recv grad 0 1', 'wait', 'B0'],
    ['recv act 0 0', 'wait', 'F0', 'B0', 'send grad 0 0', 'wait'],
  ]);
  // F0 [0,1] on rank 0, F0 [1,2] and B0 [2,4] on rank 1, B0 [4,6] on rank 0
  assert.equal(simulateSchedule(ok, T1, 'batched').makespan, 6);
  const bad = tiny(compute, [
    ['F0', 'recv grad 0 1', 'wait', 'send act 0 1', 'wait', 'B0'],
    ['recv act 0 0', 'wait', 'F0', 'B0', 'send grad 0 0', 'wait'],
  ]);
  for (const send of ['rendezvous', 'eager'] as const) {
    throwsDsv(() => simulateSchedule(bad, T1, 'batched', send), /deadlock: rank 0 blocked at program entry 2 \(wait\), whose recv grad\(chunk 0, mb 0\) from rank 1.*rank 1 blocked/);
  }
});

test('batched: computing on data not yet received is rejected', () => {
  const s = tiny([['F0', 'B0'], ['F0', 'B0']], [
    ['F0', 'send act 0 1', 'wait', 'recv grad 0 1', 'wait', 'B0'],
    ['F0', 'recv act 0 0', 'wait', 'B0', 'send grad 0 0', 'wait'],
  ]);
  throwsDsv(() => simulateSchedule(s, T1, 'batched'), /rank 1 runs F0 \(program entry 0\) before receiving its act\(chunk 0, mb 0\) from rank 0/);
  throwsDsv(() => simulateSchedule(s, T1, 'dataflow', 'eager'), /batched mode only/);
  throwsDsv(() => simulateSchedule(tiny([['F0', 'B0']]), T1, 'batched'), /needs the schedule's program/);
});

test('times must lie on an exact grid and W must not exceed B', () => {
  const s = schedule('1f1b', 2, 4);
  throwsDsv(() => simulateSchedule(s, { ...T1, F: Math.PI }, 'dataflow'), /not multiples of a common 1\/n/);
  throwsDsv(() => simulateSchedule(s, { ...T1, W: 3 }, 'dataflow'), /W <= B/);
  throwsDsv(() => simulateSchedule(s, { ...T1, latency: -1 }, 'dataflow'), /latency must be a finite number >= 0/);
  assert.equal(simulateSchedule(s, { F: 0.1, B: 0.2, W: 0.1, FB: 0.3, latency: 0 }, 'dataflow').makespan, 1.5); // (N+PP−1)(F+B), grid 1/10
  assert.equal(simulateSchedule(s, { ...T1, F: 1 / 3 }, 'dataflow').makespan, 35 / 3); // grid 1/3
});
