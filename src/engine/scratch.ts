/**
 * Scratch buffers of one op call, drawn from the step arena (issue 13: peak RSS).
 *
 * Several ops need large temporary buffers that hold values only between two statements of
 * one forward or one backward: the grouped experts' gathered rows and G/U/H/Y (ops/grouped.ts,
 * ops/fp8-training-grouped.ts), the attention's assembled keys (ops/mla-attention.ts), a bf16
 * rounding of a backward's dY or of the head's P − Y (ops/bf16-linear.ts). They used to be
 * module-level buffers, grown on demand and kept for the life of the process: every op kept
 * its own set, all of them resident at once although no two calls run together. At bench-small
 * 8x256 that was 55 MB in fp32, 96 MB in bf16 and 84 MB in fp8 (each precision has its own
 * sets), outside the arena and so never reused by anything else.
 *
 * Inside `scratchScope(fn)` with a step arena active, `scratchF32(name, n)` /
 * `scratchU16(name, n)` take buffers from the arena, the same buffer for the same name within
 * the scope, and the outermost scope gives them all back when fn returns: between calls those
 * pages serve the step's activations and gradients. Outside a scope or an arena (inference,
 * tests without an arena) and for requests below the arena's minimum, the buffers are the
 * module-level ones as before (one per name, grown on demand), so nothing churns.
 *
 * The contract is the callers' (as before): a scratch buffer is never handed out, never saved
 * for a backward (`attach` saves/owns) and never read after its scope. A scope's buffers are
 * released to the arena at its end: in a poisoning arena (DSV3_ARENA=poison) they are
 * NaN-filled and their views detached, so a later read fails; and releasing one that a
 * backward node holds throws.
 */
import { type BufferArena } from './arena.js';
import { activeArena } from './active-arena.js';

const persistent = new Map<string, ArrayBuffer>();
/** The buffers of the open scope (outermost and nested share them), by name. */
let scoped: Map<string, ArrayBuffer> | null = null;
let scopeArena: BufferArena | null = null;
/** Buffers of the open scope replaced by a larger one under the same name (released at its end). */
let outgrown: ArrayBuffer[] = [];
let depth = 0;

/**
 * Runs fn; scratch taken from the step arena inside it (also by nested scopes) goes back to the
 * arena when the outermost scope ends. Without an active arena it only runs fn.
 */
export function scratchScope<T>(fn: () => T): T {
  if (depth === 0) {
    scopeArena = activeArena();
    scoped = scopeArena ? new Map() : null;
    outgrown = [];
  }
  depth++;
  try {
    return fn();
  } finally {
    depth--;
    if (depth === 0) {
      const arena = scopeArena;
      const bufs = scoped ? [...scoped.values(), ...outgrown] : [];
      scoped = null;
      scopeArena = null;
      outgrown = [];
      for (const b of bufs) {
        if (arena!.isHeld(b)) throw new Error('scratchScope: a scratch buffer is held by a backward node (scratch must never be saved)');
        arena!.release(b);
      }
    }
  }
}

function bytesFor(name: string, bytes: number): ArrayBuffer {
  const arena = scoped && scopeArena === activeArena() ? scopeArena : null;
  if (arena && bytes >= arena.minElems * 4) {
    const b = scoped!.get(name);
    if (b && b.byteLength >= bytes) return b;
    if (b) outgrown.push(b);
    const nb = arena.take(bytes);
    scoped!.set(name, nb);
    return nb;
  }
  let b = persistent.get(name);
  if (!b || b.byteLength < bytes) {
    b = new ArrayBuffer(bytes);
    persistent.set(name, b);
  }
  return b;
}

/**
 * Gives the named scratch buffers of the open scope back to the arena now, before the scope
 * ends (no view of them may be used again; a later request under the name takes a new one).
 * Nothing happens for a name that holds no arena buffer of this scope (module buffers stay).
 */
export function scratchFree(...names: string[]): void {
  if (!scoped) return;
  for (const name of names) {
    const b = scoped.get(name);
    if (!b) continue;
    scoped.delete(name);
    if (scopeArena!.isHeld(b)) throw new Error(`scratchFree: scratch '${name}' is held by a backward node (scratch must never be saved)`);
    scopeArena!.release(b);
  }
}

/** n float32s of scratch under `name` (contents unspecified), valid until the scope ends. */
export function scratchF32(name: string, n: number): Float32Array {
  return new Float32Array(bytesFor(name, n * 4), 0, n);
}

/** n bf16 slots (Uint16) of scratch under `name` (contents unspecified), valid until the scope ends. */
export function scratchU16(name: string, n: number): Uint16Array {
  return new Uint16Array(bytesFor(name, Math.ceil(n / 2) * 4), 0, n);
}
