/**
 * `dsv3 experiment balance-scope` and `dsv3 experiment dualpipe` (issue 10), the per-op timing of
 * pipeline ranks and the simulator's replay they use, `--seed-offset` and the key chart as a
 * standalone SVG (`DIR/key.svg`, `--svg FILE`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { balanceScopeExperiment, domainExpertInformation, relativeLoad } from '../src/experiments/balance-scope.js';
import { loadCodeDomain } from '../src/experiments/domains.js';
import { analyseStep, dualpipeExperiment, opTimes, uniformTimes } from '../src/experiments/dualpipe.js';
import type { Arm, ExperimentResults, RunRecord } from '../src/experiments/experiment.js';
import { verdict } from '../src/experiments/verdict.js';
import { buildSchedule, PIPELINE_ALGOS } from '../src/parallel/schedules.js';
import { replaySchedule, simulateSchedule } from '../src/parallel/simulate.js';
import { describeOp } from '../src/parallel/rank-runner.js';
import type { OpTiming } from '../src/parallel/pipeline-worker.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dsv3 = (args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('balance-scope: I(domain; expert) and relative load, by hand', () => {
  assert.equal(domainExpertInformation([[5, 5, 0, 0], [10, 10, 0, 0]]), 0, 'same distribution in both domains');
  assert.ok(Math.abs(domainExpertInformation([[7, 0], [0, 3]]) - 1) < 1e-12, 'disjoint experts: log2(2) bits');
  // p(e|d1) = (3/4, 1/4), p(e|d2) = (1/4, 3/4), p(e) = (1/2, 1/2): I = 3/4·log2(3/2) + 1/4·log2(1/2)
  const want = 0.75 * Math.log2(1.5) + 0.25 * Math.log2(0.5);
  assert.ok(Math.abs(domainExpertInformation([[3, 1], [1, 3]]) - want) < 1e-12);
  assert.deepEqual(relativeLoad([2, 6, 4, 0]), [2 / 3, 2, 4 / 3, 0]);
});

test('balance-scope: the code domain is the npm dependencies\' sources, without licence headers', () => {
  const c = loadCodeDomain();
  assert.ok(c.documents.length > 50, `${c.documents.length} files`);
  assert.ok(c.documents.some((d) => /\bfunction\b|=>/.test(d)));
  assert.ok(!c.documents.some((d) => d.slice(0, 400).includes('@license')), 'licence headers removed');
  assert.ok(c.documents.reduce((n, d) => n + d.length, 0) > 100_000);
});

test('replaySchedule: uniform measured durations give the simulator\'s dataflow timeline', () => {
  const t = { F: 3, B: 5, W: 2, FB: 7 };
  for (const algo of PIPELINE_ALGOS) {
    const s = buildSchedule(algo, 2, 8);
    const sim = simulateSchedule(s, { ...t, latency: 0 }, 'dataflow');
    const dur = s.compute.map((list) => list.map((op) => (op.op === 'F' ? t.F : op.op === 'W' ? t.W : op.op === 'FB' ? t.FB : op.split ? t.B - t.W : t.B)));
    const rep = replaySchedule(s, dur);
    assert.equal(rep.makespan, sim.makespan, algo);
    assert.deepEqual(rep.timeline, sim.timeline, algo);
  }
  const s = buildSchedule('1f1b', 2, 2);
  // a slow op on rank 0 delays rank 1's dependent ops
  const slow = replaySchedule(s, s.compute.map((l, r) => l.map((op, i) => (r === 0 && i === 0 ? 10 : 1))));
  assert.ok(slow.finish[1]! >= 10 + 1);
  assert.throws(() => replaySchedule(s, [[1]]), /rank 0 has \d+ compute ops, 1 durations given/);
  assert.throws(() => replaySchedule(s, s.compute.map((l) => l.map(() => 0.5))), /integer number of ticks/);
});

test('dualpipe: a measured step against its replay; op medians and the uniform times', () => {
  const s = buildSchedule('1f1b', 2, 2);
  // rank 0: F0 F1 B0 B1; rank 1: F0 B0 F1 B1 — ms on the epoch clock, with 0.5 ms message gaps
  const base = 1_700_000_000_000;
  const tl: OpTiming[][] = [
    [[base, base + 1, 'F0'], [base + 1, base + 2, 'F1'], [base + 5, base + 7, 'B0'], [base + 8.5, base + 10.5, 'B1']],
    [[base + 1.5, base + 2.5, 'F0'], [base + 2.5, base + 4.5, 'B0'], [base + 4.5, base + 5.5, 'F1'], [base + 5.5, base + 7.5, 'B1']],
  ];
  assert.deepEqual(s.compute.map((l) => l.map(describeOp)), tl.map((r) => r.map((x) => x[2])), 'labels follow the compute lists');
  const st = analyseStep(s, tl);
  assert.equal(st.makespan, 10.5);
  assert.deepEqual(st.busy, [6, 6]);
  assert.deepEqual(st.idle, [4.5, 4.5]);
  assert.deepEqual(st.ranks[1]![0], [1.5, 2.5, 'F0']);
  // without message gaps: F0 F1 on rank 0 (0..2), rank 1 F0 1..2, B0 2..4, F1 4..5, B1 5..7; rank 0 B0 4..6, B1 7..9
  assert.equal(st.replayMakespan, 9);
  const ops = opTimes([st]);
  assert.equal(ops.F, 1);
  assert.equal(ops.B, 2);
  assert.ok(Number.isNaN(ops.W) && Number.isNaN(ops.FB));
  assert.deepEqual(uniformTimes(ops), { F: 1000, B: 2000, W: 0, FB: 3000 });
  assert.deepEqual(uniformTimes({ F: 1, B: NaN, b: 1.5, W: 0.5, FB: NaN }), { F: 1000, B: 2000, W: 500, FB: 3000 });
});

/** Synthetic runs: one final value per (arm, seed). */
function runs(values: Record<string, Record<string, number[]>>): RunRecord[] {
  return Object.entries(values).flatMap(([arm, keys]) => {
    const n = Object.values(keys)[0]!.length;
    return Array.from({ length: n }, (_, seed) => ({
      arm, seed, steps: 1, settings: {}, seconds: 0, date: '', curves: {},
      finals: Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, v[seed]!])),
    }));
  });
}

