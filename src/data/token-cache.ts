/**
 * Tokenising a corpus, with an on-disk cache so a second run neither retrains BPE nor
 * re-encodes the text. An entry lives in `<cacheDir>/<key>/` (tokenizer.json,
 * tokenizer_config.json, tokens.bin as little-endian int32, meta.json written last); the key
 * hashes the corpus contents, the vocabulary size and the trainer settings (or the given
 * tokenizer).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { endianness, homedir } from 'node:os';
import { join } from 'node:path';
import { DsvError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-write.js';
import { corpusHash, type Corpus } from './corpus.js';
import {
  DEFAULT_SPECIAL_TOKENS,
  loadTokenizerJson,
  saveTokenizerJson,
  tokenizerToJson,
  trainBpe,
  type Tokenizer,
} from './tokenizer/index.js';

/** Bumped whenever the cached format or the trainer's output changes. */
const CACHE_VERSION = 1;

/** Options of {@link tokenizeCorpus}. */
export interface TokenizeCorpusOptions {
  /** Vocabulary size of the BPE tokenizer to train (default 4096). */
  vocabSize?: number;
  /** Minimum pair frequency for a merge (default 2). */
  minFrequency?: number;
  /** Special tokens (default: DeepSeek-V3's BOS and EOS). */
  specialTokens?: readonly string[];
  /** Use this tokenizer instead of training one. */
  tokenizer?: Tokenizer;
  /** Cache directory; null disables caching (default: {@link defaultCacheDir}). */
  cacheDir?: string | null;
  /** Progress messages. */
  log?: (message: string) => void;
}

/** A tokenised corpus: each document is BOS + its tokens + EOS (when the tokenizer has them). */
export interface TokenizedCorpus {
  readonly tokenizer: Tokenizer;
  readonly tokens: Int32Array;
  /** Hex SHA-256 of the corpus text. */
  readonly corpusHash: string;
  /** Cache key of this corpus + tokenizer settings. */
  readonly key: string;
  /** Directory of the cache entry, or null when caching is off. */
  readonly cachePath: string | null;
  /** Whether tokenizer and tokens were read from the cache. */
  readonly fromCache: boolean;
}

/** The default cache directory: $DSV3_CACHE_DIR, else ~/.cache/dsv3/data. */
export function defaultCacheDir(): string {
  return process.env.DSV3_CACHE_DIR ?? join(homedir(), '.cache', 'dsv3', 'data');
}

interface Meta {
  version: number;
  key: string;
  corpusHash: string;
  numTokens: number;
  vocabSize: number;
  documents: number;
}

/** Encodes every document (BOS + text + EOS) into one token stream. */
export function encodeDocuments(tokenizer: Tokenizer, documents: readonly string[]): Int32Array {
  const parts: number[][] = [];
  let total = 0;
  for (const doc of documents) {
    const ids = tokenizer.encode(doc, { addBos: tokenizer.bosId !== undefined, addEos: tokenizer.eosId !== undefined });
    parts.push(ids);
    total += ids.length;
  }
  const out = new Int32Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function cacheKey(hash: string, opts: TokenizeCorpusOptions): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ v: CACHE_VERSION, corpus: hash }));
  if (opts.tokenizer) h.update(JSON.stringify(tokenizerToJson(opts.tokenizer)));
  else {
    h.update(
      JSON.stringify({
        vocabSize: opts.vocabSize ?? 4096,
        minFrequency: opts.minFrequency ?? 2,
        specials: opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS,
      }),
    );
  }
  return `${hash.slice(0, 12)}-v${opts.tokenizer ? opts.tokenizer.vocabSize : (opts.vocabSize ?? 4096)}-${h.digest('hex').slice(0, 12)}`;
}

function readEntry(dir: string, key: string, tokenizer: Tokenizer | undefined): { tokenizer: Tokenizer; tokens: Int32Array } | null {
  const metaPath = join(dir, 'meta.json');
  if (!existsSync(metaPath)) return null;
  const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as Meta;
  if (meta.version !== CACHE_VERSION || meta.key !== key) return null;
  const buf = readFileSync(join(dir, 'tokens.bin'));
  if (buf.byteLength !== meta.numTokens * 4) return null;
  const tokens = new Int32Array(meta.numTokens);
  new Uint8Array(tokens.buffer).set(buf);
  const tok = tokenizer ?? loadTokenizerJson(join(dir, 'tokenizer.json'));
  if (tok.vocabSize !== meta.vocabSize) return null;
  return { tokenizer: tok, tokens };
}

/**
 * Tokenises a corpus: trains a BPE tokenizer on it (unless `opts.tokenizer` is given) and
 * encodes every document, reusing a cache entry for the same corpus and settings.
 */
export function tokenizeCorpus(corpus: Corpus, opts: TokenizeCorpusOptions = {}): TokenizedCorpus {
  const log = opts.log ?? (() => {});
  const hash = corpusHash(corpus);
  const key = cacheKey(hash, opts);
  const cacheDir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
  const useCache = cacheDir !== null && endianness() === 'LE';
  const dir = useCache ? join(cacheDir, key) : null;

  if (dir) {
    try {
      const hit = readEntry(dir, key, opts.tokenizer);
      if (hit) {
        log(`data: using cached tokens for ${corpus.name} (${hit.tokens.length} tokens) from ${dir}`);
        return { ...hit, corpusHash: hash, key, cachePath: dir, fromCache: true };
      }
    } catch (e) {
      if (!(e instanceof SyntaxError) && !(e instanceof DsvError) && (e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      log(`data: ignoring unreadable cache entry ${dir} (${(e as Error).message})`);
    }
  }

  let tokenizer = opts.tokenizer;
  if (!tokenizer) {
    const t0 = Date.now();
    log(`data: training a ${opts.vocabSize ?? 4096}-token BPE tokenizer on ${corpus.name}`);
    tokenizer = trainBpe(corpus.documents, {
      vocabSize: opts.vocabSize,
      minFrequency: opts.minFrequency,
      specialTokens: opts.specialTokens,
    });
    log(`data: trained ${tokenizer.vocabSize} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const tokens = encodeDocuments(tokenizer, corpus.documents);
  log(`data: ${corpus.name}: ${corpus.documents.length} documents, ${tokens.length} tokens`);

  if (dir) {
    if (!opts.tokenizer) saveTokenizerJson(tokenizer, join(dir, 'tokenizer.json'), { writeConfig: true });
    writeFileAtomic(join(dir, 'tokens.bin'), new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    const meta: Meta = {
      version: CACHE_VERSION,
      key,
      corpusHash: hash,
      numTokens: tokens.length,
      vocabSize: tokenizer.vocabSize,
      documents: corpus.documents.length,
    };
    writeFileAtomic(join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
  }
  return { tokenizer, tokens, corpusHash: hash, key, cachePath: dir, fromCache: false };
}
