/**
 * The OpenAI-compatible HTTP server of `dsv3 serve`, on node:http alone:
 *   POST /v1/chat/completions, POST /v1/completions   (JSON, or SSE with "stream": true)
 *   GET  /v1/models, GET /v1/models/{id}, GET /health
 * Every request passes, in order: the shutdown gate (503), the API key (401, `Authorization:
 * Bearer KEY`, when one is set), the route (404) and its method (405), the body (413 past the
 * size limit, 400 for malformed JSON), validation (validate.ts, prepare.ts: 400 / 404 naming the
 * problem) and the bounded queue (429 when `maxBatch` requests are generating and `queue` more
 * wait). The model runs in a worker thread (worker-client.ts), so this event loop only parses,
 * tokenizes and writes, and stays responsive while tokens are computed.
 *
 * Shutdown (`close`): stop accepting connections, let the requests in flight finish for up to a
 * grace period, cancel the rest (their clients get a 503 / an SSE error event), end the worker.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DsvError } from '../errors.js';
import { ApiError } from './api-error.js';
import { runCompletion, sendJson } from './completion.js';
import { loadModelInfo, type ModelInfo } from './model-info.js';
import { prepareJob } from './prepare.js';
import { parseRequest, type Endpoint } from './validate.js';
import { ModelWorker } from './worker-client.js';

export interface ServeOptions {
  /** The checkpoint directory. */
  dir: string;
  /** The model's name in the API. */
  id: string;
  host: string;
  /** 0: any free port. */
  port: number;
  apiKey?: string;
  /** Sequences generated at once (the decoder's slots). */
  maxBatch: number;
  /** Positions per sequence (prompt + completion); at most max_position_embeddings. */
  maxContext: number;
  /** Requests that may wait for a slot; beyond them, 429. */
  queue: number;
  /** Largest request body in bytes (default 4 MiB); beyond it, 413. */
  maxBodyBytes?: number;
}

export const DEFAULT_MAX_BODY = 4 << 20;

type Route = { method: 'GET' | 'POST'; endpoint?: Endpoint };

const ROUTES: Record<string, Route> = {
  '/v1/chat/completions': { method: 'POST', endpoint: 'chat' },
  '/v1/completions': { method: 'POST', endpoint: 'completions' },
  '/v1/models': { method: 'GET' },
  '/health': { method: 'GET' },
};

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Requests answered since the start, by how they ended. */
export interface ServeCounts {
  completed: number;
  /** The client went away before the end: the generation was cancelled and its slot freed. */
  client_gone: number;
  failed: number;
}

export class ApiServer {
  readonly counts: ServeCounts = { completed: 0, client_gone: 0, failed: 0 };
  private closing: Promise<void> | null = null;
  private readonly inflight = new Set<Promise<void>>();
  private readonly keyDigest: Buffer | null;
  private readonly maxBody: number;

  private constructor(
    private readonly o: ServeOptions,
    readonly info: ModelInfo,
    readonly worker: ModelWorker,
    private readonly server: http.Server,
  ) {
    this.keyDigest = o.apiKey === undefined ? null : digest(o.apiKey);
    this.maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY;
    server.on('request', (req, res) => void this.handle(req, res));
  }

