// Where a training step's memory goes (issue 13, "FP8 that saves memory"): runs full training
// steps of `bench train` (configs/bench-small.json, 8x256 by default) in a step arena and
// accounts for the arena's buffers by the call site that took them.
//
//   node scripts/rss-probe.mjs [--precision fp32|bf16|fp8] [--moment-dtype f32|bf16] [--steps N]
//                              [--batch B] [--seq S] [--sites K] [--json]
//
// Per step it reports: the arena's bytes in use (taken and not yet given back) at their peak
// and at the end of forward, the process RSS sampled at every arena request (its maximum and
// where in the step it happened: forward or backward), the arena's held bytes after the step,
// and, at the moment of the peak, the bytes in use by allocating call site (the first frames
// of src/ outside the allocation helpers), grouped per model layer when the site is a model
// file. The baseline (parameters, their gradients, the AdamW moments) is reported apart, and
// `outside_arena_at_rss_peak_mb` splits the last step's peak RSS: the arena's held bytes, the
// process at start (Node, the addon), master weights, AdamW moments, bf16 weight copies, the
// V8 heap's growth since the start, and the rest (native memory: compiled code, compiler zones, malloc). The
// moments follow `dsv3 train`'s default for the precision unless --moment-dtype says.
// Needs a build (npm run build).
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const imp = (p) => import(join(root, 'dist', 'src', p));
const { values } = parseArgs({
  options: {
    precision: { type: 'string', default: 'fp32' }, steps: { type: 'string', default: '3' }, 'moment-dtype': { type: 'string' },
    batch: { type: 'string', default: '8' }, seq: { type: 'string', default: '256' },
    sites: { type: 'string', default: '30' }, json: { type: 'boolean', default: false },
    config: { type: 'string', default: join(root, 'configs', 'bench-small.json') },
  },
});
const { BufferArena, stepArena, withArena } = { ...(await imp('engine/arena.js')), ...(await imp('engine/active-arena.js').catch(() => ({}))) }; // active-arena.js: builds after 2026-12-07
const { loadModelConfig } = await imp('model/config.js');
const { DeepseekV3 } = await imp('model/model.js');
const { backward } = await imp('engine/autograd.js');
const { AdamW } = await imp('train/optimizer.js');
const { PAPER, TRAIN, defaultMomentDtype } = await imp('train/recipe.js');
const { applyUpdate, forwardLosses } = await imp('train/train-step.js');

const MB = (b) => Math.round(b / 1e5) / 10;
const rssBoot = process.memoryUsage.rss();
const heapBoot = process.memoryUsage().heapTotal; // part of rssBoot
const prec = values.precision;
const [B, S, steps] = [Number(values.batch), Number(values.seq), Number(values.steps)];
const cfg = loadModelConfig(values.config);
const model = DeepseekV3.randomInit(cfg, 0);
const params = model.parameters();
const paramBytes = params.reduce((a, p) => a + p.size * 4, 0);
// (builds before 2026-12-07 round 5 take a boolean, fp8, and default bf16 training to f32 moments)
const newRecipe = defaultMomentDtype('fp32') === 'f32';
const opt = new AdamW(params, { lr: 1e-4, momentDtype: values['moment-dtype'] ?? (newRecipe ? defaultMomentDtype(prec) : defaultMomentDtype(prec === 'fp8')) });
const { bf16WeightCopyBytes } = await imp('engine/bf16-weights.js'); // absent before 2026-12-07 round 5
const rssModel = process.memoryUsage.rss(); // parameters (and the moments once allocated)
const lossOpts = { mtpLambda: PAPER.mtpLambda, balanceAlpha: PAPER.balanceAlpha, balance: TRAIN.balance, precision: prec };

