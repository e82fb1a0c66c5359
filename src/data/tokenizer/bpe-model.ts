/**
 * The BPE model: a vocabulary and a ranked merge list. A pre-tokenised piece is split into
 * characters (byte-level characters for byte-level tokenizers), then the adjacent pair with
 * the lowest merge rank is merged, leftmost first, until no pair has a rank — exactly the
 * order Hugging Face `tokenizers` uses. Encodings of repeated pieces are cached.
 */
import { DsvError } from '../../errors.js';
import { NumberMinHeap } from './heap.js';

/** Options of {@link BpeModel}. */
export interface BpeModelOptions {
  /** Token for characters missing from the vocabulary; null drops such characters (HF's rule). */
  unkToken?: string | null;
  /** Fuse runs of unknown characters into one unk token. */
  fuseUnk?: boolean;
  /** Emit a piece that is itself in the vocabulary as one token without merging (Llama-3). */
  ignoreMerges?: boolean;
  /** Field name used in error messages, e.g. "model". */
  where?: string;
}

const CACHE_LIMIT = 100_000;

/** A byte-pair-encoding model with merge ranks (lower rank merges first). */
export class BpeModel {
  /** token string -> id */
  readonly vocab: ReadonlyMap<string, number>;
  /** merges in rank order, as token-string pairs */
  readonly merges: ReadonlyArray<readonly [string, string]>;
  readonly unkToken: string | null;
  readonly ignoreMerges: boolean;
  readonly fuseUnk: boolean;
  private readonly idToTok: string[];
  private readonly unkId: number;
  private readonly keyMul: number;
  /** (left id * keyMul + right id) -> (rank * keyMul + merged id) */
  private readonly mergeTable = new Map<number, number>();
  private readonly charIds = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();
  private readonly heap = new NumberMinHeap(64);

  /** Builds the model; throws a DsvError naming the merge or token at fault. */
  constructor(vocab: ReadonlyMap<string, number>, merges: ReadonlyArray<readonly [string, string]>, opts: BpeModelOptions = {}) {
    const where = opts.where ?? 'model';
    this.vocab = vocab;
    this.merges = merges;
    this.unkToken = opts.unkToken ?? null;
    this.ignoreMerges = opts.ignoreMerges ?? false;
    this.fuseUnk = opts.fuseUnk ?? false;
    let maxId = -1;
    this.idToTok = [];
    for (const [tok, id] of vocab) {
      if (!Number.isInteger(id) || id < 0) throw new DsvError(`${where}.vocab[${JSON.stringify(tok)}]: expected a non-negative integer id, got ${id}`);
      if (this.idToTok[id] !== undefined) {
        throw new DsvError(`${where}.vocab: tokens ${JSON.stringify(this.idToTok[id])} and ${JSON.stringify(tok)} share id ${id}`);
      }
      this.idToTok[id] = tok;
      if (id > maxId) maxId = id;
    }
    const bound = Math.max(maxId + 2, merges.length + 1);
    if (bound > 2 ** 26) throw new DsvError(`${where}: ${maxId + 1} ids and ${merges.length} merges exceed the supported 2^26`);
    this.keyMul = 2 ** Math.max(1, Math.ceil(Math.log2(bound)));
    if (this.unkToken !== null) {
      const u = vocab.get(this.unkToken);
      if (u === undefined) throw new DsvError(`${where}.unk_token: ${JSON.stringify(this.unkToken)} is not in the vocabulary`);
      this.unkId = u;
    } else this.unkId = -1;
    for (let r = 0; r < merges.length; r++) {
      const [a, b] = merges[r]!;
      const ia = vocab.get(a);
      const ib = vocab.get(b);
      const ic = vocab.get(a + b);
      const missing = ia === undefined ? a : ib === undefined ? b : ic === undefined ? a + b : null;
      if (missing !== null) {
        throw new DsvError(`${where}.merges[${r}] (${JSON.stringify(`${a} ${b}`)}): token ${JSON.stringify(missing)} is not in the vocabulary`);
      }
      const key = ia! * this.keyMul + ib!;
      if (!this.mergeTable.has(key)) this.mergeTable.set(key, r * this.keyMul + ic!);
    }
  }

