/**
 * `dsv3 generate` end to end on a checkpoint trained here with the CLI's tiny setup: the --json
 * fields, greedy MTP speculative decoding (on by default) giving exactly the tokens of plain
 * greedy decoding, the prompt from stdin, --seed determinism (speculative sampling too), streamed stdout equal to the JSON
 * text, stop strings, flag conflicts, and `dsv3 sample` as its alias. Also the speculative
 * decoder's EOS / stop handling against the generation loop on the tiny-dense-moe fixture.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizerJson } from '../src/data/tokenizer/index.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { SpeculativeDecoder } from '../src/inference/speculative.js';
import { DeepseekV3 } from '../src/model/model.js';
import { resolveCheckpointDir } from '../src/train/run-checkpoints.js';
import { fixturePath, readTensors } from './helpers/fixtures.js';
import { tinyTrainingArgs } from './helpers/tiny-config.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function dsv3(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
}

interface Out {
  tokens: number[];
  text: string;
  finish_reason: string;
  prompt_tokens: number;
  tokens_per_s: number;
  speculative: boolean;
  acceptance_rate?: number;
}

let dir = '';
let run = '';

function gen(args: string[], input?: string): Out {
  const r = dsv3(['generate', '--model', run, '--json', ...args], input);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  return JSON.parse(lines[0]!) as Out;
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-generate-'));
  run = path.join(dir, 'run');
  const t = dsv3(['train', ...tinyTrainingArgs(dir), '--steps', '24', '--batch', '2', '--seq', '16', '--eval-every', '0', '--lr', '1e-2', '--out', run]);
  assert.equal(t.status, 0, t.stderr);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('dsv3 generate --json: greedy speculative (the default) equals plain greedy token for token', () => {
  const spec = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '60']);
  const plain = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '60', '--no-speculative']);
  assert.equal(spec.speculative, true);
  assert.equal(plain.speculative, false);
  assert.equal((spec as unknown as { speculation: string }).speculation, 'auto');
  assert.ok(typeof spec.acceptance_rate === 'number' && spec.acceptance_rate >= 0 && spec.acceptance_rate <= 1);
  assert.equal(plain.acceptance_rate, undefined);
  assert.deepEqual(spec.tokens, plain.tokens);
  assert.equal(spec.text, plain.text);
  assert.ok(spec.tokens.length >= 1 && spec.tokens.length <= 60);
  assert.ok(spec.tokens_per_s > 0 && plain.tokens_per_s > 0);
  assert.ok(spec.prompt_tokens > 0);
  const tok = loadTokenizerJson(path.join(resolveCheckpointDir(run), 'tokenizer.json'));
  assert.equal(plain.text, tok.decode(plain.tokens));
  assert.equal(spec.finish_reason, spec.tokens.length === 60 ? 'length' : 'eos');
  // --speculative asks for it explicitly: the same
  assert.deepEqual(gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '60', '--speculative']).tokens, plain.tokens);
});

test('dsv3 generate: prompt from stdin, seeded sampling, streamed stdout, stop strings', () => {
  const flags = ['--temperature', '1', '--top-k', '0', '--top-p', '0.95', '--min-p', '0.01', '--max-tokens', '40'];
  const a = gen(['--prompt', 'Call me', '--seed', '5', ...flags]);
  assert.equal(a.speculative, false, 'sampling runs without speculative decoding');
  const b = gen(['--seed', '5', ...flags], 'Call me\n');
  assert.deepEqual([b.tokens, b.text, b.prompt_tokens], [a.tokens, a.text, a.prompt_tokens], 'stdin prompt (trailing newline dropped)');
  assert.notDeepEqual(gen(['--prompt', 'Call me', '--seed', '6', ...flags]).tokens, a.tokens);
  // --speculative with sampling: exact speculative sampling, reproducible for a seed
  const sa = gen(['--prompt', 'Call me', '--seed', '5', '--speculative', ...flags]);
  assert.equal(sa.speculative, true);
  assert.ok(typeof sa.acceptance_rate === 'number');
  assert.deepEqual(gen(['--prompt', 'Call me', '--seed', '5', '--speculative', ...flags]).tokens, sa.tokens);
  const pen = gen(['--prompt', 'Call me', '--temperature', '0', '--repetition-penalty', '1.5', '--frequency-penalty', '0.5', '--presence-penalty', '0.5', '--max-tokens', '40']);
  assert.equal(pen.speculative, false, 'penalties run without speculative decoding');
  assert.equal(new Set(pen.tokens).size >= Math.min(20, pen.tokens.length), true);

  const streamed = dsv3(['generate', '--model', run, '--prompt', 'The whale', '--temperature', '0', '--max-tokens', '30', '--verbose']);
  assert.equal(streamed.status, 0, streamed.stderr);
  const g = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '30']);
  assert.equal(streamed.stdout, g.text + '\n');
  assert.match(streamed.stderr, /30 generated in [\d.]+ s \([\d.]+ tokens\/s, speculative, [\d.]+% of MTP drafts accepted/);

  // a stop string taken from the greedy text: the text ends before its first occurrence
  const long = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '60', '--no-speculative']);
  const stop = long.text.slice(12, 15);
  const want = long.text.slice(0, long.text.indexOf(stop));
  for (const sp of ['--speculative', '--no-speculative']) {
    const s = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '60', '--stop', stop, '--stop', 'NEVER-THERE', sp]);
    assert.equal(s.text, want);
    assert.equal(s.finish_reason, 'stop');
    assert.deepEqual(s.tokens, long.tokens.slice(0, s.tokens.length), 'the tokens up to the one that completed the stop string');
    assert.ok(s.tokens.length < long.tokens.length);
  }
});

test('dsv3 generate: flag conflicts are one line and exit 2; dsv3 sample is an alias that echoes the prompt', () => {
  for (const args of [['--speculative', '--no-speculative']]) {
    const r = dsv3(['generate', '--model', run, '--prompt', 'x', ...args]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^dsv3 generate: [^\n]*--(no-)?speculative[^\n]*\n$/);
  }
  const s = dsv3(['sample', '--model', run, '--prompt', 'The whale', '--max-new', '8', '--temperature', '0']);
  assert.equal(s.status, 0, s.stderr);
  const g = gen(['--prompt', 'The whale', '--temperature', '0', '--max-tokens', '8']);
  assert.equal(s.stdout, 'The whale' + g.text + '\n');
});

test('speculative decoding with EOS and a stop: the plain loop\'s tokens, cut at the same place', () => {
  const model = DeepseekV3.load(fixturePath('tiny-dense-moe'));
  const ids = readTensors(fixturePath('tiny-dense-moe/inputs.safetensors'))['input_ids']!.contiguous().i32();
  const prompt = ids.slice(0, 4);
  const n = 40;
  const plain = generate(new DecodeSession(model, { maxLen: 4 + n }), prompt, 4, { maxNew: n }).tokens[0]!;
  const spec = new SpeculativeDecoder(model, { maxLen: 4 + n });
  assert.deepEqual(Array.from(spec.generate(prompt, n).ids.subarray(4)), plain);
  for (const cut of [0, 1, 2, 7, 20, n - 1]) {
    const eos = plain[cut]!;
    const want = plain.slice(0, plain.indexOf(eos));
    const r = spec.generate(prompt, n, { eos });
    assert.deepEqual(Array.from(r.ids.subarray(4)), want, `eos ${eos}`);
    assert.equal(r.finish, 'eos');
    const streamed: number[] = [];
    const s = spec.generate(prompt, n, { onToken: (_b, t) => streamed.push(t) === cut + 1 });
    assert.deepEqual(Array.from(s.ids.subarray(4)), plain.slice(0, cut + 1), `stop after ${cut + 1}`);
    assert.deepEqual(streamed, plain.slice(0, cut + 1));
    assert.equal(s.finish, 'stop');
    const g = generate(new DecodeSession(model, { maxLen: 4 + n }), prompt, 4, { maxNew: n, eos });
    assert.deepEqual(g.tokens[0], want);
  }
});
