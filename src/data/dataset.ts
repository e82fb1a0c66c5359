/**
 * The training data pipeline: corpus -> tokens (cached) -> train/validation split -> packed
 * sequences of S+1 tokens (inputs are the first S, targets the last S) -> shuffled batches
 * [B, S+1] as Int32Array. The batch order depends only on the seed, and an iterator's
 * position is a small JSON object, so training resumes bit-exactly.
 */
import { DsvError } from '../errors.js';
import { loadCorpus, type Corpus } from './corpus.js';
import { deriveSeed, Rng, type Seed } from './rng.js';
import { tokenizeCorpus, type TokenizeCorpusOptions } from './token-cache.js';
import type { Tokenizer } from './tokenizer/index.js';

/** A batch of packed sequences: row r is tokens[r*(seqLen+1) .. (r+1)*(seqLen+1)). */
export interface Batch {
  readonly tokens: Int32Array;
  readonly batchSize: number;
  readonly seqLen: number;
}

/** The serialisable position of a {@link BatchIterator}. */
export interface BatchIteratorState {
  readonly version: 1;
  readonly seed: string;
  readonly seqLen: number;
  readonly batchSize: number;
  readonly numTokens: number;
  /** FNV-1a checksum of the token stream, so a resume on other data is caught. */
  readonly dataChecksum: number;
  readonly epoch: number;
  /** Sequences already taken from this epoch's order. */
  readonly cursor: number;
  /** Batches produced so far. */
  readonly step: number;
}

/** Options of {@link BatchIterator}. */
export interface BatchIteratorOptions {
  batchSize: number;
  seqLen: number;
  seed: Seed;
  /** Shift sequence boundaries by a random offset each epoch (default true). */
  randomOffset?: boolean;
}

/** Splits tokens into train and validation: validation is the last `valFraction` of them. */
export function splitTrainVal(tokens: Int32Array, valFraction: number): { train: Int32Array; val: Int32Array } {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new DsvError(`valFraction: expected a number in [0, 1), got ${valFraction}`);
  }
  const nVal = Math.ceil(tokens.length * valFraction);
  return { train: tokens.subarray(0, tokens.length - nVal), val: tokens.subarray(tokens.length - nVal) };
}

/** Returns inputs [B, S] and targets [B, S] (inputs shifted by one) of a batch. */
export function inputsAndTargets(batch: Batch): { inputs: Int32Array; targets: Int32Array } {
  const { batchSize: B, seqLen: S, tokens } = batch;
  const inputs = new Int32Array(B * S);
  const targets = new Int32Array(B * S);
  for (let r = 0; r < B; r++) {
    const row = tokens.subarray(r * (S + 1), (r + 1) * (S + 1));
    inputs.set(row.subarray(0, S), r * S);
    targets.set(row.subarray(1), r * S);
  }
  return { inputs, targets };
}

function checksum(tokens: Int32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) h = Math.imul(h ^ tokens[i]!, 0x01000193);
  return h >>> 0;
}

function checkPositive(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new DsvError(`${name}: expected a positive integer, got ${v}`);
}

/**
 * Endless iterator of training batches. Each epoch cuts the tokens into sequences of S+1
 * tokens at stride S (from a random offset in [0, S) unless disabled) and visits them in a
 * seeded random order; a batch that runs past the end of an epoch continues into the next.
 */
export class BatchIterator {
  readonly batchSize: number;
  readonly seqLen: number;
  private readonly seedText: string;
  private readonly randomOffset: boolean;
  private readonly dataChecksum: number;
  private epoch = 0;
  private cursor = 0;
  private step = 0;
  private order: Uint32Array | null = null;
  private offset = 0;

  /** Throws a DsvError if the tokens are too few for one sequence of seqLen+1. */
  constructor(
    readonly tokens: Int32Array,
    opts: BatchIteratorOptions,
  ) {
    checkPositive('batchSize', opts.batchSize);
    checkPositive('seqLen', opts.seqLen);
    this.batchSize = opts.batchSize;
    this.seqLen = opts.seqLen;
    this.seedText = String(deriveSeed(opts.seed, 'data-order'));
    this.randomOffset = opts.randomOffset ?? true;
    if (tokens.length < opts.seqLen + 1) {
      throw new DsvError(
        `training data: ${tokens.length} tokens, fewer than seqLen + 1 = ${opts.seqLen + 1}; lower --seq or use more data (--data PATH)`,
      );
    }
    this.dataChecksum = checksum(tokens);
  }

  /** Sequences in epoch 0 (later epochs may have one fewer, depending on their offset). */
  get sequencesPerEpoch(): number {
    return Math.floor((this.tokens.length - 1) / this.seqLen);
  }

  /** Batches produced so far. */
  get steps(): number {
    return this.step;
  }

  /** The epoch the next sequence comes from. */
  get currentEpoch(): number {
    return this.epoch;
  }

  private ensureOrder(): Uint32Array {
    if (this.order) return this.order;
    const S = this.seqLen;
    const rng = new Rng(deriveSeed(BigInt(this.seedText), this.epoch));
    let offset = this.randomOffset && this.epoch > 0 ? rng.nextInt(S) : 0;
    if (this.tokens.length - 1 - offset < S) offset = 0;
    this.offset = offset;
    this.order = rng.permutation(Math.floor((this.tokens.length - 1 - offset) / S));
    return this.order;
  }