test('balance-scope and dualpipe: each verdict follows from the numbers (reproduced, not reproduced, inconclusive)', () => {
  const arms: Arm[] = [];
  const outcomes = (exp: typeof balanceScopeExperiment, r: RunRecord[]): string[] => exp.claims(r, arms).map((c) => verdict(c).outcome);
  // balance-scope: aux-free specialises more (reproduced), batch-wise less (not reproduced), losses within the spread
  const bs = runs({
    'seq-aux': { specialisation: [0.10, 0.11, 0.12], val_lm: [5.50, 5.60, 5.70] },
    'batch-aux': { specialisation: [0.01, 0.02, 0.03], val_lm: [5.55, 5.65, 5.75] },
    'aux-free': { specialisation: [0.30, 0.31, 0.32], val_lm: [5.30, 5.31, 5.32] },
  });
  assert.deepEqual(outcomes(balanceScopeExperiment, bs), ['reproduced', 'not reproduced', 'reproduced', 'inconclusive']);
  // dualpipe: DualPipe idles less than 1F1B (reproduced), more than ZB1P (not), DualPipeV within the spread; the step is 1.5x its replay (not within 15%)
  const dp = runs({
    dualpipe: { idle_frac: [0.10, 0.11, 0.12], overhead: [1.48, 1.5, 1.52] },
    '1f1b': { idle_frac: [0.40, 0.41, 0.42] },
    zb1p: { idle_frac: [0.01, 0.02, 0.03] },
    dualpipev: { idle_frac: [0.38, 0.41, 0.44] },
  });
  assert.deepEqual(outcomes(dualpipeExperiment, dp), ['reproduced', 'not reproduced', 'inconclusive', 'not reproduced']);
  const close = runs({ dualpipe: { idle_frac: [0.1, 0.1], overhead: [1.02, 1.03] }, '1f1b': { idle_frac: [0.3, 0.3] }, zb1p: { idle_frac: [0.3, 0.3] }, dualpipev: { idle_frac: [0.2, 0.2] } });
  assert.equal(outcomes(dualpipeExperiment, close)[3], 'reproduced', 'measured within 3% of the replay');
});

