/**
 * The routed experts of a DeepSeekMoE layer (DeepSeek-V3 Eq. 12, the Σ_i g_{i,t} FFN_i(u_t)
 * term) as ONE differentiable op over all experts:
 *
 *   out[t] = Σ_{j<K} gates[t, j] · W2_e (silu(W1_e x_t) ⊙ W3_e x_t),   e = topkIdx[t, j]
 *
 * Forward: the (token, slot) pairs are grouped per expert (`expertPlan`), the tokens' rows are
 * gathered once into one [N·K, D] block, each expert runs its gate/up GEMMs on its contiguous
 * slice of that block, one SwiGLU kernel covers every row, each expert's down GEMM writes its
 * slice of Y [N·K, D], and one gate-scaled scatter-add combines Y into the output. Only the
 * gate and up projections G, U [N·K, I] are kept for the backward; everything else lives in
 * scratch buffers reused across calls.
 *
 * Backward, with dYu = dout rows gathered per pair (unscaled) and H = silu(G) ⊙ U recomputed:
 *   dHu = dYu W2_e           dgate[p] = dHu[p] · H[p]       (= dout[t] · Y[p])
 *   dH = gate_p dHu          dW2_e += dYu^T (gate ⊙ H)       (= (gate ⊙ dYu)^T H)
 *   dG, dU = SwiGLU backward  dW1_e += dG^T X, dW3_e += dU^T X
 *   dX rows = dG W1_e + dU W3_e, scatter-added to dx.
 * Weight gradients go straight into the parameters' `.grad` (or are deferred inside
 * `deferWeightGrads`), like `linear`'s.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { accumulateWeightGrad, weightGradsDeferred } from './linear.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape } from './util.js';

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
}

// Scratch buffers of the op, grown on demand and reused by every call (never handed out: they
// hold values only between two statements of one forward or one backward).
const scratch = new Map<string, Float32Array>();
function scratchBuf(name: string, n: number): Float32Array {
  let b = scratch.get(name);
  if (!b || b.length < n) {
    b = new Float32Array(n);
    scratch.set(name, b);
  }
  return b.subarray(0, n);
}

function checkWeights(w: ExpertWeights, D: number): number {
  const E = w.gate.length;
  if (E === 0 || w.up.length !== E || w.down.length !== E) {
    throw new Error(`groupedExperts: need the same non-zero number of gate, up and down weights, got ${w.gate.length}, ${w.up.length}, ${w.down.length}`);
  }
  const I = w.gate[0]!.shape[0]!;
  for (let e = 0; e < E; e++) {
    for (const [what, t, shape] of [['gate', w.gate[e]!, [I, D]], ['up', w.up[e]!, [I, D]], ['down', w.down[e]!, [D, I]]] as const) {
      checkF32('groupedExperts', t, `${what}[${e}]`);
      if (t.ndim !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
        throw new Error(`groupedExperts: ${what}[${e}] ${fmtShape(t.shape)} must be ${fmtShape(shape)}`);
      }
    }
  }
  return I;
}

/**
 * Routed-expert output [N, D] of x [N, D] with gates [N, K] (differentiable) and the experts
 * chosen per token topkIdx [N·K] (constants). See the module comment.
 */
