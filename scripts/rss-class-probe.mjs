// Per size class of the step arena (issue 13, peak RSS): for each class of 1 MiB and up, the
// buffers it holds, its own most in use at once, and how many were in use at the arena's global
// in-use peak (held minus that is slack: memory mapped but idle at the peak), the borrows
// between classes, and (SITES=6,3,1: classes in MiB) the allocating call sites of the buffers in
// use at the global peak and at each named class's own peak. Runs scripts/rss-probe.mjs (its
// flags in PARGS) with BufferArena's take/reset wrapped (reads its private fields: a probe).
//   ROOT=$PWD SITES=6,1 PARGS="--precision bf16 --steps 3" node scripts/rss-class-probe.mjs 2>&1 >/dev/null
// Needs a build (npm run build).

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
const root = process.env.ROOT ?? join(dirname(fileURLToPath(import.meta.url)), "..");
const { BufferArena } = await import(root + '/dist/src/engine/arena.js');
const P = BufferArena.prototype;
const take = P.take, reset = P.reset, release = P.release;
const MB = 1048576;
function snap(a) { const m = {}; for (const [c, b] of a.bins) m[c] = b.taken.size; return m; }
P.take = function (bytes) {
  const before = this.counts.peakInUse;
  const r = take.call(this, bytes);
  const cls = (() => { let by = bytes; if (by <= 64) return 64; const st = 2 ** Math.max(6, Math.floor(Math.log2(by)) - 3); return Math.ceil(by / st) * st; })();
  if (r.byteLength !== cls && cls >= MB) { this._borrows = this._borrows ?? {}; const k = `${(cls/MB).toFixed(2)}->${(r.byteLength/MB).toFixed(2)}`; this._borrows[k] = (this._borrows[k] ?? 0) + 1; }
  this._site = this._site ?? new Map(); const st = new Error().stack.split('\n').slice(3, 12).map(s => s.trim().replace(/^at /,'').replace(/\(file:.*dist\/src\//, '').replace(/:\d+\)?$/,'')).filter(s=>!/arena|util\.js|scratch|alloc/i.test(s)).slice(0,4).join(' < '); this._site.set(r, (cls/MB).toFixed(2)+'=>'+(r.byteLength/MB).toFixed(2)+' '+st);
  const bin = this.bins.get(r.byteLength); if (r.byteLength >= MB && bin.taken.size >= bin.peak) { this._clsPeak = this._clsPeak ?? {}; this._clsPeak[r.byteLength] = [...bin.taken.keys()].map(b => this._site.get(b)); }
  if (this.counts.peakInUse > before) { this._atPeakSites = []; for (const [c, b] of this.bins) if (c >= MB) for (const k of b.taken.keys()) this._atPeakSites.push(this._site.get(k)); this._atPeak = snap(this); this._peakStack = new Error().stack.split('\n').slice(2, 9).map(s => s.trim().replace(/.*dist\/src\//, '')).join(' < '); }
  return r;
};
P.reset = function () {
  const rows = [];
  for (const [c, b] of this.bins) {
    if (c < MB) continue;
    rows.push({ cls_mb: +(c / MB).toFixed(3), held: b.free.length + b.taken.size, peak: b.peak, at_global_peak: this._atPeak?.[c] ?? 0 });
  }
  rows.sort((x, y) => y.cls_mb - x.cls_mb);
  console.error('STEP', this.gen, 'held', (this.counts.held / MB).toFixed(1), 'peakInUse', (this.counts.peakInUse / MB).toFixed(1));
  for (const r of rows) if (r.held !== r.at_global_peak) console.error('  cls', r.cls_mb, 'held', r.held, 'peak', r.peak, 'atpeak', r.at_global_peak, 'slackMB', ((r.held - r.at_global_peak) * r.cls_mb).toFixed(1));
  if (process.env.SITES) { console.error('  AT GLOBAL PEAK:'); for (const x of (this._atPeakSites??[]).sort()) console.error('     ', x); for (const c of (process.env.SITES).split(',')) { console.error('  CLASS PEAK', c); for (const x of (this._clsPeak?.[+c*MB]??[])) console.error('     ', x); } }
  console.error('  borrows', JSON.stringify(this._borrows)); this._borrows = {};
  console.error('  peak at', this._peakStack);
  return reset.call(this);
};
process.argv.push(...(process.env.PARGS ?? '--precision bf16').split(' '));
await import(root + '/scripts/rss-probe.mjs');
