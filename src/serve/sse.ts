/**
 * Server-sent events as the OpenAI API streams them: `Content-Type: text/event-stream`, one
 * `data: <JSON>\n\n` event per chunk, and `data: [DONE]\n\n` at the end.
 */
import type { ServerResponse } from 'node:http';

export class SseStream {
  constructor(private readonly res: ServerResponse) {}

  /** Sends the status line and headers (once, before the first event). */
  open(extraHeaders: Record<string, string> = {}): void {
    this.res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      'X-Accel-Buffering': 'no',
      ...extraHeaders,
    });
    this.res.flushHeaders();
  }

  /** Whether events can still be written (the client has not gone). */
  get writable(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  send(data: unknown): void {
    if (this.writable) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** The last event, `[DONE]`, and the end of the response. */
  done(): void {
    if (this.writable) this.res.end('data: [DONE]\n\n');
  }

  /** Ends the stream after an error event (no [DONE]: the client sees the stream fail). */
  fail(body: unknown): void {
    if (!this.writable) return;
    this.res.end(`data: ${JSON.stringify(body)}\n\n`);
  }
}
