// Plain vs MTP speculative greedy decoding, interleaved in one process, timed in CPU time
// (process.cpuUsage: on a shared machine not inflated by other processes' time slices) and
// wall time. Several builds can be compared in the same run (each a dist/ directory of a
// build, with its own native addon), e.g. main's and this branch's.
//
//   node scripts/bench-speculative-cpu.mjs --model RUN_OR_CHECKPOINT [--dist dist --dist /other/dist]
//        [--tokens 200] [--rounds 5] [--depth K ...] [--prompt TEXT ...] [--draft bf16 --draft exact]
// (--draft: SpeculativeDecoder's draft weights; each value is run as its own variant of each build;
// builds older than the option ignore it. --depth: each value its own variant too; a depth past the
// checkpoint's MTP modules chains its last module on its own output (SpeculativeDecoder's `chain`))
//
// Per round, per prompt, per build: plain greedy (`DecodeSession` + the generation loop, as
// `dsv3 generate --no-speculative`), speculative (`SpeculativeDecoder`, as `dsv3 generate
// --speculative`) and, in builds that have it, auto (the SpeculativeDecoder with an
// AdaptiveSpeculation policy, as `dsv3 generate`'s default on a first run; and, in builds with
// speculation-verdict.ts, "remembered": a later run after a bound verdict, its look-up then the
// plain path, reported as remembered_speedup_cpu), `tokens` new tokens each (prefill
// included, load excluded). Prints one JSON line per run and a summary per build: median CPU ms
// per token of each mode, the median of the per-round speculative/plain and auto/plain speed
// ratios (CPU and wall), acceptance, auto's decisions, and whether every output equalled plain
// greedy. Run with DSV3_THREADS=1 (or 2) to fix the threads.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    dist: { type: 'string', multiple: true },
    tokens: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '5' },
    depth: { type: 'string', multiple: true },
    prompt: { type: 'string', multiple: true },
    draft: { type: 'string', multiple: true },
  },
});
if (!values.model) throw new Error('--model RUN_OR_CHECKPOINT is required');
const dists = (values.dist ?? ['dist']).map((d) => path.resolve(d));
const N = Number(values.tokens);
const R = Number(values.rounds);
const prompts = values.prompt ?? ['Call me Ishmael.', 'The whale'];

