/**
 * The active step arena: which BufferArena (arena.ts) `alloc` / `allocUninit` (ops/util.ts) draw
 * from now (`withArena`, `activeArena`), the arena a training loop uses (`stepArena`), and what
 * code running under it does with it: declaring activations dead (`dropActivations`), taking
 * float32 buffers (`arenaF32`) and carving weight gradients from slabs (`arenaSlabF32`).
 */
import { BufferArena, type OverBuffer } from './arena.js';
import { LARGE_BYTES } from './memory.js';

let active: BufferArena | null = null;

/** The arena that `alloc`/`allocUninit` draw from now, if any. */
export function activeArena(): BufferArena | null {
  return active;
}

/**
 * Declares tensors (or typed arrays) dead for the code that made them: their buffers return to
 * the active arena as soon as no recorded backward closure holds them (arena `drop`). For
 * activations a forward pass will not read again: a model drops its intermediate tensors
 * once the ops that read them have run, and each op's backward node holds exactly the buffers
 * its closure reads (tensor.ts `attach`, `saves`), so a float32 input that an op kept only as
 * a bf16 / FP8 copy is reused within the step. No-op outside an arena.
 */
export function dropActivations(...ts: readonly (OverBuffer | null | undefined)[]): void {
  if (!active) return;
  for (const t of ts) if (t) active.drop(bufferOf(t));
}

/** The buffer under a typed array or a tensor. */
export function bufferOf(t: OverBuffer): ArrayBufferLike {
  return ('buffer' in t ? t : t.data).buffer;
}

/**
 * n float32s from the active arena (zero-filled when `zero`), or null when no arena is active
 * or n is below its minimum (the caller then allocates as usual).
 */
export function arenaF32(n: number, zero: boolean): Float32Array | null {
  if (!active || n < active.minElems) return null;
  const a = new Float32Array(active.take(n * 4), 0, n);
  return zero ? a.fill(0) : a;
}

/** Bytes of one weight-gradient slab (arenaSlabF32): one huge page. */
const GRAD_SLAB_BYTES = LARGE_BYTES;
const gradSlabs = new WeakMap<BufferArena, { buf: ArrayBuffer; off: number; generation: number }>();

/**
 * n float32s (contents unspecified) carved from a slab of the active arena, for buffers that
 * live until the arena's reset and are never released early: the weight gradients that
 * autograd's accumulateWeightGrad creates late in backward. Carving them from 2 MiB slabs
 * taken then (when the forward's activations of that class are free again) instead of taking
 * one small buffer each keeps them out of a size class of their own, whose buffers would sit
 * idle through the forward (bench-small: 222 expert gradients of 128 KiB, 29 MB). Null when no
 * arena is active or n is below its minimum or above a quarter slab (the caller allocates as
 * usual). Offsets are 64-byte aligned. DSV3_GRAD_SLAB=0 turns it off (for comparisons).
 */
export function arenaSlabF32(n: number): Float32Array | null {
  const bytes = Math.ceil((n * 4) / 64) * 64;
  if (!active || n < active.minElems || bytes > GRAD_SLAB_BYTES / 4 || process.env.DSV3_GRAD_SLAB === '0') return null;
  let s = gradSlabs.get(active);
  // (after a reset the old slab may be taken again by anyone: only this step's slab is carved)
  if (!s || s.generation !== active.generation || !active.owns(s.buf) || s.off + bytes > s.buf.byteLength) {
    s = { buf: active.take(GRAD_SLAB_BYTES), off: 0, generation: active.generation };
    gradSlabs.set(active, s);
  }
  const a = new Float32Array(s.buf, s.off, n);
  s.off += bytes;
  return a;
}

/**
 * Runs fn with `arena` active: large buffers allocated inside come from it. Does not reset
 * the arena (the caller decides when the step's tensors are dead). Nests: the previous arena
 * (or none) is restored afterwards.
 */
export function withArena<T>(arena: BufferArena | null, fn: () => T): T {
  const prev = active;
  active = arena;
  try {
    return fn();
  } finally {
    active = prev;
  }
}

/**
 * The arena a training loop uses for its steps: a new BufferArena; null (plain allocation)
 * when DSV3_ARENA=0, for comparisons; with DSV3_ARENA=poison, one that pools every buffer of
 * 64+ elements and fills released ones with NaN, for hunting tensors used after their step.
 */
export function stepArena(): BufferArena | null {
  const mode = process.env.DSV3_ARENA;
  if (mode === '0') return null;
  return mode === 'poison' ? new BufferArena({ poison: true, minElems: 64 }) : new BufferArena();
}
