/**
 * Validation of the request bodies of `POST /v1/chat/completions` and `POST /v1/completions`
 * (the OpenAI API's fields; top_k, min_p and repetition_penalty as the common extensions of
 * vLLM and others). Every field is checked for its type and range, parameters this server does
 * not implement (n > 1, logprobs, tools, ...) are refused by name rather than ignored, and an
 * unknown field is refused as OpenAI does ("Unrecognized request argument"). The result is the
 * request in this server's terms; what needs the model (the prompt's length, max_tokens against
 * the context) is checked by routes.ts.
 */
import type { SamplingOptions } from '../inference/sampling.js';
import type { ChatMessage } from '../data/tokenizer/index.js';
import { ApiError, badParam } from './api-error.js';

export type Endpoint = 'chat' | 'completions';

/** A validated request, before tokenization. */
export interface ParsedRequest {
  endpoint: Endpoint;
  model: string;
  /** chat: the conversation; completions: the prompt as text or token ids. */
  messages?: ChatMessage[];
  prompt?: string | number[];
  /** max_completion_tokens ?? max_tokens, when given. */
  maxTokens?: number;
  sampling: SamplingOptions;
  seed?: number;
  stops: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage. */
  includeUsage: boolean;
}

type Body = Record<string, unknown>;

/** Fields accepted and ignored (they do not change the output). */
const IGNORED = new Set(['user', 'metadata', 'store', 'service_tier']);

const COMMON = new Set([
  'model', 'stream', 'stream_options', 'max_tokens', 'temperature', 'top_p', 'frequency_penalty', 'presence_penalty', 'stop', 'seed',
  'top_k', 'min_p', 'repetition_penalty', 'n', 'logprobs', 'logit_bias',
]);
const CHAT = new Set(['messages', 'max_completion_tokens', 'top_logprobs', 'tools', 'tool_choice', 'functions', 'function_call',
  'parallel_tool_calls', 'response_format', 'audio', 'modalities', 'prediction', 'web_search_options', 'reasoning_effort']);
const COMPLETIONS = new Set(['prompt', 'echo', 'suffix', 'best_of']);

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an object' : t === 'string' ? 'a string' : t === 'boolean' ? 'a boolean' : t === 'number' ? 'a number' : t;
}

function wrongType(param: string, expected: string, v: unknown): ApiError {
  return badParam(param, `Invalid type for '${param}': expected ${expected}, but got ${typeName(v)} instead.`, 'invalid_type');
}

/** The value of an optional field (null counts as absent, as in the OpenAI API). */
function opt(b: Body, k: string): unknown {
  return b[k] === null ? undefined : b[k];
}

function num(b: Body, k: string, lo: number, hi: number, loOpen = false, int = false): number | undefined {
  const v = opt(b, k);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw wrongType(k, int ? 'an integer' : 'a number', v);
  if (int && !Number.isInteger(v)) throw badParam(k, `Invalid '${k}': expected an integer, got ${v}.`);
  if ((loOpen ? v <= lo : v < lo) || v > hi) {
    const range = hi === Infinity ? `${loOpen ? '>' : '>='} ${lo}` : `in ${loOpen ? '(' : '['}${lo}, ${hi}]`;
    throw badParam(k, `Invalid '${k}': ${v} is out of range; expected ${int ? 'an integer' : 'a number'} ${range}.`);
  }
  return v;
}

function bool(b: Body, k: string): boolean | undefined {
  const v = opt(b, k);
  if (v !== undefined && typeof v !== 'boolean') throw wrongType(k, 'a boolean', v);
  return v as boolean | undefined;
}

function unsupported(param: string, what: string): ApiError {
  return badParam(param, `'${param}' is not supported by this server: ${what}.`, 'unsupported_parameter');
}

