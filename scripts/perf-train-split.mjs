// Development tool (not part of the package): where a training step's CPU goes, by on-CPU samples
// (Linux `perf record -e cpu-clock`, so time a loaded machine spends on other processes is not
// counted), split into the main thread's kernels (leaf frame in dsv3.node), the main thread's
// rest (JS, V8 builtins and IC stubs, libc, the OS) and V8's worker threads (concurrent JIT and
// GC), which process.cpuUsage — and so profile-kernels-cpu's `other` — lumps in with the JS.
// Each precision runs in its own process (configs/bench-small.json 8 x 256, bench train's step,
// scripts/lib/bench-small-trainer.mjs): 2 warm-up steps unrecorded, then STEPS recorded.
//   DSV3_THREADS=1 [DSV3_ISA=avx2] node scripts/perf-train-split.mjs ROOT STEPS fp32,bf16 [TOP]
// Prints, in ms per step: the three parts per precision, then the TOP symbols (main thread by
// leaf symbol, JIT'd JS by function; workers as one line each for JIT and the rest) side by side,
// sorted by the largest difference against the first precision. Needs `perf` (linux-perf) and
// permission to profile the child (perf_event_paranoid <= 2 for one's own process).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HZ = 2000;
if (process.argv[2] === '--child') {
  const [root, prec, steps] = process.argv.slice(3);
  const { benchSmallTrainer, loadBuild } = await import('./lib/bench-small-trainer.mjs');
  const t = benchSmallTrainer(await loadBuild(root), prec);
  t.step(); t.step();
  process.stdout.write('ready\n');
  await new Promise((r) => process.stdin.once('data', r));
  for (let i = 0; i < Number(steps); i++) t.step();
  process.exit(0);
}
const [root, stepsArg, precArg, topArg] = process.argv.slice(2);
const steps = Number(stepsArg);
if (!root || !(steps >= 1)) { console.error('usage: DSV3_THREADS=1 node scripts/perf-train-split.mjs ROOT STEPS fp32,bf16 [TOP]'); process.exit(2); }
const precs = (precArg ?? 'fp32,bf16').split(',');
const top = Number(topArg ?? 30);
const dir = mkdtempSync(join(tmpdir(), 'perf-train-'));

/** ms per step by [part, symbol] for one precision */
async function record(prec) {
  const file = join(dir, `${prec}.data`);
  const child = spawn(process.execPath, ['--perf-basic-prof', fileURLToPath(import.meta.url), '--child', root, prec, String(steps)], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise((r) => child.stdout.once('data', r));
  const perf = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', String(HZ), '-g', '-p', String(child.pid), '-o', file], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1000));
  child.stdin.write('go\n');
  await new Promise((r) => child.once('exit', r));
  perf.kill('SIGINT');
  await new Promise((r) => perf.once('exit', r));
  const text = spawnSync('perf', ['script', '-i', file, '-F', 'tid,ip,sym,dso'], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout;
  const ms = new Map();
  const add = (k, v) => ms.set(k, (ms.get(k) ?? 0) + v);
  const per = 1000 / HZ / steps;
  let tid = null, leaf = null;
  const flush = () => {
    if (tid === null) return;
    const [sym, dso] = leaf ?? ['?', '?'];
    if (tid !== String(child.pid)) { add('workers', per); add(`[worker] ${/compiler|Turbofan|Maglev/.test(sym) ? 'V8 JIT' : 'GC and other'}`, per); }
    else if (dso.endsWith('dsv3.node')) { add('main: kernels', per); add(sym, per); }
    else { add('main: JS, V8, libc, OS', per); add(dso.includes('perf-') ? `JS ${sym.split(' ')[0]} ${sym.split(' ')[1]?.split('/').slice(-2).join('/') ?? ''}` : `${sym} (${dso.split('/').pop()})`, per); }
    tid = null; leaf = null;
  };
  for (const line of text.split('\n')) {
    if (!line.trim()) { flush(); continue; }
    if (!/^\s/.test(line)) { flush(); tid = line.trim().split(/\s+/)[0]; continue; }
    if (leaf === null) { const m = /^\s*[0-9a-f]+ (.*) \((.*)\)$/.exec(line); if (m) leaf = [m[1], m[2]]; }
  }
  flush();
  return ms;
}

const R = [];
for (const p of precs) R.push(await record(p));
rmSync(dir, { recursive: true, force: true });
const g = (m, k) => m.get(k) ?? 0;
const f = (v) => v.toFixed(1).padStart(8);
const parts = ['main: kernels', 'main: JS, V8, libc, OS', 'workers'];
console.log(`${'ms per step'.padEnd(60)}${precs.map((p) => p.padStart(8)).join('')}`);
for (const k of parts) console.log(`${k.padEnd(60)}${R.map((m) => f(g(m, k))).join('')}`);
console.log(`${'total'.padEnd(60)}${R.map((m) => f(parts.reduce((a, k) => a + g(m, k), 0))).join('')}`);
const keys = [...new Set(R.flatMap((m) => [...m.keys()]))].filter((k) => !parts.includes(k));
keys.sort((a, b) => Math.max(...R.map((m) => Math.abs(g(m, b) - g(R[0], b)))) - Math.max(...R.map((m) => Math.abs(g(m, a) - g(R[0], a)))) || g(R[0], b) - g(R[0], a));
for (const k of keys.slice(0, top)) console.log(`${k.slice(0, 59).padEnd(60)}${R.map((m) => f(g(m, k))).join('')}`);
