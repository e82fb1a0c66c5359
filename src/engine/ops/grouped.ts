/**
 * The FFN of a DeepSeekMoE layer (DeepSeek-V3 Eq. 12, h'_t - u_t) as ONE differentiable op:
 *
 *   out[t] = S(x_t) + Σ_{j<K} gates[t, j] · F_e(x_t),   e = topkIdx[t, j],
 *   F_e(x) = W2_e (silu(W1_e x) ⊙ W3_e x)   (routed expert e),  S: the optional shared expert(s).
 *
 * Forward (the plan and input checks: grouped-plan.ts; scratch and GEMM batching: grouped-gemm.ts):
 * the shared expert runs on x as is and its down GEMM writes `out`; the (token, slot)
 * pairs are grouped per expert (`expertPlan`), the tokens' rows gathered once into one [N·K, D]
 * block, each expert runs its gate/up GEMMs on its contiguous slice of that block, one SwiGLU
 * kernel covers every row, each expert's down GEMM writes its slice of Y [N·K, D], and one
 * gate-scaled scatter-add adds Y into `out`. Only the gate and up projections (G, U) are kept
 * for the backward; everything else lives in scratch buffers reused across calls.
 *
 * Backward, with dYu = dout rows gathered per pair (unscaled) and H = silu(G) ⊙ U recomputed:
 *   dHu = dYu W2_e           dgate[p] = dHu[p] · H[p]       (= dout[t] · Y[p])
 *   dH = gate_p dHu          dW2_e += dYu^T (gate ⊙ H)       (= (gate ⊙ dYu)^T H)
 *   dG, dU = SwiGLU backward  dW1_e += dG^T X, dW3_e += dU^T X
 *   dX rows = dG W1_e + dU W3_e, scatter-added to dx (which the shared expert's dX started).
 * x thus gets one gradient from the whole FFN, not one per projection that reads it. Weight
 * gradients go straight into the parameters' `.grad` (or are deferred inside
 * `deferWeightGrads`), like `linear`'s.
 *
 * With `{ bf16: true }` (BF16 mixed-precision training) every GEMM above takes bfloat16
 * operands with float32 accumulation: the weights' bf16 copies of this optimizer step
 * (bf16-weights.ts), the A operands read by two GEMMs (X, dY, dG, dU and the shared expert's
 * x, dout, dGs, dUs) rounded to bf16 once (Kernels.gemmBf16Ab / gemmBatchBf16Ab), the others
 * rounded in the GEMM's packing (Kernels.gemmBf16 / gemmBatchBf16), and the B operands of the
 * weight gradients (X, gate ⊙ H) rounded to bf16 first. G and U are kept for the backward as bf16 (half the bytes) and
 * widened back to float32 for the SwiGLU backward; SwiGLU, gates, scatter-adds and gradients
 * stay float32.
 */
import { scratchScope } from '../scratch.js';
import { accumulateWeightGrad, attach, weightGradsDeferred } from '../autograd.js';
import { kernels } from '../backend.js';
import { acquireBf16Weight, releaseBf16Weight } from '../bf16-weights.js';
import { Tensor } from '../tensor.js';
import { alloc, allocUninit, dataOf } from './util.js';
import { dropActivations } from '../active-arena.js';
import type { LinearRecompute } from './linear.js';
import { expertPlan, groupedShapes, type ExpertWeights } from './grouped-plan.js';
import { allocBf16, gemmAny, GemmBatch, scratchBuf, scratchBuf16, scratchDone, type Operand } from './grouped-gemm.js';

/** The B operands of the experts' weights for one pass: float32 data, or (bf16) bf16 bits. */
interface ExpertOperands {
  wg: Operand[];
  wu: Operand[];
  wdn: Operand[];
  sw: { g: Operand; u: Operand; d: Operand } | null;
}

/**
 * FFN output [N, D] of x [N, D]: the shared expert (if any) plus the routed experts with gates
 * [N, K] (differentiable) and the experts chosen per token topkIdx [N·K] (constants). See the
 * module comment.
 */
