/**
 * A byte-level BPE tokenizer as llama.cpp's GGUF `tokenizer.*` keys, following llama.cpp's own
 * converter (convert_hf_to_gguf.py `_set_vocab_gpt2` / `get_vocab_base`, gguf-py SpecialVocab):
 *
 *   tokenizer.ggml.model "gpt2" · tokenizer.ggml.pre (the pre-tokenizer llama.cpp runs, below)
 *   tokenizer.ggml.tokens: one string per id up to the model's vocab_size ("[PAD<i>]" for ids
 *     the tokenizer lacks) · tokenizer.ggml.token_type: 1 normal, 3 control (special added
 *     tokens), 4 user-defined (other added tokens), 5 unused (padding)
 *   tokenizer.ggml.merges: "left right" in rank order · bos/eos ids, add_bos_token
 *   tokenizer.chat_template (tokenizer_config.json's `chat_template`)
 *
 * llama.cpp has no general pre-tokenizer: it picks a hard-coded regex list by the name in
 * tokenizer.ggml.pre (llama-vocab.cpp). `ggufPreTokenizer` maps tokenizer.json's pre_tokenizer
 * to the name whose regexes and merge rule are the same. For the tokenizer `dsv3 train` makes
 * (Split on the Llama-3 regex, then ByteLevel without regex, merges applied) that is "dbrx":
 * the Llama-3 regex with merges applied ("llama-bpe" shares the regex but sets ignore_merges,
 * which a tokenizer.json with ignore_merges: false does not do).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GgufValue } from '../../io/gguf-format.js';
import { kv } from '../../io/gguf-format.js';
import { DsvError } from '../../errors.js';
import { loadTokenizerJson } from './hf-json.js';
import { LLAMA3_PATTERN } from './pre-tokenizer.js';
import type { Tokenizer } from './tokenizer.js';

/** gguf-py TokenType. */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** The Split regexes (in order) of the pre-tokenizers llama.cpp implements that dsv3 can recognise. */
const KNOWN_PRE: readonly { name: string; splits: readonly string[]; byteLevelRegex: boolean; ignoreMerges: boolean }[] = [
  { name: 'dbrx', splits: [LLAMA3_PATTERN], byteLevelRegex: false, ignoreMerges: false },
  { name: 'llama-bpe', splits: [LLAMA3_PATTERN], byteLevelRegex: false, ignoreMerges: true },
  {
    name: 'deepseek-v3',
    splits: [
      '\\p{N}{1,3}',
      '[一-龥\u3040-ゟ゠-ヿ]+',
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ],
    byteLevelRegex: false,
    ignoreMerges: false,
  },
  { name: 'gpt-2', splits: [], byteLevelRegex: true, ignoreMerges: false },
];

/** The names `--tokenizer-pre` accepts (llama.cpp byte-level BPE pre-tokenizers). */
export const GGUF_PRE_NAMES = ['dbrx', 'llama-bpe', 'deepseek-v3', 'gpt-2', 'qwen2', 'default'] as const;

/** The llama.cpp pre-tokenizer for a tokenizer; `exact` false when none matches and `name` is the closest. */
export function ggufPreTokenizer(tok: Tokenizer): { name: string; exact: boolean; why?: string } {
  const j = tok.parts.preTokenizer?.toJSON() ?? null;
  const steps: Record<string, unknown>[] = j === null ? [] : j['type'] === 'Sequence' ? (j['pretokenizers'] as Record<string, unknown>[]) : [j];
  const splits: string[] = [];
  let byteLevel: Record<string, unknown> | undefined;
  let odd: string | undefined;
  for (const s of steps) {
    if (s['type'] === 'Split' && !byteLevel && s['behavior'] === 'Isolated' && s['invert'] === false) {
      const p = s['pattern'] as Record<string, unknown>;
      if (typeof p['Regex'] === 'string') splits.push(p['Regex']);
      else odd = 'a Split on a literal string';
    } else if (s['type'] === 'ByteLevel' && !byteLevel) byteLevel = s;
    else odd = `a ${String(s['type'])} step`;
  }
  const norm = tok.parts.normalizer?.toJSON() ?? null;
  if (norm !== null && !(norm['type'] === 'Sequence' && (norm['normalizers'] as unknown[]).length === 0)) odd = `the normalizer ${String(norm['type'])}`;
  if (!byteLevel) odd = 'no ByteLevel pre-tokenizer';
  else if (byteLevel['add_prefix_space'] === true) odd = 'ByteLevel add_prefix_space';
  const useRegex = byteLevel?.['use_regex'] !== false;
  const ignoreMerges = tok.parts.model.ignoreMerges;
  const same = (a: readonly string[]): boolean => a.length === splits.length && a.every((x, i) => x === splits[i]);
  const hit = KNOWN_PRE.find((k) => same(k.splits) && k.byteLevelRegex === useRegex && k.ignoreMerges === ignoreMerges);
  if (hit && odd === undefined) return { name: hit.name, exact: true };
  const close = KNOWN_PRE.find((k) => same(k.splits)) ?? KNOWN_PRE.find((k) => k.splits[0] !== undefined && k.splits[0] === splits[0]);
  const why = odd ?? `no llama.cpp pre-tokenizer has the Split regexes ${JSON.stringify(splits)} with ByteLevel use_regex ${useRegex} and ignore_merges ${ignoreMerges}`;
  return { name: close?.name ?? (useRegex ? 'gpt-2' : 'default'), exact: false, why };
}

