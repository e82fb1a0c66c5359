/**
 * Reading and writing Hugging Face `tokenizers` tokenizer.json files (BPE model, ByteLevel
 * and Split pre-tokenizers, ByteLevel decoder, added tokens). Unsupported parts are
 * DsvErrors naming the field.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DsvError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic-write.js';
import { addedTokensToJSON, parseAddedTokens, type AddedToken } from './added-tokens.js';
import { BpeModel } from './bpe-model.js';
import { parseNormalizer } from './normalizer.js';
import { parsePreTokenizer } from './pre-tokenizer.js';
import { Tokenizer, type DecoderKind } from './tokenizer.js';

type Json = Record<string, unknown>;

/** Options of {@link parseTokenizerJson} and {@link loadTokenizerJson}. */
export interface LoadTokenizerOptions {
  /** BOS token content; default: tokenizer_config.json beside the file, then well-known names. */
  bosToken?: string | null;
  /** EOS token content; default: tokenizer_config.json beside the file, then well-known names. */
  eosToken?: string | null;
  /** Prepend BOS in encode() by default; default: add_bos_token of tokenizer_config.json, else whether the post-processor template starts with the BOS token. */
  addBosByDefault?: boolean;
  /** File name used in error messages. */
  source?: string;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseDecoder(json: unknown, where: string): DecoderKind {
  if (json === null || json === undefined) return null;
  if (!isObject(json)) throw new DsvError(`${where}: expected an object or null`);
  if (json.type === 'ByteLevel') return 'ByteLevel';
  if (json.type === 'Sequence' && Array.isArray(json.decoders)) {
    const kinds = json.decoders.map((d, k) => parseDecoder(d, `${where}.decoders[${k}]`));
    if (kinds.length === 1) return kinds[0]!;
    throw new DsvError(`${where}.decoders: only a single ByteLevel decoder is supported, got ${kinds.length} decoders`);
  }
  throw new DsvError(`${where}.type: decoder ${JSON.stringify(json.type)} is not supported (supported: ByteLevel, or null)`);
}

function parseMerges(json: unknown, where: string): [string, string][] {
  if (json === undefined) return [];
  if (!Array.isArray(json)) throw new DsvError(`${where}: expected an array of "a b" strings or [a, b] pairs`);
  return json.map((m, r): [string, string] => {
    if (typeof m === 'string') {
      const parts = m.split(' ');
      if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
        throw new DsvError(`${where}[${r}]: expected "left right" (two tokens separated by one space), got ${JSON.stringify(m)}`);
      }
      return [parts[0]!, parts[1]!];
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    throw new DsvError(`${where}[${r}]: expected "a b" or ["a", "b"], got ${JSON.stringify(m)}`);
  });
}

function parseModel(json: unknown, where: string): BpeModel {
  if (!isObject(json)) throw new DsvError(`${where}: expected an object`);
  const type = json.type ?? (json.merges !== undefined ? 'BPE' : undefined);
  if (type !== 'BPE') {
    throw new DsvError(`${where}.type: model type ${JSON.stringify(json.type)} is not supported (expected "BPE")`);
  }
  if (json.dropout !== undefined && json.dropout !== null && json.dropout !== 0) {
    throw new DsvError(`${where}.dropout: BPE dropout is not supported (expected null), got ${JSON.stringify(json.dropout)}`);
  }
  for (const field of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
    if (json[field] !== undefined && json[field] !== null && json[field] !== '') {
      throw new DsvError(`${where}.${field}: not supported (expected null), got ${JSON.stringify(json[field])}`);
    }
  }
  if (json.byte_fallback === true) throw new DsvError(`${where}.byte_fallback: not supported (expected false)`);
  if (!isObject(json.vocab)) throw new DsvError(`${where}.vocab: expected an object mapping token strings to ids`);
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(json.vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new DsvError(`${where}.vocab[${JSON.stringify(tok)}]: expected a non-negative integer id, got ${JSON.stringify(id)}`);
    }
    vocab.set(tok, id as number);
  }
  const unk = json.unk_token;
  if (unk !== undefined && unk !== null && typeof unk !== 'string') throw new DsvError(`${where}.unk_token: expected a string or null`);
  return new BpeModel(vocab, parseMerges(json.merges, `${where}.merges`), {
    unkToken: unk ?? null,
    fuseUnk: json.fuse_unk === true,
    ignoreMerges: json.ignore_merges === true,
    where,
  });
}

/** Whether a post-processor's single-sequence template starts with a special token (HF's BOS). */
function templateStartsWithSpecial(json: unknown): boolean {
  if (!isObject(json)) return false;
  if (json.type === 'Sequence' && Array.isArray(json.processors)) return json.processors.some(templateStartsWithSpecial);
  if (json.type !== 'TemplateProcessing' || !Array.isArray(json.single)) return false;
  const first: unknown = json.single[0];
  return isObject(first) && isObject(first.SpecialToken);
}

function checkPostProcessor(json: unknown, where: string): void {
  if (json === null || json === undefined) return;
  const ok = ['ByteLevel', 'TemplateProcessing', 'RobertaProcessing', 'BertProcessing', 'Sequence'];
  if (!isObject(json) || !ok.includes(json.type as string)) {
    throw new DsvError(`${where}.type: post-processor ${JSON.stringify(isObject(json) ? json.type : json)} is not supported (supported: ${ok.join(', ')})`);
  }
}