/** Parameters this server does not implement: accepted only at their no-op values. */
function refuseUnsupported(b: Body, endpoint: Endpoint): void {
  const n = num(b, 'n', 1, 128, false, true);
  if (n !== undefined && n !== 1) throw unsupported('n', `only one choice per request (n = 1), got ${n}`);
  if (endpoint === 'chat') {
    const lp = bool(b, 'logprobs');
    if (lp) throw unsupported('logprobs', 'log probabilities are not returned');
    if (opt(b, 'top_logprobs') !== undefined) throw unsupported('top_logprobs', 'log probabilities are not returned');
    for (const k of ['tools', 'tool_choice', 'functions', 'function_call', 'parallel_tool_calls']) {
      if (opt(b, k) !== undefined) throw unsupported(k, 'no tool or function calling');
    }
    for (const k of ['audio', 'prediction', 'web_search_options', 'reasoning_effort']) if (opt(b, k) !== undefined) throw unsupported(k, 'text generation only');
    const rf = opt(b, 'response_format');
    if (rf !== undefined && !(typeof rf === 'object' && !Array.isArray(rf) && (rf as Body)['type'] === 'text')) {
      throw unsupported('response_format', 'only {"type": "text"} (no JSON mode or schemas)');
    }
    const mod = opt(b, 'modalities');
    if (mod !== undefined && !(Array.isArray(mod) && mod.every((m) => m === 'text'))) throw unsupported('modalities', 'text output only');
  } else {
    if (opt(b, 'logprobs') !== undefined) throw unsupported('logprobs', 'log probabilities are not returned');
    if (bool(b, 'echo')) throw unsupported('echo', 'the prompt is not echoed');
    const suffix = opt(b, 'suffix');
    if (suffix !== undefined && suffix !== '') throw unsupported('suffix', 'no insertion (fill-in-the-middle)');
    const bestOf = num(b, 'best_of', 1, 128, false, true);
    if (bestOf !== undefined && bestOf !== 1) throw unsupported('best_of', `one completion per request (best_of = 1), got ${bestOf}`);
  }
  const bias = opt(b, 'logit_bias');
  if (bias !== undefined) {
    if (typeof bias !== 'object' || Array.isArray(bias)) throw wrongType('logit_bias', 'an object', bias);
    if (Object.keys(bias as Body).length > 0) throw unsupported('logit_bias', 'logits are not biased');
  }
}

function stops(b: Body): string[] {
  const v = opt(b, 'stop');
  if (v === undefined) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw wrongType('stop', 'a string or an array of strings', v);
  if (list.length > 16) throw badParam('stop', `Invalid 'stop': at most 16 stop strings, got ${list.length}.`);
  if (list.some((s) => s === '')) throw badParam('stop', "Invalid 'stop': a stop string must not be empty.");
  return list as string[];
}

function textContent(v: unknown, param: string): string {
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) throw wrongType(param, 'a string or an array of content parts', v);
  return v.map((part, j) => {
    const p = `${param}[${j}]`;
    if (typeof part !== 'object' || part === null || Array.isArray(part)) throw wrongType(p, 'a content part object', part);
    const type = (part as Body)['type'];
    if (type !== 'text') throw unsupported(`${p}.type`, `only text content parts, got ${JSON.stringify(type)}`);
    const text = (part as Body)['text'];
    if (typeof text !== 'string') throw wrongType(`${p}.text`, 'a string', text);
    return text;
  }).join('');
}

function messages(b: Body): ChatMessage[] {
  const v = b['messages'];
  if (v === undefined) throw badParam('messages', "Missing required parameter: 'messages'.", 'missing_required_parameter');
  if (!Array.isArray(v)) throw wrongType('messages', 'an array of messages', v);
  if (v.length === 0) throw badParam('messages', "Invalid 'messages': empty array. Expected at least one message.", 'empty_array');
  return v.map((m, i): ChatMessage => {
    const p = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw wrongType(p, 'a message object', m);
    const msg = m as Body;
    const role = msg['role'];
    if (role === undefined) throw badParam(`${p}.role`, `Missing required parameter: '${p}.role'.`, 'missing_required_parameter');
    if (typeof role !== 'string') throw wrongType(`${p}.role`, 'a string', role);
    if (role === 'tool' || role === 'function') throw unsupported(`${p}.role`, `no tool or function calling (role '${role}')`);
    if (!['system', 'developer', 'user', 'assistant'].includes(role)) {
      throw badParam(`${p}.role`, `Invalid value for '${p}.role': '${role}'; expected one of system, developer, user, assistant.`);
    }
    for (const k of Object.keys(msg)) {
      if (k === 'tool_calls' || k === 'function_call') {
        if (msg[k] !== null && msg[k] !== undefined) throw unsupported(`${p}.${k}`, 'no tool or function calling');
      } else if (!['role', 'content', 'name', 'refusal'].includes(k)) {
        throw badParam(`${p}.${k}`, `Unrecognized argument in ${p}: '${k}'.`, 'unknown_parameter');
      }
    }
    if (msg['content'] === undefined || msg['content'] === null) {
      throw badParam(`${p}.content`, `Missing required parameter: '${p}.content'.`, 'missing_required_parameter');
    }
    const name = msg['name'];
    if (name !== undefined && name !== null && typeof name !== 'string') throw wrongType(`${p}.name`, 'a string', name);
    return { role: role === 'developer' ? 'system' : (role as ChatMessage['role']), content: textContent(msg['content'], `${p}.content`) };
  });
}

