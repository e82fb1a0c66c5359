/**
 * `dsv3 sample`: generates text from a trained checkpoint (or a run directory's latest one)
 * with temperature and top-k sampling, decoding one token at a time over MLA's latent cache.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from '../command.js';
import { exists, int, nonNegative, parseFlags, required, text } from '../flags.js';
import { Rng } from '../../data/rng.js';
import { loadTokenizerJson, type Tokenizer } from '../../data/tokenizer/index.js';
import { noGrad } from '../../engine/autograd.js';
import { Tensor } from '../../engine/tensor.js';
import { DsvError } from '../../errors.js';
import { loadModelConfig } from '../../model/config.js';
import { DeepseekV3 } from '../../model/model.js';
import { resolveCheckpointDir } from '../../train/run-checkpoints.js';

const HELP = `Usage: dsv3 sample --model DIR --prompt TEXT [options]

Generates a continuation of TEXT with a trained model. DIR is a checkpoint directory
(config.json, model.safetensors, tokenizer.json) or a dsv3 train run directory (its latest
checkpoint is used).

Options:
  --max-new N        tokens to generate (default 100; stops early at the EOS token)
  --temperature T    softmax temperature (default 0.8; 0 = greedy)
  --top-k K          sample among the K most likely tokens (default 40; 0 = all)
  --seed N           sampling seed (default 0)
`;

export interface SampleOptions {
  maxNew: number;
  temperature: number;
  topK: number;
  seed: number;
}

/** Picks a token from logits[off .. off+V) with temperature / top-k (greedy at T = 0). */
export function pickToken(logits: Float32Array, off: number, V: number, o: SampleOptions, rng: Rng): number {
  if (o.temperature <= 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[off + i]! > logits[off + best]!) best = i;
    return best;
  }
  let idx = Array.from({ length: V }, (_, i) => i);
  if (o.topK > 0 && o.topK < V) idx = idx.sort((a, b) => logits[off + b]! - logits[off + a]!).slice(0, o.topK);
  let mx = -Infinity;
  for (const i of idx) mx = Math.max(mx, logits[off + i]!);
  const w = idx.map((i) => Math.exp((logits[off + i]! - mx) / o.temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let u = rng.nextFloat() * total;
  for (let k = 0; k < idx.length; k++) {
    u -= w[k]!;
    if (u <= 0) return idx[k]!;
  }
  return idx[idx.length - 1]!;
}

/** Generates up to maxNew tokens after the prompt ids; returns the new ids. */
export function generate(model: DeepseekV3, prompt: number[], o: SampleOptions, eosId?: number): number[] {
  const V = model.cfg.vocab_size;
  const maxLen = Math.min(model.cfg.max_position_embeddings, prompt.length + o.maxNew);
  if (prompt.length === 0) throw new DsvError('sample: the prompt encodes to no tokens');
  if (prompt.length > model.cfg.max_position_embeddings) {
    throw new DsvError(`sample: the prompt has ${prompt.length} tokens, more than max_position_embeddings (${model.cfg.max_position_embeddings})`);
  }
  const n = maxLen - prompt.length;
  if (n <= 0) return [];
  const rng = new Rng(o.seed);
  return noGrad(() => {
    const cache = model.newCache(1, maxLen);
    let logits = model.prefill(Tensor.fromI32(Int32Array.from(prompt), [1, prompt.length]), cache);
    const out: number[] = [];
    for (let k = 0; k < n; k++) {
      const T = logits.shape[1]!;
      const l = logits.contiguous().f32();
      const next = pickToken(l, (T - 1) * V, V, o, rng);
      if (next === eosId) break;
      out.push(next);
      if (k + 1 < n) logits = model.decodeStep(Int32Array.of(next), cache);
    }
    return out;
  });
}

/** The checkpoint's tokenizer, which must fit the model's vocabulary. */
function loadTokenizer(dir: string, vocabSize: number): Tokenizer {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new DsvError(`${dir}: no tokenizer.json (needed to encode the prompt)`);
  const tok = loadTokenizerJson(file);
  if (tok.vocabSize > vocabSize) throw new DsvError(`${file}: the tokenizer has ${tok.vocabSize} tokens, more than the model's vocab_size ${vocabSize} (${path.join(dir, 'config.json')})`);
  return tok;
}

const FLAGS = {
  model: exists('model directory', 'dir'),
  prompt: text(true),
  'max-new': int(0),
  temperature: nonNegative(),
  'top-k': int(0),
  seed: int(0),
};

export const sampleCommand: Command = {
  name: 'sample',
  summary: 'generate text from a trained checkpoint (temperature / top-k sampling)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values: v } = parseFlags('sample', argv, FLAGS);
    const location = required(v, 'model');
    const prompt = required(v, 'prompt');
    const dir = resolveCheckpointDir(location);
    const tok = loadTokenizer(dir, loadModelConfig(dir).vocab_size);
    const model = DeepseekV3.load(dir, { mtp: false });
    const o: SampleOptions = { maxNew: v['max-new'] ?? 100, temperature: v.temperature ?? 0.8, topK: v['top-k'] ?? 40, seed: v.seed ?? 0 };
    const ids = generate(model, tok.encode(prompt, { addBos: tok.bosId !== undefined }), o, tok.eosId);
    process.stdout.write(prompt + tok.decode(ids) + '\n');
    return 0;
  },
};
