// Distinct routed experts per MoE layer per batched decode step (issue 11's batch bar: the bytes
// a step of N rows reads), on configs/bench-small.json with random float32 weights, for the same
// prompts as `dsv3 bench decode --batch N`; against 16 (1 - (12/16)^N) for independent routing.
// Counts the active groups of every kernels().moeRows call (batched steps only). After npm run build:
//   node scripts/count-batch-experts.mjs
const dist = new URL('../dist/src/', import.meta.url);
const { kernels } = await import(new URL('engine/backend.js', dist).href);
const { randomModel } = await import(new URL('inference/random-model.js', dist).href);
const { loadModelConfig } = await import(new URL('model/config.js', dist).href);
const { ContinuousBatcher } = await import(new URL('inference/continuous-batcher.js', dist).href);
const { promptIds } = await import(new URL('inference/measure.js', dist).href);
const { argmax } = await import(new URL('inference/sampling.js', dist).href);
const cfg = loadModelConfig(new URL('../configs/bench-small.json', import.meta.url).pathname);
const E = cfg.n_routed_experts;
const K = cfg.num_experts_per_tok;
const model = randomModel(cfg, 1, 'f32');
const k = kernels();
const orig = k.moeRows.bind(k);
let counts = [];
k.moeRows = (x, o, ...rest) => {
  let n = 0;
  for (let e = 0; e < E; e++) if (o[e + 1] > o[e]) n++;
  counts.push(n);
  return orig(x, o, ...rest);
};
for (const N of [2, 4, 8]) {
  const b = new ContinuousBatcher(model, { maxBatch: N, maxContext: 32 + N + 130 });
  for (let s = 0; s < N; s++) b.admit({ prompt: promptIds(32 + s, cfg.vocab_size, 1 + 7919 * s), maxNew: 129, pick: argmax, onToken: () => undefined, onDone: () => undefined });
  b.step(); // the prefills
  counts = [];
  while (b.active > 0) b.step();
  const mean = counts.reduce((a, c) => a + c, 0) / counts.length;
  console.log(`batch ${N}: distinct routed experts per MoE layer per step ${mean.toFixed(2)} (${counts.length} layer-steps; independent routing ${(E * (1 - ((E - K) / E) ** N)).toFixed(2)})`);
}
