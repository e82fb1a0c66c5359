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
 *     experts: each expert's Wgrad is its own GEMM); X^T and H^T are re-quantised from the FP8
 *     copies of x and H cached by the forward pass (§3.3.3 / §3.5.2, as fp8TrainingLinear does).
 * dYs = gate ⊙ dout rows is the routed expert's output gradient (out += gate · Y), and
 * dgate[p] = dout[t] · Y[p] with Y the FP8 Fprop result, recomputed in the backward from H's FP8
 * copy by the same GEMM (bit-identical; one extra down-projection GEMM instead of keeping Y
 * [N·K, D] in float32) where the FP8 GEMM runs on bf16 dot products (VDPBF16PS); elsewhere (the
 * float32 micro-kernel: AVX2, scalar) that GEMM costs as much as the float32 one, and the forward's
 * Y is kept instead (`fp8KeepExpertY`; issue 13: AVX2 not slower; the peak-RSS bars are judged on
 * avx512_bf16 CPUs). Same bits either way.
 * Low-precision caching (§3.3.3, "the inputs of the SwiGLU operator in MoE are cached in FP8"):
 * the forward keeps for the backward only FP8 copies (1x128 tiles, 1 byte per element): x's,
 * the SwiGLU inputs G = X W1^T and U = X W3^T of every routed and shared expert, and H's (the
 * down projection's input); the SwiGLU gradient is taken at the dequantised G, U. The forward's
 * own SwiGLU runs on the float32 G, U. Both SwiGLU passes run fused with their FP8 operands
 * (`siluMulOperands`, `swigluBackwardOperands`: H and dG, dU never in float32), and each output
 * gradient's 1x128 and 128x1 operands come from one read of it (`dualOperands`); same bits.
 *
 * The per-expert GEMMs of a projection run as one batch (`fp8MatmulBatch`, Kernels.fp8GemmBatch:
 * one parallel region, one expert per pool thread, like gemmBatchBf16 in grouped.ts), each
 * equal to its own `fp8Matmul`.
 * Every GEMM runs on the codes (`fp8Matmul`, fp8/train-gemm.ts; Kernels.fp8Gemm: bf16 dot
 * products with the N_C = 128 promotion, within float32 summation order of the exact FP8 oracle
 * test/helpers/fp8-gemm-oracle.ts). Master weights, outputs and gradients stay float32; the gate,
 * the SwiGLU and the scatter are the float32 ones of grouped.ts. Weight gradients go to `.grad`
 * or are deferred inside `deferWeightGrads` (the operands are quantised at once, the GEMM runs
 * later: same result).
 */
import { accumulateWeightGrad, attach, isGradEnabled, weightGradsDeferred } from '../autograd.js';
import { kernels } from '../backend.js';
import {
  Fp8GemmLayout, colTilesOperand, dualOperands, fp8Matmul, fp8MatmulBatch, release, requantOperand, rowsOf, scaleOffsets,
  siluMulOperands, swigluBackwardOperands, tilesOperand,
  type Fp8Operand, type Fp8Problem,
} from '../fp8/train-gemm.js';
import { Tensor } from '../tensor.js';
import { quantizeFp8Activation } from './fp8-training-linear.js';
import { expertPlan, groupedShapes, type ExpertWeights } from './grouped-plan.js';
import { scratchBuf, scratchDone } from './grouped-gemm.js';
import { scratchScope } from '../scratch.js';
import { alloc, allocUninit, dataOf } from './util.js';
import { nativeHasBf16Dot } from '../native.js';
import { blocks, dequant, expertCols, expertRuns, gatherOperand, quantizeWeights, weightBuffers } from './fp8-expert-operands.js';

export { expertRuns };

let keepYMode: 'auto' | 'keep' | 'recompute' = 'auto';
/** Test hook: keep the routed experts' forward Y for dgate ('keep'), recompute it ('recompute'), or choose by CPU ('auto'). */
export function setFp8KeepExpertY(mode: 'auto' | 'keep' | 'recompute'): void {
  keepYMode = mode;
}
/** Whether the backward reuses the forward's Y: where the FP8 GEMM has no bf16 dot products (see the header). */
function fp8KeepExpertY(): boolean {
  return keepYMode === 'auto' ? kernels().name === 'native' && !nativeHasBf16Dot() : keepYMode === 'keep';
}

/**
 * FFN output [N, D] of x [N, D] like `groupedExperts` (same arguments and gradients), with the
 * FP8 GEMMs of the training recipe; see the module comment.
 */