export function groupedExperts(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights): Tensor {
  checkF32('groupedExperts', x, 'x');
  checkF32('groupedExperts', gates, 'gates');
  if (x.ndim !== 2) throw new Error(`groupedExperts: x must be [N, D], got ${fmtShape(x.shape)}`);
  const [N, D] = x.shape as [number, number];
  if (gates.ndim !== 2 || gates.shape[0] !== N) throw new Error(`groupedExperts: gates ${fmtShape(gates.shape)} must be [${N}, K]`);
  const K = gates.shape[1]!;
  if (topkIdx.length !== N * K) throw new Error(`groupedExperts: ${topkIdx.length} expert indices for gates ${fmtShape(gates.shape)}`);
  const E = w.gate.length;
  const I = checkWeights(w, D);
  const plan = expertPlan(topkIdx, K, E);
  const { offsets, rows, slots } = plan;
  const P = N * K;
  const k = kernels();
  const xd = dataOf(x);
  const gd = dataOf(gates);
  const wg = w.gate.map(dataOf);
  const wu = w.up.map(dataOf);
  const wdn = w.down.map(dataOf);
  const gp = new Float32Array(P); // gate of each pair
  for (let p = 0; p < P; p++) gp[p] = gd[slots[p]!]!;

  const G = allocUninit(P * I); // every row belongs to one expert, whose GEMMs write it
  const U = allocUninit(P * I);
  const out = alloc(N * D);
  if (P > 0 && D > 0 && I > 0) {
    const buf = scratchBuf;
    const X = buf('X', P * D);
    k.gatherRows(xd, rows, null, X, P, D);
    const H = buf('H', P * I);
    for (let e = 0; e < E; e++) {
      const a = offsets[e]!;
      const n = offsets[e + 1]! - a;
      if (n === 0) continue;
      k.gemm(false, true, n, I, D, 1, X.subarray(a * D), D, wg[e]!, D, 0, G.subarray(a * I), I);
      k.gemm(false, true, n, I, D, 1, X.subarray(a * D), D, wu[e]!, D, 0, U.subarray(a * I), I);
    }
    k.siluMul(G, U, H, P * I);
    const Y = buf('Y', P * D);
    for (let e = 0; e < E; e++) {
      const a = offsets[e]!;
      const n = offsets[e + 1]! - a;
      if (n > 0) k.gemm(false, true, n, D, I, 1, H.subarray(a * I), I, wdn[e]!, I, 0, Y.subarray(a * D), D);
    }
    k.scatterAddRows(Y, rows, gp, out, P, D);
  }
  const result = new Tensor(out, [N, D], 'f32');
  const params = [...w.gate, ...w.up, ...w.down];
  if (!x.requiresGrad && !gates.requiresGrad && !params.some((t) => t.requiresGrad)) return result;

  return attach(result, 'groupedExperts', [x, gates, ...params], (g) => {
    // deferred weight-gradient closures read dY, H, dG, dU and X later: give them own buffers
    const buf = weightGradsDeferred() ? (_: string, n: number): Float32Array => new Float32Array(n) : scratchBuf;
    const dout = dataOf(g);
    const dx = x.requiresGrad ? alloc(N * D) : null;
    const dgates = gates.requiresGrad ? alloc(N * K) : null;
    const wGrads: (Tensor | null)[] = params.map(() => null);
    if (P > 0 && D > 0 && I > 0) {
      const dY = buf('Y', P * D); // dout rows of each pair, unscaled
      k.gatherRows(dout, rows, null, dY, P, D);
      const H = buf('H', P * I);
      k.siluMul(G, U, H, P * I);
      const dH = buf('dH', P * I);
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        const n = offsets[e + 1]! - a;
        if (n > 0) k.gemm(false, false, n, I, D, 1, dY.subarray(a * D), D, wdn[e]!, I, 0, dH.subarray(a * I), I);
      }
      if (dgates) {
        const dp = buf('dgate', P);
        k.rowDot(dH, H, dp, P, I);
        for (let p = 0; p < P; p++) dgates[slots[p]!] = dp[p]!;
      }
      k.scaleRows(dH, gp, dH, P, I);
      k.scaleRows(H, gp, H, P, I);
      // dW2_e = dY_e^T (gate ⊙ H_e): [D, n] x [n, I]
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        const n = offsets[e + 1]! - a;
        const wt = w.down[e]!;
        if (n === 0 || !wt.requiresGrad) continue;
        const dW = (into: Tensor): void => k.gemm(true, false, D, I, n, 1, dY.subarray(a * D), D, H.subarray(a * I), I, 1, into.f32(), I);
        if (!accumulateWeightGrad(wt, dW)) dW((wGrads[2 * E + e] = Tensor.zeros([D, I])));
      }
      const dG = buf('H', P * I); // H is no longer needed
      const dU = buf('dU', P * I);
      k.siluMulBackward(G, U, dH, dG, dU, P * I);
      const X = buf('X', P * D);
      k.gatherRows(xd, rows, null, X, P, D);
      const dX = buf('Y', P * D); // dY is no longer needed
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        const n = offsets[e + 1]! - a;
        if (n === 0) continue;
        for (const [which, wt, dZ] of [[0, w.gate[e]!, dG], [1, w.up[e]!, dU]] as const) {
          if (!wt.requiresGrad) continue;
          const dW = (into: Tensor): void => k.gemm(true, false, I, D, n, 1, dZ.subarray(a * I), I, X.subarray(a * D), D, 1, into.f32(), D);
          if (!accumulateWeightGrad(wt, dW)) dW((wGrads[which * E + e] = Tensor.zeros([I, D])));
        }
        if (dx) {
          k.gemm(false, false, n, D, I, 1, dG.subarray(a * I), I, wg[e]!, D, 0, dX.subarray(a * D), D);
          k.gemm(false, false, n, D, I, 1, dU.subarray(a * I), I, wu[e]!, D, 1, dX.subarray(a * D), D);
        }
      }
      if (dx) k.scatterAddRows(dX, rows, null, dx, P, D);
    }
    return [dx ? new Tensor(dx, [N, D], 'f32') : null, dgates ? new Tensor(dgates, [N, K], 'f32') : null, ...wGrads];
  });
}