const builds = [];
for (const d of dists) {
  const imp = (p) => import(path.join(d, p));
  const { DeepseekV3 } = await imp('src/model/model.js');
  const { DecodeSession } = await imp('src/inference/decode-session.js');
  const { generate } = await imp('src/inference/generate.js');
  const { SpeculativeDecoder, MAX_CHAIN_DEPTH } = await imp('src/inference/speculative.js');
  const AdaptiveSpeculation = await imp('src/inference/speculation-policy.js').then((m) => m.AdaptiveSpeculation, () => undefined);
  const verdict = await imp('src/inference/speculation-verdict.js').catch(() => undefined);
  const { resolveCheckpointDir } = await imp('src/train/run-checkpoints.js');
  const { loadTokenizer } = await imp('src/cli/commands/decoding.js');
  const dir = resolveCheckpointDir(path.resolve(values.model));
  const model = DeepseekV3.load(dir, { mtp: true, map: true });
  const tok = loadTokenizer(dir, model.cfg.vocab_size);
  for (const depth of (values.depth ?? [String(model.mtp.length)]).map(Number)) {
    if (depth > model.mtp.length && MAX_CHAIN_DEPTH === undefined) continue; // a build without chained drafts
    for (const draft of values.draft ?? [undefined]) {
      const label = `${d}${draft ? ` draft=${draft}` : ''}${values.depth ? ` depth=${depth}` : ''}`;
      builds.push({ d, dir, label, draft, model, tok, DecodeSession, generate, SpeculativeDecoder, AdaptiveSpeculation, verdict, depth });
    }
  }
}

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-bench-verdict-'));
process.on('exit', () => fs.rmSync(cacheDir, { recursive: true, force: true }));
const cpu = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};
const runs = [];
for (let round = 0; round <= R; round++) { // round 0: warm-up, not recorded
  for (const text of prompts) {
    for (const [bi, b] of builds.entries()) {
      const prompt = Int32Array.from(b.tok.encode(text, { addBos: b.tok.bosId !== undefined }));
      const P = prompt.length;
      let c0 = cpu();
      let t0 = performance.now();
      const s = new b.DecodeSession(b.model, { maxLen: P + N });
      const g = b.generate(s, prompt, P, { maxNew: N });
      const plain = { cpu: cpu() - c0, wall: performance.now() - t0, ids: g.tokens[0] };
      c0 = cpu();
      t0 = performance.now();
      const sp = new b.SpeculativeDecoder(b.model, { maxLen: P + N, depth: b.depth, ...(b.draft ? { draft: b.draft } : {}), ...(b.depth > b.model.mtp.length ? { chain: true } : {}) });
      const r = sp.generate(prompt, N);
      const spec = { cpu: cpu() - c0, wall: performance.now() - t0, ids: Array.from(r.ids.subarray(P)) };
      const n = plain.ids.length;
      const eq = (ids) => ids.length === n && ids.every((t, i) => t === plain.ids[i]);
      const same = eq(spec.ids);
      let auto = null;
      if (b.AdaptiveSpeculation) {
        c0 = cpu();
        t0 = performance.now();
        const policy = new b.AdaptiveSpeculation();
        const sa = new b.SpeculativeDecoder(b.model, { maxLen: P + N, depth: b.depth, ...(b.draft ? { draft: b.draft } : {}), ...(b.depth > b.model.mtp.length ? { chain: true } : {}) });
        const ra = sa.generate(prompt, N, { policy });
        auto = { cpu: cpu() - c0, wall: performance.now() - t0, ids: Array.from(ra.ids.subarray(P)), summary: policy.summary() };
      }
      let remembered = null;
      if (b.verdict) {
        // auto on a later run, as `dsv3 generate` does it: a remembered bound verdict (written
        // here into a temporary cache) is looked up (key + read) and the plain path runs
        const env = { ...process.env, DSV3_SPECULATION_CACHE: cacheDir, DSV3_SPECULATION_REPROBE: '0' };
        const file = b.verdict.verdictFile(b.dir, b.depth, b.depth > b.model.mtp.length, env);
        b.verdict.rememberVerdict(file, b.dir, b.depth, { decision: 'plain', probes: 1, switches: 0, speculativeTokens: 0, plainTokens: 0, speculativeMsPerToken: NaN, plainMsPerToken: NaN, catchUpMs: 0, interval: 0, upkeepMsPerToken: NaN, retired: true, retiredBy: 'bound', speculativeMsPerRound: NaN });
        c0 = cpu();
        t0 = performance.now();
        const f = b.verdict.verdictFile(b.dir, b.depth, b.depth > b.model.mtp.length, env);
        if (!b.verdict.rememberedPlain(f, Date.now(), Math.random, env)) throw new Error('the remembered verdict was not found');
        const g2 = b.generate(new b.DecodeSession(b.model, { maxLen: P + N }), prompt, P, { maxNew: N });
        remembered = { cpu: cpu() - c0, wall: performance.now() - t0, ids: g2.tokens[0] };
      }
      const line = {
        round, prompt: text, build: b.label, tokens: n,
        plain_cpu_ms_per_token: +(plain.cpu / n).toFixed(4), spec_cpu_ms_per_token: +(spec.cpu / n).toFixed(4),
        speedup_cpu: +(plain.cpu / spec.cpu).toFixed(3), speedup_wall: +(plain.wall / spec.wall).toFixed(3),
        acceptance: +(r.accepted / Math.max(1, r.drafted)).toFixed(3), tokens_per_forward: +(n / Math.max(1, r.mainForwards + 1)).toFixed(2),
        verify_ms_per_forward: +(r.verifyMs / Math.max(1, r.mainForwards)).toFixed(3), draft_ms_per_round: +(r.draftMs / Math.max(1, r.mainForwards)).toFixed(3),
        identical: same,
        ...(auto ? {
          auto_cpu_ms_per_token: +(auto.cpu / n).toFixed(4), auto_speedup_cpu: +(plain.cpu / auto.cpu).toFixed(3), auto_speedup_wall: +(plain.wall / auto.wall).toFixed(3),
          auto_decision: auto.summary.decision, auto_switches: auto.summary.switches, auto_speculative_tokens: auto.summary.speculativeTokens, auto_plain_tokens: auto.summary.plainTokens,
          auto_identical: eq(auto.ids),
          ...(remembered ? { remembered_speedup_cpu: +(plain.cpu / remembered.cpu).toFixed(3), remembered_identical: eq(remembered.ids) } : {}),
          ...(auto.summary.catchUpMs !== undefined ? { auto_catch_up_cpu_ms: +auto.summary.catchUpMs.toFixed(2), auto_retired: auto.summary.retired, auto_probes: auto.summary.probes } : {}),
        } : {}),
      };
      if (round > 0) runs.push({ bi, ...line });
      console.log(JSON.stringify(line));
    }
  }
}
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
for (const [bi, b] of builds.entries()) {
  const rs = runs.filter((r) => r.bi === bi);
  console.log(JSON.stringify({
    summary: b.label, threads: process.env.DSV3_THREADS ?? 'default', runs: rs.length, depth: b.depth,
    plain_cpu_ms_per_token: +med(rs.map((r) => r.plain_cpu_ms_per_token)).toFixed(4),
    spec_cpu_ms_per_token: +med(rs.map((r) => r.spec_cpu_ms_per_token)).toFixed(4),
    speedup_cpu_median: med(rs.map((r) => r.speedup_cpu)), speedup_wall_median: med(rs.map((r) => r.speedup_wall)),
    speedup_cpu_range: [Math.min(...rs.map((r) => r.speedup_cpu)), Math.max(...rs.map((r) => r.speedup_cpu))],
    acceptance_mean: +(rs.reduce((a, r) => a + r.acceptance, 0) / rs.length).toFixed(3),
    all_identical: rs.every((r) => r.identical),
    ...(b.AdaptiveSpeculation ? {
      auto_cpu_ms_per_token: +med(rs.map((r) => r.auto_cpu_ms_per_token)).toFixed(4),
      auto_speedup_cpu_median: med(rs.map((r) => r.auto_speedup_cpu)), auto_speedup_wall_median: med(rs.map((r) => r.auto_speedup_wall)),
      auto_speedup_cpu_range: [Math.min(...rs.map((r) => r.auto_speedup_cpu)), Math.max(...rs.map((r) => r.auto_speedup_cpu))],
      auto_decisions: rs.map((r) => r.auto_decision[0]).join(''), auto_speculative_token_share: +(rs.reduce((a, r) => a + r.auto_speculative_tokens, 0) / rs.reduce((a, r) => a + r.auto_speculative_tokens + r.auto_plain_tokens, 0)).toFixed(3),
      auto_all_identical: rs.every((r) => r.auto_identical),
      ...(rs[0]?.remembered_speedup_cpu !== undefined ? { remembered_speedup_cpu_median: med(rs.map((r) => r.remembered_speedup_cpu)), remembered_speedup_cpu_range: [Math.min(...rs.map((r) => r.remembered_speedup_cpu)), Math.max(...rs.map((r) => r.remembered_speedup_cpu))], remembered_all_identical: rs.every((r) => r.remembered_identical) } : {}),
      ...(rs[0]?.auto_retired !== undefined ? { auto_retired_share: +(rs.filter((r) => r.auto_retired).length / rs.length).toFixed(2), auto_catch_up_cpu_ms_median: med(rs.map((r) => r.auto_catch_up_cpu_ms)) } : {}),
    } : {}),
    load: fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  }));
}
