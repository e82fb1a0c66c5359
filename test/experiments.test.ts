import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROUTING_SIM, simulateRouting } from '../src/experiments/routing-sim.js';
import { pooledSd, stats, verdict } from '../src/experiments/verdict.js';
import type { ExperimentResults } from '../src/experiments/experiment.js';
import { flipFractions } from '../src/experiments/bias-update.js';
import { DEEPSEEK_V3_ATTENTION, kvCacheSizes } from '../src/experiments/mla.js';
import { loadModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { packageRoot } from '../src/engine/native.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dsv3 = (args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('verdict: reproduced, not reproduced and inconclusive by twice the pooled sd', () => {
  const claim = (a: number[], b: number[], margin?: number) =>
    verdict({ paper: 'A is lower than B', a: { label: 'A', values: a }, b: { label: 'B', values: b }, direction: 'lower', ...(margin !== undefined ? { margin } : {}) });
  // sd 0.1 on both sides: pooled 0.1, threshold 0.2
  assert.ok(Math.abs(pooledSd(stats([0.9, 1.0, 1.1]), stats([1.9, 2.0, 2.1])) - 0.1) < 1e-12);
  const yes = claim([0.9, 1.0, 1.1], [1.9, 2.0, 2.1]);
  assert.equal(yes.outcome, 'reproduced');
  assert.ok(Math.abs(yes.difference - 1) < 1e-12 && Math.abs(yes.threshold - 0.2) < 1e-12);
  assert.equal(claim([1.9, 2.0, 2.1], [0.9, 1.0, 1.1]).outcome, 'not reproduced');
  assert.equal(claim([0.9, 1.0, 1.1], [1.05, 1.15, 1.25]).outcome, 'inconclusive', 'difference 0.15 < 0.2');
  assert.equal(claim([1.05, 1.15, 1.25], [0.9, 1.0, 1.1]).outcome, 'inconclusive', 'against, but within the spread');
  assert.equal(claim([1], [2]).outcome, 'inconclusive', 'one seed a side: no spread to judge by');
  assert.equal(claim([1, 1], [2, 2]).outcome, 'reproduced', 'exactly repeatable numbers: any difference counts');
  assert.equal(claim([1.05, 1.05], [1, 1], 0.1).outcome, 'reproduced', 'within the 10% margin');
  assert.equal(claim([1.2, 1.2], [1, 1], 0.1).outcome, 'not reproduced');
  const up = verdict({ paper: 'A is higher', a: { label: 'A', values: [3, 3.1] }, b: { label: 'B', values: [1, 1.1] }, direction: 'higher' });
  assert.equal(up.outcome, 'reproduced');
  assert.match(up.measured, /A 3\.05\d* ± .* vs B 1\.05\d* ± /);
});

test('routing-sim: deterministic per seed; the bias update flattens the load', () => {
  const o = { ...ROUTING_SIM, experts: 64, topK: 4, tokens: 256, steps: 60, gammaPaper: 0.01, gammaNotes: 1 };
  const a = simulateRouting('paper', 3, o);
  assert.deepEqual(simulateRouting('paper', 3, o), a, 'same seed, same numbers');
  assert.notDeepEqual(simulateRouting('paper', 4, o).finals, a.finals, 'another seed, other logits');
  // every rule sees the same logits: at step 0 (bias 0) the notes' and the paper's rules pick alike up to σ
  const n = simulateRouting('notes', 3, o);
  assert.equal(n.curves['max_share']!.y[0], a.curves['max_share']!.y[0]);
  const bal = simulateRouting('balanced', 3, o).finals;
  const floor = bal['max_share_end']!;
  for (const r of [a, n]) {
    const f = r.finals;
    assert.ok(f['max_share_end']! < 0.7 * f['max_share_start']!, `max_share ${f['max_share_start']} -> ${f['max_share_end']}`);
    assert.ok(f['entropy_end']! > f['entropy_start']!);
    assert.ok(f['entropy_end']! > bal['entropy_end']! - 0.05, `entropy ${f['entropy_end']} vs the balanced floor's ${bal['entropy_end']} (log N ${Math.log(64)})`);
    assert.ok(f['max_share_end']! < 1.5 * floor, `${f['max_share_end']} vs the balanced floor ${floor}`);
  }
  assert.equal(a.curves['max_share']!.y.length, 60);
});