/** Checks shared by both experiments' results.json. */
function checkResults(res: ExperimentResults, name: string, arms: string[], finals: string[]): void {
  assert.equal(res.experiment, name);
  assert.equal(res.quick, true);
  assert.equal(res.seeds, 2);
  assert.ok(res.commit === null || /^[0-9a-f]{40}$/.test(res.commit));
  assert.ok(res.machine.cpu.length > 0 && !Number.isNaN(Date.parse(res.date)));
  assert.deepEqual(res.arms.map((a) => a.name), arms);
  assert.equal(res.runs.length, 2 * arms.length);
  for (const run of res.runs) for (const k of finals) assert.ok(Number.isFinite(run.finals[k]), `${run.arm}/${run.seed} ${k} = ${run.finals[k]}`);
  assert.equal(res.verdicts.length, 4);
  for (const v of res.verdicts) {
    const expect = !(Math.abs(v.difference) >= v.threshold) || v.difference === 0 ? 'inconclusive' : v.difference > 0 ? 'reproduced' : 'not reproduced';
    assert.equal(v.outcome, expect, v.measured);
  }
}

test('dsv3 experiment balance-scope --quick and dualpipe --quick end to end; key.svg, --svg, --seed-offset', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-experiment-'));
  try {
    const l = dsv3(['experiment', 'list']);
    assert.match(l.stdout, /^balance-scope /m);
    assert.match(l.stdout, /^dualpipe /m);

    const bo = path.join(dir, 'bs');
    const b = dsv3(['experiment', 'balance-scope', '--quick', '--seeds', '2', '--out', bo]);
    assert.equal(b.status, 0, b.stderr);
    const br = JSON.parse(fs.readFileSync(path.join(bo, 'results.json'), 'utf8')) as ExperimentResults;
    checkResults(br, 'balance-scope', ['seq-aux', 'batch-aux', 'aux-free'], ['val_lm', 'val_lm_0', 'val_lm_1', 'specialisation', 'maxvio_global', 'maxvio_batch']);
    assert.deepEqual(br.arms.map((a) => [a.settings['balance'], a.settings['alpha']]), [['aux-free', 0.01], ['aux-loss', 0.01], ['aux-free', 0]]);
    assert.equal(br.arms[0]!.settings['bias_gamma'], 0, 'sequence-wise arm: biases stay 0');
    assert.ok((br.arms[2]!.settings['bias_gamma'] as number) > 0);
    for (const run of br.runs) {
      const s = run.finals['specialisation']!;
      assert.ok(s >= 0 && s <= 1, `I(domain; expert) = ${s} bits`);
      const rel = run.extra!['rel_load'] as Record<string, number[][]>;
      assert.deepEqual(Object.keys(rel), ['1'], 'the tiny model\'s one MoE layer');
      assert.equal(rel['1']!.length, 2, 'two domains');
      for (const row of rel['1']!) assert.ok(Math.abs(row.reduce((a, x) => a + x, 0) - 8) < 1e-2, 'relative loads average 1 over 8 experts');
    }
    assert.ok(fs.readFileSync(path.join(bo, 'index.html'), 'utf8').includes('Relative expert load per domain'));
    const bsvg = fs.readFileSync(path.join(bo, 'key.svg'), 'utf8');
    assert.match(bsvg, /^<\?xml[^>]*>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(bsvg.includes('relative expert load by domain') && bsvg.includes('--quick'));

    const po = path.join(dir, 'dp');
    const p = dsv3(['experiment', 'dualpipe', '--quick', '--seeds', '2', '--seed-offset', '5', '--out', po]);
    assert.equal(p.status, 0, p.stderr);
    const pr = JSON.parse(fs.readFileSync(path.join(po, 'results.json'), 'utf8')) as ExperimentResults;
    checkResults(pr, 'dualpipe', ['dualpipe', 'dualpipev', '1f1b', 'zb1p'], ['step_ms', 'idle_frac', 'replay_ms', 'sim_ms', 'table2_ms', 'F_ms', 'B_ms']);
    assert.equal(pr.first_seed, 5);
    assert.deepEqual([...new Set(pr.runs.map((r) => r.seed))].sort(), [5, 6]);
    for (const run of pr.runs) {
      const f = run.finals;
      assert.ok(f['idle_frac']! >= 0 && f['idle_frac']! < 1);
      // the replay (no message cost) is about a lower bound of the measured step; not exactly: the
      // threads' clocks (timeOrigin + now()) may differ by a fraction of a ms, and an F&B sends its
      // forward's output before its backward ends, where the replay makes it wait for the pair's end
      assert.ok(f['replay_ms']! <= f['step_ms']! * 1.25 + 1, `${run.arm}: replay ${f['replay_ms']} ms vs measured ${f['step_ms']} ms`);
      assert.ok(f['replay_ms']! > 0 && f['sim_ms']! > 0);
      // the measured step's ops are the schedule's compute lists, in order, on every rank
      const s = buildSchedule(run.arm, 2, 4);
      const measured = run.extra!['measured_step'] as Array<Array<[number, number, string]>>;
      assert.deepEqual(measured.map((r) => r.map((x) => x[2])), s.compute.map((l) => l.map(describeOp)), run.arm);
      for (const r of measured) r.forEach(([a, e], i) => assert.ok(a <= e && (i === 0 || r[i - 1]![1] <= a + 1e-6), `${run.arm}: ops of a rank do not overlap`));
      if (run.arm === '1f1b') assert.ok(Math.abs(f['table2_ms']! - (f['F_ms']! + f['B_ms']!)) < 1e-9, 'Table 2 at 2 stages: (PP − 1)(F + B)');
      if (run.arm === 'dualpipe') assert.equal(f['table2_ms'], 0, 'Table 2 at PP = 2: (PP/2 − 1)(…) = 0');
    }
    assert.match(fs.readFileSync(path.join(po, 'key.svg'), 'utf8'), /DualPipe: one step[\s\S]*measured[\s\S]*replaying/);

    // --svg: the key chart of an earlier run, nothing run
    const svgFile = path.join(dir, 'dualpipe.svg');
    const sv = dsv3(['experiment', 'dualpipe', '--svg', svgFile, '--out', po]);
    assert.equal(sv.status, 0, sv.stderr);
    assert.equal(fs.readFileSync(svgFile, 'utf8'), fs.readFileSync(path.join(po, 'key.svg'), 'utf8'));
    const wrong = dsv3(['experiment', 'balance-scope', '--svg', svgFile, '--out', po]);
    assert.equal(wrong.status, 2);
    assert.match(wrong.stderr, /holds experiment 'dualpipe', not 'balance-scope'/);
    const none = dsv3(['experiment', 'mla', '--svg', svgFile, '--out', path.join(dir, 'nothing')]);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /results\.json: no such file/);
    const mixed = dsv3(['experiment', 'mla', '--svg', svgFile, '--quick']);
    assert.equal(mixed.status, 2);
    assert.match(mixed.stderr, /--svg .* not --quick/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
