// Shared helpers of the llama.cpp comparison scripts: find node-llama-cpp (installed only in
// scripts/compare/node_modules, never a dependency of dsv3), load llama.cpp offline, and run dsv3.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

/** Whether node-llama-cpp is installed here (`npm ci` in scripts/compare). */
export function haveNodeLlamaCpp() {
  return fs.existsSync(path.join(HERE, 'node_modules', 'node-llama-cpp', 'package.json'));
}

/**
 * llama.cpp through node-llama-cpp, CPU only, from the prebuilt linux-x64 binary that came with
 * the npm package: no build from source, no download (offline).
 */
export async function loadLlama() {
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = 'true';
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, progressLogs: false, logLevel: LlamaLogLevel.error });
  return llama;
}

/** Runs the dsv3 CLI; throws with its stderr unless it exits 0; returns stdout. */
export function dsv3(args, env = {}) {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`dsv3 ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** llama.cpp's ids for a text: BOS (when the model adds one) + the tokenizer's ids. */
export function llamaTokens(model, text) {
  const ids = [...model.tokenize(text, false)];
  return model.tokens.bos != null && model.tokens.shouldPrependBosToken ? [model.tokens.bos, ...ids] : ids;
}

/** Greedy continuation in llama.cpp: up to n tokens, stopping after an end-of-generation token. */
export async function llamaGreedy(ctx, prompt, n, eos) {
  const seq = ctx.getSequence();
  const out = [];
  try {
    for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
      if (t === eos) break;
      out.push(t);
      if (out.length >= n) break;
    }
  } finally {
    seq.dispose();
  }
  return out;
}

/** llama.cpp's greedy (top-1) token after each prefix prompt + ref[0..j), teacher-forced on ref. */
export async function llamaTop1(ctx, prompt, ref) {
  const seq = ctx.getSequence();
  const preds = [];
  try {
    const gen = seq.evaluate(prompt, { temperature: 0 });
    let r = await gen.next();
    for (let j = 0; j < ref.length && !r.done; j++) {
      preds.push(r.value);
      r = await gen.next(ref[j]);
    }
    await gen.return();
  } finally {
    seq.dispose();
  }
  return preds;
}
