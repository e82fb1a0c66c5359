/**
 * Read-only file mappings for checkpoint weights (mapped, not copied): the addon's `mapFile`
 * (native/src/mapped_file_napi.c) maps a whole file from offset 0, a page boundary, and hands
 * it to JS as an external ArrayBuffer, so the tensor at file offset o is the typed-array view at
 * byteOffset o, with the address alignment of o. Opening costs O(1) in the file size; the
 * resident set grows only with the pages a kernel touches (they are page cache, shared and
 * clean: the OS can drop them again, which is how a checkpoint larger than RAM still runs).
 * The mapping goes when V8 collects the buffer (every view over it gone).
 *
 * Without the addon (pure TypeScript backend), or with DSV3_MMAP=0, `mapReadOnly` returns null
 * and callers read copies instead: same values, more memory.
 *
 * Huge pages (issue 12): files of 2 MiB or more are mapped at a 2 MiB-aligned address and advised
 * MADV_HUGEPAGE, and read-ahead on them reads the pages by faults rather than MADV_WILLNEED, so
 * that a kernel with large page-cache folios (Linux >= 6.16 on ext4, xfs, ...) maps the weights
 * with 2 MiB entries: the weight stream then runs at the huge-page rate instead of 0.75-0.85x of
 * it (TLB misses). DSV3_MMAP_HUGE=0 maps plainly. Where the kernel cannot, nothing changes (see
 * native/src/mapped_file_napi.c). `filePmdMappedBytes` says what the kernel did.
 */
import * as fs from 'node:fs';
import { nativeAddon } from '../engine/native.js';

/** madvise advice (the addon's codes). */
export const ADVICE = { normal: 0, random: 1, sequential: 2, willneed: 3, dontneed: 4, background: 5 } as const;
export type Advice = keyof typeof ADVICE;

interface MapAddon {
  mapFile(fd: number, bytes: number, advice: number, huge?: number): ArrayBuffer;
  mappingInfo?(buf: ArrayBuffer): { aligned: boolean; huge: boolean };
  adviseMapped(buf: ArrayBuffer, offset: number, length: number, advice: number): void;
  isMapped(buf: ArrayBuffer): boolean;
}

function mapAddon(): MapAddon | null {
  if (process.env.DSV3_MMAP === '0') return null;
  const a = nativeAddon();
  return a && typeof a.mapFile === 'function' ? (a as unknown as MapAddon) : null;
}

/** Whether checkpoints can be mapped in this process (addon loaded, DSV3_MMAP not 0). */
export function mappingAvailable(): boolean {
  return mapAddon() !== null;
}

/** Maps the first `bytes` bytes of the open file `fd` read-only, or null when mapping is unavailable. */
export function mapReadOnly(fd: number, bytes: number, advice: Advice = 'normal'): ArrayBuffer | null {
  const a = mapAddon();
  if (!a || bytes < 1) return null;
  return a.mapFile(fd, bytes, ADVICE[advice], hugeMappingWanted() ? 1 : 0);
}

/** Whether mapReadOnly asks for huge-page mappings (DSV3_MMAP_HUGE is not 0). */
export function hugeMappingWanted(): boolean {
  return process.env.DSV3_MMAP_HUGE !== '0';
}

/**
 * How a mapped buffer is mapped: `aligned` (starts on a 2 MiB boundary) and `huge` (advised
 * MADV_HUGEPAGE); null for a buffer that is not a live mapping or an addon without the call.
 */
export function mappingInfo(buf: ArrayBufferLike): { aligned: boolean; huge: boolean } | null {
  const a = nativeAddon() as unknown as MapAddon | null;
  if (!a || typeof a.mappingInfo !== 'function' || !(buf instanceof ArrayBuffer) || !a.isMapped(buf)) return null;
  return a.mappingInfo(buf);
}

/**
 * Bytes of file pages this process maps with PMD (2 MiB) entries: FilePmdMapped of
 * /proc/self/smaps_rollup, null where that is not available (not Linux, no THP).
 */
export function filePmdMappedBytes(): number | null {
  try {
    const m = /^FilePmdMapped:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** madvise for the pages covering [offset, offset + length) of a mapped buffer (no-op otherwise). */
export function adviseRange(buf: ArrayBuffer, offset: number, length: number, advice: Advice): void {
  const a = mapAddon();
  if (a && a.isMapped(buf)) a.adviseMapped(buf, offset, length, ADVICE[advice]);
}

/** Whether `buf` is a live file mapping made by mapReadOnly (false for any copied buffer). */
export function isMappedBuffer(buf: ArrayBufferLike): boolean {
  const a = nativeAddon();
  return !!a && typeof a.isMapped === 'function' && buf instanceof ArrayBuffer && a.isMapped(buf);
}

/**
 * Asks the OS to drop `file`'s clean pages from the page cache (posix_fadvise DONTNEED), so that
 * the next open reads it from disk: cold-start measurements. False when the addon is missing.
 */
export function dropPageCache(file: string): boolean {
  const a = nativeAddon();
  if (!a || typeof a.dropFileCache !== 'function') return false;
  const fd = fs.openSync(file, 'r');
  try {
    return a.dropFileCache(fd) as boolean;
  } finally {
    fs.closeSync(fd);
  }
}
