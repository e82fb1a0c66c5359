// Builds the native compute core with node-gyp at install time. If the build fails the
// package still works on the pure-TypeScript reference backend (slowly): we say so once,
// loudly, and exit 0 so `npm install` succeeds. Set DSV3_REQUIRE_NATIVE=1 to make it fatal.
import { spawnSync } from 'node:child_process';
const r = spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status !== 0) {
  const msg = `dsv3: building the native compute core failed (node-gyp exit ${r.status ?? r.error}). ` +
    'dsv3 will run on the pure-TypeScript reference backend, which is 20-100x slower. ' +
    'Install a C compiler (g++/gcc) and Python 3, then run `npm rebuild dsv3`.';
  if (process.env.DSV3_REQUIRE_NATIVE === '1') { console.error(msg); process.exit(1); }
  console.warn('\n' + msg + '\n');
}
