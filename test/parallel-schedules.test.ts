/**
 * Pipeline-schedule generators (DualPipe, DualPipeV, 1F1B, ZB1P; docs/DUALPIPE.md §6, §7) against
 * the golden schedules in test/fixtures/dualpipe/schedules, plus the constraints of §4, the
 * p2p pairing invariant of §5.4 and the DualPipeV ↔ DualPipe equivalence of §2.3.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DsvError } from '../src/errors.js';
import { dualPipeSchedule } from '../src/parallel/dualpipe.js';
import { dualPipeVSchedule } from '../src/parallel/dualpipev.js';
import { buildSchedule, checkP2pPairing, checkScheduleSize } from '../src/parallel/schedules.js';
import type { ChunkMb, ComputeOp, PipelineSchedule, ProgramOp } from '../src/parallel/schedule-types.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/dualpipe/schedules/', import.meta.url));
const files = readdirSync(FIX).filter((f) => f.endsWith('.json')).sort();

function isCompute(op: ProgramOp): op is ComputeOp {
  return op.op === 'F' || op.op === 'B' || op.op === 'W' || op.op === 'FB';
}

test('the fixture directory holds the 22 schedules of its README', () => {
  assert.equal(files.length, 22);
});

for (const file of files) {
  test(`generated schedule equals fixture ${file}`, () => {
    const expected = JSON.parse(readFileSync(FIX + file, 'utf8')) as PipelineSchedule;
    assert.equal(file, `${expected.algo}_r${expected.ranks}_mb${expected.microbatches}.json`);
    const got = buildSchedule(expected.algo, expected.ranks, expected.microbatches);
    // field by field first, for readable failures; then the whole object (no extra fields)
    for (const key of ['format', 'algo', 'ranks', 'stages', 'microbatches', 'microbatches_per_stream', 'rank_chunks'] as const) {
      assert.deepEqual(got[key], expected[key], key);
    }
    for (let r = 0; r < expected.ranks; r++) {
      assert.deepEqual(got.compute[r], expected.compute[r], `compute of rank ${r}`);
      if (expected.program !== undefined) assert.deepEqual(got.program?.[r], expected.program[r], `program of rank ${r}`);
    }
    assert.deepEqual(got, expected);
    checkP2pPairing(expected);
  });
}

test('constraints of docs/DUALPIPE.md §4 are enforced with DsvErrors naming the value', () => {
  const rejected: [string, number, number, RegExp][] = [
    ['dualpipe', 4, 6, /micro-batches >= 2 \* ranks = 8, got 6/],
    ['dualpipe', 4, 9, /even number of micro-batches.*got 9/],
    ['dualpipe', 3, 6, /DualPipe needs an even number of ranks >= 2, got 3/],
    ['dualpipe', 0, 4, /ranks >= 2, got 0/],
    ['dualpipev', 4, 7, /DualPipeV.*micro-batches >= 2 \* ranks = 8, got 7/],
    ['dualpipev', 3, 5, /DualPipeV.*micro-batches >= 2 \* ranks = 6, got 5/],
    ['dualpipev', 0, 2, /DualPipeV needs an integer number of ranks >= 1, got 0/],
    ['1f1b', 0, 4, /1F1B needs an integer number of ranks >= 1, got 0/],
    ['zb1p', 4, 0, /ZB1P needs an integer number of micro-batches >= 1, got 0/],
    ['zb1p', 2.5, 4, /ranks >= 1, got 2.5/],
    ['gpipe', 4, 8, /unknown pipeline schedule "gpipe", expected one of dualpipe, dualpipev, 1f1b, zb1p/],
  ];
  for (const [algo, ranks, mb, message] of rejected) {
    const what = `${algo} (${ranks}, ${mb})`;
    assert.throws(() => buildSchedule(algo, ranks, mb), (e: unknown) => e instanceof DsvError && message.test(e.message), what);
    assert.throws(() => checkScheduleSize(algo, ranks, mb), DsvError, what);
  }
  assert.throws(() => dualPipeSchedule(4, 6), DsvError);
  assert.throws(() => dualPipeVSchedule(3, 5), DsvError);
  // the smallest allowed sizes, and odd N for DualPipeV / any N for the baselines
  for (const [algo, ranks, mb] of [['dualpipe', 2, 4], ['dualpipe', 4, 8], ['dualpipev', 1, 2], ['dualpipev', 3, 7], ['1f1b', 1, 1], ['zb1p', 5, 3]] as const) {
    assert.doesNotThrow(() => buildSchedule(algo, ranks, mb), `${algo} (${ranks}, ${mb})`);
  }
});

/** Structural checks of a generated dual schedule (docs/DUALPIPE.md §5.1, §5.2, §5.4, §6.2). */
function checkDualStructure(s: PipelineSchedule): void {
  const M = s.microbatches_per_stream;
  for (let r = 0; r < s.ranks; r++) {
    const program = s.program![r]!;
    // compute is the program's compute ops, in order
    assert.deepEqual(program.filter(isCompute), s.compute[r]);
    // a wait appears only with something pending, and nothing is left pending at the end
    let pending = 0;
    for (const op of program) {
      if (op.op === 'send' || op.op === 'recv') pending++;
      else if (op.op === 'wait') {
        assert.ok(pending > 0, `rank ${r}: wait with nothing posted`);
        pending = 0;
      }
    }
    assert.equal(pending, 0, `rank ${r}: p2p ops left pending`);
    // M forwards and M backwards per chunk, in micro-batch order; W pops the split FIFO
    const fs: number[][] = [[], []];
    const bs: number[][] = [[], []];
    const queue: ChunkMb[] = [];
    for (const op of s.compute[r]!) {
      if (op.op === 'F') fs[op.chunk]!.push(op.mb);
      else if (op.op === 'B') {
        bs[op.chunk]!.push(op.mb);
        if (op.split) queue.push({ chunk: op.chunk, mb: op.mb, stage: op.stage, dir: op.dir });
      } else if (op.op === 'W') assert.deepEqual({ chunk: op.chunk, mb: op.mb, stage: op.stage, dir: op.dir }, queue.shift());
      else {
        assert.notEqual(op.f.chunk, op.b.chunk, 'F&B pairs two different chunks (§5.2)');
        fs[op.f.chunk]!.push(op.f.mb);
        bs[op.b.chunk]!.push(op.b.mb);
      }
    }
    const order = Array.from({ length: M }, (_, j) => j);
    for (const c of [0, 1]) {
      assert.deepEqual(fs[c], order, `rank ${r} chunk ${c} forwards`);
      assert.deepEqual(bs[c], order, `rank ${r} chunk ${c} backwards`);
    }
    assert.equal(queue.length, 0, `rank ${r}: weight-gradient work left`);
  }
}

