/**
 * Incremental detokenization with stop strings: generated token ids go in one at a time, text
 * comes out as soon as it is final.
 *   - A byte-level BPE token can end inside a multi-byte UTF-8 character (a CJK character or an
 *     emoji is 3-4 bytes, often split over tokens): its bytes are held back until the character
 *     completes (a streaming TextDecoder), so no broken character is ever emitted.
 *   - Stop strings: text that could be the beginning of a stop string is held back until it
 *     either is one (the text before it is emitted, the stop string and everything after are not,
 *     and the stream ends) or cannot be one any more. A stop string may span several tokens.
 */
import { DsvError } from '../errors.js';

export class TextStream {
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  /** Decoded text not yet emitted (a possible start of a stop string). */
  private held = '';
  private out = '';
  private stoppedAt: string | null = null;

  /**
   * @param bytesOf the bytes a token id stands for (`id => tok.decodeBytes([id])`)
   * @param stops stop strings (non-empty)
   */
  constructor(
    private readonly bytesOf: (id: number) => Uint8Array,
    readonly stops: readonly string[] = [],
  ) {
    if (stops.some((s) => s === '')) throw new DsvError('TextStream: a stop string must not be empty');
  }

  /** Everything emitted so far. */
  get text(): string {
    return this.out;
  }

  /** The stop string that ended the stream, or null. */
  get stopped(): string | null {
    return this.stoppedAt;
  }

  /** Adds a token; returns the text that became final ('' if none). After a stop, returns ''. */
  push(id: number): string {
    if (this.stoppedAt !== null) return '';
    return this.release(this.utf8.decode(this.bytesOf(id), { stream: true }), false);
  }

  /** Ends the stream: the held text (an incomplete character as U+FFFD), unless stopped. */
  finish(): string {
    if (this.stoppedAt !== null) return '';
    return this.release(this.utf8.decode(), true);
  }

  private release(added: string, end: boolean): string {
    const buf = this.held + added;
    // the earliest stop string in buf (it cannot start in the text already emitted)
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        this.stoppedAt = s;
      }
    }
    let emit: string;
    if (at >= 0) {
      emit = buf.slice(0, at);
      this.held = '';
    } else {
      const keep = end ? 0 : this.stopPrefix(buf);
      emit = buf.slice(0, buf.length - keep);
      this.held = buf.slice(buf.length - keep);
    }
    this.out += emit;
    return emit;
  }

  /** Length of the longest end of `buf` that is a proper beginning of a stop string. */
  private stopPrefix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > best; k--) {
        if (buf.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
