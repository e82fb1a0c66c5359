/**
 * From a validated request (validate.ts) to a generation job for the model worker: the model
 * name checked, the prompt rendered (chat: the checkpoint's chat template with the generation
 * prompt, as `dsv3 chat`; completions: the text with BOS when the tokenizer has one, as
 * `dsv3 generate`, or the given token ids) and tokenized, its length and max_tokens checked
 * against the context, the stop strings gathered (chat: the template's end of turn too).
 */
import { randomInt } from 'node:crypto';
import { ApiError, badParam } from './api-error.js';
import type { ModelInfo } from './model-info.js';
import type { GenerationJob } from './protocol.js';
import type { ParsedRequest } from './validate.js';

/** max_tokens of a completion when the request gives none (OpenAI's default for /v1/completions). */
export const DEFAULT_COMPLETION_TOKENS = 16;

export function prepareJob(r: ParsedRequest, info: ModelInfo, maxContext: number): Omit<GenerationJob, 'id'> {
  if (r.model !== info.id) {
    throw new ApiError(404, `The model '${r.model}' does not exist; this server serves '${info.id}' (GET /v1/models).`, 'model', 'model_not_found', 'not_found_error');
  }
  let prompt: Int32Array;
  let stops = r.stops;
  if (r.endpoint === 'chat') {
    prompt = Int32Array.from(info.tok.encode(info.template.render(r.messages!, true), { addBos: false }));
    stops = [...new Set([...info.chatStops, ...r.stops])];
  } else if (typeof r.prompt === 'string') {
    prompt = Int32Array.from(info.tok.encode(r.prompt, { addBos: info.tok.bosId !== undefined }));
  } else {
    const V = info.cfg.vocab_size;
    const bad = r.prompt!.find((t) => t >= V);
    if (bad !== undefined) throw badParam('prompt', `Invalid 'prompt': token id ${bad} is outside the vocabulary [0, ${V}).`);
    prompt = Int32Array.from(r.prompt!);
  }
  const P = prompt.length;
  const what = r.endpoint === 'chat' ? 'messages' : 'prompt';
  if (P === 0) throw badParam(what, `Invalid '${what}': the ${what === 'messages' ? 'conversation' : 'prompt'} encodes to no tokens.`);
  if (P >= maxContext) {
    throw badParam(what, `This model's maximum context length is ${maxContext} tokens. However, your ${what} resulted in ${P} tokens, leaving no room for a completion. Please reduce the length of the ${what}.`, 'context_length_exceeded');
  }
  const room = maxContext - P;
  let maxNew: number;
  if (r.maxTokens !== undefined) {
    if (r.maxTokens > room) {
      const param = r.endpoint === 'chat' ? 'max_tokens (or max_completion_tokens)' : 'max_tokens';
      throw badParam('max_tokens',
        `This model's maximum context length is ${maxContext} tokens. However, you requested ${P + r.maxTokens} tokens (${P} in the ${what}, ${r.maxTokens} for the completion). Please reduce ${param} to at most ${room}.`,
        'context_length_exceeded');
    }
    maxNew = r.maxTokens;
  } else maxNew = r.endpoint === 'chat' ? room : Math.min(DEFAULT_COMPLETION_TOKENS, room);
  return { prompt, maxNew, sampling: r.sampling, seed: r.seed ?? randomInt(0, 2 ** 47), stops };
}
