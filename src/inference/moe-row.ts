/**
 * One decode row through a MoE layer's experts (or a dense SwiGLU MLP) in ONE kernel call,
 * kernels().moeRowBf16 / moeRowFp8 (paper Eq. 12: h += FFN_shared(u) + sum_{i in TopK} g_i FFN_i(u)):
 * the chosen routed experts in ascending expert index with their gates, then the shared expert
 * with gate 1 — the order and arithmetic of ffn.ts's separate calls (expertAdd, then mlpAdd), so
 * h is bit-identical to them. The native kernel spreads every expert's rows over the pool
 * threads with two barriers per layer instead of one per GEMV (21 at the DeepSeek-V2-Lite shape),
 * so a thread descheduled by the OS stalls one small task instead of every GEMV.
 *
 * Used for bf16 and FP8 weights when every weight involved has the same storage; float32 weights
 * keep ffn.ts's gemmBatch path. DSV3_MOE_ROW=0 in the environment turns it off (A/B benchmarks).
 */
import type { Kernels } from '../engine/kernels.js';
import type { MlpPlan, MoePlan } from './plan.js';
import type { Workspace } from './workspace.js';

let enabled = process.env.DSV3_MOE_ROW !== '0';

/** Turns the fused path on or off (tests and A/B benchmarks); returns the previous setting. */
export function setMoeRowFused(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** Per-plan operand lists, filled per token (no allocation after the first call). */
interface RowState {
  inters: Int32Array;
  alphas: Float32Array;
  bits: Uint16Array[];
  codes: Uint8Array[];
  scales: Float32Array[];
  /** inters/alphas/lists for exactly n experts, n = 1 .. capacity (the kernel takes E = inters.length). */
  intersAt: Int32Array[];
}

const states = new WeakMap<object, RowState>();
const scratches = new WeakMap<Workspace, Float32Array>();

function stateOf(key: object, capacity: number): RowState {
  let s = states.get(key);
  if (!s) {
    const inters = new Int32Array(capacity);
    s = {
      inters,
      alphas: new Float32Array(capacity),
      bits: [],
      codes: [],
      scales: [],
      intersAt: Array.from({ length: capacity + 1 }, (_, n) => inters.subarray(0, n)),
    };
    states.set(key, s);
  }
  return s;
}

function scratchOf(ws: Workspace, need: number): Float32Array {
  let s = scratches.get(ws);
  if (!s || s.length < need) {
    s = new Float32Array(need);
    scratches.set(ws, s);
  }
  return s;
}

/** Puts expert q into slot j of the lists; false when its storage is not `kind`. */
function put(s: RowState, j: number, q: MlpPlan, alpha: number, kind: 'bf16' | 'fp8'): boolean {
  const ws = [q.gate, q.up, q.down];
  for (let t = 0; t < 3; t++) {
    const w = ws[t]!;
    if (kind === 'bf16') {
      if (!w.bits) return false;
      s.bits[3 * j + t] = w.bits;
    } else {
      if (!w.codes || !w.scaleInv) return false;
      s.codes[3 * j + t] = w.codes;
      s.scales[3 * j + t] = w.scaleInv;
    }
  }
  s.inters[j] = q.inter;
  s.alphas[j] = alpha;
  return true;
}

function run(kern: Kernels, s: RowState, n: number, kind: 'bf16' | 'fp8', D: number, ws: Workspace, x: Float32Array,
  h: Float32Array): void {
  let S = 0;
  for (let j = 0; j < n; j++) S += s.inters[j]!;
  const scratch = scratchOf(ws, 5 * S + 2 * D + 64);
  const inters = s.intersAt[n]!;
  // the lists may be longer than n (another token's experts): trim to exactly n entries
  s.bits.length = kind === 'bf16' ? 3 * n : 0;
  s.codes.length = s.scales.length = kind === 'fp8' ? 3 * n : 0;
  if (kind === 'bf16') kern.moeRowBf16(D, inters, s.alphas, s.bits, x, h, scratch);
  else kern.moeRowFp8(D, inters, s.alphas, s.codes, s.scales, x, h, scratch);
}

function kindOf(q: MlpPlan): 'bf16' | 'fp8' | null {
  return q.gate.bits ? 'bf16' : q.gate.codes ? 'fp8' : null;
}

/**
 * h[D] += the routed experts chosen for the one routed row (ws.offsets / topW, after routeRows)
 * and the shared expert. Returns false (nothing done) when disabled or the weights are float32
 * or mixed.
 */
export function moeRowFused(kern: Kernels, p: MoePlan, ws: Workspace, x: Float32Array, D: number, h: Float32Array): boolean {
  if (!enabled) return false;
  const kind = kindOf(p.experts[0]!);
  if (!kind) return false;
  const E = p.rc.experts;
  const s = stateOf(p, p.rc.topK + 1);
  const off = ws.offsets;
  let n = 0;
  for (let e = 0; e < E; e++) {
    if (off[e + 1]! === off[e]!) continue;
    if (n === p.rc.topK || !put(s, n, p.experts[e]!, ws.topW[ws.byExpertSlot[off[e]!]!]!, kind)) return false;
    n++;
  }
  if (p.shared && !put(s, n++, p.shared, 1, kind)) return false;
  if (n === 0) return true;
  run(kern, s, n, kind, D, ws, x, h);
  return true;
}

/** h[D] += down(silu(gate x) * up x) for one row of a dense layer; false when not bf16/FP8. */
export function mlpRowFused(kern: Kernels, p: MlpPlan, ws: Workspace, x: Float32Array, D: number, h: Float32Array): boolean {
  if (!enabled) return false;
  const kind = kindOf(p);
  if (!kind) return false;
  const s = stateOf(p, 1);
  if (!put(s, 0, p, 1, kind)) return false;
  run(kern, s, 1, kind, D, ws, x, h);
  return true;
}
