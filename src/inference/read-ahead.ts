/**
 * Read-ahead for a mapped checkpoint (cold start, issue 12): the engine's part. The model's loader
 * queues the always-used tensors to the addon's background read-ahead thread once the model is
 * built (model/params.ts `startReadAhead`); here:
 *   - readAheadKvB: every layer's kv_b_proj, advised MADV_WILLNEED from the caller before
 *     planning decodes them all (plan.ts), ahead of that queue;
 *   - readAheadChosen: the routed experts routing picks, advised together the first time each is
 *     picked, so they are read as a few large requests in parallel instead of page faults of the
 *     kernels' threads one readahead window at a time. Once per expert: later tokens find the
 *     pages resident and pay nothing (an madvise over resident pages still walks them).
 * On a huge-page mapping (src/io/mapped-file.ts) the addon does WILLNEED as MADV_POPULATE_READ
 * from a short-lived thread per range (WILLNEED itself would read 4 KiB folios), so the ranges
 * are still read in parallel, as 2 MiB folios.
 * Advice only: values never change, and on copies (not mapped) every call is a no-op.
 */
import { adviseRange } from '../io/mapped-file.js';
import type { DecoderLayer } from '../model/decoder-layer.js';
import type { MlpPlan, MoePlan } from './plan.js';
import type { Workspace } from './workspace.js';

const advisedOf = new WeakMap<MoePlan, Uint8Array>();

function adviseLinear(w: MlpPlan['gate']): void {
  for (const a of [w.bits, w.codes, w.scaleInv]) {
    if (a && a.buffer instanceof ArrayBuffer) adviseRange(a.buffer, a.byteOffset, a.byteLength, 'willneed');
  }
}

/** WILLNEED on the routed experts chosen in ws.offsets (after routeRows) that were never advised. */
export function readAheadChosen(p: MoePlan, ws: Workspace): void {
  const E = p.rc.experts;
  let seen = advisedOf.get(p);
  if (!seen) {
    seen = new Uint8Array(E);
    advisedOf.set(p, seen);
  }
  const off = ws.offsets;
  for (let e = 0; e < E; e++) {
    if (seen[e] || off[e + 1]! === off[e]!) continue;
    seen[e] = 1;
    const q = p.experts[e]!;
    if (!q.gate.f32) {
      adviseLinear(q.gate);
      adviseLinear(q.up);
      adviseLinear(q.down);
    }
  }
}

/**
 * WILLNEED now, from the caller, for the kv_b_proj of every layer: an FP8 one (or a bf16 one
 * with DSV3_KVB_BF16=0, an FP8 one with DSV3_KVB_FP8=0) is decoded to float32 at planning (plan.ts),
 * which reads all of them before the first token, and one read in place is needed by the first token's attention;
 * from a cold page cache they would otherwise wait behind the read-ahead queued at open (every
 * layer's attention and shared experts, in layer order).
 */
export function readAheadKvB(layers: readonly DecoderLayer[]): void {
  for (const l of layers) {
    const w = l.selfAttn.kvB;
    const a = w.kind === 'bf16' ? w.bits : w.kind === 'fp8' ? w.codes : null;
    if (a && a.buffer instanceof ArrayBuffer) adviseRange(a.buffer, a.byteOffset, a.byteLength, 'willneed');
  }
}
