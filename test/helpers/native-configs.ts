/**
 * The native addon for kernel tests that compare it with the reference: the addon (or a failing
 * test when CI / DSV3_REQUIRE_NATIVE require it and it cannot load), the test options that skip
 * otherwise, and `eachConfig`, which runs a check under every ISA this CPU supports with 1 and 2
 * threads and restores both afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeAddon, nativeLoadError, type NativeAddon } from '../../src/engine/native.js';

export interface NativeForTests {
  /** The addon (only valid when the tests are not skipped). */
  A: NativeAddon;
  /** Options for `test(name, opts, fn)`: skip with the load error unless the addon is required. */
  opts: { skip: string | false };
  /** Runs fn under every ISA this CPU supports and 1 and 2 threads, then restores both. */
  eachConfig(fn: (label: string) => void): void;
}

export function nativeForTests(): NativeForTests {
  const addon = nativeAddon();
  const required = Boolean(process.env.CI) || process.env.DSV3_REQUIRE_NATIVE === '1';
  const skip = addon ? false : `native addon not available (${nativeLoadError() ?? 'unknown'}); build with npx node-gyp rebuild`;
  if (!addon && required) test('native addon loads (required: CI is set)', () => assert.fail(String(skip)));
  const A = addon as NativeAddon;
  return {
    A,
    opts: { skip: required ? false : skip },
    eachConfig(fn) {
      const { isa, threads } = A.info();
      try {
        for (const i of ['scalar', 'avx2', 'avx512'] as const) {
          if (!A.setIsa(i)) continue;
          for (const th of [1, 2]) {
            A.setThreads(th);
            fn(`${i}/${th}t`);
          }
        }
      } finally {
        A.setIsa(isa as 'scalar' | 'avx2' | 'avx512');
        A.setThreads(threads);
      }
    },
  };
}