  /** Returns the next batch [batchSize, seqLen+1]. */
  next(): Batch {
    const S1 = this.seqLen + 1;
    const out = new Int32Array(this.batchSize * S1);
    for (let r = 0; r < this.batchSize; r++) {
      let order = this.ensureOrder();
      if (this.cursor >= order.length) {
        this.epoch++;
        this.cursor = 0;
        this.order = null;
        order = this.ensureOrder();
      }
      const start = this.offset + order[this.cursor++]! * this.seqLen;
      out.set(this.tokens.subarray(start, start + S1), r * S1);
    }
    this.step++;
    return { tokens: out, batchSize: this.batchSize, seqLen: this.seqLen };
  }

  /** Returns the position (JSON-serialisable) to resume from with {@link restore}. */
  state(): BatchIteratorState {
    return {
      version: 1,
      seed: this.seedText,
      seqLen: this.seqLen,
      batchSize: this.batchSize,
      numTokens: this.tokens.length,
      dataChecksum: this.dataChecksum,
      epoch: this.epoch,
      cursor: this.cursor,
      step: this.step,
    };
  }

  /**
   * Moves to a position saved by {@link state}. Throws a DsvError naming the field that
   * differs when the state belongs to other data, another seed or another shape.
   */
  restore(state: BatchIteratorState): void {
    if (typeof state !== 'object' || state === null || state.version !== 1) {
      throw new DsvError(`data iterator state: expected an object with version 1, got ${JSON.stringify(state)}`);
    }
    const expect: Array<[keyof BatchIteratorState, unknown]> = [
      ['seed', this.seedText],
      ['seqLen', this.seqLen],
      ['batchSize', this.batchSize],
      ['numTokens', this.tokens.length],
      ['dataChecksum', this.dataChecksum],
    ];
    for (const [field, want] of expect) {
      if (state[field] !== want) {
        throw new DsvError(
          `data iterator state: ${field} is ${JSON.stringify(state[field])} but this run has ${JSON.stringify(want)} (resume with the same data, seed, batch size and sequence length)`,
        );
      }
    }
    for (const field of ['epoch', 'cursor', 'step'] as const) {
      if (!Number.isInteger(state[field]) || state[field] < 0) {
        throw new DsvError(`data iterator state: ${field} must be a non-negative integer, got ${JSON.stringify(state[field])}`);
      }
    }
    this.epoch = state.epoch;
    this.order = null;
    const order = this.ensureOrder();
    if (state.cursor > order.length) {
      throw new DsvError(`data iterator state: cursor ${state.cursor} is past the ${order.length} sequences of epoch ${state.epoch}`);
    }
    this.cursor = state.cursor;
    this.step = state.step;
  }
}

/**
 * Yields validation batches in order: sequences of S+1 tokens at stride S from the start of
 * `tokens`, up to `batchSize` rows each (the last batch may have fewer rows).
 */
export function* validationBatches(tokens: Int32Array, batchSize: number, seqLen: number): Generator<Batch> {
  checkPositive('batchSize', batchSize);
  checkPositive('seqLen', seqLen);
  const n = tokens.length < seqLen + 1 ? 0 : Math.floor((tokens.length - 1) / seqLen);
  const S1 = seqLen + 1;
  for (let first = 0; first < n; first += batchSize) {
    const rows = Math.min(batchSize, n - first);
    const out = new Int32Array(rows * S1);
    for (let r = 0; r < rows; r++) out.set(tokens.subarray((first + r) * seqLen, (first + r) * seqLen + S1), r * S1);
    yield { tokens: out, batchSize: rows, seqLen };
  }
}

/** Options of {@link prepareData}. */
export interface PrepareDataOptions extends TokenizeCorpusOptions {
  /** --data PATH (file or directory); default: Moby-Dick. */
  data?: string;
  /** An already loaded corpus (takes precedence over `data`). */
  corpus?: Corpus;
  /** Fraction of tokens held out for validation, taken from the end (default 0.05). */
  valFraction?: number;
  /** When set, checks that both splits hold at least one sequence of seqLen+1 tokens. */
  seqLen?: number;
}

/** The data for a training run. */
export interface PreparedData {
  readonly tokenizer: Tokenizer;
  readonly train: Int32Array;
  readonly val: Int32Array;
  readonly corpusName: string;
  readonly corpusHash: string;
  readonly documents: number;
  readonly fromCache: boolean;
  readonly cachePath: string | null;
}

/**
 * Loads the corpus, tokenises it (training or reusing a cached BPE tokenizer) and splits it
 * into train and validation tokens.
 */
export function prepareData(opts: PrepareDataOptions = {}): PreparedData {
  const corpus = opts.corpus ?? loadCorpus(opts.data);
  const tc = tokenizeCorpus(corpus, opts);
  const valFraction = opts.valFraction ?? 0.05;
  const { train, val } = splitTrainVal(tc.tokens, valFraction);
  if (opts.seqLen !== undefined) {
    checkPositive('seqLen', opts.seqLen);
    const need = opts.seqLen + 1;
    if (train.length < need) {
      throw new DsvError(`${corpus.name}: the training split has ${train.length} tokens, fewer than seqLen + 1 = ${need}; lower --seq or use more data`);
    }
    if (valFraction > 0 && val.length < need) {
      throw new DsvError(
        `${corpus.name}: the validation split has ${val.length} tokens (valFraction ${valFraction}), fewer than seqLen + 1 = ${need}; lower --seq or raise the validation fraction`,
      );
    }
  }
  return {
    tokenizer: tc.tokenizer,
    train,
    val,
    corpusName: corpus.name,
    corpusHash: tc.corpusHash,
    documents: corpus.documents.length,
    fromCache: tc.fromCache,
    cachePath: tc.cachePath,
  };
}