  /** Loads the model (in its worker) and listens; DsvError on a bad checkpoint or address. */
  static async start(o: ServeOptions): Promise<ApiServer> {
    const info = loadModelInfo(o.dir, o.id);
    const worker = await ModelWorker.start({ dir: o.dir, maxBatch: o.maxBatch, maxContext: o.maxContext });
    const server = http.createServer({ keepAliveTimeout: 5000 });
    const api = new ApiServer(o, info, worker, server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(o.port, o.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      await worker.terminate();
      const err = e as NodeJS.ErrnoException;
      throw new DsvError(`cannot listen on ${o.host}:${o.port}: ${err.code ?? err.message}`);
    }
    return api;
  }

  /** The bound address (the real port when 0 was asked). */
  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** http://HOST:PORT (IPv6 hosts in brackets). */
  get url(): string {
    const a = this.address;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  /** Requests generating or waiting now. */
  get pending(): number {
    return this.worker.pending;
  }

  /**
   * Graceful shutdown: no new connections or requests (503), the requests in flight get up to
   * `graceMs` to finish, then the rest are cancelled; resolves when the server and the worker
   * are closed.
   */
  close(graceMs = 10_000): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      const timer = setTimeout(() => this.worker.cancelAll(), graceMs);
      while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
      clearTimeout(timer);
      await this.worker.close();
      this.server.closeAllConnections();
      await closed;
    })();
    return this.closing;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      await this.route(req, res);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error).message}`, null, 'internal_error');
      if (this.closing || err.status === 413) res.setHeader('Connection', 'close');
      if (!res.headersSent) sendJson(res, err.status, err.body());
      else if (!res.writableEnded) res.end();
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (this.closing) throw new ApiError(503, 'The server is shutting down.', null, 'shutting_down');
    this.authorize(req, res);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const modelPath = p.startsWith('/v1/models/') ? decodeURIComponent(p.slice('/v1/models/'.length)) : null;
    const route: Route | undefined = ROUTES[p] ?? (modelPath !== null ? { method: 'GET' } : undefined);
    if (!route) throw new ApiError(404, `Unknown path ${url.pathname}: this server has POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.`, null, 'not_found', 'not_found_error');
    if (req.method !== route.method && !(route.method === 'GET' && req.method === 'HEAD')) {
      res.setHeader('Allow', route.method === 'GET' ? 'GET, HEAD' : 'POST');
      throw new ApiError(405, `Method ${req.method} is not allowed on ${p}; use ${route.method}.`, null, 'method_not_allowed');
    }
    if (route.endpoint) return this.complete(route.endpoint, req, res);
    const model = { id: this.info.id, object: 'model', created: this.info.created, owned_by: 'dsv3', max_model_len: this.o.maxContext };
    if (modelPath !== null) {
      if (modelPath !== this.info.id) throw new ApiError(404, `The model '${modelPath}' does not exist; this server serves '${this.info.id}'.`, 'model', 'model_not_found', 'not_found_error');
      return sendJson(res, 200, model);
    }
    if (p === '/v1/models') return sendJson(res, 200, { object: 'list', data: [model] });
    const failed = this.worker.failed;
    const generating = Math.min(this.worker.pending, this.worker.maxBatch);
    sendJson(res, failed ? 503 : 200, {
      status: failed ? 'error' : 'ok',
      ...(failed ? { error: failed } : {}),
      model: this.info.id,
      generating,
      queued: this.worker.pending - generating,
      max_batch: this.worker.maxBatch,
      queue: this.o.queue,
      max_context: this.o.maxContext,
      requests: this.counts,
    });
  }

  private authorize(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!this.keyDigest) return;
    const m = /^Bearer\s+(\S.*)$/i.exec(req.headers.authorization ?? '');
    if (m && timingSafeEqual(digest(m[1]!.trim()), this.keyDigest)) return;
    res.setHeader('WWW-Authenticate', 'Bearer');
    throw new ApiError(401, m ? 'Incorrect API key provided.' : 'Missing API key: send it as the header Authorization: Bearer KEY.', null, 'invalid_api_key');
  }

  private async complete(endpoint: Endpoint, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = await this.readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new ApiError(400, `We could not parse the JSON body of your request: ${(e as Error).message}. The body must be a JSON object.`, null, 'invalid_json');
    }
    const r = parseRequest(endpoint, body);
    const job = prepareJob(r, this.info, this.o.maxContext);
    if (this.worker.failed) throw new ApiError(503, `The model is unavailable: ${this.worker.failed}`, null, 'model_unavailable');
    const cap = this.worker.maxBatch + this.o.queue;
    if (this.worker.pending >= cap) {
      res.setHeader('Retry-After', '1');
      throw new ApiError(429, `The server is busy: ${this.worker.maxBatch} requests generating and ${this.o.queue} waiting (the queue is full). Retry later.`, null, 'queue_full', 'rate_limit_error');
    }
    const done = runCompletion(this.worker, { endpoint, model: this.info.id, stream: r.stream, includeUsage: r.includeUsage, job }, res).then((outcome) => {
      this.counts[outcome]++;
    });
    this.inflight.add(done);
    try {
      await done;
    } finally {
      this.inflight.delete(done);
    }
  }

  /** The request body, at most maxBody bytes (413 past it). */
  private readBody(req: http.IncomingMessage): Promise<Buffer> {
    const tooLarge = (): ApiError => new ApiError(413, `The request body is too large: the limit is ${this.maxBody} bytes.`, null, 'request_too_large');
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > this.maxBody) return Promise.reject(tooLarge());
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let n = 0;
      let over = false;
      req.on('data', (c: Buffer) => {
        if (over) return;
        n += c.length;
        if (n > this.maxBody) {
          over = true;
          reject(tooLarge());
        } else chunks.push(c);
      });
      req.on('end', () => {
        if (!over) resolve(Buffer.concat(chunks));
      });
      req.on('error', (e) => reject(new ApiError(400, `reading the request body failed: ${e.message}`, null, 'invalid_body')));
    });
  }
}