function prompt(b: Body): string | number[] {
  const v = b['prompt'];
  if (v === undefined || v === null) throw badParam('prompt', "Missing required parameter: 'prompt'.", 'missing_required_parameter');
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) throw wrongType('prompt', 'a string, an array of strings or an array of token ids', v);
  if (v.length === 0) throw badParam('prompt', "Invalid 'prompt': empty array.", 'empty_array');
  if (v.every((x) => typeof x === 'number')) {
    const bad = v.find((x) => !Number.isInteger(x) || x < 0);
    if (bad !== undefined) throw badParam('prompt', `Invalid 'prompt': token ids must be integers >= 0, got ${bad}.`);
    return v as number[];
  }
  if (v.length === 1 && (typeof v[0] === 'string' || Array.isArray(v[0]))) {
    return prompt({ prompt: v[0] });
  }
  if (v.every((x) => typeof x === 'string' || Array.isArray(x))) throw unsupported('prompt', `one prompt per request, got ${v.length}`);
  throw wrongType('prompt', 'a string, an array of strings or an array of token ids', v);
}

/** Validates a parsed JSON body; throws ApiError (400) naming the first problem. */
export function parseRequest(endpoint: Endpoint, body: unknown): ParsedRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, `The request body must be a JSON object, got ${typeName(body)}.`, null, 'invalid_body');
  }
  const b = body as Body;
  const own = endpoint === 'chat' ? CHAT : COMPLETIONS;
  for (const k of Object.keys(b)) {
    if (!COMMON.has(k) && !own.has(k) && !IGNORED.has(k)) throw badParam(k, `Unrecognized request argument supplied: ${k}`, 'unknown_parameter');
  }
  const model = b['model'];
  if (model === undefined || model === null) throw badParam('model', "Missing required parameter: 'model'.", 'missing_required_parameter');
  if (typeof model !== 'string') throw wrongType('model', 'a string', model);
  const user = opt(b, 'user');
  if (user !== undefined && typeof user !== 'string') throw wrongType('user', 'a string', user);
  refuseUnsupported(b, endpoint);
  const stream = bool(b, 'stream') ?? false;
  const so = opt(b, 'stream_options');
  let includeUsage = false;
  if (so !== undefined) {
    if (!stream) throw badParam('stream_options', "Invalid 'stream_options': only allowed when 'stream' is true.");
    if (typeof so !== 'object' || Array.isArray(so)) throw wrongType('stream_options', 'an object', so);
    for (const k of Object.keys(so as Body)) if (k !== 'include_usage') throw badParam(`stream_options.${k}`, `Unrecognized argument in stream_options: '${k}'.`, 'unknown_parameter');
    includeUsage = bool(so as Body, 'include_usage') ?? false;
  }
  const maxTokens = num(b, 'max_tokens', 1, Infinity, false, true);
  const maxCompletion = endpoint === 'chat' ? num(b, 'max_completion_tokens', 1, Infinity, false, true) : undefined;
  const topK = num(b, 'top_k', -1, Infinity, false, true);
  const sampling: SamplingOptions = {
    temperature: num(b, 'temperature', 0, 2) ?? 1,
    topP: num(b, 'top_p', 0, 1, true) ?? 1,
    topK: topK === undefined || topK < 0 ? 0 : topK,
    minP: num(b, 'min_p', 0, 1) ?? 0,
    repetitionPenalty: num(b, 'repetition_penalty', 0, Infinity, true) ?? 1,
    frequencyPenalty: num(b, 'frequency_penalty', -2, 2) ?? 0,
    presencePenalty: num(b, 'presence_penalty', -2, 2) ?? 0,
  };
  const seed = num(b, 'seed', 0, Number.MAX_SAFE_INTEGER, false, true);
  const out: ParsedRequest = { endpoint, model, sampling, stops: stops(b), stream, includeUsage };
  const mt = maxCompletion ?? maxTokens;
  if (mt !== undefined) out.maxTokens = mt;
  if (seed !== undefined) out.seed = seed;
  if (endpoint === 'chat') out.messages = messages(b);
  else out.prompt = prompt(b);
  return out;
}
