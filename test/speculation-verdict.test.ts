/**
 * Auto's remembered verdict (src/inference/speculation-verdict.ts): keyed by checkpoint, depth and
 * machine; written only on a bound retirement; re-probed in one run of REPROBE_EVERY (at random) or
 * after MAX_AGE_DAYS; dropped by a probe that decides otherwise; corrupt files ignored;
 * DSV3_SPECULATION_CACHE=off reads and writes nothing. A remembered policy starts retired.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AdaptiveSpeculation, type AdaptiveSummary } from '../src/inference/speculation-policy.js';
import { MAX_AGE_DAYS, REPROBE_EVERY, rememberedPlain, rememberVerdict, verdictDir, verdictFile } from '../src/inference/speculation-verdict.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-verdict-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const bound: AdaptiveSummary = { decision: 'plain', probes: 1, switches: 0, speculativeTokens: 6, plainTokens: 30, speculativeMsPerToken: 2, plainMsPerToken: 1, catchUpMs: 0, interval: 64, upkeepMsPerToken: NaN, retired: true, retiredBy: 'bound', speculativeMsPerRound: 3 };

test('the verdict file: keyed by checkpoint files, depth and threads; off reads and writes nothing', () => {
  const ckpt = path.join(root, 'ckpt');
  fs.mkdirSync(ckpt);
  fs.writeFileSync(path.join(ckpt, 'config.json'), '{}');
  fs.writeFileSync(path.join(ckpt, 'model.safetensors'), 'x');
  const env = { DSV3_SPECULATION_CACHE: path.join(root, 'cache') };
  assert.equal(verdictDir({ DSV3_SPECULATION_CACHE: 'off' }), null);
  assert.equal(verdictDir({ DSV3_SPECULATION_CACHE: '0' }), null);
  assert.equal(verdictFile(ckpt, 1, false, { DSV3_SPECULATION_CACHE: 'off' }), null);
  assert.ok(verdictDir({ XDG_CACHE_HOME: '/c' })!.endsWith(path.join('dsv3', 'speculation')));
  const f = verdictFile(ckpt, 1, false, env)!;
  assert.equal(path.dirname(f), path.join(root, 'cache'));
  assert.equal(verdictFile(ckpt, 1, false, env), f, 'stable');
  assert.notEqual(verdictFile(ckpt, 2, false, env), f, 'depth');
  assert.notEqual(verdictFile(ckpt, 1, false, { ...env, DSV3_THREADS: '1' }), f, 'threads');
  fs.writeFileSync(path.join(ckpt, 'model.safetensors'), 'xy');
  assert.notEqual(verdictFile(ckpt, 1, false, env), f, 'a changed weight file');
  assert.equal(verdictFile(path.join(root, 'missing'), 1, false, env), null);
  assert.equal(rememberedPlain(null), false);
  rememberVerdict(null, ckpt, 1, bound); // no file: nothing
});

test('written on a bound retirement only; re-probed in one run of REPROBE_EVERY or after MAX_AGE_DAYS; dropped by a decided probe', () => {
  const f = path.join(root, 'v', 'k.json');
  const now = Date.parse('2026-12-08T03:00:00Z');
  assert.equal(rememberedPlain(f, now), false, 'none yet');
  rememberVerdict(f, '/ckpt', 1, { ...bound, retiredBy: 'losing' }, now);
  assert.ok(!fs.existsSync(f), 'a losing retirement (text-dependent) is not remembered');
  rememberVerdict(f, '/ckpt', 1, { ...bound, retiredBy: 'remembered' }, now);
  assert.ok(!fs.existsSync(f));
  rememberVerdict(f, '/ckpt', 1, bound, now);
  const v = JSON.parse(fs.readFileSync(f, 'utf8')) as { speculative_ms_per_round: number; reason: string };
  assert.equal(v.reason, 'bound');
  assert.equal(v.speculative_ms_per_round, 3);
  assert.deepEqual(fs.readdirSync(path.dirname(f)), ['k.json'], 'no temporary file left');
  const before = fs.readFileSync(f, 'utf8');
  const never = (): number => 0.99;
  assert.equal(rememberedPlain(f, now, never), true);
  assert.equal(fs.readFileSync(f, 'utf8'), before, 'reading writes nothing');
  assert.equal(rememberedPlain(f, now, () => 0.99 / REPROBE_EVERY), false, 'the re-probing run');
  assert.equal(rememberedPlain(f, now, () => 1.01 / REPROBE_EVERY), true);
  assert.equal(rememberedPlain(f, now, () => 0, { DSV3_SPECULATION_REPROBE: '0' }), true, 'never re-probes');
  assert.equal(rememberedPlain(f, now, () => 0.4, { DSV3_SPECULATION_REPROBE: '2' }), false, 'one in 2');
  assert.equal(rememberedPlain(f, now, () => 0.6, { DSV3_SPECULATION_REPROBE: '2' }), true);
  let plain = 0;
  for (let i = 0; i < 1600; i++) if (rememberedPlain(f, now)) plain++;
  assert.ok(plain > 1600 * (1 - 2 / REPROBE_EVERY) && plain < 1600, `${plain} of 1600 runs start plain`);
  rememberVerdict(f, '/ckpt', 1, bound, now); // a re-probe found the bound again: renewed
  assert.equal(rememberedPlain(f, now + (MAX_AGE_DAYS + 1) * 864e5, never), false, 'too old');
  assert.equal(rememberedPlain(f, now - 864e5, never), false, 'written in the future');
  // a run too short to decide leaves it; a decided probe without the bound drops it
  rememberVerdict(f, '/ckpt', 1, { ...bound, retired: false, retiredBy: null, speculativeMsPerToken: NaN, plainMsPerToken: NaN }, now);
  assert.equal(rememberedPlain(f, now, never), true);
  rememberVerdict(f, '/ckpt', 1, { ...bound, retired: false, retiredBy: null, decision: 'speculate', speculativeMsPerToken: 0.5 }, now);
  assert.ok(!fs.existsSync(f));
  for (const bad of ['', '{', '{"verdict":"plain","reason":"bound"}', '{"verdict":"speculate","reason":"bound","written":"2026-12-08T03:00:00Z"}']) {
    fs.writeFileSync(f, bad);
    assert.equal(rememberedPlain(f, now, never), false, bad);
  }
});

test('a remembered policy starts retired: plain from the first round, nothing measured', () => {
  const p = new AdaptiveSpeculation({ remembered: true, clock: () => 0 });
  assert.equal(p.retired(), true);
  for (let i = 0; i < 20; i++) {
    assert.equal(p.next(), 'plain');
    p.record('plain', 1, 1);
  }
  const s = p.summary();
  assert.equal(s.retiredBy, 'remembered');
  assert.equal(s.decision, 'plain');
  assert.equal(s.probes, 0);
  assert.equal(s.plainTokens, 20);
  assert.equal(new AdaptiveSpeculation({ clock: () => 0 }).retired(), false);
});
