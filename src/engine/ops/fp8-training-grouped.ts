/**
 * The FP8 variant of the grouped MoE FFN op (grouped.ts, DeepSeek-V3 Eq. 12): the same
 * computation, with every GEMM of every expert (routed and shared) on E4M3 operands as the FP8
 * training recipe prescribes for Linear layers (paper §3.3, Figure 6; docs/SPEC.md §2), i.e. each
 * expert projection behaves exactly like `fp8TrainingLinear` (fp8-training-linear.ts) applied to that
 * expert's tokens:
 *   - Fprop  (G = X W1^T, U = X W3^T, Y = H W2^T): activations X and H in 1x128 tiles along the
 *     inner dim (per token, so quantising the whole gathered block row by row is the same as
 *     quantising each expert's slice), each expert's weights in 128x128 blocks;
 *   - Dgrad  (dH = dYs W2, dX = dG W1 + dU W3): output gradients in 1x128 tiles, times the Fprop
 *     codes and block scales of W (appendix B.2);
 *   - Wgrad  (dW2 = dYs^T H, dW1 = dG^T X, dW3 = dU^T X): both operands in 128x1 tiles along the
 *     token dim, the tiles starting at each expert's first token (no tile straddles two
 *     experts: each expert's Wgrad is its own GEMM); X^T is re-quantised from the FP8 copy of x
 *     cached by the forward pass (§3.3.3 / §3.5.2), H from its FP8 copy (H is recomputed from
 *     the SwiGLU inputs G, U as in grouped.ts and quantised again: the same codes).
 * dYs = gate ⊙ dout rows is the routed expert's output gradient (out += gate · Y), and
 * dgate[p] = dout[t] · Y[p] with Y the FP8 Fprop result, kept for that purpose.
 *
 * As in fp8-training-linear.ts, each quantised operand is dequantised to float32 and multiplied
 * by the float32 GEMMs (`gemm`, `gemmBatch`): exactly the products of the E4M3 values with
 * float32 accumulation, within the fixture tolerance of the exact FP8 GEMM (the test oracle
 * test/helpers/fp8-gemm-oracle.ts). Master weights, outputs and gradients stay float32; the gate, the SwiGLU and the scatter are the
 * float32 ones of grouped.ts. Weight gradients go to `.grad` or are deferred inside
 * `deferWeightGrads` (the operands are quantised at once, the GEMM runs later: same result).
 */
import { accumulateWeightGrad, attach, isGradEnabled, weightGradsDeferred } from '../autograd.js';
import { kernels } from '../backend.js';
import { dequantBlocks128Into, dequantTiles1x128Into, quantTiles128x1, quantTiles1x128, type Fp8Blocks, type Fp8Tiles } from '../fp8/quant.js';
import { Tensor } from '../tensor.js';
import { quantizeFp8Activation, quantizeFp8Weight } from './fp8-training-linear.js';
import { GemmBatch, expertPlan, groupedShapes, scratchBuf, type ExpertWeights } from './grouped.js';
import { alloc, allocUninit, dataOf } from './util.js';

/** In place: v [rows, cols] -> its 1x128-tile FP8 values (quantise, dequantise). */
function qdqRows(v: Float32Array, rows: number, cols: number): Float32Array {
  quantTiles1x128(v, 0, cols, rows, cols, null, null, v);
  return v;
}

/** out [rows, cols] = the 1x128-tile FP8 values of v (v unchanged). */
function qdqRowsTo(v: Float32Array, rows: number, cols: number, out: Float32Array): Float32Array {
  quantTiles1x128(v, 0, cols, rows, cols, null, null, out);
  return out;
}

/**
 * out = the 128x1-tile FP8 values of v [rows, cols], tiles restarting at every expert's first
 * row (expert e owns rows offsets[e] .. offsets[e+1]-1); v and out may be the same array.
 */
function qdqColsPerExpert(v: Float32Array, offsets: Int32Array, cols: number, out: Float32Array): Float32Array {
  for (let e = 0; e + 1 < offsets.length; e++) {
    const a = offsets[e]! * cols;
    const n = offsets[e + 1]! - offsets[e]!;
    if (n > 0) quantTiles128x1(v.subarray(a), 0, cols, n, cols, null, null, out.subarray(a));
  }
  return out;
}

