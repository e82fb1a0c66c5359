/**
 * `dsv3 serve` driven by the official `openai` client: a real server on loopback (port 0) over a
 * tiny checkpoint trained here. Chat and completions, streaming and not, give the text of the
 * generation loop (generate() on a DecodeSession, greedy) with `usage` and finish_reason; stop
 * strings; seeded sampling; /health answers while a long generation runs; a full queue gives
 * 429; a client that aborts its stream, or gives up on a non-streaming request, has its
 * generation cancelled and its slot freed (the next request is served); the API key is
 * enforced; the CLI server exits 0 on SIGTERM after finishing the stream in flight (or, with
 * --grace 0, after cancelling it with an error event); bad CLI input exits 2 with one line.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import OpenAI from 'openai';
import { ChatTemplate, loadTokenizerJson, type ChatMessage, type Tokenizer } from '../src/data/tokenizer/index.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { generate } from '../src/inference/generate.js';
import { TextStream } from '../src/inference/text-stream.js';
import { DeepseekV3 } from '../src/model/model.js';
import { ApiServer } from '../src/serve/server.js';
import { fixturePath } from './helpers/fixtures.js';
import { CLI, tinyServeCheckpoint } from './helpers/serve-checkpoint.js';

let tmp = '';
let dir = '';
let api: ApiServer;
let client: OpenAI;
let tok: Tokenizer;
let model: DeepseekV3;

before(async () => {
  ({ tmp, dir } = tinyServeCheckpoint());
  api = await ApiServer.start({ dir, id: 'tiny', host: '127.0.0.1', port: 0, maxBatch: 4, maxContext: 2048, queue: 8 });
  client = new OpenAI({ baseURL: `${api.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  tok = loadTokenizerJson(`${dir}/tokenizer.json`);
  model = DeepseekV3.load(dir, { mtp: false });
});

after(async () => {
  await api?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The generation loop's greedy text for prompt ids (the reference the server must match). */
function reference(prompt: Int32Array, maxNew: number, stops: string[] = []): { text: string; tokens: number; finish: 'stop' | 'length' } {
  const stream = new TextStream((id) => tok.decodeBytes([id]), stops);
  const g = generate(new DecodeSession(model, { maxLen: prompt.length + maxNew }), prompt, prompt.length, {
    maxNew,
    ...(tok.eosId === undefined ? {} : { eos: tok.eosId }),
    onToken: (_s, t) => {
      stream.push(t);
      return stream.stopped !== null;
    },
  });
  stream.finish();
  return { text: stream.text, tokens: g.tokens[0]!.length, finish: g.finish[0] === 'length' ? 'length' : 'stop' };
}

const completionIds = (text: string): Int32Array => Int32Array.from(tok.encode(text, { addBos: tok.bosId !== undefined }));

test('GET /v1/models and /health', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
  assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
  const h = await fetch(`${api.url}/health`);
  assert.equal(h.status, 200);
  const body = (await h.json()) as Record<string, unknown>;
  assert.equal(body['status'], 'ok');
  assert.equal(body['model'], 'tiny');
});

