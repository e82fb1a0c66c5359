#!/usr/bin/env node
// dsv3 and llama.cpp side by side on the same model (issue 12 item 4): one random model of a
// config (default configs/bench-small.json) written as three checkpoints — f32, bf16 (every
// tensor of rank >= 2 rounded to bf16) and FP8 (the linears a DeepSeek-V3 FP8 checkpoint stores
// as E4M3 with 128x128 block scales) — each exported with `dsv3 export gguf` (f32 → f32,
// bf16 → bf16, FP8 → q8_0) and run, batch 1, on the same prompt ids and the same number of
// threads, in dsv3's inference engine and in llama.cpp (node-llama-cpp 3.21.1):
//   prefill tokens/s (the prompt, up to the first token's logits) and decode tokens/s (median
//   per-token of --tokens steps), medians of --reps rounds that alternate dsv3 and llama.cpp,
//   and how far the two greedy continuations agree.
// Prints one JSON line per (format, threads) and a table on stderr.
// Usage: node scripts/compare/side-by-side.mjs [--config FILE] [--threads 2[,1]] [--prompt 32]
//                                             [--tokens 128] [--reps 3] [--keep DIR]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dsv3, haveNodeLlamaCpp, loadLlama, ROOT } from './llama.mjs';

if (!haveNodeLlamaCpp()) {
  console.log('side-by-side: skipped: node-llama-cpp is not installed (cd scripts/compare && npm ci --omit=optional --ignore-scripts)');
  process.exit(0);
}
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const configPath = path.resolve(arg('config', path.join(ROOT, 'configs', 'bench-small.json')));
const threadList = arg('threads', '2').split(',').map(Number);
const P = Number(arg('prompt', '32'));
const T = Number(arg('tokens', '128'));
const REPS = Number(arg('reps', '3'));
const keep = arg('keep', undefined);
const dir = keep ? path.resolve(keep) : fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-sbs-'));
fs.mkdirSync(dir, { recursive: true });

const dist = (p) => import(path.join(ROOT, 'dist', 'src', p));
const { loadModelConfig, configToJson } = await dist('model/config.js');
const { f32CheckpointTensors } = await dist('model/checkpoint-layout.js');
const { DeepseekV3 } = await dist('model/model.js');
const { writeSafetensors } = await dist('io/safetensors-write.js');
const { f32ArrayToBf16 } = await dist('engine/dtype.js');
const { quantizeBlocks128 } = await dist('engine/fp8/checkpoint-weights.js');
const { isFp8InCheckpoint } = await dist('inference/random-model.js');
const { measureDecode, promptIds } = await dist('inference/measure.js');
const { nativeAddon } = await dist('engine/native.js');
const { trainBpe, saveTokenizerJson } = await dist('data/tokenizer/index.js');
const { loadMobyDick } = await dist('data/corpus.js');

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const r1 = (x) => Math.round(x * 10) / 10;

