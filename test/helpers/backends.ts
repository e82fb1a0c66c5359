/**
 * Native-vs-reference helpers. If the addon cannot load, a test needing it fails when CI or
 * DSV3_REQUIRE_NATIVE is set and is skipped (with the load error) otherwise.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { withBackend } from '../../src/engine/backend.js';
import { loadNativeKernels, nativeLoadError } from '../../src/engine/native.js';

/** True if the native kernels are available; otherwise fails (CI) or skips the test. */
export function requireNative(t: TestContext): boolean {
  if (loadNativeKernels()) return true;
  const msg = `native addon not available (${nativeLoadError() ?? 'unknown error'}); build it with \`npx node-gyp rebuild\``;
  if (process.env.CI || process.env.DSV3_REQUIRE_NATIVE) assert.fail(msg);
  t.skip(msg);
  return false;
}

/** Runs fn once per backend. */
export function onBoth<T>(fn: () => T): { native: T; reference: T } {
  return { native: withBackend('native', fn), reference: withBackend('reference', fn) };
}