test('completions: greedy text equals generate(), streamed equals non-streamed, usage and finish_reason', async () => {
  const prompt = 'The whale';
  const ref = reference(completionIds(prompt), 40);
  assert.ok(ref.text.length > 0);
  const r = await client.completions.create({ model: 'tiny', prompt, max_tokens: 40, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0]!.text, ref.text);
  assert.equal(r.choices[0]!.finish_reason, ref.finish);
  assert.deepEqual(r.usage, { prompt_tokens: completionIds(prompt).length, completion_tokens: ref.tokens, total_tokens: completionIds(prompt).length + ref.tokens });

  const stream = await client.completions.create({ model: 'tiny', prompt, max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let usage: unknown = null;
  let chunks = 0;
  for await (const c of stream) {
    if (c.choices.length > 0) {
      text += c.choices[0]!.text;
      finish = c.choices[0]!.finish_reason ?? finish;
      chunks++;
    }
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, ref.text);
  assert.ok(chunks > 2, `the text came in ${chunks} chunks`);
  assert.equal(finish, ref.finish);
  assert.deepEqual(usage, r.usage);

  // token ids as the prompt: the same ids, the same text
  const byIds = await client.completions.create({ model: 'tiny', prompt: Array.from(completionIds(prompt)), max_tokens: 40, temperature: 0 });
  assert.equal(byIds.choices[0]!.text, ref.text);
});

test('chat: the checkpoint template, greedy reply equals generate(), streamed equals non-streamed', async () => {
  const messages: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Call me Ishmael.' }];
  const template = ChatTemplate.fromDir(dir, tok);
  const ids = Int32Array.from(tok.encode(template.render(messages, true), { addBos: false }));
  const ref = reference(ids, 30, template.stopStrings());
  const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 30, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0]!.message.role, 'assistant');
  assert.equal(r.choices[0]!.message.content, ref.text.trimStart());
  assert.equal(r.choices[0]!.finish_reason, ref.finish);
  assert.deepEqual(r.usage, { prompt_tokens: ids.length, completion_tokens: ref.tokens, total_tokens: ids.length + ref.tokens });

  const stream = await client.chat.completions.create({ model: 'tiny', messages, max_completion_tokens: 30, temperature: 0, stream: true });
  let content = '';
  let role: string | undefined;
  let finish: string | null = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    role ??= c.choices[0]!.delta.role;
    content += c.choices[0]!.delta.content ?? '';
    finish = c.choices[0]!.finish_reason ?? finish;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, r.choices[0]!.message.content);
  assert.equal(finish, ref.finish);
});

test('stop strings end the text before them (finish_reason stop); a seed fixes sampling', async () => {
  const prompt = 'The whale';
  const full = reference(completionIds(prompt), 40).text;
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
  assert.ok(stop.length === 2);
  const cut = full.slice(0, full.indexOf(stop));
  for (const s of [stop, ['zzzz-never', stop]]) {
    const r = await client.completions.create({ model: 'tiny', prompt, max_tokens: 40, temperature: 0, stop: s });
    assert.equal(r.choices[0]!.text, cut);
    assert.equal(r.choices[0]!.finish_reason, 'stop');
  }
  const sample = async (seed: number): Promise<string> =>
    (await client.completions.create({ model: 'tiny', prompt, max_tokens: 30, temperature: 1, top_p: 0.9, seed, frequency_penalty: 0.5, presence_penalty: 0.2, top_k: 50, min_p: 0.01, repetition_penalty: 1.1 } as OpenAI.CompletionCreateParamsNonStreaming)).choices[0]!.text;
  assert.equal(await sample(11), await sample(11));
});

