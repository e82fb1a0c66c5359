#!/usr/bin/env node
// The llama.cpp interop check (issue 12 bars), run by .ci/run:
//   1. train a tiny DeepSeek-V3 model with `dsv3 train` (MLA with q_lora, a dense layer then MoE
//      with sigmoid gating, 2 expert groups keeping 1, a shared expert, one MTP module);
//   2. `dsv3 export gguf` it as f32, bf16 and q8_0;
//   3. load each in llama.cpp (node-llama-cpp 3.21.1, prebuilt CPU binary) and check:
//      - llama.cpp tokenizes every prompt into the same ids as dsv3;
//      - f32: llama.cpp's greedy continuation equals `dsv3 generate --temperature 0
//        --no-speculative --json` for 64 tokens, for every prompt;
//      - bf16 and q8_0: llama.cpp's top-1 token, teacher-forced on dsv3's greedy continuation,
//        equals dsv3's at >= 95% of the positions.
// llama.cpp runs on one thread here: its threads spin-wait at barriers, which on a shared
// 2-core machine made 64 tokens take ~27 s on 2 threads against 0.04 s on 1.
// Skips (exit 0, with a message) when scripts/compare/node_modules is absent.
// Usage: node scripts/compare/check-gguf.mjs [--keep DIR]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, dsv3, haveNodeLlamaCpp, llamaGreedy, llamaTokens, llamaTop1, loadLlama, ROOT } from './llama.mjs';

if (!haveNodeLlamaCpp()) {
  console.log('check-gguf: skipped: node-llama-cpp is not installed (cd scripts/compare && npm ci --omit=optional --ignore-scripts)');
  process.exit(0);
}
if (!fs.existsSync(CLI)) {
  console.error(`check-gguf: ${CLI} is missing; run npm run build first`);
  process.exit(1);
}

const N = 64;
const AGREEMENT = 0.95;
const PROMPTS = [
  'The whale',
  'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money',
  "It's 1851: they'd sailed 3,000 miles!\n\nAhab said, \"Aye, aye!\" and I'll go.",
  '  spaces   and\ttabs\n\n\nnew   lines  ',
  'Café naïve — “quoted” — 42nd street, 7 days.',
];
const CONFIG = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 384, hidden_size: 64,
  intermediate_size: 96, moe_intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
  n_shared_experts: 1, n_routed_experts: 8, num_experts_per_tok: 2, n_group: 2, topk_group: 1,
  routed_scaling_factor: 2.5, first_k_dense_replace: 1, moe_layer_freq: 1, q_lora_rank: 32, kv_lora_rank: 32,
  qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, max_position_embeddings: 256, rope_theta: 10000,
  rope_scaling: null, rms_norm_eps: 1e-6, num_nextn_predict_layers: 1, tie_word_embeddings: false,
  scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, initializer_range: 0.02, torch_dtype: 'float32',
};