test('dsv3 experiment list, balance --quick end to end with --resume, routing-sim --quick', () => {
  const l = dsv3(['experiment', 'list']);
  assert.equal(l.status, 0, l.stderr);
  assert.match(l.stdout, /^routing-sim /m);
  assert.match(l.stdout, /^balance /m);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-experiment-'));
  try {
    const out = path.join(dir, 'balance');
    const r = dsv3(['experiment', 'balance', '--quick', '--seeds', '2', '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /run 8\/8 none seed 1 step 12\/12/);
    assert.match(r.stdout, /^(REPRODUCED|NOT REPRODUCED|INCONCLUSIVE): Table 5/m);
    const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as ExperimentResults;
    assert.equal(res.experiment, 'balance');
    assert.equal(res.quick, true);
    assert.equal(res.seeds, 2);
    assert.match(res.command, /^dsv3 experiment balance --quick/);
    assert.ok(res.commit === null || /^[0-9a-f]{40}$/.test(res.commit));
    assert.ok(res.machine.cpu.length > 0 && res.machine.threads >= 1 && typeof res.machine.isa === 'string');
    assert.ok(!Number.isNaN(Date.parse(res.date)));
    assert.deepEqual(res.arms.map((a) => a.name), ['aux-free', 'aux-loss-0.01', 'aux-loss-0.001', 'none']);
    assert.equal(res.runs.length, 8);
    for (const run of res.runs) {
      for (const k of ['val_lm', 'maxvio_global', 'maxvio_batch', 'train_lm']) assert.ok(Number.isFinite(run.finals[k]), `${run.arm}/${run.seed} ${k}`);
      assert.equal(run.curves['train_lm']!.y.length, 12);
      assert.equal(run.settings['steps'], 12);
    }
    assert.equal(res.summary_by_arm['none']!['maxvio_global']!.n, 2);
    assert.equal(res.verdicts.length, 4);
    for (const v of res.verdicts) {
      assert.ok(['reproduced', 'not reproduced', 'inconclusive'].includes(v.outcome));
      // the outcome follows from the numbers by the rule
      const expect = Math.abs(v.difference) < v.threshold ? 'inconclusive' : v.difference > 0 ? 'reproduced' : 'not reproduced';
      assert.equal(v.outcome, expect);
    }
    const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok(html.includes(res.verdicts[0]!.outcome) && html.includes('<svg '), 'verdict and charts');
    assert.ok(html.includes('±'));
    assert.ok(!/<script|<link|https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(html), 'self-contained');

    // --resume: all 8 pairs are kept; a third seed runs only its 4 new pairs
    const again = dsv3(['experiment', 'balance', '--quick', '--seeds', '2', '--out', out, '--resume']);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /8 finished \(arm, seed\) pairs kept/);
    assert.doesNotMatch(again.stderr, /run 1\//);
    const res2 = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as ExperimentResults;
    assert.deepEqual(res2.runs.map((x) => x.date).sort(), res.runs.map((x) => x.date).sort());
    const more = dsv3(['experiment', 'balance', '--quick', '--seeds', '3', '--out', out, '--resume']);
    assert.equal(more.status, 0, more.stderr);
    assert.match(more.stderr, /run 4\/4 none seed 2/);
    assert.match(more.stderr, /run 1\/4 aux-free seed 2/);
    const res3 = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as ExperimentResults;
    assert.equal(res3.runs.length, 12);
    assert.equal(res3.summary_by_arm['aux-free']!['val_lm']!.n, 3);

    const rs = dsv3(['experiment', 'routing-sim', '--quick', '--seeds', '2', '--out', path.join(dir, 'rs')]);
    assert.equal(rs.status, 0, rs.stderr);
    const rsRes = JSON.parse(fs.readFileSync(path.join(dir, 'rs', 'results.json'), 'utf8')) as ExperimentResults;
    assert.deepEqual(rsRes.arms.map((a) => a.name), ['notes', 'paper', 'balanced']);
    assert.equal(rsRes.runs.length, 6);
    assert.equal(rsRes.verdicts.length, 4);
    assert.ok(fs.readFileSync(path.join(dir, 'rs', 'index.html'), 'utf8').includes('Share per expert over steps'));
    const other = dsv3(['experiment', 'routing-sim', '--quick', '--out', out]);
    assert.equal(other.status, 2);
    assert.match(other.stderr, /holds experiment 'balance', not 'routing-sim'/);
    const bad = dsv3(['experiment', 'nope']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^dsv3 experiment: unknown experiment 'nope'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('mla: KV-cache numbers per token per layer, exact at DeepSeek-V3 and at bench-small', () => {
  // convention: a head's key is qk_nope + qk_rope wide (192 at V3), its value v_head (128)
  const v3 = kvCacheSizes(DEEPSEEK_V3_ATTENTION, 8);
  assert.equal(v3.latent, 576, 'kv_lora 512 + qk_rope 64');
  assert.equal(v3.mha, 40960, '128 heads × (192 + 128)');
  assert.equal(v3.naiveMla, 40960, 'naive MLA caches the up-projected K and V: as MHA');
  assert.equal(v3.gqa, 2560, '8 groups × 320');
  assert.equal(v3.mhaPaper, 32768, 'DeepSeek-V2 Table 1: 2 · 128 · 128');
  const cfg = loadModelConfig(path.join(packageRoot(), 'configs/bench-small.json'));
  const ours = kvCacheSizes(cfg, 2);
  assert.equal(ours.latent, 64 + 16);
  assert.equal(ours.mha, 8 * (32 + 16 + 32));
  // the model's own cache holds exactly the latent numbers
  const tiny = { ...cfg, num_hidden_layers: 1, first_k_dense_replace: 1, vocab_size: 64 };
  assert.equal(DeepseekV3.randomInit(tiny, 0).newCache(1, 8).numbersPerToken, ours.latent);
});

test('bias-update: flip fractions of Δb', () => {
  // expert 0: +,+,−,+ (2 flips of 3); expert 1: −,−,−,− (none); expert 2: +,0,+,− (the 0 breaks the chain: 1 flip)
  const b = [[1, -1, 1], [2, -2, 1], [1, -3, 2], [2, -4, 1]];
  assert.deepEqual(flipFractions(b), [0 / 3, 1 / 3, 2 / 3]);
  assert.deepEqual(flipFractions([[0.5, -0.5]]), []);
});

test('dsv3 experiment bias-update --quick and mla --quick end to end', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-experiment-'));
  try {
    const l = dsv3(['experiment', 'list']);
    assert.match(l.stdout, /^bias-update /m);
    assert.match(l.stdout, /^mla /m);
    const out = path.join(dir, 'bu');
    const r = dsv3(['experiment', 'bias-update', '--quick', '--seeds', '2', '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as ExperimentResults;
    assert.equal(res.experiment, 'bias-update');
    assert.deepEqual(res.arms.map((a) => a.name), ['sign-0.1x', 'sign-1x', 'sign-10x', 'proportional', 'ema', 'bounded']);
    const g = res.settings['recipe_gamma'] as number;
    assert.ok(Math.abs((res.arms[2]!.settings['bias_gamma'] as number) - 10 * g) < 1e-12 && Math.abs((res.arms[0]!.settings['bias_gamma'] as number) - 0.1 * g) < 1e-12);
    assert.equal(res.runs.length, 12);
    for (const run of res.runs) {
      for (const k of ['jitter', 'maxvio_batch', 'maxvio_global', 'val_lm']) assert.ok(Number.isFinite(run.finals[k]), `${run.arm}/${run.seed} ${k}`);
      assert.ok(run.finals['jitter']! >= 0 && run.finals['jitter']! <= 1);
      assert.equal(run.curves['jitter']!.y.length, 11);
    }
    // bounded biases stay in [−0.1, 0.1]
    for (const run of res.runs.filter((x) => x.arm === 'bounded')) assert.ok(run.finals['max_abs_bias']! <= 0.1 + 1e-7);
    assert.equal(res.verdicts.length, 6);
    for (const v of res.verdicts) assert.ok(['reproduced', 'not reproduced', 'inconclusive'].includes(v.outcome));
    assert.match(r.stdout, /^(REPRODUCED|NOT REPRODUCED|INCONCLUSIVE): Loss-Free Balancing/m);

    const mo = path.join(dir, 'mla');
    const m = dsv3(['experiment', 'mla', '--quick', '--seeds', '2', '--out', mo]);
    assert.equal(m.status, 0, m.stderr);
    const mr = JSON.parse(fs.readFileSync(path.join(mo, 'results.json'), 'utf8')) as ExperimentResults;
    assert.deepEqual(mr.arms.map((a) => a.name), ['naive', 'absorbed']);
    assert.equal(mr.runs.length, 4);
    for (const run of mr.runs) {
      assert.equal(run.finals['latent_v3'], 576);
      assert.equal(run.finals['mha_v3'], 40960);
      assert.equal(run.finals['latent_ours'], 80);
      assert.deepEqual(run.curves['decode_ms']!.x, [16, 64]);
      assert.ok(run.curves['decode_ms']!.y.every((y) => Number.isFinite(y) && y > 0));
    }
    assert.equal(mr.verdicts.length, 4);
    assert.equal(mr.verdicts[0]!.outcome, 'reproduced', 'the cache sizes are exact: no spread');
    assert.equal(mr.verdicts[1]!.outcome, 'reproduced');
    assert.ok(fs.readFileSync(path.join(mo, 'index.html'), 'utf8').includes('KV cache per token per layer'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
