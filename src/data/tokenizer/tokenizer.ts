/**
 * The Tokenizer: added tokens -> normalizer -> pre-tokenizer -> BPE model, and back through
 * the ByteLevel decoder. Mirrors the encode/decode pipeline of Hugging Face `tokenizers`.
 */
import { DsvError } from '../../errors.js';
import { AddedTokenMatcher, type AddedToken } from './added-tokens.js';
import { pushByteLevelBytes } from './byte-level.js';
import type { BpeModel } from './bpe-model.js';
import type { Normalizer } from './normalizer.js';
import type { PreTokenizer } from './pre-tokenizer.js';

/** The decoder of a tokenizer: "ByteLevel" maps byte characters back to bytes; null joins tokens with spaces (HF's default). */
export type DecoderKind = 'ByteLevel' | null;

/** Everything a {@link Tokenizer} is made of. */
export interface TokenizerParts {
  readonly model: BpeModel;
  readonly normalizer: Normalizer | null;
  readonly preTokenizer: PreTokenizer | null;
  readonly decoder: DecoderKind;
  readonly addedTokens: readonly AddedToken[];
  /** tokenizer.json's `post_processor`, kept as-is so saving writes it back. */
  readonly postProcessor?: unknown;
  /** Content of the beginning-of-sequence token; when absent, well-known names are tried. */
  readonly bosToken?: string | null;
  /** Content of the end-of-sequence token; when absent, well-known names are tried. */
  readonly eosToken?: string | null;
  /** Whether encode() prepends BOS when not told (HF: add_bos_token / the post-processor). */
  readonly addBosByDefault?: boolean;
}

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS id (error if the tokenizer has none); default {@link Tokenizer.addBosByDefault}. */
  addBos?: boolean;
  /** Append the EOS id (error if the tokenizer has none). */
  addEos?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out added tokens marked special (BOS, EOS, ...). */
  skipSpecialTokens?: boolean;
}

const KNOWN_BOS = ['<｜begin▁of▁sentence｜>', '<|begin_of_text|>', '<s>', '<bos>', '<|startoftext|>'];
const KNOWN_EOS = ['<｜end▁of▁sentence｜>', '<|end_of_text|>', '</s>', '<eos>', '<|endoftext|>'];

/** A byte-level BPE tokenizer compatible with Hugging Face tokenizer.json files. */
export class Tokenizer {
  readonly parts: TokenizerParts;
  /** Number of ids: one more than the largest id of the model or the added tokens. */
  readonly vocabSize: number;
  /** Id of the beginning-of-sequence token, if the tokenizer has one. */
  readonly bosId: number | undefined;
  /** Id of the end-of-sequence token, if the tokenizer has one. */
  readonly eosId: number | undefined;
  /** Whether encode() prepends BOS by default (false for trained tokenizers). */
  readonly addBosByDefault: boolean;
  private readonly rawMatcher: AddedTokenMatcher;
  private readonly normMatcher: AddedTokenMatcher;
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  /** Assembles a tokenizer; throws a DsvError if a named BOS/EOS token does not exist. */
  constructor(parts: TokenizerParts) {
    this.parts = parts;
    let size = parts.model.size;
    for (const t of parts.addedTokens) {
      this.addedById.set(t.id, t);
      this.addedByContent.set(t.content, t);
      size = Math.max(size, t.id + 1);
    }
    this.vocabSize = size;
    this.rawMatcher = new AddedTokenMatcher(parts.addedTokens.filter((t) => !t.normalized || parts.normalizer === null));
    this.normMatcher = new AddedTokenMatcher(parts.normalizer === null ? [] : parts.addedTokens.filter((t) => t.normalized));
    this.bosId = this.resolveSpecial(parts.bosToken, KNOWN_BOS, 'bos_token');
    this.eosId = this.resolveSpecial(parts.eosToken, KNOWN_EOS, 'eos_token');
    this.addBosByDefault = (parts.addBosByDefault ?? false) && this.bosId !== undefined;
  }

  private resolveSpecial(name: string | null | undefined, known: readonly string[], field: string): number | undefined {
    if (name === null) return undefined;
    if (name !== undefined) {
      const id = this.tokenToId(name);
      if (id === undefined) throw new DsvError(`${field}: ${JSON.stringify(name)} is not a token of this tokenizer`);
      return id;
    }
    for (const k of known) {
      const id = this.tokenToId(k);
      if (id !== undefined) return id;
    }
    return undefined;
  }

  /** Content of the BOS token, if any. */
  get bosToken(): string | undefined {
    return this.bosId === undefined ? undefined : this.idToToken(this.bosId);
  }

  /** Content of the EOS token, if any. */
  get eosToken(): string | undefined {
    return this.eosId === undefined ? undefined : this.idToToken(this.eosId);
  }

  /** The added tokens (special tokens among them). */
  get addedTokens(): readonly AddedToken[] {
    return this.parts.addedTokens;
  }

  /** Id of a token string (added tokens first, then the model vocabulary), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.parts.model.vocab.get(token);
  }

  /** Token string of an id, or undefined if the id is unused. */
  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.parts.model.idToToken(id);
  }

  /** Encodes text to token ids. Added tokens in the text are matched before anything else. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos ?? this.addBosByDefault) out.push(this.requireSpecial(this.bosId, 'BOS'));
    for (const seg of this.rawMatcher.split(text)) {
      if (seg.id >= 0) {
        out.push(seg.id);
        continue;
      }
      const normalized = this.parts.normalizer ? this.parts.normalizer.normalize(seg.text) : seg.text;
      for (const sub of this.normMatcher.split(normalized)) {
        if (sub.id >= 0) out.push(sub.id);
        else this.encodeFree(sub.text, out);
      }
    }
    if (opts.addEos) out.push(this.requireSpecial(this.eosId, 'EOS'));
    return out;
  }

  private requireSpecial(id: number | undefined, what: string): number {
    if (id === undefined) throw new DsvError(`tokenizer: ${what} requested but the tokenizer has no ${what} token`);
    return id;
  }

  private encodeFree(text: string, out: number[]): void {
    const pieces = this.parts.preTokenizer ? this.parts.preTokenizer.splitPieces([text]) : [text];
    for (const p of pieces) this.parts.model.encodeWord(p, out);
  }

  /** Decodes ids to the bytes they stand for (byte-level decoder) or their UTF-8 text. */
  decodeBytes(ids: ArrayLike<number>, opts: DecodeOptions = {}): Uint8Array {
    const bytes: number[] = [];
    const byteLevel = this.parts.decoder === 'ByteLevel';
    const encoder = byteLevel ? null : new TextEncoder();
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k]!;
      const added = this.addedById.get(id);
      if (added?.special && opts.skipSpecialTokens) continue;
      const tok = added?.content ?? this.parts.model.idToToken(id);
      if (tok === undefined) {
        throw new DsvError(`decode: id ${id} (position ${k}) is not a token of this tokenizer (vocabulary size ${this.vocabSize})`);
      }
      if (byteLevel) pushByteLevelBytes(tok, bytes);
      else {
        if (bytes.length > 0) bytes.push(0x20);
        for (const b of encoder!.encode(tok)) bytes.push(b);
      }
    }
    return Uint8Array.from(bytes);
  }

  /**
   * Decodes ids to text. For any string s, decode(encode(s)) === s; an id sequence that ends
   * inside a multi-byte character decodes that fragment as U+FFFD.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    return this.decoder.decode(this.decodeBytes(ids, opts));
  }
}
