/**
 * Step arenas: large float32 buffers reused from one training step to the next.
 *
 * A training step allocates the same few hundred buffers every time (bench-small at 8x256:
 * ~435 buffers, ~580 MB of activations and gradients). Left to V8, each one is a fresh
 * ArrayBuffer: the kernel maps new pages (page faults, ~12k per step, paid inside the GEMMs
 * that first touch them), the external-memory pressure triggers a dozen garbage collections
 * per step, and the freed pages go back to the OS on V8's sweeper thread, which competes
 * with the compute threads for the two cores.
 *
 * While an arena is active (`withArena`), `alloc`/`allocUninit` (ops/util.ts) take buffers of
 * at least ARENA_MIN_ELEMS elements from it. `arena.reset()` declares every buffer handed out
 * since the last reset dead and makes them all available again; the next step then finds
 * buffers of the same size classes already mapped. The contract is the caller's: after
 * `reset()` no tensor allocated inside the arena may be used — the trainer resets after the
 * optimizer step, when gradients have been applied and cleared and every number it logs has
 * been copied out. `poison: true` fills released buffers with NaN so that a tensor used after
 * its step shows up in tests (test/arena.test.ts runs training with and without an arena and
 * asserts bit-identical results).
 *
 * Buffers are binned by size class (8 per power of two, so at most 12.5% slack), which lets
 * the MoE layers' per-step varying expert batch sizes reuse each other's buffers. Classes
 * not fully used in the last two steps are trimmed at reset, so the arena holds about one
 * step's worth of memory. Buffers of 2 MiB and up are on transparent huge pages (memory.ts).
 *
 * Within a step, a buffer goes back to the free list as soon as nothing will read it again
 * (issue 13: lower precision only saves memory if the float32 tensors it replaces are reused):
 *   - backward gives gradient buffers back as soon as they are consumed (`release`, used by
 *     autograd.ts);
 *   - every recorded backward node holds (`hold`) the buffers its closure reads, as its op
 *     declares them (tensor.ts `attach`: `saves`, `owns`), until its backward ran (`unhold`);
 *   - the forward drops (`drop`, `dropActivations`) the intermediates it will not read again
 *     (the model's layers, once their readers ran); a dropped buffer nobody holds is free.
 * A bf16 / FP8 Linear holds only its low-precision copy, so its float32 input is reused as soon
 * as the forward moves on; the backward frees activations as it goes, so the gradients reuse
 * them. Size classes peak at different times (activations early, weight gradients late), so
 * with `giveBack` (off by default: it costs page faults every step) the arena unmaps free
 * huge-page buffers of other classes before mapping a new one, and holds about its peak in
 * use, not the sum of the classes' peaks.
 * Without give-back, a request whose class has no free buffer first borrows a free buffer of a
 * class at most BORROW_RATIO larger (`borrow`), which maps nothing new (bench-small 8x256: -17 to
 * -29 MB peak RSS; BENCHMARKS.md, issue 13).
 * In a poisoning arena an early-released buffer is NaN-filled and its old views detached, so a
 * closure that reads a buffer it did not declare fails (test/arena.test.ts).
 */
import { LARGE_BYTES, freeLargeBuffer, largeBuffer } from './memory.js';

/** By default buffers below this many float32 elements (16 KiB) are not pooled: ops/util.ts
 * carves small ones from slabs, and V8 keeps tiny ones on its heap. */
export const ARENA_MIN_ELEMS = 4096;

export interface ArenaOptions {
  /** Fill buffers with NaN when they are released (debugging use-after-reset). */
  poison?: boolean;
  /** Pool requests of at least this many float32 elements (default ARENA_MIN_ELEMS; tests
   * lower it so that a tiny model's every tensor comes from the arena). */
  minElems?: number;
  /**
   * Before mapping a new buffer, unmap free huge-page buffers of other size classes (default
   * off; DSV3_ARENA_GIVEBACK=1 turns it on): the arena then holds about its peak in use, at
   * the price of page faults every step (bench-small: -36 to -59 MB peak RSS, +5 to +30% CPU
   * time per step; BENCHMARKS.md, issue 13).
   */
  giveBack?: boolean;
  /**
   * A request whose size class has no free buffer takes a free one of a larger class (up to
   * BORROW_RATIO times its size) before mapping a new one (default on; DSV3_ARENA_BORROW=0 turns
   * it off): no page faults, and fewer bytes held than every class's own peak.
   */
  borrow?: boolean;
}

/** How much larger than its size class a borrowed buffer may be (ArenaOptions.borrow). */
export const BORROW_RATIO = 1.5;

export interface ArenaStats {
  /** Bytes of all buffers the arena holds (handed out or free). */
  heldBytes: number;
  /** Buffers handed out since the last reset. */
  taken: number;
  /** Requests served from a free buffer / by a new one, since construction. */
  hits: number;
  misses: number;
  /** Buffers given back early (`release`, or dropped and no longer held), since construction. */
  released: number;
  /** Bytes handed out and not given back now, and their most since the last reset. */
  inUseBytes: number;
  peakInUseBytes: number;
  /** Free buffers unmapped to make room for a new one (ArenaOptions.giveBack), since construction. */
  givenBack: number;
}

