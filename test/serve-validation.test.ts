/**
 * Every malformed request to `dsv3 serve` gets a 4xx with the OpenAI error body
 * {"error": {"message", "type", "param", "code"}} whose message names the problem: malformed
 * JSON, wrong types, missing fields, an unknown model, a prompt longer than the context,
 * max_tokens past it, unsupported parameters (named), unknown parameters, wrong paths (404) and
 * methods (405), a body past the size limit (413). Sent raw with fetch (the openai client would
 * refuse some of them itself), and a few through the client to check it surfaces them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import OpenAI from 'openai';
import { ApiServer } from '../src/serve/server.js';
import { tinyServeCheckpoint } from './helpers/serve-checkpoint.js';

let tmp = '';
let api: ApiServer;
const CONTEXT = 128;

before(async () => {
  let dir: string;
  ({ tmp, dir } = tinyServeCheckpoint(256));
  api = await ApiServer.start({ dir, id: 'tiny', host: '127.0.0.1', port: 0, maxBatch: 1, maxContext: CONTEXT, queue: 1, maxBodyBytes: 64 * 1024 });
});

after(async () => {
  await api?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Case {
  name: string;
  method?: string;
  path?: string;
  body?: unknown;
  /** A raw body (not JSON-encoded). */
  raw?: string;
  status: number;
  param?: string | null;
  code?: string;
  /** What the message must say. */
  says: RegExp;
}

const chat = (over: Record<string, unknown>): Record<string, unknown> => ({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], ...over });
const comp = (over: Record<string, unknown>): Record<string, unknown> => ({ model: 'tiny', prompt: 'The whale', ...over });
const C = '/v1/chat/completions';
const P = '/v1/completions';

