/**
 * `dsv3 chat` and its pieces: chat templates (the plain format dsv3 train writes, a
 * DeepSeek-V3-style Jinja template, the stop strings derived from each), the tokenizer_config.json
 * a training run writes, the latent cache kept between turns (the same logits as a fresh cache),
 * and the command itself on a tiny trained checkpoint: piped stdin (two turns, /reset, EOF), a
 * conversation longer than the context, and an interactive session under a pseudo-terminal.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTemplate, loadTokenizerJson, PLAIN_CHAT_TEMPLATE, type ChatMessage } from '../src/data/tokenizer/index.js';
import { DsvError } from '../src/errors.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { PrefixReuseDecoder } from '../src/inference/prefix-reuse.js';
import { DeepseekV3 } from '../src/model/model.js';
import { resolveCheckpointDir } from '../src/train/run-checkpoints.js';
import { tinyTrainingArgs } from './helpers/tiny-config.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

/** Modelled on the released DeepSeek-V3 chat template (tool calls left out). */
const DEEPSEEK_TEMPLATE =
  "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}" +
  "{% set ns = namespace(system_prompt='') %}" +
  "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}" +
  '{{ bos_token }}{{ ns.system_prompt }}' +
  "{%- for message in messages %}" +
  "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}" +
  "{%- if message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}{%- endif %}" +
  '{%- endfor %}' +
  "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}";

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'Who are you?' },
];

function dsv3(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
}

let dir = '';
let run = '';

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-chat-'));
  run = path.join(dir, 'run');
  const t = dsv3(['train', ...tinyTrainingArgs(dir), '--steps', '24', '--batch', '2', '--seq', '16', '--eval-every', '0', '--lr', '1e-2', '--out', run]);
  assert.equal(t.status, 0, t.stderr);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('chat templates: the plain format and a DeepSeek-V3-style Jinja template, with their stop strings', () => {
  const plain = new ChatTemplate(PLAIN_CHAT_TEMPLATE, { bos: BOS, eos: EOS });
  assert.equal(plain.render(CONVERSATION, true), `${BOS}Be brief.\n\nUser: Hi\n\nAssistant: Hello.${EOS}\n\nUser: Who are you?\n\nAssistant:`);
  assert.equal(plain.render(CONVERSATION.slice(1, 3), false), `${BOS}User: Hi\n\nAssistant: Hello.${EOS}\n\n`);
  assert.deepEqual(plain.stopStrings(), [EOS, '\nUser:']);
  // a tokenizer without BOS / EOS: the format stays readable, the turn ends at the next "User:"
  const bare = new ChatTemplate(PLAIN_CHAT_TEMPLATE, { bos: '', eos: '' });
  assert.equal(bare.render(CONVERSATION.slice(1, 2), true), 'User: Hi\n\nAssistant:');
  assert.deepEqual(bare.stopStrings(), ['\nUser:']);

  const ds = new ChatTemplate(DEEPSEEK_TEMPLATE, { bos: BOS, eos: EOS });
  assert.equal(ds.render(CONVERSATION, true), `${BOS}Be brief.<｜User｜>Hi<｜Assistant｜>Hello.${EOS}<｜User｜>Who are you?<｜Assistant｜>`);
  assert.equal(ds.render(CONVERSATION, false), `${BOS}Be brief.<｜User｜>Hi<｜Assistant｜>Hello.${EOS}<｜User｜>Who are you?`);
  assert.deepEqual(ds.stopStrings(), [EOS, '<｜User｜>']);

  // from a checkpoint directory: tokenizer_config.json's chat_template (a string or a named list), else the plain format
  const tok = loadTokenizerJson(path.join(resolveCheckpointDir(run), 'tokenizer.json'));
  const d = fs.mkdtempSync(path.join(dir, 'tpl-'));
  assert.equal(ChatTemplate.fromDir(d, tok).source, PLAIN_CHAT_TEMPLATE);
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({ chat_template: DEEPSEEK_TEMPLATE }));
  assert.equal(ChatTemplate.fromDir(d, tok).render(CONVERSATION.slice(1, 2), true), `${BOS}<｜User｜>Hi<｜Assistant｜>`);
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: DEEPSEEK_TEMPLATE }] }));
  assert.equal(ChatTemplate.fromDir(d, tok).source, DEEPSEEK_TEMPLATE);
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({ chat_template: 42 }));
  assert.throws(() => ChatTemplate.fromDir(d, tok), DsvError);
  assert.throws(() => new ChatTemplate('{% for m in messages %}', { bos: '', eos: '' }), DsvError);
  assert.throws(() => new ChatTemplate("{{ raise_exception('no system messages') }}", { bos: '', eos: '' }).render([], true), /no system messages/);
});