/** Anything over a buffer: a typed array, or a Tensor (its `data`). */
export type OverBuffer = ArrayBufferView | { readonly data: ArrayBufferView };

/**
 * A buffer released early in a poisoning arena: NaN-filled, and (below LARGE_BYTES, plain
 * ArrayBuffers) moved to a new ArrayBuffer object, so that every view over the old one is
 * detached (length 0): a tensor used after its release reads nothing and fails loudly, even
 * where NaN would go unnoticed (a length, an index). The new object is what gets reused.
 */
function poisoned(buf: ArrayBuffer): ArrayBuffer {
  new Float32Array(buf).fill(NaN);
  if (buf.byteLength >= LARGE_BYTES) return buf;
  return structuredClone(buf, { transfer: [buf] });
}

/** Size class of `bytes`: rounded up to 1/8 of its power of two (at least 64 bytes). */
function sizeClass(bytes: number): number {
  if (bytes <= 64) return 64;
  const step = 2 ** Math.max(6, Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

interface Bin {
  free: ArrayBuffer[];
  /** handed out and not released since the last reset, with the epoch of their take */
  taken: Map<ArrayBuffer, number>;
  /** the most buffers of this class in use at once, this step and the previous one */
  peak: number;
  prevPeak: number;
}

export class BufferArena {
  private readonly bins = new Map<number, Bin>();
  private readonly poison: boolean;
  /** Requests of fewer float32 elements are not served from the arena. */
  readonly minElems: number;
  /** counters behind stats(); `taken` restarts at each reset */
  private readonly counts = { held: 0, taken: 0, hits: 0, misses: 0, released: 0, inUse: 0, peakInUse: 0, givenBack: 0 };
  /** ArenaOptions.giveBack */
  private readonly giveBack: boolean;
  /** ArenaOptions.borrow */
  private readonly borrowing: boolean;
  private epochCount = 0;
  /** Steps ended (`reset` calls): a buffer taken in an earlier generation is not this step's. */
  private gen = 0;
  get generation(): number {
    return this.gen;
  }
  /**
   * Per buffer of this step: how many holders may still read it (`hold`: a recorded backward
   * closure that saved it, a pending gradient), and whether the code that made it has dropped
   * it (`drop`). A dropped buffer with no holder goes back to the free list at once.
   */
  private readonly holds = new Map<ArrayBuffer, number>();
  private readonly dropped = new Set<ArrayBuffer>();

  constructor(o: ArenaOptions = {}) {
    this.poison = o.poison ?? false;
    this.minElems = Math.max(1, o.minElems ?? ARENA_MIN_ELEMS);
    this.giveBack = o.giveBack ?? process.env.DSV3_ARENA_GIVEBACK === '1';
    this.borrowing = o.borrow ?? process.env.DSV3_ARENA_BORROW !== '0';
  }

  /** A buffer of at least `bytes` bytes with unspecified contents, valid until `reset()`. */
  take(bytes: number): ArrayBuffer {
    const cls = sizeClass(bytes);
    let bin = this.bins.get(cls);
    if (!bin) {
      bin = { free: [], taken: new Map(), peak: 0, prevPeak: 0 };
      this.bins.set(cls, bin);
    }
    let buf = bin.free.pop() ?? this.borrow(cls);
    if (buf) {
      bin = this.bins.get(buf.byteLength)!;
      this.counts.hits++;
    } else {
      if (this.giveBack) this.makeRoom(cls);
      buf = largeBuffer(cls);
      this.counts.held += cls;
      this.counts.misses++;
    }
    bin.taken.set(buf, this.epochCount);
    bin.peak = Math.max(bin.peak, bin.taken.size);
    this.counts.inUse += buf.byteLength;
    this.counts.peakInUse = Math.max(this.counts.peakInUse, this.counts.inUse);
    this.counts.taken++;
    return buf;
  }

  /**
   * A free buffer of a larger class (at most BORROW_RATIO times `cls`, the smallest such), or
   * undefined: the classes' peaks come at different times in a step (the forward's activations,
   * the backward's gradients and op scratch, scratch.ts), so a request whose class has nothing
   * free takes a free buffer of another class rather than mapping new memory. The buffer stays
   * in its own class (released and trimmed there).
   */
  private borrow(cls: number): ArrayBuffer | undefined {
    if (!this.borrowing) return undefined;
    let best: Bin | null = null;
    let bestCls = Infinity;
    for (const [c, b] of this.bins) {
      if (c > cls && c <= cls * BORROW_RATIO && c < bestCls && b.free.length > 0) {
        best = b;
        bestCls = c;
      }
    }
    return best?.free.pop();
  }

  /**
   * Before mapping a new buffer of `bytes`: unmaps free huge-page buffers of other size
   * classes, about as many bytes, so that the memory the arena holds stays near what is in use
   * at once, not the sum of every class's own peak (a step's classes peak at different times:
   * the forward's activations early, the backward's gradients late). Page faults on re-use
   * are the price (huge pages: one per 2 MiB, plus compaction): off by default.
   */
  private makeRoom(bytes: number): void {
    // bytes mapped and not yet matched by an unmapping: a buffer is unmapped only once they
    // reach its size (a run of small requests does not cost a huge-page buffer each)
    this.debt += bytes;
    for (const [c, b] of this.bins) {
      if (c < LARGE_BYTES) continue;
      while (this.debt >= c && b.free.length > 0) {
        freeLargeBuffer(b.free.pop()!);
        this.counts.held -= c;
        this.counts.givenBack++;
        this.debt -= c;
      }
    }
  }
  private debt = 0;

  /**
   * Starts a new epoch and returns it. `release(buf, epoch)` only frees buffers taken in or
   * after that epoch: autograd marks the start of backward, so that only buffers born during
   * backward (gradients), never a forward activation, can be released early.
   */
  epoch(): number {
    return ++this.epochCount;
  }

  /**
   * Returns `buf` to the free list now, before the reset: the caller guarantees that no tensor
   * over it is used any more. Does nothing (false) for a buffer this arena did not hand out in
   * this step, or one taken before `since`.
   */
  release(buf: ArrayBuffer, since = 0): boolean {
    const bin = this.bins.get(buf.byteLength);
    const e = bin?.taken.get(buf);
    if (!bin || e === undefined || e < since) return false;
    bin.taken.delete(buf);
    this.counts.inUse -= buf.byteLength;
    this.holds.delete(buf);
    this.dropped.delete(buf);
    bin.free.push(this.poison ? poisoned(buf) : buf);
    this.counts.released++;
    return true;
  }

  /** Whether buf was handed out by this arena in this step and not given back. */
  owns(buf: ArrayBufferLike): boolean {
    return this.bins.get(buf.byteLength)?.taken.has(buf as ArrayBuffer) ?? false;
  }

  /** Whether a backward node (or a pending gradient) holds buf now (`hold` not yet matched). */
  isHeld(buf: ArrayBufferLike): boolean {
    return (this.holds.get(buf as ArrayBuffer) ?? 0) > 0;
  }

  /**
   * One more holder of buf: something that will read it later (a backward closure that saved
   * it). Returns false, doing nothing, for a buffer this arena does not own this step; every
   * true must be matched by one `unhold`.
   */
  hold(buf: ArrayBufferLike): boolean {
    if (!this.owns(buf)) return false;
    const b = buf as ArrayBuffer;
    this.holds.set(b, (this.holds.get(b) ?? 0) + 1);
    return true;
  }

  /** A holder of buf is done with it; a dropped buffer whose last holder this was is released. */
  unhold(buf: ArrayBufferLike): void {
    const b = buf as ArrayBuffer;
    const n = (this.holds.get(b) ?? 0) - 1;
    if (n > 0) {
      this.holds.set(b, n);
      return;
    }
    this.holds.delete(b);
    if (this.dropped.has(b)) this.release(b);
  }

  /**
   * The code that made buf will not read it again (nor any view of it): it goes back to the
   * free list as soon as no holder remains (now, if none). The caller guarantees that whatever
   * else reads the buffer later holds it (`hold`); in a poisoning arena a buffer read after its
   * release reads NaN. Does nothing for a buffer this arena does not own this step.
   */
  drop(buf: ArrayBufferLike): void {
    if (!this.owns(buf)) return;
    const b = buf as ArrayBuffer;
    if (this.holds.has(b)) this.dropped.add(b);
    else this.release(b);
  }

  /**
   * Ends a step: every buffer handed out becomes free again. No tensor allocated while this
   * arena was active may be used afterwards.
   */
  reset(): void {
    this.gen++;
    for (const [cls, bin] of this.bins) {
      for (const b of bin.taken.keys()) {
        if (this.poison) new Float32Array(b).fill(NaN);
        bin.free.push(b);
      }
      bin.taken.clear();
      // keep what either of the last two steps needed at once; drop the rest to the GC
      const keep = Math.max(bin.peak, bin.prevPeak);
      while (bin.free.length > keep) {
        freeLargeBuffer(bin.free.pop()!);
        this.counts.held -= cls;
      }
      bin.prevPeak = bin.peak;
      bin.peak = 0;
      if (bin.free.length === 0) this.bins.delete(cls);
    }
    this.holds.clear();
    this.dropped.clear();
    this.counts.taken = 0;
    this.counts.inUse = 0;
    this.counts.peakInUse = 0;
    this.epochCount = 0;
    this.debt = 0;
  }

  /** Drops every free buffer (handed-out ones stay valid until the next reset); huge-page
   * buffers are unmapped at once (memory.ts). */
  trim(): void {
    for (const [cls, bin] of this.bins) {
      this.counts.held -= bin.free.length * cls;
      for (const b of bin.free) freeLargeBuffer(b);
      bin.free.length = 0;
      bin.prevPeak = 0;
    }
  }

  stats(): ArenaStats {
    const c = this.counts;
    return { heldBytes: c.held, taken: c.taken, hits: c.hits, misses: c.misses, released: c.released, inUseBytes: c.inUse, peakInUseBytes: c.peakInUse, givenBack: c.givenBack };
  }
}