// ---- instrumentation of the arena: bytes in use and their call sites ----------------------
const sizeOf = new Map(); // buffer -> site
let inUse = 0;
let phase = 'forward';
const step = { peak: 0, peakPhase: '', peakSites: null, endForward: 0, rssMax: 0, rssPhase: '' };
const siteBytes = new Map();
function site() {
  const lines = (new Error().stack ?? '').split('\n').slice(2);
  const frames = [];
  for (const l of lines) {
    const m = /dist\/src\/([\w/.-]+\.js):(\d+)/.exec(l);
    if (!m) continue;
    const f = m[1];
    if (/^engine\/(arena|memory|tensor)\.js$|ops\/util\.js$/.test(f) && frames.length === 0) continue;
    const fn = /at (?:new )?([\w.$<>]+) /.exec(l)?.[1] ?? '?';
    frames.push(`${f.replace(/\.js$/, '')}:${fn}`);
    if (frames.length === 3) break;
  }
  return frames.join(' < ') || '?';
}
const origTake = BufferArena.prototype.take;
const origRelease = BufferArena.prototype.release;
const origReset = BufferArena.prototype.reset;
BufferArena.prototype.take = function (bytes) {
  const buf = origTake.call(this, bytes);
  const s = site();
  sizeOf.set(buf, s);
  inUse += buf.byteLength;
  siteBytes.set(s, (siteBytes.get(s) ?? 0) + buf.byteLength);
  if (inUse > step.peak) {
    step.peak = inUse;
    step.peakPhase = phase;
    step.peakSites = new Map(siteBytes);
  }
  const rss = process.memoryUsage.rss();
  if (rss > step.rssMax) { step.rssMax = rss; step.rssPhase = phase; step.heap = process.memoryUsage().heapTotal; step.held = this.stats().heldBytes; }
  return buf;
};
BufferArena.prototype.release = function (buf, since) {
  const ok = origRelease.call(this, buf, since);
  if (ok) {
    const s = sizeOf.get(buf);
    sizeOf.delete(buf);
    inUse -= buf.byteLength;
    siteBytes.set(s, siteBytes.get(s) - buf.byteLength);
  }
  return ok;
};
BufferArena.prototype.reset = function () {
  origReset.call(this);
  sizeOf.clear();
  siteBytes.clear();
  inUse = 0;
};

const arena = stepArena() ?? new BufferArena();
const rng = (i) => Int32Array.from({ length: B * (S + 1) }, (_, j) => (j * 7919 + i * 31) % cfg.vocab_size);
const report = [];
for (let i = 0; i < steps; i++) {
  Object.assign(step, { peak: 0, peakPhase: '', peakSites: null, endForward: 0, rssMax: 0, rssPhase: '', heap: 0, held: 0 });
  phase = 'forward';
  withArena(arena, () => {
    const f = forwardLosses(model, rng(i), lossOpts, B);
    step.endForward = inUse;
    phase = 'backward';
    backward(f.terms.total);
    phase = 'optimizer';
    const loads = new Map([...f.routing].map(([l, r]) => [l, r.load]));
    applyUpdate(model, opt, loads, { lr: 1e-4, maxGradNorm: PAPER.maxGradNorm, balance: TRAIN.balance, bias: { gamma: PAPER.biasGamma } });
  });
  const held = arena.stats().heldBytes;
  arena.reset();
  report.push({
    step: i, arena_peak_in_use_mb: MB(step.peak), peak_phase: step.peakPhase, arena_in_use_end_forward_mb: MB(step.endForward),
    arena_held_mb: MB(held), rss_max_mb: MB(step.rssMax), rss_max_phase: step.rssPhase,
  });
}
const last = report[report.length - 1];
// sites at the last step's peak, largest first; model sites also summed per layer
const sites = [...step.peakSites].filter(([, b]) => b > 0).sort((a, b) => b[1] - a[1]);
const k = Number(values.sites);
const momentBytes = params.reduce((a, p) => a + p.size * (opt.momentDtype === 'bf16' ? 4 : 8), 0);
const copyBytes = bf16WeightCopyBytes?.() ?? NaN;
const outside = { arena_held: step.held, node_at_start: rssBoot, master_weights: paramBytes, adamw_moments: momentBytes, bf16_weight_copies: copyBytes, v8_heap_growth: step.heap - heapBoot };
outside.rest = step.rssMax - Object.values(outside).reduce((a, b) => a + (Number.isNaN(b) ? 0 : b), 0);
const out = {
  precision: prec, batch: B, seq: S, moment_dtype: opt.momentDtype,
  baseline_mb: { params: MB(paramBytes), grads: MB(paramBytes), adamw_moments: MB(momentBytes) },
  rss_mb: { after_imports: MB(rssBoot), after_model_init: MB(rssModel) },
  steps: report,
  peak_sites_mb: Object.fromEntries(sites.slice(0, k).map(([s, b]) => [s, MB(b)])),
  peak_sites_rest_mb: MB(sites.slice(k).reduce((a, [, b]) => a + b, 0)),
  peak_rss_mb: MB(process.resourceUsage().maxRSS * 1024),
  outside_arena_at_rss_peak_mb: { rss_max: MB(step.rssMax), ...Object.fromEntries(Object.entries(outside).map(([k, v]) => [k, MB(v)])) },
};
if (values.json) console.log(JSON.stringify(out));
else console.log(JSON.stringify(out, null, 1));
