/**
 * The native pool's idle spin while decoding (issue 12): see useDecodePoolSpin.
 */
import { nativeAddon } from '../engine/native.js';

/** PAUSE iterations an idle pool worker spins before sleeping while decoding (about 0.1 ms). */
export const DECODE_POOL_SPIN = 2000;
let spinSet = false;

/**
 * Shortens the native pool's idle spin (200000 iterations, ~9 ms, tuned for training's long
 * back-to-back kernels) to DECODE_POOL_SPIN, once per process, unless DSV3_POOL_SPIN is set: a
 * decode step leaves the pool idle for many short gaps (routing, norms, RoPE in JS), and a
 * worker spinning through them takes CPU time from the main thread or other processes (measured
 * in BENCHMARKS.md, issue 12: -20% CPU time per token, faster wall time under load). Only speed
 * changes, never a result. Process-wide: later training in the same process keeps it.
 */
export function useDecodePoolSpin(): void {
  if (spinSet) return;
  spinSet = true;
  if (process.env.DSV3_POOL_SPIN) return;
  const a = nativeAddon();
  if (a && typeof a.setPoolSpin === 'function') a.setPoolSpin(DECODE_POOL_SPIN);
}
