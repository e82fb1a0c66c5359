/**
 * Runs one prepared job on the model worker and answers in the OpenAI shape of its endpoint:
 *   chat:        `chat.completion` (message.content), or `chat.completion.chunk` events
 *                (delta.role first, then delta.content pieces, then the finish_reason);
 *   completions: `text_completion` (choices[0].text), streamed as the same object type.
 * `usage` counts the prompt's tokens and the generated ones (those cut by a stop string
 * included); finish_reason is `stop` (EOS, a stop string, the template's end of turn) or
 * `length` (max_tokens, or the end of the context). A chat reply starts at its first
 * non-whitespace character, as in `dsv3 chat`. When the client goes away before the end, the
 * job is cancelled so its slot is freed at once.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { LeaveReason } from '../inference/batch-decoder.js';
import { ApiError } from './api-error.js';
import type { GenerationJob } from './protocol.js';
import { SseStream } from './sse.js';
import type { Endpoint } from './validate.js';
import type { ModelWorker } from './worker-client.js';

export interface CompletionTask {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  job: Omit<GenerationJob, 'id'>;
}

function finishReason(r: LeaveReason): 'stop' | 'length' {
  return r === 'length' ? 'length' : 'stop';
}

/** Sends a JSON response. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.end();
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

/** How a completion ended: answered, its client went away (cancelled), or it failed (500 / 503). */
export type CompletionOutcome = 'completed' | 'client_gone' | 'failed';

/** Answers `res` with the completion of `t`; resolves when the response is over (or the client gone). */
export function runCompletion(worker: ModelWorker, t: CompletionTask, res: ServerResponse): Promise<CompletionOutcome> {
  const chat = t.endpoint === 'chat';
  const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
  const created = Math.floor(Date.now() / 1000);
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const P = t.job.prompt.length;
  const usage = (n: number): { prompt_tokens: number; completion_tokens: number; total_tokens: number } => ({ prompt_tokens: P, completion_tokens: n, total_tokens: P + n });
  const sse = t.stream ? new SseStream(res) : null;
  let started = !chat; // a chat reply's leading whitespace is dropped
  let text = '';
  const chunk = (piece: string | null, finish: 'stop' | 'length' | null): Record<string, unknown> => {
    const choice = chat
      ? { index: 0, delta: piece === null ? {} : { content: piece }, logprobs: null, finish_reason: finish }
      : { index: 0, text: piece ?? '', logprobs: null, finish_reason: finish };
    const c: Record<string, unknown> = { id, object, created, model: t.model, choices: [choice] };
    if (t.includeUsage) c['usage'] = null;
    return c;
  };
  const emit = (piece: string): void => {
    if (!started) {
      piece = piece.trimStart();
      started = piece !== '';
    }
    if (piece === '') return;
    text += piece;
    sse?.send(chunk(piece, null));
  };

  // the client left while the request was read and checked: nothing to generate
  if (res.destroyed || res.socket === null || res.socket.destroyed) return Promise.resolve('client_gone');
  return new Promise<CompletionOutcome>((resolve) => {
    let ended = false;
    if (sse) {
      sse.open();
      if (chat) {
        const first = chunk(null, null);
        (first['choices'] as Array<Record<string, unknown>>)[0]!['delta'] = { role: 'assistant', content: '' };
        sse.send(first);
      }
    }
    const jobId = worker.submit(t.job, {
      onText: (piece) => emit(piece),
      onEnd: (end) => {
        ended = true;
        res.off('close', onClose);
        if (res.destroyed) return resolve('client_gone');
        if (end.reason === 'error' || end.reason === 'cancelled') {
          // cancelled with the client still there: the server is shutting down (server.ts)
          const e = end.reason === 'error'
            ? new ApiError(500, `generation failed: ${end.error ?? 'unknown error'}`, null, 'generation_failed')
            : new ApiError(503, 'The server is shutting down; the request was cancelled.', null, 'shutting_down');
          if (sse) sse.fail(e.body());
          else sendJson(res, e.status, e.body());
          return resolve('failed');
        }
        emit(end.text);
        const finish = finishReason(end.reason);
        if (sse) {
          sse.send(chunk(chat ? null : '', finish));
          if (t.includeUsage) sse.send({ id, object, created, model: t.model, choices: [], usage: usage(end.tokens) });
          sse.done();
        } else {
          const choice = chat
            ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }
            : { index: 0, text, logprobs: null, finish_reason: finish };
          sendJson(res, 200, { id, object: chat ? 'chat.completion' : 'text_completion', created, model: t.model, choices: [choice], usage: usage(end.tokens) });
        }
        resolve('completed');
      },
    });
    // the client went away (its connection closed before the response ended): free the slot
    const onClose = (): void => {
      if (!ended && !res.writableFinished) worker.cancel(jobId);
    };
    res.on('close', onClose);
  });
}