/** The dequantised 128x128-block FP8 weights, stacked [count, rows, cols] in a scratch buffer. */
function dequantAll(name: string, qs: readonly Fp8Blocks[]): Float32Array {
  const size = qs.length ? qs[0]!.rows * qs[0]!.cols : 0;
  const out = scratchBuf(name, qs.length * size);
  qs.forEach((q, i) => dequantBlocks128Into(q, out.subarray(i * size, (i + 1) * size)));
  return out;
}

/**
 * FFN output [N, D] of x [N, D] like `groupedExperts` (same arguments and gradients), with the
 * FP8 GEMMs of the training recipe; see the module comment.
 */
export function fp8GroupedExperts(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights): Tensor {
  const { N, D, K, E, I, Is } = groupedShapes(x, gates, topkIdx, w);
  const { offsets, rows, slots } = expertPlan(topkIdx, K, E);
  const P = N * K;
  const k = kernels();
  const gd = dataOf(gates);
  const sh = w.shared ?? null;
  const params = [...w.gate, ...w.up, ...w.down, ...(sh ? [sh.gate, sh.up, sh.down] : [])];
  const recording = isGradEnabled() && (x.requiresGrad || gates.requiresGrad || params.some((t) => t.requiresGrad));
  const gp = new Float32Array(P); // gate of each pair
  for (let p = 0; p < P; p++) gp[p] = gd[slots[p]!]!;
  const routed = P > 0 && D > 0 && I > 0;
  const shared = sh !== null && N * D > 0;

  // X per 1x128 tile: its FP8 copy (codes + scales) is what the backward keeps of x
  const xdq = scratchBuf('f8.x', N * D);
  let xq: Fp8Tiles | null = null;
  if (recording) xq = quantizeFp8Activation(x, xdq);
  else qdqRowsTo(dataOf(x), N, D, xdq);
  // every weight per 128x128 block; the codes are also the Dgrad operands
  const wq = { gate: w.gate.map(quantizeFp8Weight), up: w.up.map(quantizeFp8Weight), down: w.down.map(quantizeFp8Weight) };
  const sq = sh ? { gate: quantizeFp8Weight(sh.gate), up: quantizeFp8Weight(sh.up), down: quantizeFp8Weight(sh.down) } : null;

  // shared expert: its down GEMM (beta 0) writes all of out
  const Gs = shared ? allocUninit(N * Is) : null;
  const Us = shared ? allocUninit(N * Is) : null;
  const out = shared ? allocUninit(N * D) : alloc(N * D);
  if (shared) {
    const ws = dequantAll('f8.ws', [sq!.gate, sq!.up, sq!.down]); // [3, Is, D] (down is [D, Is])
    k.gemm(false, true, N, Is, D, 1, xdq, D, ws, D, 0, Gs!, Is);
    k.gemm(false, true, N, Is, D, 1, xdq, D, ws.subarray(Is * D), D, 0, Us!, Is);
    const Hs = scratchBuf('f8.Hs', N * Is);
    k.siluMul(Gs!, Us!, Hs, N * Is);
    k.gemm(false, true, N, D, Is, 1, qdqRows(Hs, N, Is), Is, ws.subarray(2 * Is * D), Is, 0, out, D);
  }
  // routed experts
  const G = allocUninit(P * I); // kept for the backward (the SwiGLU inputs), as in grouped.ts
  const U = allocUninit(P * I);
  const Y = recording && gates.requiresGrad ? allocUninit(P * D) : scratchBuf('f8.Y', P * D); // kept for dgate
  if (routed) {
    const X = scratchBuf('f8.X', P * D);
    k.gatherRows(xdq, rows, null, X, P, D); // gathered FP8 rows = the experts' 1x128-tile operands
    const w1 = dequantAll('f8.w1', wq.gate);
    const w3 = dequantAll('f8.w3', wq.up);
    const w2 = dequantAll('f8.w2', wq.down);
    const H = scratchBuf('f8.H', P * I);
    const gu = new GemmBatch(); // G_e = X_e W1_e^T, U_e = X_e W3_e^T
    const down = new GemmBatch(); // Y_e = H_e W2_e^T
    for (let e = 0; e < E; e++) {
      const a = offsets[e]!;
      const n = offsets[e + 1]! - a;
      gu.add(n, I, D, X.subarray(a * D), w1.subarray(e * I * D), G.subarray(a * I));
      gu.add(n, I, D, X.subarray(a * D), w3.subarray(e * I * D), U.subarray(a * I));
      down.add(n, D, I, H.subarray(a * I), w2.subarray(e * D * I), Y.subarray(a * D));
    }
    gu.run(false, true, D, D, 0, I);
    k.siluMul(G, U, H, P * I);
    qdqRows(H, P, I);
    down.run(false, true, I, I, 0, D);
    k.scatterAddRows(Y, rows, gp, out, P, D);
  }
  const result = new Tensor(out, [N, D], 'f32');
  if (!recording) return result;

  return attach(result, 'fp8GroupedExperts', [x, gates, ...params], (g) => {
    // Wgrad operands may be read later by deferred closures: give them their own buffers
    const deferring = weightGradsDeferred();
    const buf = deferring ? (_: string, n: number): Float32Array => new Float32Array(n) : scratchBuf;
    const dout = dataOf(g);
    const wGrads: (Tensor | null)[] = params.map(() => null);
    /** dW (+)= A^T B for param i ([m, n]; A [rows, m], B [rows, n]: dequantised 128x1 tiles). */
    const weightGrad = (i: number, m: number, n: number, rowsAB: number, A: Float32Array, B: Float32Array, batch?: GemmBatch): void => {
      const dW = (into: Tensor, beta: 0 | 1): void => {
        if (batch && !deferring) batch.add(m, n, rowsAB, A, B, into.f32(), beta);
        else k.gemm(true, false, m, n, rowsAB, 1, A, m, B, n, beta, into.f32(), n);
      };
      if (!accumulateWeightGrad(params[i]!, dW)) dW((wGrads[i] = Tensor.zeros([m, n])), 1);
    };
    const need = (i: number): boolean => params[i]!.requiresGrad;
    const needAny = (from: number, count: number): boolean => params.slice(from, from + count).some((t) => t.requiresGrad);
    // x's FP8 copy read back (dequantised) for the Wgrad X^T operands
    const xc = needAny(0, 2 * E) || (sh !== null && needAny(3 * E, 2)) ? scratchBuf('f8.xc', N * D) : null;
    if (xc) dequantTiles1x128Into(xq!, xc);
    const dx = x.requiresGrad ? (shared ? allocUninit(N * D) : alloc(N * D)) : null;
    const dgates = gates.requiresGrad ? alloc(N * K) : null;
    if (shared) {
      const S = 3 * E;
      const Hs = scratchBuf('f8.Hs', N * Is);
      k.siluMul(Gs!, Us!, Hs, N * Is);
      qdqRows(Hs, N, Is); // the Fprop operand (its FP8 copy)
      const wsd = dequantAll('f8.ws', [sq!.down]);
      const dHs = scratchBuf('f8.dHs', N * Is);
      k.gemm(false, false, N, Is, D, 1, qdqRowsTo(dout, N, D, scratchBuf('f8.dq', N * D)), D, wsd, Is, 0, dHs, Is);
      if (need(S + 2)) weightGrad(S + 2, D, Is, N, quantCols(dout, N, D, buf('f8.s.dyc', N * D)), quantCols(Hs, N, Is, buf('f8.s.hc', N * Is)));
      const dGs = scratchBuf('f8.dGs', N * Is);
      const dUs = scratchBuf('f8.dUs', N * Is);
      k.siluMulBackward(Gs!, Us!, dHs, dGs, dUs, N * Is);
      if (need(S) || need(S + 1)) {
        const xs = quantCols(xc!, N, D, buf('f8.s.xc', N * D));
        if (need(S)) weightGrad(S, Is, D, N, quantCols(dGs, N, Is, buf('f8.s.gc', N * Is)), xs);
        if (need(S + 1)) weightGrad(S + 1, Is, D, N, quantCols(dUs, N, Is, buf('f8.s.uc', N * Is)), xs);
      }
      if (dx) {
        const ws = dequantAll('f8.ws', [sq!.gate, sq!.up]);
        k.gemm(false, false, N, D, Is, 1, qdqRows(dGs, N, Is), Is, ws, D, 0, dx, D);
        k.gemm(false, false, N, D, Is, 1, qdqRows(dUs, N, Is), Is, ws.subarray(Is * D), D, 1, dx, D);
      }
    }
    if (routed) {
      const dY = buf('f8.dY', P * D); // dout rows of each pair, then gate-scaled
      k.gatherRows(dout, rows, null, dY, P, D);
      if (dgates) {
        const dp = scratchBuf('f8.dgate', P);
        k.rowDot(dY, Y, dp, P, D); // dgate = dout · Y
        for (let p = 0; p < P; p++) dgates[slots[p]!] = dp[p]!;
      }
      k.scaleRows(dY, gp, dY, P, D); // dYs: the down projection's output gradient
      // Dgrad of the down projections: dH_e = q(dYs_e) W2_e
      const dYq = qdqRowsTo(dY, P, D, scratchBuf('f8.dYq', P * D));
      const w2 = dequantAll('f8.w2', wq.down);
      const dH = scratchBuf('f8.dH', P * I);
      const dh = new GemmBatch();
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        dh.add(offsets[e + 1]! - a, I, D, dYq.subarray(a * D), w2.subarray(e * D * I), dH.subarray(a * I));
      }
      dh.run(false, false, D, I, 0, I);
      // Wgrad of the down projections: dW2_e = dYs_e^T H_e, both in 128x1 tiles within expert e
      if (needAny(2 * E, E)) {
        const H = buf('f8.H', P * I);
        k.siluMul(G, U, H, P * I);
        qdqColsPerExpert(qdqRows(H, P, I), offsets, I, H); // H's FP8 copy, re-quantised 128x1
        const dYc = qdqColsPerExpert(dY, offsets, D, deferring ? new Float32Array(P * D) : dYq); // dYq is free now
        const dw2 = new GemmBatch();
        for (let e = 0; e < E; e++) {
          const a = offsets[e]!;
          const n = offsets[e + 1]! - a;
          if (n > 0 && need(2 * E + e)) weightGrad(2 * E + e, D, I, n, dYc.subarray(a * D), H.subarray(a * I), dw2);
        }
        dw2.run(true, false, D, I, 0, I);
      }
      const dG = scratchBuf('f8.dG', P * I);
      const dU = scratchBuf('f8.dU', P * I);
      k.siluMulBackward(G, U, dH, dG, dU, P * I);
      // Wgrad of the gate/up projections: dW1_e = dG_e^T X_e, dW3_e = dU_e^T X_e (128x1 tiles)
      if (needAny(0, 2 * E)) {
        const X = buf('f8.Xc', P * D);
        k.gatherRows(xc!, rows, null, X, P, D);
        qdqColsPerExpert(X, offsets, D, X);
        const dGc = qdqColsPerExpert(dG, offsets, I, buf('f8.dGc', P * I));
        const dUc = qdqColsPerExpert(dU, offsets, I, buf('f8.dUc', P * I));
        const dw13 = new GemmBatch();
        for (let e = 0; e < E; e++) {
          const a = offsets[e]!;
          const n = offsets[e + 1]! - a;
          if (n === 0) continue;
          if (need(e)) weightGrad(e, I, D, n, dGc.subarray(a * I), X.subarray(a * D), dw13);
          if (need(E + e)) weightGrad(E + e, I, D, n, dUc.subarray(a * I), X.subarray(a * D), dw13);
        }
        dw13.run(true, false, I, D, 0, D);
      }
      // Dgrad of the gate/up projections: dX_e = q(dG_e) W1_e + q(dU_e) W3_e
      if (dx) {
        const w1 = dequantAll('f8.w1', wq.gate);
        const w3 = dequantAll('f8.w3', wq.up);
        qdqRows(dG, P, I);
        qdqRows(dU, P, I);
        const dX = scratchBuf('f8.dX', P * D);
        const dxg = new GemmBatch();
        const dxu = new GemmBatch();
        for (let e = 0; e < E; e++) {
          const a = offsets[e]!;
          const n = offsets[e + 1]! - a;
          dxg.add(n, D, I, dG.subarray(a * I), w1.subarray(e * I * D), dX.subarray(a * D));
          dxu.add(n, D, I, dU.subarray(a * I), w3.subarray(e * I * D), dX.subarray(a * D));
        }
        dxg.run(false, false, I, D, 0, D);
        dxu.run(false, false, I, D, 1, D);
        k.scatterAddRows(dX, rows, null, dx, P, D);
      }
    }
    return [dx ? new Tensor(dx, [N, D], 'f32') : null, dgates ? new Tensor(dgates, [N, K], 'f32') : null, ...wGrads];
  });
}

/** out = the 128x1-tile FP8 values of v [rows, cols] (tiles from row 0: one expert's tokens). */
function quantCols(v: Float32Array, rows: number, cols: number, out: Float32Array): Float32Array {
  quantTiles128x1(v, 0, cols, rows, cols, null, null, out);
  return out;
}
