/**
 * A small deterministic pseudo-random number generator for the whole project.
 *
 * The generator is xoshiro128** (four 32-bit words of state, period 2^128 - 1), seeded by
 * running splitmix64 over the seed, so nearby seeds (0, 1, 2, ...) give unrelated streams.
 * Its state is four plain numbers, so it serialises to JSON and restores bit-exactly.
 */
import { DsvError } from '../errors.js';

/** The serialisable state of an {@link Rng}: four unsigned 32-bit words. */
export interface RngState {
  readonly s: readonly [number, number, number, number];
}

/** A seed: a non-negative safe integer, a non-negative bigint, or any string (hashed). */
export type Seed = number | bigint | string;

const MASK64 = (1n << 64n) - 1n;

/** One step of splitmix64: returns [new state, output]. */
function splitmix64(state: bigint): [bigint, bigint] {
  const next = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return [next, z ^ (z >> 31n)];
}

/** FNV-1a (64-bit) over the UTF-16 code units of a string. */
function hashString(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < text.length; i++) {
    h ^= BigInt(text.charCodeAt(i));
    h = (h * 0x100000001b3n) & MASK64;
  }
  return h;
}

/** Turns a {@link Seed} into a 64-bit value; rejects negative or non-integer numbers. */
function seedToBigInt(seed: Seed): bigint {
  if (typeof seed === 'string') return hashString(seed);
  if (typeof seed === 'bigint') {
    if (seed < 0n) throw new DsvError(`seed must be a non-negative integer, got ${seed}`);
    return seed & MASK64;
  }
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new DsvError(`seed must be a non-negative integer (at most ${Number.MAX_SAFE_INTEGER}), got ${seed}`);
  }
  return BigInt(seed);
}

/**
 * Derives a new 64-bit seed from a base seed and labels (numbers or strings), e.g.
 * `deriveSeed(seed, 'data-order', epoch)`. Streams from different labels are independent.
 */
export function deriveSeed(seed: Seed, ...labels: ReadonlyArray<number | string>): bigint {
  let state = seedToBigInt(seed);
  let out: bigint;
  [state, out] = splitmix64(state);
  for (const label of labels) {
    const v = typeof label === 'string' ? hashString(label) : seedToBigInt(label);
    [state, out] = splitmix64(state ^ out ^ v);
  }
  [, out] = splitmix64(state ^ out);
  return out;
}

/** xoshiro128** generator with splitmix64 seeding. */
export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** Creates a generator from a seed (see {@link Seed}). */
  constructor(seed: Seed = 0) {
    let state = seedToBigInt(seed);
    const words: number[] = [];
    while (words.length < 4) {
      let out: bigint;
      [state, out] = splitmix64(state);
      words.push(Number(out & 0xffffffffn), Number(out >> 32n));
    }
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Creates a generator positioned at a previously saved {@link RngState}. */
  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.restore(state);
    return r;
  }

  /** Returns the next uniformly distributed unsigned 32-bit integer. */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    this.s0 >>>= 0;
    this.s1 >>>= 0;
    this.s2 >>>= 0;
    this.s3 >>>= 0;
    return result;
  }

  /** Returns a uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Returns an unbiased uniform integer in [0, n) for 1 <= n <= 2^32 (rejection sampling). */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) {
      throw new DsvError(`Rng.nextInt: bound must be an integer in [1, 2^32], got ${n}`);
    }
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Returns a standard normal sample (Box-Muller; uses two uniforms per call). */
  nextNormal(): number {
    const u1 = 1 - this.nextFloat(); // (0, 1]
    const u2 = this.nextFloat();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Shuffles an array or typed array in place (Fisher-Yates) and returns it. */
  shuffle<T extends { length: number; [i: number]: unknown }>(arr: T): T {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = arr[i];
      arr[i] = arr[j];
      arr[j] = tmp;
    }
    return arr;
  }

  /** Returns a uniformly random permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  /** Returns an independent child generator for `label`, advancing this one by one draw. */
  fork(label: number | string): Rng {
    const base = (BigInt(this.nextUint32()) << 32n) | BigInt(this.nextUint32());
    return new Rng(deriveSeed(base, label));
  }

  /** Returns the current state (JSON-serialisable). */
  state(): RngState {
    return { s: [this.s0, this.s1, this.s2, this.s3] };
  }

  /** Restores a state returned by {@link Rng.state}; the stream continues bit-exactly. */
  restore(state: RngState): void {
    const s = state?.s;
    const ok =
      Array.isArray(s) &&
      s.length === 4 &&
      s.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff) &&
      s.some((v) => v !== 0);
    if (!ok) {
      throw new DsvError(`RNG state: expected {"s": [four unsigned 32-bit integers, not all zero]}, got ${JSON.stringify(state)}`);
    }
    [this.s0, this.s1, this.s2, this.s3] = s as [number, number, number, number];
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