const keep = process.argv.indexOf('--keep');
const dir = keep > 0 ? path.resolve(process.argv[keep + 1]) : fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-check-gguf-'));
fs.mkdirSync(dir, { recursive: true });
const failures = [];
const t0 = Date.now();
try {
  // 1. train
  const { loadMobyDick } = await import(path.join(ROOT, 'dist', 'src', 'data', 'corpus.js'));
  const text = loadMobyDick().documents.slice(2, 12).map((d) => d.slice(0, 6000)).join('\n\n');
  fs.writeFileSync(path.join(dir, 'text.txt'), text);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(CONFIG));
  const run = path.join(dir, 'run');
  dsv3(['train', '--config', path.join(dir, 'config.json'), '--data', path.join(dir, 'text.txt'), '--cache-dir', path.join(dir, 'cache'),
    '--steps', '60', '--batch', '4', '--seq', '64', '--lr', '1e-2', '--eval-every', '60', '--eval-batches', '1', '--out', run]);
  console.log(`check-gguf: trained ${run} (${((Date.now() - t0) / 1e3).toFixed(1)} s)`);

  // 2. dsv3's reference: prompt ids and greedy continuations
  const { loadTokenizerJson } = await import(path.join(ROOT, 'dist', 'src', 'data', 'tokenizer', 'index.js'));
  const { resolveCheckpointDir } = await import(path.join(ROOT, 'dist', 'src', 'train', 'run-checkpoints.js'));
  const ckpt = resolveCheckpointDir(run);
  const tok = loadTokenizerJson(path.join(ckpt, 'tokenizer.json'));
  const ref = PROMPTS.map((p) => {
    const ids = tok.encode(p, { addBos: tok.bosId !== undefined });
    const g = JSON.parse(dsv3(['generate', '--model', run, '--prompt', p, '--temperature', '0', '--no-speculative', '--json', '--max-tokens', String(N)]));
    return { prompt: p, ids, tokens: g.tokens, finish: g.finish_reason };
  });

  // 3. export and compare
  const llama = await loadLlama();
  for (const type of ['f32', 'bf16', 'q8_0']) {
    const file = path.join(dir, `model-${type}.gguf`);
    const info = JSON.parse(dsv3(['export', 'gguf', '--model', run, '--out', file, '--type', type]));
    if (!info.tokenizer_pre_exact) failures.push(`${type}: tokenizer pre-tokenizer ${info.tokenizer_pre} is not an exact match`);
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    const ctx = await model.createContext({ contextSize: 256, threads: 1, batchSize: 256, sequences: 1 });
    let agree = 0;
    let total = 0;
    for (const r of ref) {
      const ids = llamaTokens(model, r.prompt);
      if (JSON.stringify(ids) !== JSON.stringify(r.ids)) {
        failures.push(`${type}: ${JSON.stringify(r.prompt)} tokenizes to ${JSON.stringify(ids)} in llama.cpp, ${JSON.stringify(r.ids)} in dsv3`);
        continue;
      }
      if (type === 'f32') {
        const g = await llamaGreedy(ctx, ids, N, model.tokens.eos);
        if (JSON.stringify(g) !== JSON.stringify(r.tokens)) {
          const k = g.findIndex((t, i) => t !== r.tokens[i]);
          failures.push(`f32: greedy continuation of ${JSON.stringify(r.prompt)} differs at token ${k < 0 ? Math.min(g.length, r.tokens.length) : k}: llama.cpp ${JSON.stringify(g)} vs dsv3 ${JSON.stringify(r.tokens)}`);
        }
      }
      const preds = await llamaTop1(ctx, ids, r.tokens);
      for (let j = 0; j < r.tokens.length; j++) {
        total++;
        if (preds[j] === r.tokens[j]) agree++;
      }
    }
    const share = total > 0 ? agree / total : 0;
    console.log(`check-gguf: ${type}: ${info.bytes} bytes, ${info.tensors} tensors, pre-tokenizer ${info.tokenizer_pre}; top-1 agreement with dsv3 ${agree}/${total} = ${(share * 100).toFixed(1)}%`);
    if (share < (type === 'f32' ? 1 : AGREEMENT)) failures.push(`${type}: top-1 agreement ${(share * 100).toFixed(1)}% is below ${type === 'f32' ? 100 : AGREEMENT * 100}%`);
    await ctx.dispose();
    await model.dispose();
  }
  await llama.dispose();
} finally {
  if (keep < 0) fs.rmSync(dir, { recursive: true, force: true });
}
for (const f of failures) console.error(`check-gguf: FAIL: ${f}`);
console.log(`check-gguf: ${failures.length === 0 ? 'ok' : `${failures.length} failure(s)`}: ${PROMPTS.length} prompts, ${N} greedy tokens each (${((Date.now() - t0) / 1e3).toFixed(1)} s)`);
process.exit(failures.length === 0 ? 0 : 1);
