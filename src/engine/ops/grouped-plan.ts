/**
 * The grouping and the shapes of the grouped-experts op (grouped.ts, and its FP8 training form
 * fp8-training-grouped.ts): the (token, slot) pairs of the routed experts grouped per expert
 * (DeepSeek-V3 Eq. 12-14: each token goes to its K top-scored experts), the experts' weights,
 * and the validation of the op's inputs.
 */
import type { Tensor } from '../tensor.js';
import { checkF32, fmtShape } from './util.js';

/** Per-expert grouping of the N·K (token, slot) pairs, in token order within each expert. */
export interface ExpertPlan {
  /** [E + 1]: expert e owns pairs offsets[e] .. offsets[e+1]-1. */
  offsets: Int32Array;
  /** [N·K]: the token of each pair. */
  rows: Int32Array;
  /** [N·K]: the slot t·K + j of each pair (its gate's index in the flat [N, K] gates). */
  slots: Int32Array;
}

/** Groups topkIdx [N·K] (experts chosen per token, K per token) by expert. */
export function expertPlan(topkIdx: Int32Array, topK: number, experts: number): ExpertPlan {
  const n = topkIdx.length;
  const offsets = new Int32Array(experts + 1);
  for (let p = 0; p < n; p++) {
    const e = topkIdx[p]!;
    if (!(e >= 0 && e < experts)) throw new RangeError(`expertPlan: expert ${e} at position ${p} is out of range for ${experts} experts`);
    offsets[e + 1]!++;
  }
  for (let e = 0; e < experts; e++) offsets[e + 1]! += offsets[e]!;
  const fill = offsets.slice(0, experts);
  const rows = new Int32Array(n);
  const slots = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    const q = fill[topkIdx[p]!]!++;
    rows[q] = (p / topK) | 0;
    slots[q] = p;
  }
  return { offsets, rows, slots };
}

/** The three projections of every routed expert, each [out, in] float32. */
export interface ExpertWeights {
  /** W1_e (gate_proj) [I, D]. */
  gate: readonly Tensor[];
  /** W3_e (up_proj) [I, D]. */
  up: readonly Tensor[];
  /** W2_e (down_proj) [D, I]. */
  down: readonly Tensor[];
  /** The shared expert(s) as one SwiGLU FFN (gate/up [Is, D], down [D, Is]), if any. */
  shared?: { gate: Tensor; up: Tensor; down: Tensor } | null;
}

function checkFfn(what: string, gate: Tensor, up: Tensor, down: Tensor, I: number, D: number): void {
  for (const [part, t, shape] of [['gate', gate, [I, D]], ['up', up, [I, D]], ['down', down, [D, I]]] as const) {
    checkF32('groupedExperts', t, `${part}${what}`);
    if (t.ndim !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
      throw new Error(`groupedExperts: ${part}${what} ${fmtShape(t.shape)} must be ${fmtShape(shape)}`);
    }
  }
}

/** Validates the weights; returns the routed and shared intermediate sizes. */
function checkWeights(w: ExpertWeights, D: number): { I: number; Is: number } {
  const E = w.gate.length;
  if (E === 0 || w.up.length !== E || w.down.length !== E) {
    throw new Error(`groupedExperts: need the same non-zero number of gate, up and down weights, got ${w.gate.length}, ${w.up.length}, ${w.down.length}`);
  }
  const I = w.gate[0]!.shape[0]!;
  for (let e = 0; e < E; e++) checkFfn(`[${e}]`, w.gate[e]!, w.up[e]!, w.down[e]!, I, D);
  const sh = w.shared;
  const Is = sh ? sh.gate.shape[0]! : 0;
  if (sh) checkFfn(' (shared)', sh.gate, sh.up, sh.down, Is, D);
  return { I, Is };
}

/** Validates the inputs of the grouped op (float32 or FP8); returns its sizes. */
export function groupedShapes(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights): { N: number; D: number; K: number; E: number; I: number; Is: number } {
  checkF32('groupedExperts', x, 'x');
  checkF32('groupedExperts', gates, 'gates');
  if (x.ndim !== 2) throw new Error(`groupedExperts: x must be [N, D], got ${fmtShape(x.shape)}`);
  const [N, D] = x.shape as [number, number];
  if (gates.ndim !== 2 || gates.shape[0] !== N) throw new Error(`groupedExperts: gates ${fmtShape(gates.shape)} must be [${N}, K]`);
  const K = gates.shape[1]!;
  if (topkIdx.length !== N * K) throw new Error(`groupedExperts: ${topkIdx.length} expert indices for gates ${fmtShape(gates.shape)}`);
  return { N, D, K, E: w.gate.length, ...checkWeights(w, D) };
}
