// The cost of an M-row step (issue 11): CPU ms of the main model's forward over M rows plus the
// head of those rows (the speculative verification forward, a batched decode step of one
// sequence's shape), and of the MTP module on M rows (bf16 draft copies, the default draft path)
// plus the draft head on one row, for M = 1, 2, 3, 4, 5, 8, each as a multiple of the one-row
// main step. Several builds (dist/ directories, each with its own addon) are interleaved.
//
//   DSV3_THREADS=1 node scripts/bench-rows-cost.mjs --model RUN_OR_CHECKPOINT [--dist dist --dist /other/dist] [--reps 6]
//
// 64 cached positions; 100 calls per (build, M, rep); medians over reps 1.. (rep 0 warms up).
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { model: { type: 'string' }, dist: { type: 'string', multiple: true }, reps: { type: 'string', default: '6' } } });
if (!values.model) throw new Error('--model RUN_OR_CHECKPOINT is required');
const Ms = [1, 2, 3, 4, 5, 8];
const cpu = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};
const builds = [];
for (const d of (values.dist ?? ['dist']).map((x) => path.resolve(x))) {
  const imp = (p) => import(path.join(d, p));
  const { DeepseekV3 } = await imp('src/model/model.js');
  const { DecodeSession } = await imp('src/inference/decode-session.js');
  const { resolveCheckpointDir } = await imp('src/train/run-checkpoints.js');
  const model = DeepseekV3.load(resolveCheckpointDir(path.resolve(values.model)), { mtp: true, map: true });
  const s = new DecodeSession(model, { maxLen: 256, chunk: 64, logitRows: 8, mtp: 1, draftBf16: true });
  const e = s.engine;
  const ids = new Int32Array(64).map((_, i) => (i * 37 + 11) % model.cfg.vocab_size);
  e.forwardMain(ids, { B: 1, T: 64, start: 0 }, s.cache);
  e.ws.hPrev.set(e.ws.hidden.subarray(0, 64 * e.D));
  e.forwardMtp(ids, { B: 1, T: 64, start: 0 }, s.cache, 1);
  builds.push({ d, e, cache: s.cache, ids, acc: Object.fromEntries(Ms.map((M) => [M, { v: [], d: [] }])) });
}
for (let rep = 0; rep < Number(values.reps); rep++) {
  for (const M of Ms) {
    for (const b of builds) {
      const { e, cache, ids } = b;
      let c0 = cpu();
      for (let i = 0; i < 100; i++) {
        e.forwardMain(ids.subarray(0, M), { B: 1, T: M, start: 64 + (i % 32) }, cache);
        e.head(0, M);
      }
      const v = (cpu() - c0) / 100;
      c0 = cpu();
      for (let i = 0; i < 100; i++) {
        e.forwardMtp(ids.subarray(0, M), { B: 1, T: M, start: 64 + (i % 32) }, cache, 1);
        e.draftHead(M - 1, 1);
      }
      const dr = (cpu() - c0) / 100;
      if (rep > 0) {
        b.acc[M].v.push(v);
        b.acc[M].d.push(dr);
      }
    }
  }
}
const med = (x) => {
  const y = [...x].sort((a, c) => a - c);
  return y.length % 2 ? y[(y.length - 1) / 2] : (y[y.length / 2 - 1] + y[y.length / 2]) / 2;
};
for (const b of builds) {
  const v1 = med(b.acc[1].v);
  for (const M of Ms) {
    const v = med(b.acc[M].v);
    const dr = med(b.acc[M].d);
    console.log(JSON.stringify({ build: b.d, M, main_cpu_ms: +v.toFixed(3), main_over_one_row: +(v / v1).toFixed(2), draft_cpu_ms: +dr.toFixed(3), draft_over_one_row_main: +(dr / v1).toFixed(2) }));
  }
}
console.log(JSON.stringify({ threads: process.env.DSV3_THREADS ?? 'default', load: (await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') }));
