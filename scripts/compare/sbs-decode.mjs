#!/usr/bin/env node
// dsv3 and llama.cpp side by side on an EXISTING checkpoint and its GGUF export (issue 12 item 4,
// at real layer shapes). Unlike side-by-side.mjs, nothing is built in float32 in memory: dsv3
// opens the checkpoint mapped (as `dsv3 bench decode --checkpoint-dtype bf16|fp8` does) and
// llama.cpp (node-llama-cpp 3.21.1) maps the GGUF written beforehand by
//   dsv3 export gguf --model DIR --out FILE --type bf16|q8_0
// For the same prompt ids, batch 1, each thread count: prefill tokens/s (the prompt up to the
// first token's logits) and decode tokens/s (--tokens steps), medians of --reps rounds that
// alternate dsv3 and llama.cpp, and how far the two greedy continuations agree.
// Prints one JSON line per thread count and a table on stderr.
// Usage: node scripts/compare/sbs-decode.mjs --dsv3-model DIR --gguf FILE [--name LABEL]
//          [--threads 1,2] [--prompt 32] [--tokens 32] [--reps 3]
// Example (V2-Lite shape; checkpoints from `dsv3 bench decode --checkpoint-dtype ... --cache-dir /tmp/mmap-bench`):
//   node scripts/compare/sbs-decode.mjs --dsv3-model /tmp/sbs/ckpt-fp8 --gguf /tmp/sbs/v2lite-q8_0.gguf --name 'dsv3 fp8 vs llama.cpp q8_0'
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execSync } from 'node:child_process';
import { haveNodeLlamaCpp, loadLlama, ROOT } from './llama.mjs';

if (!haveNodeLlamaCpp()) {
  console.log('sbs-decode: skipped: node-llama-cpp is not installed (cd scripts/compare && npm ci --omit=optional --ignore-scripts)');
  process.exit(0);
}
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const need = (name) => {
  const v = arg(name, undefined);
  if (v === undefined) {
    console.error(`sbs-decode: --${name} is required (usage: --dsv3-model DIR --gguf FILE [--threads 1,2] [--prompt 32] [--tokens 32] [--reps 3])`);
    process.exit(2);
  }
  return path.resolve(v);
};
const modelDir = need('dsv3-model');
const gguf = need('gguf');
for (const p of [path.join(modelDir, 'config.json'), gguf]) {
  if (!fs.existsSync(p)) {
    console.error(`sbs-decode: ${p} does not exist`);
    process.exit(2);
  }
}
const name = arg('name', `${path.basename(modelDir)} vs ${path.basename(gguf)}`);
const threadList = arg('threads', '1,2').split(',').map(Number);
const P = Number(arg('prompt', '32'));
const T = Number(arg('tokens', '32'));
const REPS = Number(arg('reps', '3'));

const dist = (p) => import(path.join(ROOT, 'dist', 'src', p));
const { DeepseekV3 } = await dist('model/model.js');
const { measureDecode, promptIds } = await dist('inference/measure.js');
const { nativeAddon } = await dist('engine/native.js');

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const r1 = (x) => Math.round(x * 10) / 10;
const uptime = () => { try { return execSync('uptime', { encoding: 'utf8' }).trim(); } catch { return null; } };

// llama.cpp: prefill = the prompt up to the first sampled token; decode = each next token (greedy).
async function llamaRun(ctx, prompt) {
  const seq = ctx.getSequence();
  const ids = [];
  let prefillMs = 0;
  let decodeMs = 0;
  try {
    const gen = seq.evaluate(Array.from(prompt), { temperature: 0 });
    let t = performance.now();
    let r = await gen.next();
    prefillMs = performance.now() - t;
    ids.push(r.value);
    t = performance.now();
    for (let j = 0; j < T; j++) {
      r = await gen.next();
      ids.push(r.value);
    }
    decodeMs = performance.now() - t;
    await gen.return();
  } finally {
    seq.dispose();
  }
  return { prefillMs, decodeMs, ids: ids.slice(0, T) };
}

const t0 = performance.now();
const model = DeepseekV3.load(modelDir, { weights: 'bf16', map: true, mtp: false });
const kinds = { fp8: 0, bf16: 0, f32: 0 };
for (const w of model.linears.values()) kinds[w.kind]++;
console.error(`sbs-decode: dsv3 opened ${modelDir} in ${((performance.now() - t0) / 1e3).toFixed(1)} s (linears: ${JSON.stringify(kinds)})`);
const llama = await loadLlama();
const lm = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
const addon = nativeAddon();
const prompt = promptIds(P, model.cfg.vocab_size, 1);
const results = [];
for (const threads of threadList) {
  addon?.setThreads(threads);
  const ctx = await lm.createContext({ contextSize: P + T + 8, threads, batchSize: Math.max(P, 32), sequences: 1 });
  const load = [uptime()];
  await llamaRun(ctx, prompt); // warm-up (measureDecode warms dsv3 up itself)
  const d = { prefill: [], decode: [] };
  const l = { prefill: [], decode: [] };
  let dIds;
  let lIds;
  for (let k = 0; k < REPS; k++) {
    const s = measureDecode(model, { prompt: P, tokens: T, reps: 1, seed: 1 });
    d.prefill.push(P / (s.prefill_ms / 1e3));
    d.decode.push(s.tokens_per_s);
    dIds = Array.from(s.ids);
    const m = await llamaRun(ctx, prompt);
    l.prefill.push(P / (m.prefillMs / 1e3));
    l.decode.push(T / (m.decodeMs / 1e3));
    lIds = m.ids;
  }
  load.push(uptime());
  const first = dIds.findIndex((t, i) => t !== lIds[i]);
  const res = {
    compare: name, threads, prompt: P, tokens: T, reps: REPS, dsv3_model: modelDir, gguf: path.basename(gguf),
    dsv3: { prefill_tokens_per_s: r1(median(d.prefill)), decode_tokens_per_s: r1(median(d.decode)), decode_all: d.decode.map(r1) },
    llama_cpp: { prefill_tokens_per_s: r1(median(l.prefill)), decode_tokens_per_s: r1(median(l.decode)), decode_all: l.decode.map(r1) },
    decode_ratio_dsv3_over_llama: Math.round((median(d.decode) / median(l.decode)) * 100) / 100,
    prefill_ratio_dsv3_over_llama: Math.round((median(d.prefill) / median(l.prefill)) * 100) / 100,
    greedy_agree: first < 0, greedy_first_difference: first < 0 ? null : first,
    greedy_same_positions: dIds.filter((t, i) => t === lIds[i]).length,
    uptime_before: load[0], uptime_after: load[1],
  };
  results.push(res);
  console.log(JSON.stringify(res));
  await ctx.dispose();
}
await lm.dispose();
await llama.dispose();
console.error('\ncompare                         thr  dsv3 prefill  llama prefill  dsv3 decode  llama decode  ratio  greedy');
for (const r of results) {
  console.error(`${r.compare.padEnd(31)} ${String(r.threads).padStart(3)}  ${String(r.dsv3.prefill_tokens_per_s).padStart(12)}  ${String(r.llama_cpp.prefill_tokens_per_s).padStart(13)}  ${String(r.dsv3.decode_tokens_per_s).padStart(11)}  ${String(r.llama_cpp.decode_tokens_per_s).padStart(12)}  ${String(r.decode_ratio_dsv3_over_llama).padStart(5)}  ${r.greedy_agree ? 'same' : `first diff at ${r.greedy_first_difference} (${r.greedy_same_positions}/${T} same)`}`);
}
