#!/usr/bin/env node
// Load test of `dsv3 serve` with the official openai client: N concurrent streaming clients for
// S seconds against a server on loopback, alternating chat and completions requests with
// sampled (seeded) decoding and varied prompts. Reports requests and requests/s, generated
// tokens/s (from each stream's usage), time to first token and inter-token latency (p50/p99),
// 4xx / 429 / 5xx counts, dropped streams (a stream that fails or ends without its
// finish_reason, usage and [DONE]) and the server's RSS (VmRSS of /proc/PID/status) at start,
// after a warm-up and after the run. One JSON line on stdout, a summary on stderr.
//
//   node scripts/serve-load.mjs --model DIR [--clients 16] [--seconds 60] [--max-tokens 64]
//       starts `dsv3 serve --model DIR --port 0` itself (and stops it with SIGTERM after)
//   node scripts/serve-load.mjs --url http://127.0.0.1:8080/v1 --pid PID [--api-key KEY] ...
//       drives a running server (RSS needs its PID)
//
// Other options: --warmup S (default 5: seconds of load before the "before" RSS), --max-batch N
// and --queue N (passed to the server it starts). Bounded: at most 256 clients, 3600 seconds,
// loopback addresses only.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const CLI = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));

function parseArgs(argv) {
  const o = { clients: 16, seconds: 60, 'max-tokens': 64, warmup: 5, 'max-batch': 8, queue: 64 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const k = a.slice(2);
    const v = argv[++i];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    if (['clients', 'seconds', 'max-tokens', 'warmup', 'max-batch', 'queue', 'pid'].includes(k)) {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`--${k} expects a number >= 0, got '${v}'`);
      o[k] = n;
    } else if (['model', 'url', 'api-key'].includes(k)) o[k] = v;
    else throw new Error(`unknown option --${k}`);
  }
  if (!o.model === !o.url) throw new Error('give --model DIR (start a server) or --url URL --pid PID (a running one)');
  if (o.clients < 1 || o.clients > 256 || !Number.isInteger(o.clients)) throw new Error('--clients must be an integer in [1, 256]');
  if (o.seconds <= 0 || o.seconds > 3600) throw new Error('--seconds must be in (0, 3600]');
  return o;
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function startServer(o) {
  const args = [CLI, 'serve', '--model', o.model, '--port', '0', '--max-batch', String(o['max-batch']), '--queue', String(o.queue)];
  if (o['api-key']) args.push('--api-key', o['api-key']);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    child.stderr.on('data', (s) => {
      err += s;
      const m = /listening on (http:\/\/\S+\/v1)/.exec(err);
      if (m) resolve({ child, url: m[1], pid: child.pid, stderr: () => err });
    });
    child.once('exit', (code) => reject(new Error(`dsv3 serve exited (${code}): ${err}`)));
  });
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const PROMPTS = [
  'Call me Ishmael.',
  'The whale',
  'It is a way I have of driving off the spleen and regulating the circulation.',
  'Whenever I find myself growing grim about the mouth',
  'There now is your insular city of the Manhattoes, belted round by wharves as Indian isles by coral reefs',
  'Ahab',
];

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const server = o.model ? await startServer(o) : { url: o.url, pid: o.pid };
  const host = new URL(server.url).hostname;
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host)) throw new Error(`refusing to load ${host}: loopback only`);
  const client = new OpenAI({ baseURL: server.url, apiKey: o['api-key'] ?? 'none', maxRetries: 0, timeout: 120_000 });
  const model = (await client.models.list()).data[0].id;
  const rssStart = server.pid ? rssKiB(server.pid) : NaN;

  const stats = { requests: 0, chat: 0, completions: 0, tokens: 0, e4xx: 0, e429: 0, e5xx: 0, dropped: 0, other: 0, ttft: [], itl: [] };
  let seq = 0;
  const one = async (record) => {
    const k = seq++;
    const chat = k % 2 === 0;
    const prompt = PROMPTS[k % PROMPTS.length];
    const common = { model, max_tokens: o['max-tokens'], temperature: 0.8, top_p: 0.95, seed: k, stream: true, stream_options: { include_usage: true } };
    const t0 = performance.now();
    let last = 0;
    let finish = null;
    let usage = null;
    let first = true;
    try {
      const stream = chat
        ? await client.chat.completions.create({ ...common, messages: [{ role: 'user', content: prompt }] })
        : await client.completions.create({ ...common, prompt });
      for await (const c of stream) {
        if (c.usage) usage = c.usage;
        const ch = c.choices[0];
        if (!ch) continue;
        if (ch.finish_reason) finish = ch.finish_reason;
        const piece = chat ? ch.delta?.content : ch.text;
        if (piece) {
          const t = performance.now();
          if (record) {
            if (first) stats.ttft.push(t - t0);
            else stats.itl.push(t - last);
          }
          first = false;
          last = t;
        }
      }
      // the openai client ends the iteration at [DONE]; a stream cut short lacks finish or usage
      if (!record) return;
      if (finish === null || usage === null) stats.dropped++;
      else {
        stats.requests++;
        stats[chat ? 'chat' : 'completions']++;
        stats.tokens += usage.completion_tokens;
      }
    } catch (e) {
      if (!record) return;
      const status = e?.status;
      if (status === 429) stats.e429++;
      if (typeof status === 'number' && status >= 500) stats.e5xx++;
      else if (typeof status === 'number' && status >= 400) stats.e4xx++;
      else if (e instanceof OpenAI.APIConnectionError || e instanceof OpenAI.APIError || e instanceof Error) stats.dropped++;
      else stats.other++;
    }
  };
  const load = async (seconds, record) => {
    const end = performance.now() + seconds * 1000;
    await Promise.all(Array.from({ length: o.clients }, async () => {
      while (performance.now() < end) await one(record);
    }));
  };

  if (o.warmup > 0) await load(o.warmup, false);
  await new Promise((r) => setTimeout(r, 500));
  const rssBefore = server.pid ? rssKiB(server.pid) : NaN;
  const t0 = performance.now();
  await load(o.seconds, true);
  const wall = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 500));
  const rssAfter = server.pid ? rssKiB(server.pid) : NaN;
  const health = await (await fetch(server.url.replace(/\/v1$/, '/health'), { headers: o['api-key'] ? { Authorization: `Bearer ${o['api-key']}` } : {} })).json();

  let exitCode = null;
  if (server.child) {
    const exited = new Promise((r) => server.child.once('exit', (c) => r(c)));
    server.child.kill('SIGTERM');
    exitCode = await exited;
  }
  const ms = (v) => (v === null ? null : Number(v.toFixed(1)));
  const ttft = stats.ttft.sort((a, b) => a - b);
  const itl = stats.itl.sort((a, b) => a - b);
  const out = {
    clients: o.clients, seconds: Number(wall.toFixed(1)), max_tokens: o['max-tokens'], model,
    requests: stats.requests, chat: stats.chat, completions: stats.completions, requests_per_s: Number((stats.requests / wall).toFixed(2)),
    tokens: stats.tokens, tokens_per_s: Number((stats.tokens / wall).toFixed(1)),
    ttft_ms_p50: ms(quantile(ttft, 0.5)), ttft_ms_p99: ms(quantile(ttft, 0.99)),
    itl_ms_p50: ms(quantile(itl, 0.5)), itl_ms_p99: ms(quantile(itl, 0.99)),
    errors_4xx: stats.e4xx, errors_429: stats.e429, errors_5xx: stats.e5xx, dropped_streams: stats.dropped, other_errors: stats.other,
    rss_mib_start: Number((rssStart / 1024).toFixed(1)), rss_mib_before: Number((rssBefore / 1024).toFixed(1)), rss_mib_after: Number((rssAfter / 1024).toFixed(1)),
    rss_change_pct: Number((((rssAfter - rssBefore) / rssBefore) * 100).toFixed(2)),
    pending_after: (health.generating ?? 0) + (health.queued ?? 0),
    server_exit_code: exitCode,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.stderr.write(
    `serve-load: ${out.clients} clients x ${out.seconds} s: ${out.requests} requests (${out.requests_per_s}/s), ${out.tokens} tokens (${out.tokens_per_s}/s); ` +
      `TTFT p50 ${out.ttft_ms_p50} ms p99 ${out.ttft_ms_p99} ms; ITL p50 ${out.itl_ms_p50} ms p99 ${out.itl_ms_p99} ms; ` +
      `4xx ${out.errors_4xx} (429: ${out.errors_429}), 5xx ${out.errors_5xx}, dropped ${out.dropped_streams}; ` +
      `RSS ${out.rss_mib_before} -> ${out.rss_mib_after} MiB (${out.rss_change_pct}%)\n`,
  );
  const ok = out.errors_5xx === 0 && out.dropped_streams === 0 && Math.abs(out.rss_change_pct) <= 10;
  process.exitCode = ok ? 0 : 1;
}

main().catch((e) => {
  process.stderr.write(`serve-load: ${e.message}\n`);
  process.exitCode = 2;
});
