import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadMobyDick } from '../src/data/corpus.js';
import { parseTrainArgs } from '../src/cli/commands/train.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const TINY: Record<string, unknown> = tinyConfigJson();

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function dsv3(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

test('dsv3 train, report and sample end to end on a tiny config', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-train-cli-'));
  try {
    const cfg = path.join(dir, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify(TINY));
    const data = path.join(dir, 'text.txt');
    fs.writeFileSync(data, loadMobyDick().documents.slice(3, 6).map((d) => d.slice(0, 5000)).join('\n\n'));
    const run = path.join(dir, 'run');
    const t = dsv3([
      'train', '--config', cfg, '--data', data, '--cache-dir', path.join(dir, 'cache'), '--steps', '4', '--batch', '2',
      '--seq', '16', '--eval-every', '2', '--eval-batches', '1', '--ckpt-every', '2', '--out', run, '--lr', '5e-3',
    ]);
    assert.equal(t.status, 0, t.stderr);
    const res = JSON.parse(t.stdout.trim()) as { status: string; step: number; final_loss: number; checkpoint: string };
    assert.equal(res.status, 'done');
    assert.equal(res.step, 4);
    assert.ok(Number.isFinite(res.final_loss));
    assert.match(t.stderr, /step 4\/4 loss [\d.]+ mtp [\d.]+ lr \S+ \d+ tok\/s maxvio [\d.]+ eta/);
    assert.match(t.stderr, /validation LM loss/);
    assert.ok(fs.existsSync(path.join(run, 'checkpoint-4', 'model.safetensors')));
    assert.ok(fs.existsSync(path.join(run, 'checkpoint-2', 'trainer_state', 'state.json')));

    const r = dsv3(['report', run]);
    assert.equal(r.status, 0, r.stderr);
    const html = fs.readFileSync(path.join(run, 'report.html'), 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    for (const s of ['Loss', 'expert load / mean load', 'bias b_i trajectories', 'MaxVio per MoE layer', 'Validation']) assert.ok(html.includes(s), s);
    assert.ok((html.match(/<svg /g) ?? []).length >= 8);
    assert.ok(!/<script|<link|https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(html), 'self-contained: no scripts, links or remote URLs');

    const s = dsv3(['sample', '--model', run, '--prompt', 'The whale', '--max-new', '8', '--temperature', '0']);
    assert.equal(s.status, 0, s.stderr);
    assert.ok(s.stdout.startsWith('The whale'));
    const s2 = dsv3(['sample', '--model', path.join(run, 'checkpoint-4'), '--prompt', 'The whale', '--max-new', '8', '--temperature', '0']);
    assert.equal(s2.stdout, s.stdout, 'greedy sampling is deterministic');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dsv3 train flag parsing', () => {
  const o = parseTrainArgs(['--steps', '100', '--balance', 'aux-loss', '--resume', '--bias-bounds', '-0.5,0.5', '--mtp-switch', '60']);
  assert.equal(o.steps, 100);
  assert.equal(o.warmup, 5);
  assert.equal(o.balanceAlpha, 0.01);
  assert.equal(o.resume, true);
  assert.deepEqual(o.bias.bounds, [-0.5, 0.5]);
  assert.equal(o.mtpLambdaLate, 0.1);
  assert.equal(o.model.n_routed_experts, 16);
  assert.equal(o.mtpSwitchStep, 60);
  const d = parseTrainArgs(['--steps', '148', '--lr', '2.2e-4']);
  assert.equal(d.mtpSwitchStep, 100, 'λ drops after the paper\'s 10T of 14.8T tokens');
  assert.equal(d.mtpLambda, 0.3);
  assert.equal(d.mtpLambdaLate, 0.1);
  assert.ok(Math.abs(d.bias.gamma! - 1e-3) < 1e-12, 'γ = 0.001 at the paper\'s lr');
  assert.equal(parseTrainArgs(['--resume', 'x/checkpoint-3']).resume, 'x/checkpoint-3');
  assert.throws(() => parseTrainArgs(['--balance', 'foo']), /aux-free, aux-loss or none/);
  assert.throws(() => parseTrainArgs(['--steps', '0']), /--steps/);
});

test('dsv3 train rejects --seq longer than max_position_embeddings before any work', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-train-seq-'));
  try {
    const cfg = path.join(dir, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify(tinyConfigJson({ max_position_embeddings: 32 })));
    const out = path.join(dir, 'run');
    const r = dsv3(['train', '--config', cfg, '--seq', '64', '--steps', '1', '--out', out]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--seq 64 exceeds the model's max_position_embeddings \(32\)/);
    assert.equal(fs.existsSync(out), false, 'no run directory left behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
