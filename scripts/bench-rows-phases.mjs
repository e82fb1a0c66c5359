// Per-phase CPU ms (the engine's PhaseProfiler, cpu clock) of an M-row main forward plus the head of its
// rows, M = 1, 2, 3, 4, 8 by default, interleaved, on a checkpoint (issue 11; see scripts/bench-rows-cost.mjs).
//   DSV3_THREADS=1 node scripts/bench-rows-phases.mjs [DIST=dist] [MODEL=/tmp/spec-train] [M list, e.g. 1,2,8]
import * as path from 'node:path';
const dist = path.resolve(process.argv[2] ?? 'dist');
const modelDir = process.argv[3] ?? '/tmp/spec-train';
const Ms = (process.argv[4] ?? '1,2,3,4,8').split(',').map(Number);
const imp = (p) => import(path.join(dist, p));
const { DeepseekV3 } = await imp('src/model/model.js');
const { DecodeSession } = await imp('src/inference/decode-session.js');
const { PhaseProfiler } = await imp('src/inference/profile.js');
const { resolveCheckpointDir } = await imp('src/train/run-checkpoints.js');
const model = DeepseekV3.load(resolveCheckpointDir(modelDir), { mtp: true, map: true });
const res = {};
const profs = {};
const sess = {};
for (const M of Ms) {
  profs[M] = new PhaseProfiler('cpu');
  sess[M] = new DecodeSession(model, { maxLen: 256, chunk: 64, logitRows: 8, profiler: profs[M] });
  const ids = new Int32Array(64).map((_, i) => (i * 37 + 11) % model.cfg.vocab_size);
  sess[M].engine.forwardMain(ids, { B: 1, T: 64, start: 0 }, sess[M].cache);
}
const ids = new Int32Array(8).map((_, i) => (i * 53 + 7) % model.cfg.vocab_size);
for (let rep = 0; rep < 6; rep++) {
  for (const M of Ms) {
    const e = sess[M].engine;
    if (rep === 1) profs[M].reset();
    for (let s = 0; s < 100; s++) {
      e.forwardMain(ids.subarray(0, M), { B: 1, T: M, start: 64 + (s % 32) }, sess[M].cache);
      e.head(0, M);
      profs[M].endStep();
    }
  }
}
for (const M of Ms) console.log(JSON.stringify({ M, ...profs[M].perStep() }));