export function fp8GroupedExperts(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights): Tensor {
  return scratchScope(() => fp8GroupedExpertsIn(x, gates, topkIdx, w)); // its scratchBuf buffers (scratch.ts)
}
function fp8GroupedExpertsIn(x: Tensor, gates: Tensor, topkIdx: Int32Array, w: ExpertWeights): Tensor {
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
  const expertRows = (e: number): [number, number] => [offsets[e]!, offsets[e + 1]! - offsets[e]!];
  /** One GEMM per expert (first row a, n rows), in expert order. */
  const perExpert = (f: (a: number, n: number, e: number) => Fp8Problem): Fp8Problem[] =>
    Array.from({ length: E }, (_, e) => f(offsets[e]!, offsets[e + 1]! - offsets[e]!, e));

  // X per 1x128 tile: its FP8 copy (codes + scales) is also all the backward keeps of x
  const xt = quantizeFp8Activation(x);
  const xq: Fp8Operand = { codes: xt.codes, scales: xt.scales, layout: Fp8GemmLayout.rowsTiles };
  // every weight per 128x128 block; given back after the forward and made again in backward for
  // Dgrad and the recomputed Y (the master weights do not change within a step: the same codes)
  const { wq, sq } = quantizeWeights(w, sh);

  // shared expert: its down GEMM (beta 0) writes all of out
  let GsQ: Fp8Operand | null = null; // the SwiGLU inputs' FP8 copies (kept for the backward)
  let UsQ: Fp8Operand | null = null;
  let HsQ: Fp8Operand | null = null; // the down projection's input, its FP8 copy (kept for Wgrad)
  const out = shared ? allocUninit(N * D) : alloc(N * D);
  if (shared) {
    const Gs = scratchBuf('f8.Gs', N * Is);
    const Us = scratchBuf('f8.Us', N * Is);
    fp8Matmul(N, Is, D, xq, blocks(sq!.gate), 0, Gs);
    fp8Matmul(N, Is, D, xq, blocks(sq!.up), 0, Us);
    // H = silu(G) ⊙ U as the down projection's FP8 operand, and the FP8 cache of G, U, in one pass
    const sw = siluMulOperands(Gs, Us, N, Is, recording);
    const Hq = sw.h;
    fp8Matmul(N, D, Is, Hq, blocks(sq!.down), 0, out);
    if (recording) HsQ = Hq;
    else release(Hq);
    GsQ = sw.g;
    UsQ = sw.u;
  }
  // routed experts
  let GQ: Fp8Operand | null = null;
  let UQ: Fp8Operand | null = null;
  let HQ: Fp8Operand | null = null;
  // Y kept for dgate (an arena buffer the backward closure holds) or scratch (recomputed there)
  const keptY = routed && recording && gates.requiresGrad && fp8KeepExpertY();
  const Y = keptY ? allocUninit(P * D) : scratchBuf('f8.Y', P * D);
  if (routed) {
    const X = gatherOperand(xq, rows, D); // gathered FP8 rows = the experts' 1x128-tile operands
    const G = scratchBuf('f8.G', P * I);
    const U = scratchBuf('f8.U', P * I);
    // G_e = X_e W1_e^T and U_e = X_e W3_e^T: one batch of 2E GEMMs
    fp8MatmulBatch([
      ...perExpert((a, n, e) => ({ m: n, n: I, k: D, a: rowsOf(X, a, n, D), b: blocks(wq.gate[e]!), beta: 0, c: G.subarray(a * I), ldc: I })),
      ...perExpert((a, n, e) => ({ m: n, n: I, k: D, a: rowsOf(X, a, n, D), b: blocks(wq.up[e]!), beta: 0, c: U.subarray(a * I), ldc: I })),
    ]);
    release(X);
    // H = silu(G) ⊙ U as the down projections' FP8 operand, and the FP8 cache of G, U, in one pass
    const sw = siluMulOperands(G, U, P, I, recording);
    const Hq = sw.h;
    // Y_e = H_e W2_e^T
    fp8MatmulBatch(perExpert((a, n, e) => ({ m: n, n: D, k: I, a: rowsOf(Hq, a, n, I), b: blocks(wq.down[e]!), beta: 0, c: Y.subarray(a * D), ldc: D })));
    if (recording) HQ = Hq;
    else release(Hq);
    k.scatterAddRows(Y, rows, gp, out, P, D);
    GQ = sw.g;
    UQ = sw.u;
  }
  const result = new Tensor(out, [N, D], 'f32');
  release(...weightBuffers(wq, sq)); // not kept from forward to backward
  if (!recording) {
    release(xq);
    return result;
  }

  const xGrad = x.requiresGrad; // the closure must not capture x: its FP8 copy is what is kept
  const gatesGrad = gates.requiresGrad;
  return attach(result, 'fp8GroupedExperts', [x, gates, ...params], (g) => scratchScope(() => {
    const { wq, sq } = quantizeWeights(w, sh); // the forward's block codes again (Dgrad, recomputed Y)
    // Wgrad operands may be read later by deferred closures: give them their own buffers
    const deferring = weightGradsDeferred();
    const dout = dataOf(g);
    const wGrads: (Tensor | null)[] = params.map(() => null);
    const temps: (Fp8Operand | Float32Array)[] = [];
    const keep = <T extends Fp8Operand | Float32Array>(t: T): T => {
      if (!deferring) temps.push(t);
      return t;
    };
    // the weight-gradient GEMMs that run now (not deferred) are collected per projection and
    // run as one batch (`flushWeightGrads`); deferred ones run singly when applied
    let wgBatch: Fp8Problem[] | null = null;
    /** dW (+)= A^T B for param i ([m, n]): A and B the Wgrad operands [m, rowsAB], [n, rowsAB]. */
    const weightGrad = (i: number, m: number, n: number, rowsAB: number, A: Fp8Operand, B: Fp8Operand): void => {
      const dW = (into: Tensor, beta: 0 | 1): void => {
        const p: Fp8Problem = { m, n, k: rowsAB, a: A, b: B, beta, c: into.f32(), ldc: n };
        if (wgBatch) wgBatch.push(p);
        else fp8MatmulBatch([p]);
      };
      if (!accumulateWeightGrad(params[i]!, dW)) dW((wGrads[i] = Tensor.zeros([m, n])), 1);
    };
    const collectWeightGrads = (): void => {
      wgBatch = [];
    };
    const flushWeightGrads = (): void => {
      const ps = wgBatch ?? [];
      wgBatch = null;
      fp8MatmulBatch(ps);
    };
    const need = (i: number): boolean => params[i]!.requiresGrad;
    const needAny = (from: number, count: number): boolean => params.slice(from, from + count).some((t) => t.requiresGrad);
    /**
     * An output gradient's Dgrad operand (1x128 tiles, when `tiles`) and Wgrad operand (128x1
     * tiles within the segments, when `cols`; kept for deferred closures): from one read of it
     * when both are needed (dualOperands, the same bits as tilesOperand and colTilesOperand).
     */
    const gradOperands = (v: Float32Array, rows: number, cols: number, offs: Int32Array | null, tiles: boolean, wcols: boolean): { tiles: Fp8Operand | null; cols: Fp8Operand | null } => {
      if (tiles && wcols) {
        const d = dualOperands(v, rows, cols, offs, deferring);
        return { tiles: d.tiles, cols: keep(d.cols) };
      }
      return { tiles: tiles ? tilesOperand(v, 0, cols, rows, cols) : null, cols: wcols ? keep(colTilesOperand(v, rows, cols, offs, deferring)) : null };
    };
    type GradOps = { tiles: Fp8Operand | null; cols: Fp8Operand | null };
    /**
     * dG, dU = the SwiGLU backward at the dequantised FP8 caches gq, uq of G, U and dh
     * [rows, cols], as gradOperands (Dgrad tiles when `tiles`, Wgrad columns when wg / wu): in one
     * fused pass (swigluBackwardOperands, the same bits) when all four are needed, else through
     * float32 scratch (`tag` names it).
     */
    const swiglu = (gq: Fp8Operand, uq: Fp8Operand, dh: Float32Array, rows: number, cols: number, offs: Int32Array | null,
      tiles: boolean, wg: boolean, wu: boolean, tag: string): { dG: GradOps; dU: GradOps } => {
      if (tiles && wg && wu) {
        const o = swigluBackwardOperands(gq, uq, dh, rows, cols, offs, deferring);
        return { dG: { tiles: o.dG.tiles, cols: keep(o.dG.cols) }, dU: { tiles: o.dU.tiles, cols: keep(o.dU.cols) } };
      }
      const n = rows * cols;
      const G = dequant(gq, rows, cols, scratchBuf(`f8.G${tag}`, n));
      const U = dequant(uq, rows, cols, scratchBuf(`f8.U${tag}`, n));
      const dG = scratchBuf(`f8.dG${tag}`, n);
      const dU = scratchBuf(`f8.dU${tag}`, n);
      k.siluMulBackward(G, U, dh, dG, dU, n);
      const r = { dG: gradOperands(dG, rows, cols, offs, tiles, wg), dU: gradOperands(dU, rows, cols, offs, tiles, wu) };
      scratchDone(`f8.G${tag}`, `f8.U${tag}`, `f8.dG${tag}`, `f8.dU${tag}`);
      return r;
    };
    const dx = xGrad ? (shared ? allocUninit(N * D) : alloc(N * D)) : null;
    const dgates = gatesGrad ? alloc(N * K) : null;
    if (shared) {
      const S = 3 * E;
      const dHs = scratchBuf('f8.dHs', N * Is);
      const dq = gradOperands(dout, N, D, null, true, need(S + 2));
      fp8Matmul(N, Is, D, dq.tiles!, blocks(sq!.down, true), 0, dHs); // dHs = q(dout) W2s
      release(dq.tiles);
      // H's FP8 copy (the Fprop operand) re-quantised 128x1 for Wgrad
      if (need(S + 2)) weightGrad(S + 2, D, Is, N, dq.cols!, keep(requantOperand(HsQ!.codes, HsQ!.scales, N, Is, null, deferring)));
      // the SwiGLU backward at the SwiGLU inputs' FP8 cache, with dGs's and dUs's operands
      const { dG: dGo, dU: dUo } = swiglu(GsQ!, UsQ!, dHs, N, Is, null, dx !== null, need(S), need(S + 1), 's');
      if (need(S) || need(S + 1)) {
        const xs = keep(requantOperand(xq.codes, xq.scales, N, D, null, deferring)); // x's FP8 copy, re-quantised 128x1
        if (need(S)) weightGrad(S, Is, D, N, dGo.cols!, xs);
        if (need(S + 1)) weightGrad(S + 1, Is, D, N, dUo.cols!, xs);
      }
      if (dx) {
        fp8Matmul(N, D, Is, dGo.tiles!, blocks(sq!.gate, true), 0, dx);
        fp8Matmul(N, D, Is, dUo.tiles!, blocks(sq!.up, true), 1, dx);
        release(dGo.tiles, dUo.tiles);
      }
      scratchDone('f8.Gs', 'f8.Us', 'f8.Hs', 'f8.dHs', 'f8.dGs', 'f8.dUs'); // back to the arena now (scratch.ts)
    }
    if (routed) {
      // scratch buffers are reused once their values are in FP8 operands (which deferred
      // weight-gradient closures get fresh, see `keep`)
      const dY = scratchBuf('f8.dY', P * D); // dout rows of each pair, then gate-scaled
      k.gatherRows(dout, rows, null, dY, P, D);
      if (dgates) {
        // dgate = dout · Y: the forward's Y where it was kept (no VDPBF16PS: fp8KeepExpertY), or Y
        // recomputed from H's FP8 copy exactly as the forward computed it, for runs of consecutive
        // experts of about half the pairs at a time (each expert's GEMM and each row's dot product
        // are the same computation in any grouping): Y's scratch is about half of P x D, not a
        // second P x D buffer next to dY (issue 13, peak RSS)
        const dp = scratchBuf('f8.dgate', P);
        if (keptY) k.rowDot(dY, Y, dp, P, D);
        else {
          const runs = expertRuns(offsets, E, Math.ceil(P / 2));
          const Yr = scratchBuf('f8.Y', Math.max(...runs.map(([e0, e1]) => offsets[e1]! - offsets[e0]!)) * D);
          for (const [e0, e1] of runs) {
            const a0 = offsets[e0]!;
            const rowsRun = offsets[e1]! - a0;
            if (rowsRun === 0) continue;
            fp8MatmulBatch(perExpert((a, n, e) => ({ m: n, n: D, k: I, a: rowsOf(HQ!, a, n, I), b: blocks(wq.down[e]!), beta: 0, c: Yr.subarray((a - a0) * D), ldc: D })).slice(e0, e1));
            k.rowDot(dY.subarray(a0 * D), Yr, dp.subarray(a0), rowsRun, D);
          }
        }
        for (let p = 0; p < P; p++) dgates[slots[p]!] = dp[p]!;
        scratchDone('f8.Y');
      }
      k.scaleRows(dY, gp, dY, P, D); // dYs: the down projection's output gradient
      // Dgrad of the down projections: dH_e = q(dYs_e) W2_e
      const dYo = gradOperands(dY, P, D, offsets, true, needAny(2 * E, E));
      const dYq = dYo.tiles!;
      const dH = scratchBuf('f8.dH', P * I);
      fp8MatmulBatch(perExpert((a, n, e) => ({ m: n, n: I, k: D, a: rowsOf(dYq, a, n, D), b: blocks(wq.down[e]!, true), beta: 0, c: dH.subarray(a * I), ldc: I })));
      release(dYq);
      // Wgrad of the down projections: dW2_e = dYs_e^T H_e, both in 128x1 tiles within expert e
      if (needAny(2 * E, E)) {
        const Hc = keep(requantOperand(HQ!.codes, HQ!.scales, P, I, offsets, deferring)); // H's FP8 copy, re-quantised 128x1
        const dYc = dYo.cols!;
        const soD = scaleOffsets(offsets, D);
        const soI = scaleOffsets(offsets, I);
        collectWeightGrads();
        for (let e = 0; e < E; e++) {
          const [, n] = expertRows(e);
          if (n > 0 && need(2 * E + e)) weightGrad(2 * E + e, D, I, n, expertCols(dYc, offsets, soD, e, D), expertCols(Hc, offsets, soI, e, I));
        }
        flushWeightGrads();
      }
      // the SwiGLU backward at the SwiGLU inputs' FP8 cache, with dG's and dU's Dgrad (1x128)
      // and Wgrad (128x1 within each expert) operands
      const { dG: dGo, dU: dUo } = swiglu(GQ!, UQ!, dH, P, I, offsets, dx !== null, needAny(0, E), needAny(E, E), '');
      scratchDone('f8.dH');
      // Wgrad of the gate/up projections: dW1_e = dG_e^T X_e, dW3_e = dU_e^T X_e (128x1 tiles)
      if (needAny(0, 2 * E)) {
        // x's FP8 copy gathered per pair, re-quantised 128x1 within each expert
        const Xg = gatherOperand(xq, rows, D);
        const Xc = keep(requantOperand(Xg.codes, Xg.scales, P, D, offsets, deferring));
        release(Xg);
        scratchDone('f8.dY'); // dY is in its operands now
        const dGc = dGo.cols!;
        const dUc = dUo.cols!;
        const soD = scaleOffsets(offsets, D);
        const soI = scaleOffsets(offsets, I);
        collectWeightGrads();
        for (let e = 0; e < E; e++) {
          const [, n] = expertRows(e);
          if (n === 0) continue;
          if (need(e)) weightGrad(e, I, D, n, expertCols(dGc, offsets, soI, e, I), expertCols(Xc, offsets, soD, e, D));
          if (need(E + e)) weightGrad(E + e, I, D, n, expertCols(dUc, offsets, soI, e, I), expertCols(Xc, offsets, soD, e, D));
        }
        flushWeightGrads();
      }
      // Dgrad of the gate/up projections: dX_e = q(dG_e) W1_e + q(dU_e) W3_e
      if (dx) {
        const dGq = dGo.tiles!;
        const dUq = dUo.tiles!;
        const dX = scratchBuf('f8.Y', P * D); // Y (dgate) is done
        // dX_e = q(dG_e) W1_e (all experts), then += q(dU_e) W3_e
        fp8MatmulBatch([
          ...perExpert((a, n, e) => ({ m: n, n: D, k: I, a: rowsOf(dGq, a, n, I), b: blocks(wq.gate[e]!, true), beta: 0, c: dX.subarray(a * D), ldc: D })),
          ...perExpert((a, n, e) => ({ m: n, n: D, k: I, a: rowsOf(dUq, a, n, I), b: blocks(wq.up[e]!, true), beta: 1, c: dX.subarray(a * D), ldc: D })),
        ]);
        release(dGq, dUq);
        k.scatterAddRows(dX, rows, null, dx, P, D);
      }
    }
    release(...temps, ...weightBuffers(wq, sq)); // Wgrad (deferred or not) reads no weight codes
    return [dx ? new Tensor(dx, [N, D], 'f32') : null, dgates ? new Tensor(dgates, [N, K], 'f32') : null, ...wGrads];
  }), [], [xq, GQ, UQ, HQ, GsQ, UsQ, HsQ].flatMap((q) => (q ? [q.codes, q.scales] : [])));
  // ^ reads only its own FP8 caches (never x or the gates, so a dropped x is reused); they go when its backward ran
}
