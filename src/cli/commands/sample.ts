/**
 * `dsv3 sample`: generates text from a trained checkpoint (or a run directory's latest one)
 * with temperature and top-k sampling, decoding one token at a time over MLA's latent cache on
 * the decode engine (inference/generate.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from '../command.js';
import { exists, int, nonNegative, parseFlags, required, text } from '../flags.js';
import { Rng } from '../../data/rng.js';
import { loadTokenizerJson, type Tokenizer } from '../../data/tokenizer/index.js';
import { DsvError } from '../../errors.js';
import { loadModelConfig } from '../../model/config.js';
import { DecodeSession } from '../../inference/decode-session.js';
import { generate, sampler, type SamplingOptions } from '../../inference/generate.js';
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

/** Generates up to maxNew tokens after the prompt ids on the decode engine; returns the new ids. */
function sample(model: DeepseekV3, prompt: number[], o: SamplingOptions & { maxNew: number; seed: number }, eos?: number): number[] {
  const maxPos = model.cfg.max_position_embeddings;
  if (prompt.length === 0) throw new DsvError('sample: the prompt encodes to no tokens');
  if (prompt.length > maxPos) throw new DsvError(`sample: the prompt has ${prompt.length} tokens, more than max_position_embeddings (${maxPos})`);
  const maxNew = Math.min(maxPos, prompt.length + o.maxNew) - prompt.length;
  const session = new DecodeSession(model, { maxLen: prompt.length + maxNew });
  const g = generate(session, Int32Array.from(prompt), prompt.length, { maxNew, pick: sampler(o, new Rng(o.seed)), ...(eos === undefined ? {} : { eos }) });
  return g.tokens[0]!;
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
    const o = { maxNew: v['max-new'] ?? 100, temperature: v.temperature ?? 0.8, topK: v['top-k'] ?? 40, seed: v.seed ?? 0 };
    const ids = sample(model, tok.encode(prompt, { addBos: tok.bosId !== undefined }), o, tok.eosId);
    process.stdout.write(prompt + tok.decode(ids) + '\n');
    return 0;
  },
};
