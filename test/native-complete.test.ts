/**
 * The native addon must implement every kernel of the interface: a method that silently falls
 * back to the reference (a stale build, a family missing from binding.gyp) is a failure here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNativeKernels, missingNativeKernels, nativeLoadError } from '../src/engine/native.js';

const required = process.env.CI !== undefined || process.env.DSV3_REQUIRE_NATIVE === '1';

test('the native addon implements every kernel of the interface', (t) => {
  const k = loadNativeKernels();
  if (!k) {
    if (required) assert.fail(`native addon did not load: ${nativeLoadError()}`);
    t.skip(`native addon not available (${nativeLoadError()})`);
    return;
  }
  assert.deepEqual(missingNativeKernels(), []);
});
