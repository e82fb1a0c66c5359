/**
 * Added tokens (special tokens such as "<｜begin▁of▁sentence｜>"): strings that are cut out of
 * the text, leftmost-longest, before normalisation and pre-tokenisation, and map straight to
 * their ids.
 */
import { DsvError } from '../../errors.js';

/** One entry of tokenizer.json's `added_tokens`. */
export interface AddedToken {
  readonly id: number;
  readonly content: string;
  /** Match only when not inside a word (no letter, digit or '_' right before or after). */
  readonly singleWord: boolean;
  /** Also consume the whitespace to the left of a match. */
  readonly lstrip: boolean;
  /** Also consume the whitespace to the right of a match. */
  readonly rstrip: boolean;
  /** Matched in the normalised text (true) or in the raw text (false). */
  readonly normalized: boolean;
  /** Special tokens are left out by `decode(ids, {skipSpecialTokens: true})`. */
  readonly special: boolean;
}

/** A piece of text: either free text (id -1) to be tokenised, or one added token's id. */
export interface Segment {
  readonly text: string;
  readonly id: number;
}

const WORD_CHAR = /[\p{L}\p{N}_]/u;
const SPACE_CHAR = /\s/u;

/** Finds added tokens in text, leftmost first and longest first at the same position. */
export class AddedTokenMatcher {
  private readonly byFirst = new Map<number, AddedToken[]>();

  constructor(tokens: readonly AddedToken[]) {
    for (const t of tokens) {
      if (t.content.length === 0) continue;
      const key = t.content.charCodeAt(0);
      let list = this.byFirst.get(key);
      if (!list) this.byFirst.set(key, (list = []));
      list.push(t);
    }
    for (const list of this.byFirst.values()) list.sort((a, b) => b.content.length - a.content.length || a.id - b.id);
  }

  /** Whether there is nothing to match. */
  get empty(): boolean {
    return this.byFirst.size === 0;
  }

  /** Splits `text` into free-text segments and added-token segments, in order. */
  split(text: string): Segment[] {
    const out: Segment[] = [];
    if (this.empty) {
      if (text.length > 0) out.push({ text, id: -1 });
      return out;
    }
    let freeStart = 0;
    let i = 0;
    while (i < text.length) {
      const list = this.byFirst.get(text.charCodeAt(i));
      let hit: AddedToken | undefined;
      if (list) {
        for (const t of list) {
          if (!text.startsWith(t.content, i)) continue;
          if (t.singleWord) {
            const before = i > 0 && WORD_CHAR.test(charBefore(text, i));
            const after = i + t.content.length < text.length && WORD_CHAR.test(charAt(text, i + t.content.length));
            if (before || after) continue;
          }
          hit = t;
          break;
        }
      }
      if (!hit) {
        i++;
        continue;
      }
      let start = i;
      let end = i + hit.content.length;
      if (hit.lstrip) {
        while (start > freeStart && SPACE_CHAR.test(charBefore(text, start))) start -= charBefore(text, start).length;
      }
      if (hit.rstrip) {
        while (end < text.length && SPACE_CHAR.test(charAt(text, end))) end += charAt(text, end).length;
      }
      if (start > freeStart) out.push({ text: text.slice(freeStart, start), id: -1 });
      out.push({ text: text.slice(start, end), id: hit.id });
      freeStart = end;
      i = end;
    }
    if (freeStart < text.length) out.push({ text: text.slice(freeStart), id: -1 });
    return out;
  }
}

function charAt(text: string, i: number): string {
  return String.fromCodePoint(text.codePointAt(i)!);
}

function charBefore(text: string, i: number): string {
  const lo = text.charCodeAt(i - 1);
  if (lo >= 0xdc00 && lo <= 0xdfff && i >= 2) {
    const hi = text.charCodeAt(i - 2);
    if (hi >= 0xd800 && hi <= 0xdbff) return text.slice(i - 2, i);
  }
  return text.slice(i - 1, i);
}

/**
 * Parses tokenizer.json's `added_tokens` array. Throws a DsvError naming the entry at fault.
 */
export function parseAddedTokens(json: unknown, where = 'added_tokens'): AddedToken[] {
  if (json === undefined || json === null) return [];
  if (!Array.isArray(json)) throw new DsvError(`${where}: expected an array`);
  return json.map((e, k) => {
    const w = `${where}[${k}]`;
    if (typeof e !== 'object' || e === null) throw new DsvError(`${w}: expected an object`);
    const o = e as Record<string, unknown>;
    if (!Number.isInteger(o.id) || (o.id as number) < 0) throw new DsvError(`${w}.id: expected a non-negative integer, got ${JSON.stringify(o.id)}`);
    if (typeof o.content !== 'string' || o.content.length === 0) {
      throw new DsvError(`${w}.content: expected a non-empty string, got ${JSON.stringify(o.content)}`);
    }
    return {
      id: o.id as number,
      content: o.content,
      singleWord: o.single_word === true,
      lstrip: o.lstrip === true,
      rstrip: o.rstrip === true,
      normalized: o.normalized === undefined ? o.special !== true : o.normalized === true,
      special: o.special === true,
    };
  });
}

/** Writes added tokens back in tokenizer.json form. */
export function addedTokensToJSON(tokens: readonly AddedToken[]): Record<string, unknown>[] {
  return tokens.map((t) => ({
    id: t.id,
    content: t.content,
    single_word: t.singleWord,
    lstrip: t.lstrip,
    rstrip: t.rstrip,
    normalized: t.normalized,
    special: t.special,
  }));
}
