/**
 * Byte-level BPE training. Texts are cut into words with a Llama-3-style regex, identical
 * words are counted once, and starting from the 256 byte symbols the most frequent adjacent
 * pair is merged again and again. Pair counts are updated incrementally: only words that hold
 * the merged pair are revisited, and a lazily corrected max-heap gives the next pair. Ties
 * go to the pair with the smaller (left id, right id), so training is deterministic.
 */
import { DsvError } from '../../errors.js';
import { AddedTokenMatcher, type AddedToken } from './added-tokens.js';
import { BYTE_TO_CHAR, toByteLevel } from './byte-level.js';
import { BpeModel } from './bpe-model.js';
import { Heap } from './heap.js';
import { ByteLevelPreTokenizer, LLAMA3_PATTERN, SequencePreTokenizer, SplitPreTokenizer } from './pre-tokenizer.js';
import { Tokenizer } from './tokenizer.js';

/** DeepSeek-V3's beginning- and end-of-sentence tokens, the default special tokens. */
export const DEFAULT_SPECIAL_TOKENS: readonly string[] = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'];

/** Options of {@link trainBpe}. */
export interface TrainBpeOptions {
  /** Total vocabulary size: special tokens + 256 bytes + merges (default 4096). */
  vocabSize?: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Special tokens, given ids 0, 1, ... (default: DeepSeek-V3's BOS and EOS). */
  specialTokens?: readonly string[];
  /** BOS token content (default: the first special token, if any). */
  bosToken?: string | null;
  /** EOS token content (default: the second special token, if any). */
  eosToken?: string | null;
  /** Called every 64 merges and at the end with (merges done, merges wanted). */
  onProgress?: (done: number, total: number) => void;
}

/** Key multiplier for a pair (left, right) -> left * KEY + right. */
const KEY = 2 ** 22;

interface PairEntry {
  count: number;
  key: number;
}

/** Trains a byte-level BPE tokenizer on texts (see module doc). */
export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions = {}): Tokenizer {
  const vocabSize = opts.vocabSize ?? 4096;
  const minFrequency = opts.minFrequency ?? 2;
  const specials = [...(opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  const base = specials.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < base || vocabSize >= KEY) {
    throw new DsvError(`vocabSize: expected an integer from ${base} (special tokens + 256 bytes) to ${KEY - 1}, got ${vocabSize}`);
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new DsvError(`minFrequency: expected a positive integer, got ${minFrequency}`);
  }
  if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) {
    throw new DsvError(`specialTokens: expected distinct non-empty strings, got ${JSON.stringify(specials)}`);
  }
  const addedTokens: AddedToken[] = specials.map((content, id) => ({
    id, content, singleWord: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const split = new SplitPreTokenizer({ Regex: LLAMA3_PATTERN }, 'Isolated', false);
  const preTokenizer = new SequencePreTokenizer([split, new ByteLevelPreTokenizer(false, false, true)]);

  // 1. Count words: raw pieces first, then their byte-level forms (the same pieces the
  //    tokenizer's pre-tokenizer produces when encoding).
  const matcher = new AddedTokenMatcher(addedTokens);
  const rawCounts = new Map<string, number>();
  const pieces: string[] = [];
  for (const text of texts) {
    for (const seg of matcher.split(text)) {
      if (seg.id >= 0) continue;
      pieces.length = 0;
      split.splitOne(seg.text, pieces);
      for (const w of pieces) rawCounts.set(w, (rawCounts.get(w) ?? 0) + 1);
    }
  }
  const wordCounts = new Map<string, number>();
  for (const [raw, c] of rawCounts) {
    const w = toByteLevel(raw);
    wordCounts.set(w, (wordCounts.get(w) ?? 0) + c); // distinct raw pieces can share bytes (lone surrogates)
  }
  rawCounts.clear();

  // 2. Words as symbol arrays; byte b has id specials.length + b.
  const charToId = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, specials.length + b]));
  const tokens: string[] = [...specials, ...BYTE_TO_CHAR];
  const tokenIds = new Map<string, number>(tokens.map((t, id) => [t, id]));
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const counts: number[] = [];
  for (const [w, c] of wordCounts) {
    const syms = new Int32Array(w.length); // byte-level characters are all in the BMP
    for (let i = 0; i < w.length; i++) syms[i] = charToId.get(w[i]!)!;
    words.push(syms);
    lens.push(syms.length);
    counts.push(c);
  }
  wordCounts.clear();

  // 3. Initial pair counts and where each pair occurs.
  const pairCounts = new Map<number, number>();
  const where = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const s = words[w]!;
    const c = counts[w]!;
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i]! * KEY + s[i + 1]!;
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + c);
      let list = where.get(key);
      if (!list) where.set(key, (list = []));
      if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new Heap<PairEntry>((a, b) => a.count > b.count || (a.count === b.count && a.key < b.key));
  for (const [key, count] of pairCounts) heap.push({ count, key });

  // 4. Merge loop.
  const merges: [string, string][] = [];
  const wanted = vocabSize - base;
  const seen = new Int32Array(words.length).fill(-1);
  const delta = new Map<number, number>();
  while (tokens.length < vocabSize) {
    const top = heap.pop();
    if (!top) break;
    const current = pairCounts.get(top.key) ?? 0;
    if (current !== top.count) {
      if (current > 0) heap.push({ count: current, key: top.key });
      continue;
    }
    if (current < minFrequency) break;
    const a = Math.floor(top.key / KEY);
    const b = top.key - a * KEY;
    const merged = tokens[a]! + tokens[b]!;
    let c = tokenIds.get(merged); // two merge paths can spell the same token
    if (c === undefined) {
      c = tokens.length;
      tokens.push(merged);
      tokenIds.set(merged, c);
    }
    merges.push([tokens[a]!, tokens[b]!]);
    delta.clear();
    const stamp = merges.length;
    for (const w of where.get(top.key) ?? []) {
      if (seen[w] === stamp) continue;
      seen[w] = stamp;
      mergeInWord(words[w]!, lens, w, a, b, c, counts[w]!, delta, where);
    }
    pairCounts.delete(top.key);
    where.delete(top.key);
    for (const [key, d] of delta) {
      if (key === top.key || d === 0) continue;
      const v = (pairCounts.get(key) ?? 0) + d;
      if (v > 0) pairCounts.set(key, v);
      else pairCounts.delete(key);
      if (d > 0) heap.push({ count: v, key });
    }
    if (opts.onProgress && merges.length % 64 === 0) opts.onProgress(merges.length, wanted);
  }
  opts.onProgress?.(merges.length, wanted);

  const model = new BpeModel(tokenIds, merges);
  return new Tokenizer({
    model,
    normalizer: null,
    preTokenizer,
    decoder: 'ByteLevel',
    addedTokens,
    postProcessor: null,
    bosToken: opts.bosToken !== undefined ? opts.bosToken : (specials[0] ?? null),
    eosToken: opts.eosToken !== undefined ? opts.eosToken : (specials[1] ?? null),
  });
}

