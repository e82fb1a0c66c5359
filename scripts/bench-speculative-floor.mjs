// The floor of "auto" when it decodes plain: a SpeculativeDecoder whose policy always answers
// plain, with the MTP modules' upkeep (catch-up every CATCH_UP_GAP positions, as a policy that
// keeps probing pays) and retired (no catch-up, as after AdaptiveSpeculation retires), against
// DecodeSession + generate (`dsv3 generate --no-speculative`), interleaved, CPU time.
//   DSV3_THREADS=1 node scripts/bench-speculative-floor.mjs --model RUN_OR_CHECKPOINT [--dist dist] [--depth 1] [--tokens 600] [--reps 8]
import { parseArgs } from 'node:util';
import { cpuMs, loadSpeculativeBuild } from './lib/speculative-build.mjs';

const { values } = parseArgs({ options: { model: { type: 'string' }, dist: { type: 'string', default: 'dist' }, depth: { type: 'string', default: '1' }, tokens: { type: 'string', default: '600' }, reps: { type: 'string', default: '8' }, prompt: { type: 'string', default: 'Call me Ishmael.' } } });
if (!values.model) throw new Error('--model RUN_OR_CHECKPOINT is required');
const { DecodeSession, generate, SpeculativeDecoder, model, tok } = await loadSpeculativeBuild(values.dist, values.model);
const cpu = cpuMs;
const N = Number(values.tokens);
const depth = Number(values.depth);
const prompt = Int32Array.from(tok.encode(values.prompt, { addBos: tok.bosId !== undefined }));
const P = prompt.length;
const r = { plain: [], lapsed: [], upkeep: [] };
for (let i = 0; i <= Number(values.reps); i++) {
  let c = cpu(); generate(new DecodeSession(model, { maxLen: P + N }), prompt, P, { maxNew: N }); const a = cpu() - c;
  c = cpu(); new SpeculativeDecoder(model, { maxLen: P + N, depth, chain: depth > model.mtp.length }).generate(prompt, N, { policy: { next: () => 'plain', now: cpu, record() {}, retired: () => true } }); const b = cpu() - c;
  c = cpu(); new SpeculativeDecoder(model, { maxLen: P + N, depth, chain: depth > model.mtp.length }).generate(prompt, N, { policy: { next: () => 'plain', now: cpu, record() {} } }); const e = cpu() - c;
  if (i > 0) { r.plain.push(a); r.lapsed.push(b / a); r.upkeep.push(e / a); }
}
const med = (x) => { const s = [...x].sort((a, b) => a - b); return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2; };
console.log(JSON.stringify({ depth, tokens: N, plain_cpu_ms: +med(r.plain).toFixed(1), retired_over_plain: +med(r.lapsed).toFixed(3), always_plain_with_upkeep_over_plain: +med(r.upkeep).toFixed(3), ranges: [Math.min(...r.lapsed).toFixed(3), Math.max(...r.lapsed).toFixed(3), Math.min(...r.upkeep).toFixed(3), Math.max(...r.upkeep).toFixed(3)] }));
