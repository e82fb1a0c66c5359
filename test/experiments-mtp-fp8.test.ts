// `dsv3 experiment mtp` and `dsv3 experiment fp8` (issue 10): the measurements on synthetic
// inputs with known answers, the verdicts from synthetic numbers (all three outcomes), and both
// experiments end to end at --quick size (structure of results.json, verdicts by the rule).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Arm, ExperimentResults, RunRecord } from '../src/experiments/experiment.js';
import { accumulationErrors, activationsWithOutliers, gemmError, granularityErrors, quantDequant, quantError } from '../src/experiments/fp8-ablations.js';
import { fp8Experiment, pairedRelDiff } from '../src/experiments/fp8.js';
import { countAgreement, draftAcceptance } from '../src/experiments/mtp-measure.js';
import { mtpExperiment } from '../src/experiments/mtp.js';
import { verdict, type Outcome } from '../src/experiments/verdict.js';
import { DeepseekV3 } from '../src/model/model.js';
import { parseModelConfig } from '../src/model/config.js';
import { TINY } from '../src/experiments/training-setup.js';
import { fp8GemmLimited as helperLimited } from './helpers/fp8-gemm-oracle.js';
import { fp8GemmLimited } from '../src/engine/fp8/gemm-oracle.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dsv3 = (args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

/** The rule of verdict.ts, from a verdict's own numbers. */
const ruleOf = (v: { difference: number; threshold: number }): Outcome =>
  !(Math.abs(v.difference) >= v.threshold) || v.difference === 0 ? 'inconclusive' : v.difference > 0 ? 'reproduced' : 'not reproduced';

const run = (arm: string, seed: number, finals: Record<string, number>, settings: Record<string, unknown> = {}): RunRecord =>
  ({ arm, seed, steps: 1, settings, seconds: 0, date: '', finals, curves: {} });

test('mtp: the draft is compared with the main greedy token one step later', () => {
  // B = 1, S = 5: main[j] predicts j + 1, draft[i] predicts i + 2; positions i = 0, 1, 2
  const text = Int32Array.of(9, 9, 1, 2, 3);
  const main = Int32Array.of(9, 1, 2, 7, 0); // for positions 2, 3, 4: main[1] = 1, main[2] = 2, main[3] = 7 (the text has 1, 2, 3)
  const shifted = Int32Array.of(1, 2, 7, 5); // draft[i] = main[i + 1]: always accepted
  assert.deepEqual(countAgreement(main, shifted, text, 1, 5), { agree: 3, mainOk: 2, mtpOk: 2, n: 3 });
  const same = Int32Array.of(9, 1, 2, 7); // draft[i] = main[i] (an off-by-one draft): never equal here
  assert.equal(countAgreement(main, same, text, 1, 5).agree, 0);
  // two rows: the draft rows are S − 1 long
  const c = countAgreement(Int32Array.of(0, 1, 2, 0, 1, 2), Int32Array.of(1, 2, 0, 0), Int32Array.of(0, 0, 2, 0, 0, 0), 2, 3);
  assert.deepEqual(c, { agree: 1, mainOk: 0, mtpOk: 1, n: 2 });
});

test('mtp: acceptance of a random tiny model, in [0, 1], deterministic', () => {
  const cfg = parseModelConfig({ ...TINY, num_nextn_predict_layers: 2 }, 'tiny');
  const model = DeepseekV3.randomInit(cfg, 3);
  const val = Int32Array.from({ length: 200 }, (_, i) => (i * 37) % cfg.vocab_size);
  const a = draftAcceptance(model, val, 2, 16, 3);
  assert.equal(a.positions, 3 * 2 * 15); // 3 batches of 2 rows, S = 17: i = 0 .. 14
  for (const k of ['acceptance', 'mainTop1', 'mtpTop1'] as const) assert.ok(a[k] >= 0 && a[k] <= 1, `${k} ${a[k]}`);
  assert.deepEqual(draftAcceptance(model, val, 2, 16, 3), a);
});

test('fp8 ablations: accumulator models against the ideal accumulator', () => {
  // the oracle moved to src: the tests' helper still gives the same function
  assert.equal(helperLimited, fp8GemmLimited);
  const [u128, u4096] = accumulationErrors('unpromoted', 0, [128, 4096], 2, 2);
  const [p4096] = accumulationErrors('promoted', 0, [4096], 2, 2);
  const [f4096] = accumulationErrors('fp32-acc', 0, [4096], 2, 2);
  assert.ok(u4096!.maxRel > 0.01 && u4096!.maxRel > 5 * u128!.maxRel, `unpromoted ${u128!.maxRel} -> ${u4096!.maxRel}`);
  assert.ok(p4096!.maxRel < u4096!.maxRel / 10 && p4096!.maxRel > 1e-5, `promoted ${p4096!.maxRel}`);
  assert.ok(f4096!.maxRel < 1e-6, `exact block sums ${f4096!.maxRel}`);
  // the truncating accumulator only loses magnitude: every output below the ideal (the error's sign)
  const e = gemmError(Float32Array.of(0.9, 2), Float32Array.of(1, 2));
  assert.ok(Math.abs(e.maxRel - 0.1) < 1e-7 && Math.abs(e.relFro - Math.sqrt(0.01 / 5)) < 1e-7);
});

