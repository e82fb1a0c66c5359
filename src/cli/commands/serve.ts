/**
 * `dsv3 serve`: an OpenAI-compatible HTTP server for a checkpoint (src/serve/server.ts). Starts
 * the model worker, listens, prints the URL on stderr, and shuts down gracefully on SIGTERM or
 * SIGINT (a second signal cancels what is still generating).
 */
import * as path from 'node:path';
import { type Command, type FlagTable, UsageError } from '../command.js';
import { exists, int, nonNegative, parseFlags, port, required, text, type FlagValues } from '../flags.js';
import { loadModelConfig } from '../../model/config.js';
import { ApiServer } from '../../serve/server.js';
import { resolveCheckpointDir } from '../../train/run-checkpoints.js';

const HELP = `Usage: dsv3 serve --model DIR [--host 127.0.0.1] [--port 8080] [options]

Serves a checkpoint over HTTP with the OpenAI API, so OpenAI clients and tools can use it:

  POST /v1/chat/completions   messages rendered with the checkpoint's chat template (as dsv3 chat)
  POST /v1/completions        a text prompt (or token ids) continued (as dsv3 generate)
  GET  /v1/models             the one model served; its id is the name of DIR
  GET  /health                status, requests generating and queued

Both POST endpoints stream with "stream": true (server-sent events ending with data: [DONE])
and fill "usage". Sampling: temperature (default 1; 0 = greedy), top_p, max_tokens /
max_completion_tokens (default: the rest of the context for chat, 16 for completions), stop
(a string or a list), seed, frequency_penalty, presence_penalty, and the extensions top_k,
min_p, repetition_penalty. Parameters the server does not implement (n > 1, logprobs, tools,
...) are refused with a 400 that names them. The model runs in a worker thread; the server
answers /health and refuses bad requests while it generates.

DIR is a checkpoint directory or a dsv3 train run directory (its latest checkpoint).

Options:
  --host HOST              address to listen on (default 127.0.0.1, loopback only; 0.0.0.0
                           exposes the server to the network)
  --port N                 TCP port (default 8080; 0 = any free port, printed at start)
  --api-key KEY            require "Authorization: Bearer KEY" on every request (else 401)
  --max-batch N            sequences generated at once, each with its own latent cache
                           (default 8)
  --max-context N          positions per sequence, prompt + completion (default
                           max_position_embeddings, at most 4096); the cache holds
                           max-batch x max-context positions, fixed at start
  --queue N                requests that may wait for a free sequence (default 64); more
                           are answered 429
  --grace S                on SIGTERM / SIGINT, seconds the requests in flight get to finish
                           before they are cancelled (default 10)
`;

const FLAGS = {
  model: exists('model directory', 'dir'),
  host: text(),
  port: port(),
  'api-key': text(),
  'max-batch': int(1, 1024),
  'max-context': int(2),
  queue: int(0, 1_000_000),
  grace: nonNegative(),
} satisfies FlagTable;

async function run(v: FlagValues<typeof FLAGS>): Promise<number> {
  const location = required(v, 'model');
  const dir = resolveCheckpointDir(location);
  const cfg = loadModelConfig(dir);
  const maxPos = cfg.max_position_embeddings;
  const maxContext = v['max-context'] ?? Math.min(maxPos, 4096);
  if (maxContext > maxPos) throw new UsageError(`--max-context ${maxContext} exceeds the model's max_position_embeddings (${maxPos})`);
  if (maxContext < 2) throw new UsageError(`${dir}: max_position_embeddings ${maxPos} leaves no room for a completion`);
  const id = path.basename(path.resolve(location));
  const api = await ApiServer.start({
    dir,
    id,
    host: v.host ?? '127.0.0.1',
    port: v.port ?? 8080,
    ...(v['api-key'] === undefined ? {} : { apiKey: v['api-key'] }),
    maxBatch: v['max-batch'] ?? 8,
    maxContext,
    queue: v.queue ?? 64,
  });
  process.stderr.write(`dsv3 serve: model '${id}' (${dir}) listening on ${api.url}/v1 (max batch ${api.worker.maxBatch}, context ${maxContext}, queue ${v.queue ?? 64}${v['api-key'] === undefined ? '' : ', API key required'})\n`);
  const graceMs = (v.grace ?? 10) * 1000;
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (signals++ === 0) {
        process.stderr.write(`dsv3 serve: ${sig}: shutting down (requests in flight get ${graceMs / 1000} s; send it again to cancel them)\n`);
        void api.close(graceMs).then(() => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          resolve();
        });
      } else api.worker.cancelAll();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  process.stderr.write('dsv3 serve: stopped\n');
  return 0;
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'OpenAI-compatible HTTP server for a checkpoint (chat and completions, streaming, /v1/models)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    return run(parseFlags('serve', argv, FLAGS).values);
  },
};
