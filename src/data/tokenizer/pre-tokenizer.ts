/**
 * Pre-tokenizers of Hugging Face tokenizer.json files: they cut text into the pieces that the
 * BPE model encodes one at a time. Supported: Sequence, Split (String or Regex pattern, every
 * split behaviour, invert) and ByteLevel (add_prefix_space, use_regex).
 */
import { DsvError } from '../../errors.js';
import { toByteLevel } from './byte-level.js';
import { compileOnigRegex } from './onig-regex.js';

/** A pre-tokenizer: maps a list of pieces to a finer list, and writes back as JSON. */
export interface PreTokenizer {
  splitPieces(pieces: string[]): string[];
  toJSON(): Record<string, unknown>;
}

/** Hugging Face's SplitDelimiterBehavior names. */
export type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: readonly SplitBehavior[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

/** The regex GPT-2 (and HF's ByteLevel pre-tokenizer with use_regex) splits with. */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/**
 * The Llama-3-style split used by {@link trainBpe}: English contractions, letter runs with one
 * leading non-letter, digits in groups of 1-3, punctuation runs with an optional leading space
 * and trailing newlines, newline runs, and whitespace runs that leave the last space for the
 * next word.
 */
export const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** A Split pre-tokenizer with a regex (Oniguruma syntax) or literal string pattern. */
export class SplitPreTokenizer implements PreTokenizer {
  private readonly re: RegExp;

  /** `pattern` is {Regex: source} or {String: literal}; `where` names the field in errors. */
  constructor(
    readonly pattern: { Regex: string } | { String: string },
    readonly behavior: SplitBehavior = 'Isolated',
    readonly invert = false,
    where = 'pre_tokenizer',
  ) {
    this.re =
      'Regex' in pattern
        ? compileOnigRegex(pattern.Regex, `${where}.pattern.Regex`)
        : new RegExp(pattern.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
  }

  splitPieces(pieces: string[]): string[] {
    const out: string[] = [];
    for (const p of pieces) this.splitOne(p, out);
    return out;
  }

  /** Splits one piece, appending the non-empty results to `out`. */
  splitOne(text: string, out: string[]): void {
    // segments as flat triples: start, end, isMatch
    const segs: number[] = [];
    const re = this.re;
    re.lastIndex = 0;
    let prev = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const start = m.index;
      const end = start + m[0].length;
      if (end === start) {
        const cp = text.codePointAt(end);
        re.lastIndex = end + (cp !== undefined && cp > 0xffff ? 2 : 1);
        continue;
      }
      if (start > prev) segs.push(prev, start, this.invert ? 1 : 0);
      segs.push(start, end, this.invert ? 0 : 1);
      prev = end;
    }
    if (prev < text.length) segs.push(prev, text.length, this.invert ? 1 : 0);

    const ranges: number[] = []; // start, end pairs of output pieces
    const n = segs.length / 3;
    switch (this.behavior) {
      case 'Removed':
        for (let k = 0; k < n; k++) if (!segs[3 * k + 2]) ranges.push(segs[3 * k]!, segs[3 * k + 1]!);
        break;
      case 'Isolated':
        for (let k = 0; k < n; k++) ranges.push(segs[3 * k]!, segs[3 * k + 1]!);
        break;
      case 'MergedWithPrevious': {
        let prevMatch = false;
        for (let k = 0; k < n; k++) {
          const isMatch = segs[3 * k + 2] === 1;
          if (isMatch && !prevMatch && ranges.length > 0) ranges[ranges.length - 1] = segs[3 * k + 1]!;
          else ranges.push(segs[3 * k]!, segs[3 * k + 1]!);
          prevMatch = isMatch;
        }
        break;
      }
      case 'MergedWithNext': {
        let prevMatch = false;
        const rev: number[] = [];
        for (let k = n - 1; k >= 0; k--) {
          const isMatch = segs[3 * k + 2] === 1;
          if (isMatch && !prevMatch && rev.length > 0) rev[rev.length - 2] = segs[3 * k]!;
          else rev.push(segs[3 * k]!, segs[3 * k + 1]!);
          prevMatch = isMatch;
        }
        for (let k = rev.length - 2; k >= 0; k -= 2) ranges.push(rev[k]!, rev[k + 1]!);
        break;
      }
      case 'Contiguous': {
        let prevMatch = false;
        for (let k = 0; k < n; k++) {
          const isMatch = segs[3 * k + 2] === 1;
          if (isMatch === prevMatch && ranges.length > 0) ranges[ranges.length - 1] = segs[3 * k + 1]!;
          else ranges.push(segs[3 * k]!, segs[3 * k + 1]!);
          prevMatch = isMatch;
        }
        break;
      }
    }
    for (let k = 0; k < ranges.length; k += 2) {
      if (ranges[k + 1]! > ranges[k]!) out.push(text.slice(ranges[k], ranges[k + 1]));
    }
  }

  toJSON(): Record<string, unknown> {
    return { type: 'Split', pattern: this.pattern, behavior: this.behavior, invert: this.invert };
  }
}

/** The ByteLevel pre-tokenizer: optional prefix space and GPT-2 split, then byte mapping. */
export class ByteLevelPreTokenizer implements PreTokenizer {
  private readonly gpt2: SplitPreTokenizer | null;
  private readonly mapped = new Map<string, string>();

  constructor(
    readonly addPrefixSpace = false,
    readonly useRegex = false,
    readonly trimOffsets = true,
  ) {
    this.gpt2 = useRegex ? new SplitPreTokenizer({ Regex: GPT2_PATTERN }, 'Isolated', false, 'ByteLevel') : null;
  }

  splitPieces(pieces: string[]): string[] {
    const out: string[] = [];
    for (let p of pieces) {
      if (this.addPrefixSpace && !p.startsWith(' ')) p = ' ' + p;
      if (this.gpt2) {
        const start = out.length;
        this.gpt2.splitOne(p, out);
        for (let k = start; k < out.length; k++) out[k] = this.toBytes(out[k]!);
      } else if (p.length > 0) out.push(this.toBytes(p));
    }
    return out;
  }

  /** toByteLevel with a bounded cache: short pieces (words) repeat a lot. */
  private toBytes(piece: string): string {
    if (piece.length > 64) return toByteLevel(piece);
    let m = this.mapped.get(piece);
    if (m === undefined) {
      if (this.mapped.size >= 100_000) this.mapped.clear();
      m = toByteLevel(piece);
      this.mapped.set(piece, m);
    }
    return m;
  }

  toJSON(): Record<string, unknown> {
    return { type: 'ByteLevel', add_prefix_space: this.addPrefixSpace, trim_offsets: this.trimOffsets, use_regex: this.useRegex };
  }
}

/** A Sequence pre-tokenizer: applies its members in order. */
export class SequencePreTokenizer implements PreTokenizer {
  constructor(readonly members: readonly PreTokenizer[]) {}

  splitPieces(pieces: string[]): string[] {
    return this.members.reduce((acc, m) => m.splitPieces(acc), pieces);
  }

  toJSON(): Record<string, unknown> {
    return { type: 'Sequence', pretokenizers: this.members.map((m) => m.toJSON()) };
  }
}

/**
 * Parses the `pre_tokenizer` field of a tokenizer.json (null means none). Unknown types are
 * a DsvError naming the field.
 */
export function parsePreTokenizer(json: unknown, where = 'pre_tokenizer'): PreTokenizer | null {
  if (json === null || json === undefined) return null;
  if (typeof json !== 'object' || Array.isArray(json)) {
    throw new DsvError(`${where}: expected an object or null, got ${JSON.stringify(json)}`);
  }
  const j = json as Record<string, unknown>;
  switch (j.type) {
    case 'Sequence': {
      if (!Array.isArray(j.pretokenizers)) throw new DsvError(`${where}.pretokenizers: expected an array`);
      const members = j.pretokenizers
        .map((m, k) => parsePreTokenizer(m, `${where}.pretokenizers[${k}]`))
        .filter((m): m is PreTokenizer => m !== null);
      return new SequencePreTokenizer(members);
    }
    case 'Split': {
      const pat = j.pattern as Record<string, unknown> | undefined;
      let pattern: { Regex: string } | { String: string };
      if (pat && typeof pat.Regex === 'string') pattern = { Regex: pat.Regex };
      else if (pat && typeof pat.String === 'string') pattern = { String: pat.String };
      else throw new DsvError(`${where}.pattern: expected {"Regex": "..."} or {"String": "..."}, got ${JSON.stringify(pat)}`);
      const behavior = (j.behavior ?? 'Isolated') as SplitBehavior;
      if (!BEHAVIORS.includes(behavior)) {
        throw new DsvError(`${where}.behavior: ${JSON.stringify(j.behavior)} is not one of ${BEHAVIORS.join(', ')}`);
      }
      if (j.invert !== undefined && typeof j.invert !== 'boolean') throw new DsvError(`${where}.invert: expected a boolean`);
      return new SplitPreTokenizer(pattern, behavior, j.invert === true, where);
    }
    case 'ByteLevel':
      return new ByteLevelPreTokenizer(j.add_prefix_space !== false, j.use_regex !== false, j.trim_offsets !== false);
    default:
      throw new DsvError(
        `${where}.type: pre-tokenizer ${JSON.stringify(j.type)} is not supported (supported: Sequence, Split, ByteLevel)`,
      );
  }
}
