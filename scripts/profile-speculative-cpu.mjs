// Where a speculative round's CPU time goes, against a plain step: the engine's calls are wrapped
// with CPU-time timers (process.cpuUsage) and summed by kind: the main forward by its rows
// (T=1: a plain step; T=K+1: a verification), the LM head by its rows, each MTP module's forward
// by its rows (the drafts, and the rows that read only accepted drafts), the draft head (the
// module's logits over the vocabulary), and the rest (decoder construction, ring copies,
// argmax, bookkeeping: JS). Greedy, batch 1, one build.
//
//   DSV3_THREADS=1 node scripts/profile-speculative-cpu.mjs --model RUN_OR_CHECKPOINT [--dist dist]
//        [--depth 1] [--tokens 200] [--rounds 6] [--prompt TEXT]
// Prints one JSON line per mode (plain, speculative): median over rounds (the first is a
// warm-up) of the total and of each kind: ms, calls, µs per call. The timers cost ~1 µs a call.
import { parseArgs } from 'node:util';
import { cpuMs, loadSpeculativeBuild } from './lib/speculative-build.mjs';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    dist: { type: 'string', default: 'dist' },
    depth: { type: 'string', default: '1' },
    tokens: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '6' },
    prompt: { type: 'string', default: 'The whale' },
  },
});
if (!values.model) throw new Error('--model RUN_OR_CHECKPOINT is required');
const depth = Number(values.depth);
const N = Number(values.tokens);
const { DecodeSession, generate, SpeculativeDecoder, model, tok } = await loadSpeculativeBuild(values.dist, values.model);
const cpu = cpuMs;
const acc = {};
function wrap(obj, name, key) {
  const f = obj[name];
  obj[name] = function (...a) {
    const k = key(a);
    const t = cpu();
    const r = f.apply(this, a);
    const x = (acc[k] ??= [0, 0]);
    x[0] += cpu() - t;
    x[1]++;
    return r;
  };
}
const prompt = Int32Array.from(tok.encode(values.prompt, { addBos: tok.bosId !== undefined }));
const P = prompt.length;
const res = {};
let rounds = 0;
let accepted = 0;
let drafted = 0;
for (let rep = 0; rep <= Number(values.rounds); rep++) {
  for (const mode of ['plain', 'speculative']) {
    for (const k of Object.keys(acc)) delete acc[k];
    let total;
    const c0 = cpu();
    if (mode === 'plain') {
      const s = new DecodeSession(model, { maxLen: P + N });
      wrap(s.engine, 'forwardMain', (a) => `main T=${a[1].T}`);
      wrap(s.engine, 'head', (a) => `head rows=${a[1]}`);
      generate(s, prompt, P, { maxNew: N });
      total = cpu() - c0;
    } else {
      const sp = new SpeculativeDecoder(model, { maxLen: P + N, depth, chain: depth > model.mtp.length });
      const e = sp.session.engine;
      wrap(e, 'forwardMain', (a) => `main T=${a[1].T}`);
      wrap(e, 'head', (a) => `head rows=${a[1]}`);
      wrap(e, 'forwardMtp', (a) => `mtp${a[3] ?? 1} T=${a[1].T}`);
      wrap(e, 'draftHead', () => 'draft head');
      const r = sp.generate(prompt, N);
      total = cpu() - c0;
      rounds = r.mainForwards;
      accepted = r.accepted;
      drafted = r.drafted;
    }
    if (rep > 0) {
      const o = (res[mode] ??= { total: [], parts: {} });
      o.total.push(total);
      for (const [k, v] of Object.entries(acc)) (o.parts[k] ??= []).push(v);
    }
  }
}
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
for (const [mode, o] of Object.entries(res)) {
  const out = { mode, depth, tokens: N, total_cpu_ms: +med(o.total).toFixed(2), cpu_ms_per_token: +(med(o.total) / N).toFixed(4) };
  if (mode === 'speculative') Object.assign(out, { rounds, acceptance: +(accepted / Math.max(1, drafted)).toFixed(3) });
  let known = 0;
  for (const [k, v] of Object.entries(o.parts).sort((a, b) => med(b[1].map((x) => x[0])) - med(a[1].map((x) => x[0])))) {
    const ms = med(v.map((x) => x[0]));
    const calls = med(v.map((x) => x[1]));
    known += ms;
    out[k] = { ms: +ms.toFixed(2), calls, us_per_call: +((1000 * ms) / Math.max(1, calls)).toFixed(1) };
  }
  out.rest_ms = +(med(o.total) - known).toFixed(2);
  console.log(JSON.stringify(out));
}
