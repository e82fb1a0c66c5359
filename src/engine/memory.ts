/**
 * Large buffers on transparent huge pages.
 *
 * A 4 KiB page holds 1024 floats: an activation or weight of a few MB spans a thousand pages,
 * and the strided reads of the kernels (GEMM packing, attention K/V rows, C tiles) touch more
 * pages than the TLB holds; in a VM each miss is a two-level page walk. Linux backs anonymous
 * memory with 2 MiB pages where the program asks (madvise MADV_HUGEPAGE; the usual
 * transparent_hugepage setting is "madvise"), which V8's ArrayBuffer allocator never does.
 *
 * `largeBuffer(bytes)` returns a zero-filled ArrayBuffer; from LARGE_BYTES up it comes from
 * the addon's `allocLarge` (native/src/memory.c: its own 2 MiB-aligned mapping, the whole
 * 2 MiB chunks marked for huge pages), otherwise and whenever the addon is missing it is a
 * plain `new ArrayBuffer`. Node runs the finalizer of such a buffer only on an event-loop
 * turn, never inside a synchronous training loop, so an owner that drops buffers while running
 * gives them back with `freeLargeBuffer` (unmapped at once, the ArrayBuffer detached). Used by
 * the step arena (which frees what it trims), the parameter store and `dsv3 bench gemm`; the
 * plain `alloc`/`allocUninit` outside an arena keep V8's buffers, whose churn V8 frees itself.
 * DSV3_HUGEPAGES=0 turns it off (plain ArrayBuffers everywhere), for comparisons.
 *
 * Measured (BENCHMARKS.md): fp32 GEMMs 1024^3 and 256x512x2048 2.7-4.4% faster with their
 * operands on huge pages, paired runs on the 2-vCPU Zen 3 VM.
 */
import { nativeAddon } from './native.js';

/** Buffers of at least this many bytes (2 MiB, one huge page) come from the native allocator. */
export const LARGE_BYTES = 2 * 1024 * 1024;

interface LargeAllocator {
  allocLarge(bytes: number): ArrayBuffer;
  freeLarge(buf: ArrayBuffer): void;
}
let allocator: LargeAllocator | null | undefined;
/** Buffers made by allocLarge and not yet freed (freeLargeBuffer ignores any other buffer). */
const owned = new WeakSet<ArrayBuffer>();

function nativeAllocator(): LargeAllocator | null {
  if (allocator !== undefined) return allocator;
  allocator = null;
  if (process.env.DSV3_HUGEPAGES !== '0') {
    const a = nativeAddon();
    if (a && typeof a.allocLarge === 'function' && typeof a.freeLarge === 'function') allocator = a as unknown as LargeAllocator;
  }
  return allocator;
}

/** A zero-filled ArrayBuffer of `bytes` bytes; on huge pages from LARGE_BYTES up (see above). */
export function largeBuffer(bytes: number): ArrayBuffer {
  const native = bytes >= LARGE_BYTES ? nativeAllocator() : null;
  if (!native) return new ArrayBuffer(bytes);
  const buf = native.allocLarge(bytes);
  owned.add(buf);
  return buf;
}

/**
 * Gives a buffer from `largeBuffer` back now: its memory is unmapped and the ArrayBuffer
 * detached (every view over it then has length 0). The caller guarantees that nothing uses it
 * any more. A plain ArrayBuffer is left to the garbage collector (nothing happens).
 */
export function freeLargeBuffer(buf: ArrayBuffer): void {
  if (!owned.has(buf)) return;
  owned.delete(buf);
  nativeAllocator()!.freeLarge(buf);
}

/** A zero-filled Float32Array of n elements, its buffer from `largeBuffer`. */
export function largeF32(n: number): Float32Array {
  return new Float32Array(largeBuffer(n * 4));
}

/** Whether buffers of LARGE_BYTES and up come from the huge-page allocator in this process. */
export function hugePagesActive(): boolean {
  return nativeAllocator() !== null;
}
