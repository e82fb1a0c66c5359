/**
 * Chained MTP speculative decoding from the CLI on a checkpoint trained here with 2 MTP modules
 * (num_nextn_predict_layers 2): `dsv3 generate` (greedy speculative at depth 2 and 1 equals plain
 * greedy token for token; --json acceptance_by_depth; --verbose; --draft-depth errors) and
 * `dsv3 chat` (replies with and without speculative decoding identical over several turns,
 * /reset and dropped turns, with the prefix cache reused; sampling with --speculative
 * reproducible for a seed).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tinyTrainingArgs } from './helpers/tiny-config.js';
import { rememberVerdict, verdictFile } from '../src/inference/speculation-verdict.js';
import { resolveCheckpointDir } from '../src/train/run-checkpoints.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** The CLI, by default with auto's remembered verdicts off (speculation-verdict.ts): each run probes. */
function dsv3(args: string[], input?: string, env: NodeJS.ProcessEnv = { ...process.env, DSV3_SPECULATION_CACHE: 'off' }): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, ...(input === undefined ? {} : { input }) });
}

interface Out {
  tokens: number[];
  finish_reason: string;
  speculative: boolean;
  speculation: string;
  auto?: { decision: string; probes: number; switches: number; speculative_tokens: number; plain_tokens: number; speculative_cpu_ms_per_token: number | null; plain_cpu_ms_per_token: number | null };
  acceptance_rate?: number;
  draft_depth?: number;
  acceptance_by_depth?: number[];
}

let dir = '';
let run = '';