/**
 * Merges every (a, b) in one word into c, in place, recording pair-count changes (times the
 * word's count) in `delta` and new pairs' locations in `where`.
 */
function mergeInWord(
  s: Int32Array,
  lens: number[],
  w: number,
  a: number,
  b: number,
  c: number,
  count: number,
  delta: Map<number, number>,
  where: Map<number, number[]>,
): void {
  const n = lens[w]!;
  const add = (key: number, d: number): void => {
    delta.set(key, (delta.get(key) ?? 0) + d);
    if (d > 0) {
      let list = where.get(key);
      if (!list) where.set(key, (list = []));
      if (list[list.length - 1] !== w) list.push(w);
    }
  };
  let out = 0;
  let i = 0;
  let changed = false;
  while (i < n) {
    if (i + 1 < n && s[i] === a && s[i + 1] === b) {
      if (out > 0) {
        const p = s[out - 1]!;
        add(p * KEY + a, -count);
        add(p * KEY + c, count);
      }
      if (i + 2 < n) {
        const q = s[i + 2]!;
        add(b * KEY + q, -count);
        add(c * KEY + q, count);
      }
      s[out++] = c;
      i += 2;
      changed = true;
    } else s[out++] = s[i++]!;
  }
  if (changed) lens[w] = out;
}