const CASES: Case[] = [
  { name: 'malformed JSON', path: C, raw: '{"model": "tiny", ', status: 400, code: 'invalid_json', says: /could not parse the JSON body/ },
  { name: 'empty body', path: P, raw: '', status: 400, code: 'invalid_json', says: /JSON/ },
  { name: 'not an object', path: C, body: [1, 2], status: 400, says: /must be a JSON object, got an array/ },
  { name: 'missing model', path: C, body: { messages: [{ role: 'user', content: 'Hi' }] }, status: 400, param: 'model', code: 'missing_required_parameter', says: /'model'/ },
  { name: 'model of the wrong type', path: P, body: comp({ model: 7 }), status: 400, param: 'model', code: 'invalid_type', says: /'model': expected a string, but got a number/ },
  { name: 'unknown model', path: C, body: chat({ model: 'gpt-4o' }), status: 404, param: 'model', code: 'model_not_found', says: /'gpt-4o' does not exist.*'tiny'/ },
  { name: 'missing messages', path: C, body: { model: 'tiny' }, status: 400, param: 'messages', says: /Missing required parameter: 'messages'/ },
  { name: 'messages not an array', path: C, body: chat({ messages: 'Hi' }), status: 400, param: 'messages', code: 'invalid_type', says: /'messages': expected an array/ },
  { name: 'empty messages', path: C, body: chat({ messages: [] }), status: 400, param: 'messages', says: /empty array/ },
  { name: 'bad role', path: C, body: chat({ messages: [{ role: 'robot', content: 'x' }] }), status: 400, param: 'messages[0].role', says: /'robot'/ },
  { name: 'missing content', path: C, body: chat({ messages: [{ role: 'user' }] }), status: 400, param: 'messages[0].content', says: /messages\[0\]\.content/ },
  { name: 'content of the wrong type', path: C, body: chat({ messages: [{ role: 'user', content: 5 }] }), status: 400, param: 'messages[0].content', code: 'invalid_type', says: /messages\[0\]\.content/ },
  { name: 'image content', path: C, body: chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), status: 400, param: 'messages[0].content[0].type', code: 'unsupported_parameter', says: /only text content parts/ },
  { name: 'tool role', path: C, body: chat({ messages: [{ role: 'tool', content: 'x', tool_call_id: '1' }] }), status: 400, param: 'messages[0].role', code: 'unsupported_parameter', says: /tool/ },
  { name: 'temperature a string', path: C, body: chat({ temperature: 'hot' }), status: 400, param: 'temperature', code: 'invalid_type', says: /'temperature': expected a number, but got a string/ },
  { name: 'temperature out of range', path: P, body: comp({ temperature: 3 }), status: 400, param: 'temperature', says: /'temperature': 3 is out of range; expected a number in \[0, 2\]/ },
  { name: 'top_p 0', path: P, body: comp({ top_p: 0 }), status: 400, param: 'top_p', says: /'top_p'.*\(0, 1\]/ },
  { name: 'max_tokens not an integer', path: P, body: comp({ max_tokens: 1.5 }), status: 400, param: 'max_tokens', says: /'max_tokens': expected an integer/ },
  { name: 'max_tokens negative', path: C, body: chat({ max_tokens: -1 }), status: 400, param: 'max_tokens', says: /'max_tokens': -1 is out of range/ },
  { name: 'max_tokens past the context', path: P, body: comp({ max_tokens: 1000 }), status: 400, param: 'max_tokens', code: 'context_length_exceeded', says: new RegExp(`maximum context length is ${CONTEXT} tokens.*reduce max_tokens to at most \\d+`) },
  { name: 'max_completion_tokens past the context', path: C, body: chat({ max_completion_tokens: 1000 }), status: 400, param: 'max_tokens', code: 'context_length_exceeded', says: /max_completion_tokens/ },
  { name: 'prompt longer than the context', path: P, body: comp({ prompt: 'Call me Ishmael. '.repeat(200) }), status: 400, param: 'prompt', code: 'context_length_exceeded', says: new RegExp(`maximum context length is ${CONTEXT} tokens. However, your prompt resulted in \\d+ tokens`) },
  { name: 'conversation longer than the context', path: C, body: chat({ messages: [{ role: 'user', content: 'Call me Ishmael. '.repeat(200) }] }), status: 400, param: 'messages', code: 'context_length_exceeded', says: /your messages resulted in \d+ tokens/ },
  { name: 'missing prompt', path: P, body: { model: 'tiny' }, status: 400, param: 'prompt', says: /'prompt'/ },
  { name: 'prompt of the wrong type', path: P, body: comp({ prompt: { text: 'x' } }), status: 400, param: 'prompt', code: 'invalid_type', says: /'prompt'/ },
  { name: 'several prompts', path: P, body: comp({ prompt: ['a', 'b'] }), status: 400, param: 'prompt', code: 'unsupported_parameter', says: /one prompt per request, got 2/ },
  { name: 'token id outside the vocabulary', path: P, body: comp({ prompt: [1, 99999] }), status: 400, param: 'prompt', says: /token id 99999 is outside the vocabulary/ },
  { name: 'n > 1', path: C, body: chat({ n: 3 }), status: 400, param: 'n', code: 'unsupported_parameter', says: /'n' is not supported.*got 3/ },
  { name: 'logprobs (chat)', path: C, body: chat({ logprobs: true }), status: 400, param: 'logprobs', code: 'unsupported_parameter', says: /'logprobs' is not supported/ },
  { name: 'logprobs (completions)', path: P, body: comp({ logprobs: 2 }), status: 400, param: 'logprobs', code: 'unsupported_parameter', says: /'logprobs' is not supported/ },
  { name: 'top_logprobs', path: C, body: chat({ top_logprobs: 2 }), status: 400, param: 'top_logprobs', code: 'unsupported_parameter', says: /'top_logprobs'/ },
  { name: 'tools', path: C, body: chat({ tools: [{ type: 'function', function: { name: 'f' } }] }), status: 400, param: 'tools', code: 'unsupported_parameter', says: /'tools' is not supported.*tool/ },
  { name: 'response_format json', path: C, body: chat({ response_format: { type: 'json_object' } }), status: 400, param: 'response_format', code: 'unsupported_parameter', says: /'response_format'/ },
  { name: 'logit_bias', path: P, body: comp({ logit_bias: { '5': 10 } }), status: 400, param: 'logit_bias', code: 'unsupported_parameter', says: /'logit_bias'/ },
  { name: 'echo', path: P, body: comp({ echo: true }), status: 400, param: 'echo', code: 'unsupported_parameter', says: /'echo'/ },
  { name: 'best_of', path: P, body: comp({ best_of: 3 }), status: 400, param: 'best_of', code: 'unsupported_parameter', says: /'best_of'/ },
  { name: 'suffix', path: P, body: comp({ suffix: 'end' }), status: 400, param: 'suffix', code: 'unsupported_parameter', says: /'suffix'/ },
  { name: 'unknown parameter', path: C, body: chat({ frobnicate: 1 }), status: 400, param: 'frobnicate', code: 'unknown_parameter', says: /Unrecognized request argument supplied: frobnicate/ },
  { name: 'a chat parameter on completions', path: P, body: comp({ messages: [] }), status: 400, param: 'messages', code: 'unknown_parameter', says: /messages/ },
  { name: 'stop of the wrong type', path: P, body: comp({ stop: 5 }), status: 400, param: 'stop', code: 'invalid_type', says: /'stop': expected a string or an array of strings/ },
  { name: 'empty stop string', path: P, body: comp({ stop: [''] }), status: 400, param: 'stop', says: /must not be empty/ },
  { name: 'stream not a boolean', path: C, body: chat({ stream: 'yes' }), status: 400, param: 'stream', code: 'invalid_type', says: /'stream': expected a boolean/ },
  { name: 'stream_options without stream', path: C, body: chat({ stream_options: { include_usage: true } }), status: 400, param: 'stream_options', says: /only allowed when 'stream' is true/ },
  { name: 'negative seed', path: P, body: comp({ seed: -1 }), status: 400, param: 'seed', says: /'seed': -1 is out of range/ },
  { name: 'top_k not an integer', path: P, body: comp({ top_k: 2.5 }), status: 400, param: 'top_k', says: /'top_k': expected an integer/ },
  { name: 'repetition_penalty 0', path: P, body: comp({ repetition_penalty: 0 }), status: 400, param: 'repetition_penalty', says: /'repetition_penalty'.*> 0/ },
  { name: 'frequency_penalty out of range', path: C, body: chat({ frequency_penalty: 2.5 }), status: 400, param: 'frequency_penalty', says: /'frequency_penalty'.*\[-2, 2\]/ },
  { name: 'unknown path', method: 'GET', path: '/v1/embeddings', status: 404, code: 'not_found', says: /Unknown path \/v1\/embeddings/ },
  { name: 'unknown model path', method: 'GET', path: '/v1/models/other', status: 404, param: 'model', code: 'model_not_found', says: /'other' does not exist/ },
  { name: 'GET on a POST path', method: 'GET', path: C, status: 405, code: 'method_not_allowed', says: /Method GET is not allowed on \/v1\/chat\/completions; use POST/ },
  { name: 'POST on a GET path', path: '/health', body: {}, status: 405, code: 'method_not_allowed', says: /Method POST is not allowed on \/health; use GET/ },
  { name: 'DELETE a model', method: 'DELETE', path: '/v1/models', status: 405, says: /Method DELETE/ },
  { name: 'body too large', path: C, raw: JSON.stringify(chat({ messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }] })), status: 413, code: 'request_too_large', says: /too large: the limit is 65536 bytes/ },
];