function gen(args: string[]): Out {
  const r = dsv3(['generate', '--model', run, '--json', ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as Out;
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-spec-cli-'));
  run = path.join(dir, 'run');
  const t = dsv3(['train', ...tinyTrainingArgs(dir, { num_nextn_predict_layers: 2 }), '--steps', '30', '--batch', '2', '--seq', '16', '--eval-every', '0', '--lr', '1e-2', '--out', run]);
  assert.equal(t.status, 0, t.stderr);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('dsv3 generate with 2 MTP modules: speculative (depth 2 by default, and 1) equals plain greedy; per-depth acceptance', () => {
  for (const [prompt, n] of [['The whale', '80'], ['Call me Ishmael. Some years ago', '57'], ['a', '1'], ['a', '2']] as const) {
    const plain = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--no-speculative']);
    const spec = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--speculative']);
    assert.equal(spec.speculative, true);
    assert.equal(spec.speculation, 'on');
    assert.equal(spec.auto, undefined);
    assert.equal(plain.speculation, 'off');
    // the default: auto (speculative rounds or plain steps, whichever measures cheaper), same tokens
    const auto = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n]);
    assert.equal(auto.speculation, 'auto');
    assert.deepEqual(auto.tokens, plain.tokens, prompt);
    assert.ok(auto.auto && ['speculative', 'plain'].includes(auto.auto.decision), JSON.stringify(auto.auto));
    if (auto.finish_reason === 'length') assert.equal(auto.auto.speculative_tokens + auto.auto.plain_tokens, auto.tokens.length - 1, JSON.stringify(auto.auto));
    // chained: a third draft from module 2 on its own output (--draft-depth past the modules)
    const three = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--speculative', '--draft-depth', '3']);
    assert.deepEqual(three.tokens, plain.tokens, prompt);
    assert.equal(three.draft_depth, 3);
    assert.equal(three.acceptance_by_depth!.length, 3);
    assert.equal(spec.draft_depth, 2);
    assert.deepEqual(spec.tokens, plain.tokens, prompt);
    assert.equal(spec.finish_reason, plain.finish_reason);
    assert.equal(spec.acceptance_by_depth!.length, 2);
    for (const a of spec.acceptance_by_depth!) assert.ok(a >= 0 && a <= 1);
    const one = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--draft-depth', '1', '--speculative']);
    assert.deepEqual(one.tokens, plain.tokens);
    assert.equal(one.draft_depth, 1);
    assert.equal(one.acceptance_by_depth!.length, 1);
    // a stop string cuts both at the same token
    const text = dsv3(['generate', '--model', run, '--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--no-speculative']).stdout;
    const stop = text.trim().slice(3, 5);
    if (stop.trim().length === 2) {
      const a = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--stop', stop, '--no-speculative']);
      const b = gen(['--prompt', prompt, '--temperature', '0', '--max-tokens', n, '--stop', stop]);
      assert.deepEqual(b.tokens, a.tokens);
      assert.equal(b.finish_reason, a.finish_reason);
    }
  }
  const v = dsv3(['generate', '--model', run, '--prompt', 'The whale', '--temperature', '0', '--max-tokens', '30', '--verbose']);
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stderr, /speculative, [\d.]+% of MTP drafts accepted \(by depth 1: [\d.]+%, 2: [\d.]+%\); auto: (speculative|plain) decoding chosen \(CPU ms per token: speculative [\d.]+, plain [\d.]+; \d+ tokens speculative, \d+ plain, \d+ switches(; speculation retired: [^)]+)?\)/);
  for (const [args, re] of [
    [['--draft-depth', '9'], /--draft-depth expects an integer/],
    [['--draft-depth', '1', '--no-speculative'], /--draft-depth needs speculative decoding/],
    [['--draft-depth', '0'], /--draft-depth/],
  ] as const) {
    const r = dsv3(['generate', '--model', run, '--prompt', 'x', ...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

test("auto's remembered verdict: a run after a bound retirement starts plain (same tokens), --speculative and =off ignore it, a decided probe drops it", () => {
  const cache = path.join(dir, 'verdicts');
  const env = { ...process.env, DSV3_SPECULATION_CACHE: cache, DSV3_SPECULATION_REPROBE: '0' }; // no random re-probe
  const ckpt = resolveCheckpointDir(run);
  const file = verdictFile(ckpt, 2, false, env)!;
  assert.ok(file.startsWith(cache + path.sep), file);
  const args = ['generate', '--model', run, '--json', '--prompt', 'The whale', '--temperature', '0', '--max-tokens', '40'];
  const plain = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '40', '--no-speculative']);
  // what a run that retired by the bound leaves (this tiny model's rounds may well pay)
  const bound = { decision: 'plain', probes: 1, switches: 0, speculativeTokens: 6, plainTokens: 30, speculativeMsPerToken: 2, plainMsPerToken: 1, catchUpMs: 0, interval: 64, upkeepMsPerToken: NaN, retired: true, retiredBy: 'bound', speculativeMsPerRound: 3 } as const;
  rememberVerdict(file, ckpt, 2, bound);
  const r = dsv3(args, undefined, env);
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout) as Out & { auto: { retired: boolean; retired_by: string } };
  assert.equal(o.speculation, 'auto');
  assert.equal(o.speculative, false);
  assert.equal(o.acceptance_rate, undefined);
  assert.equal(o.auto.retired_by, 'remembered');
  assert.deepEqual(o.tokens, plain.tokens);
  // --speculative ignores it
  const on = JSON.parse(dsv3([...args, '--speculative'], undefined, env).stdout) as Out;
  assert.equal(on.speculative, true);
  assert.deepEqual(on.tokens, plain.tokens);
  // =off: the run probes (speculative rounds first)
  const off = JSON.parse(dsv3(args, undefined, { ...env, DSV3_SPECULATION_CACHE: 'off' }).stdout) as Out;
  assert.equal(off.speculative, true);
  assert.deepEqual(off.tokens, plain.tokens);
  // a probe that decides without the bound removes the verdict; the next run probes
  rememberVerdict(file, ckpt, 2, { ...bound, retired: false, retiredBy: null });
  assert.ok(!fs.existsSync(file));
  const again = JSON.parse(dsv3(args, undefined, env).stdout) as Out & { auto: { retired_by: string | null } };
  assert.equal(again.speculative, true);
  assert.notEqual(again.auto.retired_by, 'remembered');
  // --verbose names it
  rememberVerdict(file, ckpt, 2, bound);
  const v = dsv3(['generate', '--model', run, '--prompt', 'The whale', '--temperature', '0', '--max-tokens', '8', '--verbose'], undefined, env);
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stderr, /plain decoding; auto: plain decoding chosen .*speculation retired: an earlier run on this checkpoint and machine found/);
  // chat: starts plain, the same replies
  const input = 'Call me Ishmael\nWhat of the whale?\n';
  const c1 = dsv3(['chat', '--model', run, '--temperature', '0', '--max-tokens', '16'], input, env);
  const c0 = dsv3(['chat', '--model', run, '--temperature', '0', '--max-tokens', '16', '--no-speculative'], input, env);
  assert.equal(c1.status, 0, c1.stderr);
  assert.equal(c1.stdout, c0.stdout);
});