test('fp8 ablations: per-tensor scaling equals the tile kernel on one tile; outliers hurt it, tiles isolate them', () => {
  const { x } = activationsWithOutliers(1, 1, 128, 1);
  assert.deepEqual(quantDequant(x, 1, 128, 'tensor'), quantDequant(x, 1, 128, 'tile'), 'one 1x128 tile is the whole tensor');
  const m = 128, k = 256;
  const big = activationsWithOutliers(2, m, k, 1e5);
  const plain = activationsWithOutliers(2, m, k, 1);
  assert.deepEqual(big.ordinary, plain.ordinary, 'the same elements are outliers at every magnitude');
  let outliers = 0;
  for (let i = 0; i < m * k; i++) if (!big.ordinary[i]) outliers++;
  assert.ok(outliers >= 2 * m + k - 2 && outliers < 2 * m + k + 40, `${outliers} outliers`);
  const [t0, t5] = granularityErrors('tensor', 2, [1, 1e5], m, k);
  const [s0, s5] = granularityErrors('tile', 2, [1, 1e5], m, k);
  assert.ok(Math.abs(t0!.relOrdinary - s0!.relOrdinary) < 0.005, 'without outliers the granularity barely matters');
  assert.ok(t5!.underflow > 0.3 && t5!.relOrdinary > 0.3, `per tensor at 1e5: ${JSON.stringify(t5)}`);
  assert.ok(s5!.relOrdinary < t5!.relOrdinary / 3, `tiles at 1e5: ${JSON.stringify(s5)}`);
  const q = quantError(Float32Array.of(1, 2, 100), Float32Array.of(0, 2, 100), Uint8Array.of(1, 1, 0));
  assert.deepEqual(q, { relOrdinary: Math.sqrt(1 / 5), relAll: Math.sqrt(1 / 10005), underflow: 0.5 });
});

test('fp8 verdicts from synthetic numbers: within 0.25% (reproduced), outside (not reproduced), within the spread (inconclusive)', () => {
  const arms = fp8Experiment.plan({ quick: true }).arms;
  const runsFor = (rel: number[]): RunRecord[] => rel.flatMap((r, seed) => [run('fp32', seed, { val_lm: 4 }), run('fp8', seed, { val_lm: 4 * (1 + r) })]);
  assert.deepEqual(pairedRelDiff(runsFor([0.001, 0.002]), 'fp8', 'fp32', 'val_lm').map((x) => Math.round(x * 1e6)), [1000, 2000]);
  const outcomes = (rel: number[]): Outcome[] => fp8Experiment.claims(runsFor(rel), arms).slice(0, 2).map((c) => verdict(c).outcome);
  assert.deepEqual(outcomes([0.001, 0.0012, 0.0011]), ['reproduced', 'reproduced']);
  assert.deepEqual(outcomes([0.010, 0.011, 0.012]), ['not reproduced', 'reproduced']);
  assert.deepEqual(outcomes([-0.009, -0.008, -0.01]), ['reproduced', 'not reproduced']);
  assert.deepEqual(outcomes([0.0015, 0.0035, 0.002]), ['inconclusive', 'reproduced']);
});

test('mtp verdicts from synthetic numbers: acceptance and speed-up against the paper', () => {
  const arms: Arm[] = mtpExperiment.plan({ quick: true }).arms;
  const runsFor = (acc: number[], sp: number[]): RunRecord[] =>
    acc.flatMap((a, seed) => [run('D0', seed, { val_lm: 5 }), run('D1', seed, { val_lm: 4.9 + 0.01 * seed, acceptance: a, acceptance_first: 0.1, speedup: sp[seed]! }), run('D2', seed, { val_lm: 5.2 + 0.01 * seed })]);
  const out = (acc: number[], sp: number[]): Outcome[] => mtpExperiment.claims(runsFor(acc, sp), arms).map((c) => verdict(c).outcome);
  // D1 below D0, D2 above; acceptance vs 85%; growth; speed-up vs 1.8 and vs 1
  assert.deepEqual(out([0.9, 0.91, 0.92], [2, 2.1, 2.2]), ['reproduced', 'not reproduced', 'reproduced', 'reproduced', 'reproduced', 'reproduced']);
  assert.deepEqual(out([0.3, 0.31, 0.32], [0.5, 0.55, 0.6]), ['reproduced', 'not reproduced', 'not reproduced', 'reproduced', 'not reproduced', 'not reproduced']);
  assert.deepEqual(out([0.5, 0.95, 0.99], [1.2, 1.9, 3]).slice(2), ['inconclusive', 'reproduced', 'inconclusive', 'inconclusive']);
});

