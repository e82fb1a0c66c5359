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
 */
import { kernels } from './backend.js';
import type { Tensor } from './tensor.js';

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