export function groupedExperts(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights, o: GroupedOptions = {}): Tensor {
  return scratchScope(() => groupedExpertsIn(x, gates, topkIdx, w, o));
}
/**
 * `bf16`: the expert GEMMs on bf16 operands. `inputAgain` (bf16 only): the backward recomputes
 * x (exactly its elements: the post-attention RMSNorm again from the input that norm keeps,
 * §3.2.3 "Recomputation of RMSNorm") instead of keeping float32 x through the step; it only
 * rounds and gathers x, so the gradients are the same bits (issue 13: bf16 peak RSS).
 */
export interface GroupedOptions {
  bf16?: boolean;
  inputAgain?: LinearRecompute | null;
}
function groupedExpertsIn(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights, o: GroupedOptions): Tensor {
  const { N, D, K, E, I, Is } = groupedShapes(x, gates, topkIdx, w);
  const { offsets, rows, slots } = expertPlan(topkIdx, K, E);
  const P = N * K;
  const k = kernels();
  const xd = dataOf(x);
  const gd = dataOf(gates);
  const bf16 = o.bf16 === true;
  const again = bf16 ? (o.inputAgain ?? null) : null;
  const xKept = xd; // what the backward reads of x unless `again`
  const sh = w.shared ?? null;
  // bf16: the weights' bf16 bits, made for the forward's GEMMs and given back after them, then
  // made again for the backward's (bf16-weights.ts: the same bits)
  const weightOperands = (): ExpertOperands => {
    const wdata = (t: Tensor): Operand => (bf16 ? acquireBf16Weight(t) : dataOf(t));
    return { wg: w.gate.map(wdata), wu: w.up.map(wdata), wdn: w.down.map(wdata), sw: sh ? { g: wdata(sh.gate), u: wdata(sh.up), d: wdata(sh.down) } : null };
  };
  const releaseOperands = (o: ExpertOperands): void => {
    if (bf16) releaseBf16Weight(...o.wg, ...o.wu, ...o.wdn, ...(o.sw ? [o.sw.g, o.sw.u, o.sw.d] : []));
  };
  const fw = weightOperands();
  const { wg, wu, wdn, sw } = fw;
  /** the B operand of a weight gradient: as is (float32), or rounded to bf16 into `dst` */
  const asB = (src: Float32Array, dst: () => Uint16Array): Operand => {
    if (!bf16) return src;
    const d = dst();
    k.bf16Round(src, d, src.length);
    return d;
  };
  const gp = new Float32Array(P); // gate of each pair
  for (let p = 0; p < P; p++) gp[p] = gd[slots[p]!]!;
  const routed = P > 0 && D > 0 && I > 0;
  const buf = scratchBuf;
  const params = [...w.gate, ...w.up, ...w.down, ...(sh ? [sh.gate, sh.up, sh.down] : [])];
  const needGrad = x.requiresGrad || gates.requiresGrad || params.some((t) => t.requiresGrad);
  // bf16: what the backward keeps of G, U (and the shared Gs, Us) is their bf16 rounding,
  // written by the SwiGLU's pass (siluMulRound) instead of passes of their own
  const keep16 = bf16 && needGrad;
  /** y = silu(g) * u, and (keep16) g, u rounded to bf16 into fresh buffers */
  const swiglu = (g: Float32Array, u: Float32Array, y: Float32Array, n: number): [Uint16Array | null, Uint16Array | null] => {
    if (!keep16) {
      k.siluMul(g, u, y, n);
      return [null, null];
    }
    const g16 = allocBf16(n);
    const u16 = allocBf16(n);
    k.siluMulRound(g, u, y, g16, u16, n);
    return [g16, u16];
  };
  let [Gs16, Us16, G16, U16]: (Uint16Array | null)[] = [null, null, null, null];

  // shared expert: its down GEMM (beta 0) writes all of out
  const Gs = sw ? (bf16 ? buf('Gs', N * Is) : allocUninit(N * Is)) : null;
  const Us = sw ? (bf16 ? buf('Us', N * Is) : allocUninit(N * Is)) : null;
  const out = sw && N * D > 0 ? allocUninit(N * D) : alloc(N * D);
  if (sw && N * D > 0) {
    const xA = asB(xd, () => scratchBuf16('x16', N * D)); // bf16: rounded once for both GEMMs (the backward's x16 scratch)
    gemmAny(false, true, N, Is, D, xA, D, sw.g, D, 0, Gs!, Is);
    gemmAny(false, true, N, Is, D, xA, D, sw.u, D, 0, Us!, Is);
    const Hs = buf('Hs', N * Is);
    [Gs16, Us16] = swiglu(Gs!, Us!, Hs, N * Is);
    gemmAny(false, true, N, D, Is, Hs, Is, sw.d, Is, 0, out, D);
  }
  // routed experts
  const G = bf16 ? buf('G', P * I) : allocUninit(P * I); // every row belongs to one expert, whose GEMMs write it
  const U = bf16 ? buf('U', P * I) : allocUninit(P * I);
  if (routed) {
    // bf16: X gathered straight into bf16, once for both GEMMs (the backward's X16 scratch)
    let XA: Operand;
    if (bf16) k.gatherRowsBf16(xd, rows, (XA = scratchBuf16('X16', P * D)), P, D);
    else k.gatherRows(xd, rows, null, (XA = buf('X', P * D)), P, D);
    const H = buf('H', P * I);
    const Y = buf('Y', P * D);
    const gu = new GemmBatch(); // G_e = X_e W1_e^T, U_e = X_e W3_e^T
    const down = new GemmBatch(); // Y_e = H_e W2_e^T
    for (let e = 0; e < E; e++) {
      const a = offsets[e]!;
      const n = offsets[e + 1]! - a;
      gu.add(n, I, D, XA.subarray(a * D), wg[e]!, G.subarray(a * I));
      gu.add(n, I, D, XA.subarray(a * D), wu[e]!, U.subarray(a * I));
      down.add(n, D, I, H.subarray(a * I), wdn[e]!, Y.subarray(a * D));
    }
    gu.run(false, true, D, D, 0, I);
    [G16, U16] = swiglu(G, U, H, P * I);
    down.run(false, true, I, I, 0, D);
    k.scatterAddRows(Y, rows, gp, out, P, D);
  }
  releaseOperands(fw);
  const result = new Tensor(out, [N, D], 'f32');
  if (!needGrad) return result;
  if (keep16) {
    // (no SwiGLU ran where there are no rows or no shared expert: empty or absent copies)
    if (!routed) [G16, U16] = [allocBf16(P * I), allocBf16(P * I)];
    if (Gs && !Gs16) [Gs16, Us16] = [allocBf16(N * Is), allocBf16(N * Is)];
  }

  return attach(result, 'groupedExperts', [x, gates, ...params], (g) => scratchScope(() => {
    const bw = weightOperands();
    const { wg, wu, wdn, sw } = bw;
    // deferred weight-gradient closures read dY, H, dG, dU and X later: give them own buffers
    const deferring = weightGradsDeferred();
    const buf = deferring ? (_: string, n: number): Float32Array => new Float32Array(n) : scratchBuf;
    const buf16 = deferring ? (_: string, n: number): Uint16Array => new Uint16Array(n) : scratchBuf16;
    const dout = dataOf(g);
    // bf16: the SwiGLU's recompute and backward read G, U (Gs, Us) from their saved bf16 copies,
    // widened block by block inside the kernels (siluMulBf16, siluMulBackwardBf16)
    const swigluY = (g32: Float32Array | null, u32: Float32Array | null, g16: Uint16Array | null, u16: Uint16Array | null, y: Float32Array, n: number): void => {
      if (g16) k.siluMulBf16(g16, u16!, y, n);
      else k.siluMul(g32!, u32!, y, n);
    };
    /** dg, du of the SwiGLU; (bf16) with their bf16 bits written in the same pass into the buffers
     * `dg16` / `du16` name: the returned A operands of their GEMMs (else dg, du themselves) */
    const swigluBack = (g32: Float32Array | null, u32: Float32Array | null, g16: Uint16Array | null, u16: Uint16Array | null,
      dy: Float32Array, dg: Float32Array, du: Float32Array, n: number, dg16: string, du16: string): [Operand, Operand] => {
      if (g16 && bf16) {
        const [a, b] = [buf16(dg16, n), buf16(du16, n)];
        k.siluMulBackwardBf16(g16, u16!, dy, dg, du, n, a, b);
        return [a, b];
      }
      if (g16) k.siluMulBackwardBf16(g16, u16!, dy, dg, du, n);
      else k.siluMulBackward(g32!, u32!, dy, dg, du, n);
      return [asB(dg, () => buf16(dg16, n)), asB(du, () => buf16(du16, n))];
    };
    /** rows of `src` gathered by expert (the plan's order): as is, or (bf16) rounded straight into bf16 */
    const gathered = (src: Float32Array, name: string, name16: string): Operand => {
      if (!bf16) {
        const d = buf(name, P * D);
        k.gatherRows(src, rows, null, d, P, D);
        return d;
      }
      const d = buf16(name16, P * D);
      k.gatherRowsBf16(src, rows, d, P, D);
      return d;
    };
    const wGrads: (Tensor | null)[] = params.map(() => null);
    /**
     * dW (+)= A^T B for weight param i ([m, n], A [rows, m], B [rows, n]) into its .grad (or a
     * returned gradient): added to `batch` to run with the others, or, when weight gradients are
     * deferred (or no batch is given), computed by its own GEMM whenever its closure runs.
     */
    const weightGrad = (i: number, m: number, n: number, rowsAB: number, A: Operand, B: Operand, batch?: GemmBatch): void => {
      const wt = params[i]!;
      if (!wt.requiresGrad) return;
      // rowsAB > 0 here, so a beta-0 GEMM overwrites a fresh .grad entirely
      const dW = (into: Tensor, beta: 0 | 1): void => {
        if (batch && !deferring) batch.add(m, n, rowsAB, A, B, into.f32(), beta);
        else gemmAny(true, false, m, n, rowsAB, A, m, B, n, beta, into.f32(), n);
      };
      if (!accumulateWeightGrad(wt, dW)) dW((wGrads[i] = Tensor.zeros([m, n])), 1);
    };
    const xd = again ? again.x() : xKept; // x again (see GroupedOptions.inputAgain), or as kept
    if (xd.length !== N * D) throw new Error(`groupedExperts: the recomputed x has ${xd.length} elements, expected ${N * D}`);
    const dx = x.requiresGrad ? (sw && N * D > 0 ? allocUninit(N * D) : alloc(N * D)) : null;
    const dgates = gates.requiresGrad ? alloc(N * K) : null;
    if (sw && N * D > 0) {
      const Hs = buf('Hs', N * Is);
      swigluY(Gs, Us, Gs16, Us16, Hs, N * Is);
      const dHs = buf('dHs', N * Is);
      const doutA = asB(dout, () => buf16('dout16', N * D)); // bf16: each A operand below rounded once for its two GEMMs
      gemmAny(false, false, N, Is, D, doutA, D, sw.d, Is, 0, dHs, Is);
      weightGrad(3 * E + 2, D, Is, N, doutA, asB(Hs, () => buf16('Hs16', N * Is)));
      const dGs = buf('dGs', N * Is);
      const dUs = buf('dUs', N * Is);
      const [dGsA, dUsA] = swigluBack(Gs, Us, Gs16, Us16, dHs, dGs, dUs, N * Is, 'dGs16', 'dUs16');
      const xB = asB(xd, () => buf16('x16', N * D));
      weightGrad(3 * E, Is, D, N, dGsA, xB);
      weightGrad(3 * E + 1, Is, D, N, dUsA, xB);
      if (dx) {
        gemmAny(false, false, N, D, Is, dGsA, Is, sw.g, D, 0, dx, D);
        gemmAny(false, false, N, D, Is, dUsA, Is, sw.u, D, 1, dx, D);
      }
      scratchDone('Hs', 'dHs', 'dout16', 'Hs16', 'dGs', 'dUs', 'x16', 'dGs16', 'dUs16');
    }
    if (routed) {
      const dYA = gathered(dout, 'Y', 'dY16'); // dout rows of each pair, unscaled (bf16: rounded once for dh and dw2)
      const H = buf('H', P * I);
      swigluY(G, U, G16, U16, H, P * I);
      const dH = buf('dH', P * I);
      const dh = new GemmBatch(); // dHu_e = dY_e W2_e
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        dh.add(offsets[e + 1]! - a, I, D, dYA.subarray(a * D), wdn[e]!, dH.subarray(a * I));
      }
      dh.run(false, false, D, I, 0, I);
      if (dgates) {
        const dp = buf('dgate', P);
        k.rowDot(dH, H, dp, P, I);
        for (let p = 0; p < P; p++) dgates[slots[p]!] = dp[p]!;
      }
      k.scaleRows(dH, gp, dH, P, I);
      let HB: Operand = H; // gate ⊙ H: float32, or (bf16) its bf16 bits written by the same pass
      if (bf16) k.scaleRows(H, gp, H, P, I, (HB = buf16('H16', P * I)));
      else k.scaleRows(H, gp, H, P, I);
      // dW2_e = dY_e^T (gate ⊙ H_e): [D, n] x [n, I]
      const dw2 = new GemmBatch();
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        const n = offsets[e + 1]! - a;
        if (n > 0) weightGrad(2 * E + e, D, I, n, dYA.subarray(a * D), HB.subarray(a * I), dw2);
      }
      dw2.run(true, false, D, I, 0, I);
      scratchDone('dY16', 'H16'); // bf16: read by dh and dw2 only
      const dG = buf('H', P * I); // H is no longer needed
      const dU = buf('dU', P * I);
      // bf16: dG, dU rounded once (in the SwiGLU backward's pass) for their Wgrad and Dgrad GEMMs
      const [dGA, dUA] = swigluBack(G, U, G16, U16, dH, dG, dU, P * I, 'dG16', 'dU16');
      scratchDone('dH');
      const XB = gathered(xd, 'X', 'X16');
      const dX = buf('Y', P * D); // dY (float32: its scratch) is no longer needed
      const dw13 = new GemmBatch(); // dW1_e = dG_e^T X_e, dW3_e = dU_e^T X_e
      const dxg = new GemmBatch(); // dX_e = dG_e W1_e ...
      const dxu = new GemmBatch(); // ... + dU_e W3_e
      for (let e = 0; e < E; e++) {
        const a = offsets[e]!;
        const n = offsets[e + 1]! - a;
        if (n === 0) continue;
        weightGrad(e, I, D, n, dGA.subarray(a * I), XB.subarray(a * D), dw13);
        weightGrad(E + e, I, D, n, dUA.subarray(a * I), XB.subarray(a * D), dw13);
        dxg.add(n, D, I, dGA.subarray(a * I), wg[e]!, dX.subarray(a * D));
        dxu.add(n, D, I, dUA.subarray(a * I), wu[e]!, dX.subarray(a * D));
      }
      dw13.run(true, false, I, D, 0, D);
      if (dx) {
        dxg.run(false, false, I, D, 0, D);
        dxu.run(false, false, I, D, 1, D);
        k.scatterAddRows(dX, rows, null, dx, P, D);
      }
    }
    releaseOperands(bw);
    if (again) dropActivations(xd);
    return [dx ? new Tensor(dx, [N, D], 'f32') : null, dgates ? new Tensor(dgates, [N, K], 'f32') : null, ...wGrads];
  }), again ? again.from : [xKept], bf16 ? [G16, U16, Gs16, Us16] : [G, U, Gs, Us]); // its own G, U (bf16: their copies; G, U are scratch); not the gates (gp is a copy) nor the output
}