test('dsv3 experiment mtp --quick and fp8 --quick end to end', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-experiment-'));
  try {
    const l = dsv3(['experiment', 'list']);
    assert.match(l.stdout, /^mtp /m);
    assert.match(l.stdout, /^fp8 /m);

    const mo = path.join(dir, 'mtp');
    const m = dsv3(['experiment', 'mtp', '--quick', '--seeds', '2', '--out', mo]);
    assert.equal(m.status, 0, m.stderr);
    assert.match(m.stdout, /^(REPRODUCED|NOT REPRODUCED|INCONCLUSIVE): §5\.4\.3/m);
    const mr = JSON.parse(fs.readFileSync(path.join(mo, 'results.json'), 'utf8')) as ExperimentResults;
    assert.equal(mr.experiment, 'mtp');
    assert.deepEqual(mr.arms.map((a) => [a.name, a.settings['depth']]), [['D0', 0], ['D1', 1], ['D2', 2]]);
    assert.equal(mr.runs.length, 6);
    for (const r of mr.runs) {
      assert.ok(Number.isFinite(r.finals['val_lm']), `${r.arm}/${r.seed} val_lm`);
      if (r.arm === 'D0') {
        assert.equal(r.finals['acceptance'], undefined, 'no MTP module, no draft');
        continue;
      }
      assert.ok(r.finals['acceptance']! >= 0 && r.finals['acceptance']! <= 1);
      assert.equal(r.finals['identical'], 1, 'speculative decoding gave plain greedy output');
      assert.ok(r.finals['speedup']! > 0 && Number.isFinite(r.finals['speedup']));
      assert.deepEqual(r.curves['acceptance']!.x, [4, 8, 12], 'one acceptance point per checkpoint');
      assert.equal(r.curves['acceptance']!.y[2], r.finals['acceptance']);
      assert.ok(!fs.readdirSync(path.join(mo, 'runs', `${r.arm}-seed${r.seed}`)).some((f) => f.startsWith('checkpoint-')), 'checkpoints removed');
    }
    assert.equal(mr.verdicts.length, 6);
    for (const v of mr.verdicts) assert.equal(v.outcome, ruleOf(v));
    const mh = fs.readFileSync(path.join(mo, 'index.html'), 'utf8');
    assert.ok(mh.includes('Depth-1 draft acceptance') && mh.includes('<svg '));

    const fo = path.join(dir, 'fp8');
    const f = dsv3(['experiment', 'fp8', '--quick', '--seeds', '2', '--out', fo]);
    assert.equal(f.status, 0, f.stderr);
    const fr = JSON.parse(fs.readFileSync(path.join(fo, 'results.json'), 'utf8')) as ExperimentResults;
    assert.equal(fr.experiment, 'fp8');
    assert.deepEqual(fr.arms.map((a) => a.name), ['fp32', 'bf16', 'fp8', 'acc-unpromoted', 'acc-promoted', 'acc-fp32', 'scale-tensor', 'scale-tile', 'scale-block']);
    assert.deepEqual(fr.arms[1]!.settings['train'], { precision: 'bf16' });
    assert.deepEqual(fr.arms[2]!.settings['train'], { fp8: true });
    assert.equal(fr.runs.length, 18);
    for (const r of fr.runs) {
      const kind = r.settings['kind'];
      if (kind === 'training') {
        assert.ok(Number.isFinite(r.finals['val_lm']) && r.curves['val_lm']!.y.length === 3, `${r.arm}/${r.seed}`);
      } else if (kind === 'accumulation') {
        assert.deepEqual(r.curves['acc_maxrel']!.x, [128, 1024, 4096]);
        assert.ok(r.finals['acc_maxrel_4096']! >= 0);
      } else {
        assert.equal(kind, 'granularity');
        assert.equal(r.curves['gran_rel']!.y.length, 3);
      }
    }
    // the two FP8 runs differ from the float32 ones (the FP8 path ran), and stay close
    const rel = pairedRelDiff(fr.runs, 'fp8', 'fp32', 'val_lm');
    assert.equal(rel.length, 2);
    assert.ok(rel.every((x) => x !== 0 && Math.abs(x) < 0.05), `relative differences ${rel}`);
    // so do the BF16 runs (the bf16 GEMM path ran)
    const relBf16 = pairedRelDiff(fr.runs, 'bf16', 'fp32', 'val_lm');
    assert.ok(relBf16.length === 2 && relBf16.every((x) => x !== 0 && Math.abs(x) < 0.05), `relative differences ${relBf16}`);
    assert.equal(fr.verdicts.length, 9); // FP8 against float32 and against BF16, both ways; 5 ablation claims
    for (const v of fr.verdicts) assert.equal(v.outcome, ruleOf(v));
    // the accumulator and granularity physics are deterministic enough to hold on any seed
    assert.deepEqual(fr.verdicts.slice(4).map((v) => v.outcome), ['reproduced', 'reproduced', 'reproduced', 'reproduced', 'reproduced']);
    const fh = fs.readFileSync(path.join(fo, 'index.html'), 'utf8');
    assert.ok(fh.includes('Ablation (i)') && fh.includes('Relative difference of validation LM loss'));
    assert.ok(!/<script|<link|https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(fh), 'self-contained');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