/** Reads `bos_token`/`eos_token` (string or {content}) and `add_bos_token` from a tokenizer_config.json. */
function readTokenizerConfig(path: string): { bos?: string; eos?: string; addBos?: boolean } {
  if (!existsSync(path)) return {};
  let cfg: unknown;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DsvError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(cfg)) return {};
  const name = (v: unknown): string | undefined =>
    typeof v === 'string' ? v : isObject(v) && typeof v.content === 'string' ? v.content : undefined;
  return {
    bos: name(cfg.bos_token),
    eos: name(cfg.eos_token),
    addBos: typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : undefined,
  };
}

/**
 * Gives added tokens the ids Hugging Face `tokenizers` gives them on load: a token whose
 * content is in the model vocabulary takes that id; any other takes the next id after the
 * vocabulary and the added tokens so far. Consistent files (the usual case) keep their ids.
 */
function assignAddedIds(tokens: AddedToken[], model: BpeModel): AddedToken[] {
  const out: AddedToken[] = [];
  const vocabLen = model.vocab.size;
  let maxAdded = -1;
  for (const t of tokens) {
    if (out.some((o) => o.content === t.content)) continue;
    let id = model.vocab.get(t.content);
    if (id === undefined) id = maxAdded >= vocabLen || vocabLen === 0 ? maxAdded + 1 : vocabLen;
    maxAdded = Math.max(maxAdded, id);
    out.push(id === t.id ? t : { ...t, id });
  }
  return out;
}

/** Builds a Tokenizer from a parsed tokenizer.json object. */
export function parseTokenizerJson(json: unknown, opts: LoadTokenizerOptions = {}): Tokenizer {
  const src = opts.source ?? 'tokenizer.json';
  if (!isObject(json)) throw new DsvError(`${src}: expected a JSON object at the top level`);
  if (json.model === undefined) throw new DsvError(`${src}: missing field "model"`);
  const model = parseModel(json.model, `${src}: model`);
  checkPostProcessor(json.post_processor, `${src}: post_processor`);
  return new Tokenizer({
    model,
    normalizer: parseNormalizer(json.normalizer, `${src}: normalizer`),
    preTokenizer: parsePreTokenizer(json.pre_tokenizer, `${src}: pre_tokenizer`),
    decoder: parseDecoder(json.decoder, `${src}: decoder`),
    addedTokens: assignAddedIds(parseAddedTokens(json.added_tokens, `${src}: added_tokens`), model),
    postProcessor: json.post_processor ?? null,
    bosToken: opts.bosToken,
    eosToken: opts.eosToken,
    addBosByDefault: opts.addBosByDefault ?? templateStartsWithSpecial(json.post_processor),
  });
}

/**
 * Loads a Hugging Face tokenizer.json. BOS/EOS come from the options, else from a
 * tokenizer_config.json in the same directory, else from well-known token names.
 */
export function loadTokenizerJson(path: string, opts: LoadTokenizerOptions = {}): Tokenizer {
  if (!existsSync(path)) throw new DsvError(`${path}: tokenizer file not found`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DsvError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  const cfg = readTokenizerConfig(join(dirname(path), 'tokenizer_config.json'));
  const has = (t: string | undefined, j: Json): t is string => t !== undefined && (isAdded(j, t) || vocabHas(j, t));
  const j = isObject(json) ? json : {};
  return parseTokenizerJson(json, {
    source: path,
    bosToken: opts.bosToken !== undefined ? opts.bosToken : has(cfg.bos, j) ? cfg.bos : undefined,
    eosToken: opts.eosToken !== undefined ? opts.eosToken : has(cfg.eos, j) ? cfg.eos : undefined,
    addBosByDefault: opts.addBosByDefault ?? cfg.addBos,
  });
}

function isAdded(j: Json, t: string): boolean {
  return Array.isArray(j.added_tokens) && j.added_tokens.some((a) => isObject(a) && a.content === t);
}

function vocabHas(j: Json, t: string): boolean {
  return isObject(j.model) && isObject(j.model.vocab) && Object.prototype.hasOwnProperty.call(j.model.vocab, t);
}

/** Returns the tokenizer.json object for a tokenizer. */
export function tokenizerToJson(tok: Tokenizer): Json {
  const p = tok.parts;
  const decoder = p.decoder === 'ByteLevel' ? { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true } : null;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokensToJSON(p.addedTokens),
    normalizer: p.normalizer ? p.normalizer.toJSON() : null,
    pre_tokenizer: p.preTokenizer ? p.preTokenizer.toJSON() : null,
    post_processor: p.postProcessor ?? null,
    decoder,
    model: p.model.toJSON(),
  };
}

/** Options of {@link saveTokenizerJson}. */
export interface SaveTokenizerOptions {
  /** Also write tokenizer_config.json (bos_token, eos_token) in the same directory. */
  writeConfig?: boolean;
}

/**
 * Writes a tokenizer as a Hugging Face tokenizer.json, atomically (temp file, then rename),
 * and optionally a tokenizer_config.json naming its BOS and EOS tokens.
 */
export function saveTokenizerJson(tok: Tokenizer, path: string, opts: SaveTokenizerOptions = {}): void {
  writeFileAtomic(path, JSON.stringify(tokenizerToJson(tok), null, 2) + '\n');
  if (opts.writeConfig) {
    const cfg = {
      add_bos_token: tok.addBosByDefault,
      add_eos_token: false,
      bos_token: tok.bosToken ?? null,
      eos_token: tok.eosToken ?? null,
      tokenizer_class: 'PreTrainedTokenizerFast',
    };
    writeFileAtomic(join(dirname(path), 'tokenizer_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
}