test('every malformed request: its 4xx and an OpenAI error body naming the problem', async () => {
  for (const c of CASES) {
    const method = c.method ?? 'POST';
    const init: RequestInit = { method, headers: { 'Content-Type': 'application/json' } };
    if (method === 'POST') init.body = c.raw ?? JSON.stringify(c.body);
    const res = await fetch(api.url + (c.path ?? C), init);
    const text = await res.text();
    assert.equal(res.status, c.status, `${c.name}: status ${res.status}, body ${text}`);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/, c.name);
    const body = JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string | null } };
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], c.name);
    assert.match(body.error.message, c.says, `${c.name}: ${body.error.message}`);
    assert.equal(body.error.type, c.status === 404 ? 'not_found_error' : 'invalid_request_error', c.name);
    if (c.param !== undefined) assert.equal(body.error.param, c.param, `${c.name}: param`);
    if (c.code !== undefined) assert.equal(body.error.code, c.code, `${c.name}: code`);
    if (c.status === 405) assert.ok(res.headers.get('allow'), `${c.name}: Allow header`);
  }
  // nothing was queued by any of them, and the server still serves
  assert.equal(api.pending, 0);
  const ok = await fetch(`${api.url}/v1/completions`, { method: 'POST', body: JSON.stringify(comp({ max_tokens: 2, temperature: 0 })) });
  assert.equal(ok.status, 200);
});

test('the openai client surfaces the errors with their status and message', async () => {
  const client = new OpenAI({ baseURL: `${api.url}/v1`, apiKey: 'x', maxRetries: 0 });
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], n: 2 }), (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.status, 400);
    assert.equal(e.param, 'n');
    assert.match(e.message, /'n' is not supported/);
    return true;
  });
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }), (e: unknown) => e instanceof OpenAI.NotFoundError && /'nope' does not exist/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 5000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
});
