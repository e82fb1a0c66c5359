/**
 * The bfloat16 copies of float32 master weights that BF16 mixed-precision training multiplies
 * with (ops/bf16-linear.ts, the grouped experts and the output head under `bf16`): each
 * weight is rounded to bf16 (round to nearest even, Kernels.bf16Round) once per optimizer step
 * and reused by every GEMM that reads it until then, forward and backward, instead of being
 * rounded again in every GEMM's packing.
 *
 * Validity is an epoch: `invalidateBf16Weights()` starts a new one, and a copy made in an
 * older epoch is refreshed (in place, same buffer) on its next use. The optimizer calls it
 * after every update (train/optimizer.ts, AdamW.step), which writes the new bits of the weights
 * that have a copy in the same pass and marks those current; anything else that writes master
 * weights in place must call it too. Copies are plain allocations, never from the step arena
 * (they outlive a step), and are dropped with their weight (WeakMap).
 *
 * Where the copies live (`acquireBf16Weight` / `releaseBf16Weight`, what the BF16 GEMMs of
 * training call): by default ('use'), inside a step arena, a weight's bf16 copy is made for each
 * use from the master weight into an arena buffer and given back right after its GEMMs: in the
 * forward, and again in the backward (the same bits: the weight does not change within a step).
 * So the copies of the layers not being computed are not held at the step's memory peak (in the
 * backward; ~19 MB of bench-small's ~360 MB) for two roundings of every weight per step (~1-2% of
 * the GEMMs' time), like the FP8 path's weight codes (ops/fp8-training-linear.ts). Weights
 * smaller than the arena's minimum request, and every weight outside a step arena, use the
 * persistent per-step copy above. DSV3_BF16_WEIGHTS=step holds every copy all step (the old
 * behaviour, for comparisons).
 */
import { activeArena, arenaF32 } from './active-arena.js';
import { kernels } from './backend.js';
import type { Tensor } from './tensor.js';

let perUse = process.env.DSV3_BF16_WEIGHTS !== 'step';

/** 'use': bf16 weight copies made per use in the step arena (default); 'step': one copy per weight held all step. Returns the previous mode. */
export function setBf16WeightCopies(mode: 'use' | 'step'): 'use' | 'step' {
  const was = perUse ? 'use' : 'step';
  perUse = mode === 'use';
  return was;
}

/**
 * The bf16 bits of the float32 weight w for one use (row-major, contiguous in w's logical
 * shape; read them, never write them): a fresh rounding into a step-arena buffer (per-use mode,
 * inside a step arena, w large enough) or the persistent per-step copy (bf16WeightBits). Give
 * them back with releaseBf16Weight once the GEMMs that read them have run.
 */
export function acquireBf16Weight(w: Tensor): Uint16Array {
  if (!perUse || w.dtype !== 'f32' || !w.isContiguous()) return bf16WeightBits(w);
  const f = arenaF32(Math.ceil(w.size / 2), false);
  if (!f) return bf16WeightBits(w);
  const bits = new Uint16Array(f.buffer, f.byteOffset, w.size);
  kernels().bf16Round(w.f32(), bits, w.size);
  return bits;
}

/** Gives back bits from acquireBf16Weight (a no-op for a persistent copy). */
export function releaseBf16Weight(...xs: (Uint16Array | Float32Array | null | undefined)[]): void {
  const arena = activeArena();
  if (!arena) return;
  for (const x of xs) if (x instanceof Uint16Array) arena.release(x.buffer as ArrayBuffer);
}

let epoch = 0;
const copies = new WeakMap<Tensor, { epoch: number; bits: Uint16Array }>();
/** Bytes of the copies made so far (each once: refreshes reuse the buffer), for the memory probe. */
let madeBytes = 0;

/** Bytes of all bf16 weight copies made in this process (scripts/rss-probe.mjs: what they add to the RSS). */
export function bf16WeightCopyBytes(): number {
  return madeBytes;
}

/** Marks every bf16 weight copy stale (the master weights changed). */
export function invalidateBf16Weights(): void {
  epoch++;
}

/**
 * The optimizer's side of the cache: the buffer of w's bf16 copy when w has one (a BF16 GEMM
 * read w since it was made), for the update to write the new weight's bits into in the same
 * pass (Kernels.adamw `wb`); null otherwise. After writing every such buffer, the optimizer
 * calls `invalidateBf16Weights()` and then `markBf16WeightsCurrent` with those weights.
 */
export function bf16WeightCopyFor(w: Tensor): Uint16Array | null {
  const c = copies.get(w);
  return c && c.bits.length === w.size && w.isContiguous() ? c.bits : null;
}

/** Marks the copies of `ws` as made in the current epoch: their buffers hold the bf16 bits of the weights as they are now. */
export function markBf16WeightsCurrent(ws: readonly Tensor[]): void {
  for (const w of ws) {
    const c = copies.get(w);
    if (c) c.epoch = epoch;
  }
}

/**
 * The bf16 bits of a float32 weight w, row-major and contiguous in w's logical shape, made at
 * most once per epoch. The array is owned by the cache: read it, never write it.
 */
export function bf16WeightBits(w: Tensor): Uint16Array {
  if (w.dtype !== 'f32') throw new TypeError(`bf16WeightBits: the weight must be float32, got ${w.dtype}`);
  let c = copies.get(w);
  if (c && c.epoch === epoch && c.bits.length === w.size) return c.bits;
  const src = w.isContiguous() ? w.f32() : w.detach().contiguous().f32();
  if (!c || c.bits.length !== w.size) {
    c = { epoch, bits: new Uint16Array(w.size) };
    madeBytes += c.bits.byteLength;
    copies.set(w, c);
  }
  c.epoch = epoch;
  kernels().bf16Round(src, c.bits, w.size);
  return c.bits;
}
