/** `dsv3 pipeline` end to end: the real CLI in a child process; Table 2 figures from docs/DUALPIPE.md §8.2. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/dualpipe/schedules/', import.meta.url));

function dsv3(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'pipeline', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Row {
  algo: string; ranks: number; bubble_worst: number; bubble_per_rank: number[]; table2_bubble: number; table2_exact: boolean;
  peak_activations_worst: number; table2_activations: number; makespan: number; parameters_per_device: number;
}
const rows = (out: string): Row[] => out.trim().split('\n').map((l) => JSON.parse(l) as Row);

test('dsv3 pipeline: Table 2 at PP = 8, N = 20 with F=1, B=2, W=1, F&B=3 (docs/DUALPIPE.md §8.2)', () => {
  const r = dsv3(['--json']);
  assert.equal(r.status, 0, r.stderr);
  const byAlgo = new Map(rows(r.stdout).map((x) => [x.algo, x]));
  assert.deepEqual([...byAlgo.keys()], ['1f1b', 'zb1p', 'dualpipe', 'dualpipev'], 'Table 2 order');
  const want: Record<string, [number, number, number, number]> = { // bubble, activations, devices, params/device
    '1f1b': [21, 8, 8, 1], zb1p: [7, 8, 8, 1], dualpipe: [6, 9, 8, 2], dualpipev: [6, 9, 4, 2],
  };
  for (const [algo, [bubble, act, devices, params]] of Object.entries(want)) {
    const x = byAlgo.get(algo)!;
    assert.equal(x.bubble_worst, bubble, `${algo} bubble`);
    assert.equal(x.table2_bubble, bubble, `${algo} Table 2 bubble`);
    assert.equal(x.table2_exact, true, algo);
    assert.equal(x.peak_activations_worst, act, `${algo} activations`);
    assert.equal(x.table2_activations, act, `${algo} Table 2 activations`);
    assert.equal(x.ranks, devices, `${algo} devices`);
    assert.equal(x.parameters_per_device, params, `${algo} parameters per device`);
  }
});

test('dsv3 pipeline: with F&B < F+B the DualPipe ranks differ, the turn ranks at the formula (§8.2, T2)', () => {
  const r = dsv3(['--json', '--times', 'F=2,B=3,W=1,FB=4', '--algo', 'dualpipe,dualpipev,zb1p']);
  assert.equal(r.status, 0, r.stderr);
  const [dp, dpv, zb] = rows(r.stdout);
  assert.deepEqual(dp!.bubble_per_rank, [10, 11, 12, 12, 12, 12, 11, 10]);
  assert.deepEqual(dpv!.bubble_per_rank, [10, 11, 12, 12]);
  assert.equal(dp!.table2_bubble, 12);
  assert.equal(zb!.bubble_worst, 21);
});

test('dsv3 pipeline: latency and the batched reference protocol (§8.6: DualPipe 8x16, T3)', () => {
  const base = ['--json', '--stages', '8', '--microbatches', '16', '--algo', 'dualpipe', '--latency', '0.25'];
  const flow = rows(dsv3(base).stdout)[0]!;
  const eager = rows(dsv3([...base, '--mode', 'batched', '--send', 'eager']).stdout)[0]!;
  const rdv = rows(dsv3([...base, '--mode', 'batched']).stdout)[0]!;
  assert.deepEqual([flow.makespan, eager.makespan, rdv.makespan], [59.75, 60.5, 61]);
  assert.equal(flow.table2_exact, false, 'Table 2 ignores latency');
});

test('dsv3 pipeline: --schedule-out writes the generated schedule, equal to the golden file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-pipeline-'));
  try {
    const out = path.join(dir, 's.json');
    const r = dsv3(['--algo', 'dualpipe', '--stages', '8', '--microbatches', '20', '--schedule-out', out, '--timeline']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /DualPipe timeline/);
    assert.match(r.stdout, /rank {2}7 [FBbWX.]+/);
    const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'dualpipe_r8_mb20.json'), 'utf8')) as unknown;
    assert.deepEqual(JSON.parse(fs.readFileSync(out, 'utf8')), golden);
    assert.deepEqual(fs.readdirSync(dir), ['s.json'], 'no temporary file left behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dsv3 pipeline: bad input is a clear error (exit 2), never a crash', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--stages', '4', '--microbatches', '6', '--algo', 'dualpipe'], /even number of micro-batches >= 2 \* ranks = 8, got 6/],
    [['--stages', '5', '--algo', 'dualpipev'], /DualPipeV needs an even number of stages/],
    [['--times', 'F=1,B=2,W=3'], /W \(3\) cannot exceed B \(2\)/],
    [['--times', 'F=1,B=2,FB=5'], /FB must lie in \[max\(F,B\), F\+B\] = \[2, 3\]/],
    [['--times', 'Q=1'], /--times: expected entries like/],
    [['--algo', 'gpipe'], /unknown schedule 'gpipe'/],
    [['--mode', 'batched', '--algo', '1f1b'], /1f1b has none/],
    [['--send', 'eager'], /--send applies to --mode batched only/],
    [['--stages', '0'], /--stages expects an integer >= 1/],
    [['--bogus'], /unknown argument '--bogus'/],
  ];
  for (const [args, re] of cases) {
    const r = dsv3(args);
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}, stderr ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const h = spawnSync(process.execPath, [MAIN, 'pipeline', '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  assert.match(h.stdout, /^Usage: dsv3 pipeline/);
});
