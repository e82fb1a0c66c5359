/**
 * The addon's thread pool is process-wide and outlives any one thread. When only a
 * worker_threads Worker loads the addon, Node unloads the library when that Worker exits; the
 * pool's sleeping threads must not be left in unmapped code (this crashed the process with
 * SIGSEGV in 6 of 6 runs before native/src/addon.c pinned the library with RTLD_NODELETE).
 * `dsv3 serve` runs its model in such a Worker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { nativeAddonPath } from '../src/engine/native.js';

const SCRIPT = `
const { Worker } = require('node:worker_threads');
const code = \`
const a = require(process.env.DSV3_TEST_ADDON);
a.setThreads(2);
const n = 192, A = new Float32Array(n * n).fill(1), B = new Float32Array(n * n).fill(1), C = new Float32Array(n * n);
for (let i = 0; i < 10; i++) a.gemmF32(false, false, n, n, n, 1, A, n, B, n, 0, C, n);
if (C[0] !== n) throw new Error('wrong product ' + C[0]);
\`;
const w = new Worker(code, { eval: true });
w.on('error', (e) => { console.error(e.message); process.exit(3); });
w.on('exit', () => setTimeout(() => console.log('survived'), 150));
`;

test('a Worker that alone loaded the addon can exit while the pool threads live on', (t) => {
  const addon = nativeAddonPath();
  if (!existsSync(addon)) {
    t.skip(`no native addon at ${addon}`);
    return;
  }
  for (let run = 0; run < 3; run++) {
    const r = spawnSync(process.execPath, ['-e', SCRIPT], {
      encoding: 'utf8',
      env: { ...process.env, DSV3_TEST_ADDON: addon },
      timeout: 60_000,
    });
    assert.equal(r.signal, null, `run ${run}: killed by ${r.signal} (stderr: ${r.stderr})`);
    assert.equal(r.status, 0, `run ${run}: exit ${r.status} (stderr: ${r.stderr})`);
    assert.equal(r.stdout.trim(), 'survived');
  }
});