test('p2p pairing (§5.4) and structure hold on schedules beyond the fixtures', () => {
  const cases: [string, number, number][] = [
    ['dualpipe', 10, 20], ['dualpipe', 10, 26], ['dualpipe', 12, 30], ['dualpipe', 16, 32], ['dualpipe', 2, 10],
    ['dualpipev', 5, 10], ['dualpipev', 5, 13], ['dualpipev', 6, 17], ['dualpipev', 1, 7], ['dualpipev', 16, 32],
  ];
  for (const [algo, ranks, mb] of cases) {
    const s = buildSchedule(algo, ranks, mb);
    assert.doesNotThrow(() => checkP2pPairing(s), `${algo} (${ranks}, ${mb})`);
    checkDualStructure(s);
  }
});

test('checkP2pPairing reports a mismatched or missing message', () => {
  const s = buildSchedule('dualpipe', 4, 8);
  const swapped = structuredClone(s);
  const i = swapped.program![1]!.findIndex((op) => op.op === 'send' && op.peer === 2 && op.mb === 1);
  const op = swapped.program![1]![i]!;
  assert.ok(op.op === 'send');
  op.mb = 2;
  assert.throws(() => checkP2pPairing(swapped), /from rank 1 to rank 2 is sent as act of \(chunk 0, mb 2\) but received as act of \(chunk 0, mb 1\)/);
  const dropped = structuredClone(s);
  dropped.program![3] = dropped.program![3]!.filter((p) => !(p.op === 'recv' && p.peer === 2));
  assert.throws(() => checkP2pPairing(dropped), /to rank 3 is sent as .* but received as nothing/);
  const self = structuredClone(s);
  const first = self.program![0]!.find((p) => p.op === 'send');
  assert.ok(first !== undefined && first.op === 'send');
  first.peer = 0;
  assert.throws(() => checkP2pPairing(self), /rank 0 posts a send with peer 0/);
  assert.doesNotThrow(() => checkP2pPairing(buildSchedule('zb1p', 4, 8)));
});