// ---- one random model, three checkpoints ----
const cfg = loadModelConfig(configPath);
const ck = { f32: path.join(dir, 'ckpt-f32'), bf16: path.join(dir, 'ckpt-bf16'), fp8: path.join(dir, 'ckpt-fp8') };
if (!fs.existsSync(path.join(ck.fp8, 'model.safetensors'))) {
  const t0 = Date.now();
  const tok = trainBpe(loadMobyDick().documents.slice(0, 40), { vocabSize: Math.min(cfg.vocab_size, 4096) });
  const base = f32CheckpointTensors(DeepseekV3.randomInit(cfg, 1));
  const variants = {
    f32: base,
    bf16: Object.fromEntries(Object.entries(base).map(([n, t]) => [n, t.shape.length >= 2 ? { dtype: 'bf16', shape: t.shape, data: f32ArrayToBf16(t.data) } : t])),
    fp8: Object.fromEntries(Object.entries(base).flatMap(([n, t]) => {
      if (!isFp8InCheckpoint(n)) return [[n, t]];
      const q = quantizeBlocks128(t.data, t.shape[0], t.shape[1]);
      return [[n, { dtype: 'f8_e4m3', shape: t.shape, data: q.codes }], [`${n}_scale_inv`, { dtype: 'f32', shape: [Math.ceil(t.shape[0] / 128), Math.ceil(t.shape[1] / 128)], data: q.scaleInv }]];
    })),
  };
  for (const [k, tensors] of Object.entries(variants)) {
    fs.mkdirSync(ck[k], { recursive: true });
    const json = configToJson(cfg);
    if (k === 'fp8') json.quantization_config = { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] };
    fs.writeFileSync(path.join(ck[k], 'config.json'), JSON.stringify(json, null, 2));
    writeSafetensors(path.join(ck[k], 'model.safetensors'), tensors);
    saveTokenizerJson(tok, path.join(ck[k], 'tokenizer.json'), { writeConfig: true });
  }
  console.error(`side-by-side: wrote the three checkpoints of ${configPath} in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
}
const runs = [
  { name: 'f32 vs f32', ckpt: ck.f32, load: 'auto', gguf: 'f32' },
  { name: 'bf16 vs bf16', ckpt: ck.bf16, load: 'bf16', gguf: 'bf16' },
  { name: 'dsv3 fp8 vs llama.cpp q8_0', ckpt: ck.fp8, load: 'auto', gguf: 'q8_0' },
];
for (const r of runs) {
  r.file = path.join(dir, `model-${r.gguf}.gguf`);
  if (!fs.existsSync(r.file)) dsv3(['export', 'gguf', '--model', r.ckpt, '--out', r.file, '--type', r.gguf]);
}

// ---- llama.cpp timing: prefill = the prompt up to the first sampled token; decode = each next token ----
async function llamaRun(ctx, prompt) {
  const seq = ctx.getSequence();
  const ids = [];
  let prefillMs = 0;
  const steps = [];
  try {
    const gen = seq.evaluate(Array.from(prompt), { temperature: 0 });
    let t = performance.now();
    let r = await gen.next();
    prefillMs = performance.now() - t;
    ids.push(r.value);
    for (let j = 0; j < T; j++) {
      t = performance.now();
      r = await gen.next();
      steps.push(performance.now() - t);
      ids.push(r.value);
    }
    await gen.return();
  } finally {
    seq.dispose();
  }
  return { prefillMs, decodeMs: steps.reduce((a, b) => a + b, 0), ids: ids.slice(0, T) };
}

const llama = await loadLlama();
const addon = nativeAddon();
const prompt = promptIds(P, cfg.vocab_size, 1);
const results = [];
for (const threads of threadList) {
  addon?.setThreads(threads);
  for (const r of runs) {
    const model = DeepseekV3.load(r.ckpt, { weights: r.load, mtp: false });
    const lm = await llama.loadModel({ modelPath: r.file, gpuLayers: 0 });
    const ctx = await lm.createContext({ contextSize: P + T + 8, threads, batchSize: Math.max(P, 32), sequences: 1 });
    await llamaRun(ctx, prompt); // warm-up
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
    const first = dIds.findIndex((t, i) => t !== lIds[i]);
    const same = dIds.filter((t, i) => t === lIds[i]).length;
    const res = {
      compare: r.name, threads, prompt: P, tokens: T, reps: REPS, config: path.relative(ROOT, configPath),
      dsv3: { prefill_tokens_per_s: r1(median(d.prefill)), decode_tokens_per_s: r1(median(d.decode)) },
      llama_cpp: { gguf: r.gguf, prefill_tokens_per_s: r1(median(l.prefill)), decode_tokens_per_s: r1(median(l.decode)) },
      decode_ratio_dsv3_over_llama: Math.round((median(d.decode) / median(l.decode)) * 100) / 100,
      greedy_agree: first < 0, greedy_first_difference: first < 0 ? null : first, greedy_same_positions: same,
    };
    results.push(res);
    console.log(JSON.stringify(res));
    await ctx.dispose();
    await lm.dispose();
  }
}
await llama.dispose();
console.error('\ncompare                         thr  dsv3 prefill  llama prefill  dsv3 decode  llama decode  ratio  greedy');
for (const r of results) {
  console.error(`${r.compare.padEnd(31)} ${String(r.threads).padStart(3)}  ${String(r.dsv3.prefill_tokens_per_s).padStart(12)}  ${String(r.llama_cpp.prefill_tokens_per_s).padStart(13)}  ${String(r.dsv3.decode_tokens_per_s).padStart(11)}  ${String(r.llama_cpp.decode_tokens_per_s).padStart(12)}  ${String(r.decode_ratio_dsv3_over_llama).padStart(5)}  ${r.greedy_agree ? 'same' : `first diff at ${r.greedy_first_difference} (${r.greedy_same_positions}/${T} same)`}`);
}
if (!keep) fs.rmSync(dir, { recursive: true, force: true });
