/**
 * GPT-2's byte-to-unicode table, as used by Hugging Face's ByteLevel pre-tokenizer and decoder.
 *
 * Every byte 0..255 maps to one printable code point: the printable Latin-1 bytes map to
 * themselves and the rest (controls, space, 0x7f-0xa0, 0xad) map to U+0100 upwards in byte
 * order. So a vocabulary over bytes can be written as JSON text (a leading space shows as 'Ġ').
 */

function buildByteToChar(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable(b) ? b : next++);
  }
  return table;
}

/** BYTE_TO_CHAR[b] is the one-character string that stands for byte b. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

const CHAR_TO_BYTE: ReadonlyMap<number, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c.codePointAt(0)!, b]));

const encoder = new TextEncoder();

/**
 * Maps a string to its byte-level form: UTF-8 bytes, each shown as its table character.
 * A lone surrogate becomes U+FFFD's bytes, as TextEncoder does.
 */
export function toByteLevel(text: string): string {
  const t = BYTE_TO_CHAR;
  let out = '';
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp < 0x80) {
      out += t[cp];
      continue;
    }
    if (cp >= 0xd800 && cp <= 0xdfff) {
      const lo = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (cp <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      } else cp = 0xfffd;
    }
    if (cp < 0x800) out += t[0xc0 | (cp >> 6)]! + t[0x80 | (cp & 63)]!;
    else if (cp < 0x10000) out += t[0xe0 | (cp >> 12)]! + t[0x80 | ((cp >> 6) & 63)]! + t[0x80 | (cp & 63)]!;
    else out += t[0xf0 | (cp >> 18)]! + t[0x80 | ((cp >> 12) & 63)]! + t[0x80 | ((cp >> 6) & 63)]! + t[0x80 | (cp & 63)]!;
  }
  return out;
}

/**
 * Appends the bytes a byte-level token stands for to `out`. A token with any character
 * outside the table (an added token such as "<｜begin▁of▁sentence｜>") contributes its
 * own UTF-8 bytes instead, as Hugging Face's ByteLevel decoder does.
 */
export function pushByteLevelBytes(token: string, out: number[]): void {
  const start = out.length;
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0)!);
    if (b === undefined) {
      out.length = start;
      for (const raw of encoder.encode(token)) out.push(raw);
      return;
    }
    out.push(b);
  }
}