test('the server answers while generating; a full queue is 429; an aborted stream frees its slot', async () => {
  const busy = await ApiServer.start({ dir, id: 'tiny', host: '127.0.0.1', port: 0, maxBatch: 1, maxContext: 2048, queue: 1, apiKey: 'sekrit' });
  try {
    const c = new OpenAI({ baseURL: `${busy.url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
    const long = { model: 'tiny', prompt: 'The whale', max_tokens: 2000, temperature: 0, stream: true } as const;
    const a = await c.completions.create(long);
    const it = a[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false); // a is generating
    const b = c.completions.create({ model: 'tiny', prompt: 'Ishmael', max_tokens: 5, temperature: 0 }); // waits for the slot
    const health = async (): Promise<Record<string, number>> =>
      (await (await fetch(`${busy.url}/health`, { headers: { Authorization: 'Bearer sekrit' } })).json()) as Record<string, number>;
    for (let i = 0; i < 100 && (await health())['queued'] !== 1; i++) await new Promise((r) => setTimeout(r, 5));
    const h = await health();
    assert.deepEqual([h['generating'], h['queued']], [1, 1], 'health answers while a generates and b waits');
    await assert.rejects(c.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 2 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.RateLimitError, String(e));
      assert.equal(e.status, 429);
      assert.match(e.message, /queue is full/);
      return true;
    });
    await it.return!(); // the client aborts a's stream: it is cancelled, its slot goes to b
    const rb = await b;
    assert.equal(busy.counts.client_gone, 1, 'a was cancelled, not run to its end');
    assert.equal(rb.choices[0]!.finish_reason === 'length' || rb.choices[0]!.finish_reason === 'stop', true);
    for (let i = 0; i < 100 && busy.pending > 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(busy.pending, 0, 'nothing left in flight after the abort');
    const next = await c.completions.create({ model: 'tiny', prompt: 'The', max_tokens: 3, temperature: 0 });
    assert.equal(next.usage!.completion_tokens <= 3, true);
    // a non-streaming request whose client gives up is cancelled too
    const ac = new AbortController();
    const gone = c.completions.create({ model: 'tiny', prompt: 'The whale', max_tokens: 2000, temperature: 0 }, { signal: ac.signal });
    for (let i = 0; i < 200 && busy.pending === 0; i++) await new Promise((r) => setTimeout(r, 2));
    ac.abort();
    await assert.rejects(gone, (e: unknown) => e instanceof OpenAI.APIUserAbortError);
    for (let i = 0; i < 200 && busy.pending > 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(busy.pending, 0);
    assert.deepEqual(busy.counts, { completed: 2, client_gone: 2, failed: 0 }); // b and the next one; a and the given-up one

    // the API key: none, or a wrong one, is 401 on every path
    for (const key of [undefined, 'wrong']) {
      const res = await fetch(`${busy.url}/health`, key ? { headers: { Authorization: `Bearer ${key}` } } : {});
      assert.equal(res.status, 401);
      const body = (await res.json()) as { error: { message: string; code: string } };
      assert.equal(body.error.code, 'invalid_api_key');
      assert.match(body.error.message, key ? /Incorrect API key/ : /Authorization: Bearer/);
    }
    await assert.rejects(new OpenAI({ baseURL: `${busy.url}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  } finally {
    await busy.close();
  }
});

/** Starts `dsv3 serve --model dir --port 0 ...extra`; resolves with its URL once it listens. */
async function startCli(extra: string[]): Promise<{ url: string; exited: Promise<number | null>; kill: () => void; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--model', dir, '--port', '0', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (s: string) => {
      stderr += s;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`dsv3 serve exited (${code}): ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { url, exited, kill: () => child.kill('SIGTERM'), stderr: () => stderr };
}

test('dsv3 serve (the CLI): URL on stderr, SIGTERM finishes the stream in flight and exits 0', async () => {
  const { url, exited, kill, stderr } = await startCli(['--max-batch', '2']);
  const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
  const stream = await c.completions.create({ model: 'checkpoint-4', prompt: 'The whale', max_tokens: 400, temperature: 0, stream: true });
  let text = '';
  let finish: string | null = null;
  let first = true;
  for await (const ch of stream) {
    if (first) {
      kill();
      first = false;
    }
    text += ch.choices[0]!.text;
    finish = ch.choices[0]!.finish_reason ?? finish;
  }
  assert.equal(text, reference(completionIds('The whale'), 400).text, 'the stream in flight ran to its end');
  assert.ok(finish === 'length' || finish === 'stop');
  assert.equal(await exited, 0, stderr());
  assert.match(stderr(), /SIGTERM: shutting down/);
  await assert.rejects(fetch(`${url}/health`), 'no longer listening');
});

test('dsv3 serve --grace 0: SIGTERM cancels the stream in flight (an error event, no [DONE]) and exits 0', async () => {
  const { url, exited, kill, stderr } = await startCli(['--grace', '0']);
  const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
  assert.equal(reference(completionIds('The whale'), 2000).tokens, 2000, 'precondition: this generation runs to max_tokens');
  const stream = await c.completions.create({ model: 'checkpoint-4', prompt: 'The whale', max_tokens: 2000, temperature: 0, stream: true });
  let chunks = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of stream) if (chunks++ === 1) kill();
    })(),
    (e: unknown) => e instanceof OpenAI.APIError && /shutting down; the request was cancelled/.test(e.message),
  );
  assert.ok(chunks < 2000);
  assert.equal(await exited, 0, stderr());
});

test('dsv3 serve on bad input: exit 2 and one line naming the problem', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--model', fixturePath('tiny-dense-moe')], /tiny-dense-moe: no tokenizer\.json/],
    [['--model', dir, '--max-context', '99999'], /--max-context 99999 exceeds the model's max_position_embeddings \(2048\)/],
    [['--model', dir, '--port', String(api.address.port)], new RegExp(`cannot listen on 127\\.0\\.0\\.1:${api.address.port}: EADDRINUSE`)],
  ];
  for (const [args, says] of cases) {
    const r = spawnSync(process.execPath, [CLI, 'serve', ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^dsv3 serve: [^\n]+\n$/);
    assert.match(r.stderr, says);
  }
});