  /** One more than the largest id in the vocabulary. */
  get size(): number {
    return this.idToTok.length;
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.idToTok[id];
  }

  /** Rank of merging the pair (left, right), or -1 if they do not merge. */
  rankOf(left: number, right: number): number {
    const v = this.mergeTable.get(left * this.keyMul + right);
    return v === undefined ? -1 : Math.floor(v / this.keyMul);
  }

  /** Appends the ids of one pre-tokenised piece to `out`. */
  encodeWord(word: string, out: number[]): void {
    const cached = this.cache.get(word);
    if (cached) {
      for (let k = 0; k < cached.length; k++) out.push(cached[k]!);
      return;
    }
    const ids = this.mergeWord(word);
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    for (let k = 0; k < ids.length; k++) out.push(ids[k]!);
  }

  /** Empties the cache of word encodings. */
  clearCache(): void {
    this.cache.clear();
  }

  private charId(ch: string): number {
    let id = this.charIds.get(ch);
    if (id === undefined) {
      id = this.vocab.get(ch) ?? this.unkId;
      this.charIds.set(ch, id);
    }
    return id;
  }

  private mergeWord(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const initial: number[] = [];
    let lastUnk = false;
    for (const ch of word) {
      const id = this.charId(ch);
      if (id < 0) continue; // not in the vocabulary and no unk token: dropped
      if (id === this.unkId) {
        if (lastUnk && this.fuseUnk) continue; // consecutive unknowns fuse
        lastUnk = true;
      } else lastUnk = false;
      initial.push(id);
    }
    const n = initial.length;
    if (n < 2) return initial;
    const sym = Int32Array.from(initial);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = this.heap;
    heap.clear();
    const M = this.keyMul;
    const table = this.mergeTable;
    for (let i = 0; i + 1 < n; i++) {
      const v = table.get(sym[i]! * M + sym[i + 1]!);
      if (v !== undefined) heap.push(Math.floor(v / M) * n + i);
    }
    while (heap.size > 0) {
      const k = heap.pop()!;
      const rank = Math.floor(k / n);
      const i = k - rank * n;
      if (sym[i]! < 0) continue; // absorbed by an earlier merge
      const j = next[i]!;
      if (j < 0) continue;
      const v = table.get(sym[i]! * M + sym[j]!);
      if (v === undefined) continue;
      const vRank = Math.floor(v / M);
      if (vRank !== rank) continue; // stale: the pair at i changed
      sym[i] = v - vRank * M;
      sym[j] = -1;
      const after = next[j]!;
      next[i] = after;
      if (after >= 0) prev[after] = i;
      const before = prev[i]!;
      if (before >= 0) {
        const w = table.get(sym[before]! * M + sym[i]!);
        if (w !== undefined) heap.push(Math.floor(w / M) * n + before);
      }
      if (after >= 0) {
        const w = table.get(sym[i]! * M + sym[after]!);
        if (w !== undefined) heap.push(Math.floor(w / M) * n + i);
      }
    }
    const result: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) result.push(sym[i]!);
    return result;
  }

  /** Writes the model in tokenizer.json form (`merges` as "a b" strings). */
  toJSON(): Record<string, unknown> {
    const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
    for (let id = 0; id < this.idToTok.length; id++) {
      const t = this.idToTok[id];
      if (t !== undefined) vocab[t] = id;
    }
    return {
      type: 'BPE',
      dropout: null,
      unk_token: this.unkToken,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: this.fuseUnk,
      byte_fallback: false,
      ignore_merges: this.ignoreMerges,
      vocab,
      merges: this.merges.map(([a, b]) => `${a} ${b}`),
    };
  }
}