test('dsv3 chat with 2 MTP modules: replies with and without speculative decoding are identical (prefix cache reused)', () => {
  const input = 'Call me Ishmael\nWhat of the whale?\nAnd the sea?\n/reset\nHello there\nTell me more\n';
  // greedy: speculative by default (this tiny model's greedy replies are mostly blanks)
  const greedy = ['chat', '--model', run, '--temperature', '0', '--max-tokens', '24', '--verbose'];
  const g1 = dsv3(greedy, input);
  const g0 = dsv3([...greedy, '--no-speculative'], input);
  assert.equal(g1.status, 0, g1.stderr);
  assert.match(g1.stderr, /speculative, [\d.]+% of MTP drafts accepted[^;]*; auto: (speculative|plain) decoding chosen/);
  assert.equal(g1.stdout, g0.stdout);
  // temperature 0 with a frequency penalty (text here): exact speculative decoding with --speculative
  const args = ['chat', '--model', run, '--temperature', '0', '--frequency-penalty', '1.5', '--max-tokens', '24', '--verbose'];
  const spec = dsv3([...args, '--speculative'], input);
  const plain = dsv3(args, input);
  const one = dsv3([...args, '--speculative', '--draft-depth', '1'], input);
  const chained = dsv3([...args, '--speculative', '--draft-depth', '4'], input);
  for (const r of [spec, plain, one, chained]) assert.equal(r.status, 0, r.stderr);
  assert.equal(chained.stdout, plain.stdout);
  assert.ok(spec.stdout.replace(/\s/g, '').length > 20, spec.stdout);
  assert.equal(spec.stdout, plain.stdout);
  assert.equal(one.stdout, plain.stdout);
  const turns = spec.stderr.split('\n').filter((l) => /prompt tokens/.test(l));
  assert.equal(turns.length, 5, spec.stderr);
  for (const l of turns) assert.match(l, /speculative, [\d.]+% of MTP drafts accepted \(by depth 1: [\d.]+%, 2: [\d.]+%\)/);
  assert.ok(Number(/\((\d+) reused/.exec(turns[1]!)![1]) > 0, 'the second turn reuses the cache');
  for (const l of plain.stderr.split('\n').filter((x) => /prompt tokens/.test(x))) assert.doesNotMatch(l, /speculative/);
  // a conversation longer than the context drops turns: still identical
  const long = Array.from({ length: 10 }, (_, i) => `Tell me about the whale number ${i} and the sea`).join('\n') + '\n';
  const la = dsv3(['chat', '--model', run, '--temperature', '0', '--max-tokens', '100'], long);
  const lb = dsv3(['chat', '--model', run, '--temperature', '0', '--max-tokens', '100', '--no-speculative'], long);
  assert.equal(la.status, 0, la.stderr);
  assert.match(la.stderr, /dropped the \d+ oldest messages/);
  assert.equal(la.stdout, lb.stdout);
  // sampling with --speculative: exact speculative sampling, reproducible for a seed
  const s1 = dsv3(['chat', '--model', run, '--speculative', '--seed', '4', '--max-tokens', '16'], 'Hi\nMore\n');
  const s2 = dsv3(['chat', '--model', run, '--speculative', '--seed', '4', '--max-tokens', '16'], 'Hi\nMore\n');
  assert.equal(s1.status, 0, s1.stderr);
  assert.equal(s1.stdout, s2.stdout);
  const bad = dsv3(['chat', '--model', run, '--speculative', '--no-speculative'], 'Hi\n');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^dsv3 chat: [^\n]*--(no-)?speculative[^\n]*\n$/);
});