test('DualPipeV (R, N) rank i runs the compute of DualPipe (2R, 2N) rank i (§2.3)', () => {
  for (const [r, n] of [[1, 2], [2, 4], [2, 5], [3, 6], [3, 7], [4, 10], [5, 11], [8, 16]] as const) {
    const v = dualPipeVSchedule(r, n);
    const d = dualPipeSchedule(2 * r, 2 * n);
    assert.equal(v.stages, d.stages);
    for (let i = 0; i < r; i++) assert.deepEqual(v.compute[i], d.compute[i], `(${r}, ${n}) rank ${i}`);
  }
});

test('DualPipe rank i and rank PP-1-i run mirror-image programs (§6.1)', () => {
  const swap = (x: ChunkMb): [number, number] => [1 - x.chunk, x.mb];
  const shape = (op: ComputeOp): unknown =>
    op.op === 'FB' ? ['FB', swap(op.f), swap(op.b)] : [op.op, ...swap(op), op.op === 'B' ? op.split : null];
  const plain = (op: ComputeOp): unknown =>
    op.op === 'FB' ? ['FB', [op.f.chunk, op.f.mb], [op.b.chunk, op.b.mb]] : [op.op, op.chunk, op.mb, op.op === 'B' ? op.split : null];
  for (const [pp, n] of [[4, 8], [6, 14], [10, 20]] as const) {
    const s = dualPipeSchedule(pp, n);
    for (let i = 0; i < pp; i++) assert.deepEqual(s.compute[i]!.map(shape), s.compute[pp - 1 - i]!.map(plain), `(${pp}, ${n}) rank ${i}`);
  }
});

test('step counts of §6.2: split backwards, W and F&B pairs per rank', () => {
  const s = dualPipeSchedule(8, 20);
  const H = 4;
  const M = 10;
  for (let i = 0; i < 8; i++) {
    const h = Math.min(i, 7 - i);
    const ops = s.compute[i]!;
    const count = (pred: (op: ComputeOp) => boolean): number => ops.filter(pred).length;
    assert.equal(count((op) => op.op === 'B' && op.split), 2 * H - h - 1, `rank ${i} split B`);
    assert.equal(count((op) => op.op === 'W'), 2 * H - h - 1, `rank ${i} W`);
    assert.equal(count((op) => op.op === 'FB'), 2 * M - 3 * H + h + 1 - (h === H - 1 ? 1 : 0), `rank ${i} F&B`);
  }
});

test('1F1B and ZB1P: every rank runs N forwards and N backwards, ZB1P pairs each b with a W', () => {
  for (const [pp, n] of [[3, 2], [5, 9], [8, 8], [1, 3]] as const) {
    for (const algo of ['1f1b', 'zb1p'] as const) {
      const s = buildSchedule(algo, pp, n);
      for (let r = 0; r < pp; r++) {
        const ops = s.compute[r]!;
        const mbs = (kind: string): number[] => ops.filter((op) => op.op === kind).map((op) => (op as ChunkMb).mb);
        const order = Array.from({ length: n }, (_, j) => j);
        assert.deepEqual(mbs('F'), order);
        assert.deepEqual(mbs('B'), order);
        assert.deepEqual(mbs('W'), algo === 'zb1p' ? order : []);
        assert.ok(ops.every((op) => op.op !== 'B' || op.split === (algo === 'zb1p')));
      }
    }
  }
});
