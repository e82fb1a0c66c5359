/**
 * Normalizers of Hugging Face tokenizer.json files: the text transformations applied before
 * pre-tokenisation. Supported: null, Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Replace
 * (String or Regex pattern), Prepend, Strip.
 */
import { DsvError } from '../../errors.js';
import { compileOnigRegex } from './onig-regex.js';

/** A text normalizer that can be applied and written back as tokenizer.json JSON. */
export interface Normalizer {
  normalize(text: string): string;
  toJSON(): Record<string, unknown>;
}

type Json = Record<string, unknown>;

const UNICODE_FORMS = ['NFC', 'NFD', 'NFKC', 'NFKD'] as const;

/**
 * Parses the `normalizer` field of a tokenizer.json (null means none). `where` names the
 * field for error messages.
 */
export function parseNormalizer(json: unknown, where = 'normalizer'): Normalizer | null {
  if (json === null || json === undefined) return null;
  if (typeof json !== 'object' || Array.isArray(json)) {
    throw new DsvError(`${where}: expected an object or null, got ${JSON.stringify(json)}`);
  }
  const j = json as Json;
  const type = j.type;
  switch (type) {
    case 'Sequence': {
      const list = j.normalizers;
      if (!Array.isArray(list)) throw new DsvError(`${where}.normalizers: expected an array`);
      const parts = list.map((n, k) => parseNormalizer(n, `${where}.normalizers[${k}]`)).filter((n): n is Normalizer => n !== null);
      return {
        normalize: (t) => parts.reduce((acc, n) => n.normalize(acc), t),
        toJSON: () => ({ type: 'Sequence', normalizers: parts.map((n) => n.toJSON()) }),
      };
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = type;
      return { normalize: (t) => t.normalize(form), toJSON: () => ({ type: form }) };
    }
    case 'Lowercase':
      // per character, as Rust's char::to_lowercase (no final-sigma context rule)
      return { normalize: (t) => (/^[\x00-\x7f]*$/.test(t) ? t.toLowerCase() : Array.from(t, (ch) => ch.toLowerCase()).join('')), toJSON: () => ({ type: 'Lowercase' }) };
    case 'Prepend': {
      const prepend = j.prepend;
      if (typeof prepend !== 'string') throw new DsvError(`${where}.prepend: expected a string`);
      return { normalize: (t) => (t.length > 0 ? prepend + t : t), toJSON: () => ({ type: 'Prepend', prepend }) };
    }
    case 'Strip': {
      const left = j.strip_left !== false;
      const right = j.strip_right !== false;
      return {
        normalize: (t) => {
          let s = left ? t.replace(/^\s+/u, '') : t;
          if (right) s = s.replace(/\s+$/u, '');
          return s;
        },
        toJSON: () => ({ type: 'Strip', strip_left: left, strip_right: right }),
      };
    }
    case 'Replace': {
      const pattern = j.pattern as Json | undefined;
      const content = j.content;
      if (typeof content !== 'string') throw new DsvError(`${where}.content: expected a string`);
      if (pattern && typeof pattern.String === 'string') {
        const from = pattern.String;
        return { normalize: (t) => t.split(from).join(content), toJSON: () => ({ type: 'Replace', pattern: { String: from }, content }) };
      }
      if (pattern && typeof pattern.Regex === 'string') {
        const source = pattern.Regex;
        const re = compileOnigRegex(source, `${where}.pattern.Regex`);
        return { normalize: (t) => t.replace(re, () => content), toJSON: () => ({ type: 'Replace', pattern: { Regex: source }, content }) };
      }
      throw new DsvError(`${where}.pattern: expected {"String": ...} or {"Regex": ...}`);
    }
    default:
      throw new DsvError(
        `${where}.type: normalizer ${JSON.stringify(type)} is not supported (supported: Sequence, ${UNICODE_FORMS.join(', ')}, Lowercase, Replace, Prepend, Strip)`,
      );
  }
}
