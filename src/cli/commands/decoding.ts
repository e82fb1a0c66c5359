/**
 * What `dsv3 generate` / `dsv3 sample` and `dsv3 chat` share: the sampling flags (their table,
 * help lines and SamplingOptions), the checkpoint's tokenizer, and a quiet end on a closed stdout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FlagTable } from '../command.js';
import { int, nonNegative, numberIn, positive, type FlagValues } from '../flags.js';
import { loadTokenizerJson, type Tokenizer } from '../../data/tokenizer/index.js';
import { DsvError } from '../../errors.js';
import type { SamplingOptions } from '../../inference/sampling.js';

export const SAMPLING_HELP = `  --temperature T          softmax temperature (default 0.8; 0 = greedy)
  --top-k K                keep the K most likely tokens (default 40; 0 = all)
  --top-p P                keep the smallest most-likely set with probability mass >= P (default 1)
  --min-p P                keep tokens with probability >= P x the most likely one's (default 0)
  --repetition-penalty R   CTRL/Hugging Face: logits of tokens seen (prompt included) divided by R
                           when positive, multiplied when negative (default 1: none)
  --frequency-penalty F    OpenAI: logit -= F x occurrences among the generated tokens (default 0)
  --presence-penalty F     OpenAI: logit -= F for every token generated before (default 0)
  --seed N                 sampling seed (default 0): the same seed gives the same text
`;

export const SAMPLING_FLAGS = {
  temperature: nonNegative(),
  'top-k': int(0),
  'top-p': numberIn(0, 1, true),
  'min-p': numberIn(0, 1, false),
  'repetition-penalty': positive(),
  'frequency-penalty': numberIn(-2, 2, false),
  'presence-penalty': numberIn(-2, 2, false),
  seed: int(0),
} satisfies FlagTable;

/** The sampler's options from the sampling flags (with their defaults). */
export function samplingOptions(v: FlagValues<typeof SAMPLING_FLAGS>): SamplingOptions {
  return {
    temperature: v.temperature ?? 0.8,
    topK: v['top-k'] ?? 40,
    topP: v['top-p'] ?? 1,
    minP: v['min-p'] ?? 0,
    repetitionPenalty: v['repetition-penalty'] ?? 1,
    frequencyPenalty: v['frequency-penalty'] ?? 0,
    presencePenalty: v['presence-penalty'] ?? 0,
  };
}

/** The checkpoint's tokenizer, which must fit the model's vocabulary. */
export function loadTokenizer(dir: string, vocabSize: number): Tokenizer {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new DsvError(`${dir}: no tokenizer.json (needed to encode the prompt)`);
  const tok = loadTokenizerJson(file);
  if (tok.vocabSize > vocabSize) throw new DsvError(`${file}: the tokenizer has ${tok.vocabSize} tokens, more than the model's vocab_size ${vocabSize} (${path.join(dir, 'config.json')})`);
  return tok;
}

/** A closed stdout (`dsv3 generate | head`) ends the generation quietly instead of an EPIPE crash. */
let epipeQuiet = false;
export function quietEpipe(): void {
  if (epipeQuiet) return;
  epipeQuiet = true;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}