test('dsv3 train writes tokenizer_config.json with the BOS / EOS tokens and the plain chat template', () => {
  const ck = resolveCheckpointDir(run);
  const cfg = JSON.parse(fs.readFileSync(path.join(ck, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const tok = loadTokenizerJson(path.join(ck, 'tokenizer.json'));
  assert.equal(cfg['chat_template'], PLAIN_CHAT_TEMPLATE);
  assert.equal(cfg['bos_token'], tok.bosToken);
  assert.equal(cfg['eos_token'], tok.eosToken);
  assert.equal(tok.bosToken, BOS);
  assert.equal(tok.eosToken, EOS);
});

test('PrefixReuseDecoder: a turn computes only its new tokens, with the logits of a fresh cache', () => {
  const ck = resolveCheckpointDir(run);
  const model = DeepseekV3.load(ck, { mtp: false });
  const tok = loadTokenizerJson(path.join(ck, 'tokenizer.json'));
  const tpl = ChatTemplate.fromDir(ck, tok);
  const enc = (m: ChatMessage[]): Int32Array => Int32Array.from(tok.encode(tpl.render(m, true), { addBos: false }));
  const dec = new PrefixReuseDecoder(new DecodeSession(model, { maxLen: 256 }));
  const fresh = new DecodeSession(model, { maxLen: 256 });
  const first = enc(CONVERSATION.slice(0, 2));
  const g1 = generate(dec, first, first.length, { maxNew: 12 });
  assert.equal(dec.reused, 0);
  const msgs: ChatMessage[] = [...CONVERSATION.slice(0, 2), { role: 'assistant', content: tok.decode(g1.tokens[0]!).trim() }, { role: 'user', content: 'And then?' }];
  const second = enc(msgs);
  const want = generate(fresh, second, second.length, { maxNew: 12, logits: true });
  const got = generate(dec, second, second.length, { maxNew: 12, logits: true });
  assert.ok(dec.reused >= first.length, `reused ${dec.reused} of ${second.length} tokens (first prompt: ${first.length})`);
  assert.deepEqual(got.tokens, want.tokens);
  let worst = 0;
  for (let i = 0; i < want.logits!.length; i++) worst = Math.max(worst, Math.abs(want.logits![i]! - got.logits![i]!));
  assert.ok(worst < 1e-3, `largest logit difference ${worst}`);
  // a prompt that does not extend the cache (a reset conversation): recomputed from where it differs
  generate(dec, first, first.length, { maxNew: 4 });
  assert.ok(dec.reused < first.length);
  dec.clear();
  generate(dec, first, first.length, { maxNew: 1 });
  assert.equal(dec.reused, 0);
});

test('dsv3 chat, piped: two turns, /reset, a third turn, EOF; exit 0', () => {
  const r = dsv3(['chat', '--model', run, '--system', 'You are a sailor.', '--max-tokens', '16', '--seed', '3', '--verbose'], 'Call me Ishmael\nWhat of the whale?\n/reset\nHello\n');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.trim().length > 0, 'replies on stdout');
  assert.doesNotMatch(r.stdout, /> /, 'no prompt when stdin is not a terminal');
  const turns = r.stderr.split('\n').filter((l) => /prompt tokens/.test(l));
  assert.equal(turns.length, 3, r.stderr);
  assert.match(turns[1]!, /\((\d+) reused from the cache\)/);
  assert.ok(Number(/\((\d+) reused/.exec(turns[1]!)![1]) > 0, 'the second turn reuses the first turn\'s cache');
  assert.match(r.stderr, /conversation cleared/);
  const [t1, t3] = [turns[0]!, turns[2]!].map((l) => Number(/^dsv3 chat: (\d+) prompt tokens/.exec(l)![1]));
  assert.ok(t3! < Number(/^dsv3 chat: (\d+)/.exec(turns[1]!)![1]), 'after /reset the conversation starts over');
  assert.ok(t1! > 0);
  // the same input and seed: the same replies; /exit ends before the rest of the input
  const again = dsv3(['chat', '--model', run, '--system', 'You are a sailor.', '--max-tokens', '16', '--seed', '3'], 'Call me Ishmael\nWhat of the whale?\n/reset\nHello\n');
  assert.equal(again.stdout, r.stdout);
  const ex = dsv3(['chat', '--model', run, '--max-tokens', '4', '--verbose'], 'Hi\n/exit\nNever read\n');
  assert.equal(ex.status, 0, ex.stderr);
  assert.equal(ex.stderr.split('\n').filter((l) => /prompt tokens/.test(l)).length, 1);
});

test('dsv3 chat: a conversation longer than the context drops its oldest turns instead of failing', () => {
  const lines = Array.from({ length: 12 }, (_, i) => `Tell me about the whale number ${i} and the sea`).join('\n') + '\n';
  const r = dsv3(['chat', '--model', run, '--max-tokens', '100', '--temperature', '0'], lines);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /dropped the \d+ oldest messages/);
  // --max-tokens as large as the context: one line, exit 2
  const big = dsv3(['chat', '--model', run, '--max-tokens', '256'], 'Hi\n');
  assert.equal(big.status, 2);
  assert.match(big.stderr, /^dsv3 chat: [^\n]*--max-tokens[^\n]*\n$/);
});

test('dsv3 chat under a pseudo-terminal: a "> " prompt, a reply, the prompt again, /exit', async (t) => {
  if (spawnSync('script', ['--version'], { encoding: 'utf8' }).status !== 0) {
    t.skip('util-linux `script` is not installed: no pseudo-terminal to run the interactive test in');
    return;
  }
  const cmd = [process.execPath, CLI, 'chat', '--model', run, '--max-tokens', '8', '--seed', '1'].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const p = spawn('script', ['-qefc', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  const closed = new Promise<number | null>((resolve) => p.on('close', resolve));
  const waitFor = async (ok: () => boolean, what: string): Promise<void> => {
    const t0 = Date.now();
    while (!ok()) {
      if (Date.now() - t0 > 20000) {
        p.kill();
        throw new Error(`timed out waiting for ${what}; terminal output: ${JSON.stringify(out)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const prompts = (): number => out.split('> ').length - 1;
  await waitFor(() => prompts() >= 1, 'the first prompt');
  p.stdin.write('Call me Ishmael\r');
  await waitFor(() => prompts() >= 2, 'a reply and the prompt again');
  const afterLine = out.slice(out.indexOf('Call me Ishmael') + 'Call me Ishmael'.length);
  assert.ok(afterLine.includes('> '), JSON.stringify(out));
  p.stdin.write('/exit\r');
  assert.equal(await closed, 0, JSON.stringify(out));
  assert.ok(out.includes('Call me Ishmael'), 'the terminal echoes the line typed');
});