/** Everything the GGUF needs from a checkpoint's tokenizer files. */
export interface GgufVocab {
  kvs: Map<string, GgufValue>;
  pre: { name: string; exact: boolean; why?: string };
}

/**
 * The tokenizer.* keys for the tokenizer in `dir` (tokenizer.json, tokenizer_config.json),
 * padded to `vocabSize` ids. `pre` overrides the detected pre-tokenizer name.
 */
export function ggufVocab(dir: string, vocabSize: number, ids: { bos: number | null; eos: number | null }, pre?: string): GgufVocab {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new DsvError(`${dir}: no tokenizer.json (a GGUF file needs the tokenizer)`);
  const tok = loadTokenizerJson(file);
  if (tok.vocabSize > vocabSize) throw new DsvError(`${file}: the tokenizer has ${tok.vocabSize} tokens, more than the model's vocab_size ${vocabSize}`);
  const tokens: string[] = [];
  const types: number[] = [];
  const added = new Map(tok.addedTokens.map((t) => [t.id, t]));
  for (let i = 0; i < vocabSize; i++) {
    const t = tok.idToToken(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TokenType.UNUSED);
      continue;
    }
    const a = added.get(i);
    tokens.push(t);
    types.push(a === undefined ? TokenType.NORMAL : a.special ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }
  const merges = tok.parts.model.merges.map(([l, r]) => {
    if (l.includes(' ') || r.includes(' ')) throw new DsvError(`${file}: merge ${JSON.stringify([l, r])} contains a space, which GGUF's "left right" merges cannot hold`);
    return `${l} ${r}`;
  });
  const detected = ggufPreTokenizer(tok);
  const preInfo = pre === undefined ? detected : { name: pre, exact: pre === detected.name && detected.exact, why: `set by --tokenizer-pre (detected: ${detected.name})` };
  const bos = tok.bosId ?? ids.bos ?? undefined;
  const eos = tok.eosId ?? ids.eos ?? undefined;
  const kvs = new Map<string, GgufValue>([
    ['tokenizer.ggml.model', kv.str('gpt2')],
    ['tokenizer.ggml.pre', kv.str(preInfo.name)],
    ['tokenizer.ggml.tokens', kv.strs(tokens)],
    ['tokenizer.ggml.token_type', kv.i32s(types)],
    ['tokenizer.ggml.merges', kv.strs(merges)],
  ]);
  if (bos !== undefined) kvs.set('tokenizer.ggml.bos_token_id', kv.u32(bos));
  if (eos !== undefined) kvs.set('tokenizer.ggml.eos_token_id', kv.u32(eos));
  // dsv3 generate/chat prepend BOS whenever the tokenizer has one
  kvs.set('tokenizer.ggml.add_bos_token', kv.bool(bos !== undefined));
  kvs.set('tokenizer.ggml.add_eos_token', kv.bool(false));
  const template = chatTemplate(dir);
  if (template !== undefined) kvs.set('tokenizer.chat_template', kv.str(template));
  return { kvs, pre: preInfo };
}

/** tokenizer_config.json's chat_template (a string; a list of named templates gives "default"). */
function chatTemplate(dir: string): string | undefined {
  const file = path.join(dir, 'tokenizer_config.json');
  if (!fs.existsSync(file)) return undefined;
  let cfg: unknown;
  try {
    cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DsvError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const t = (cfg as Record<string, unknown> | null)?.['chat_template'];
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const d = t.find((x) => (x as Record<string, unknown>)?.['name'] === 'default') as Record<string, unknown> | undefined;
    if (typeof d?.['template'] === 'string') return d['template'];
  }
  return undefined;
}
