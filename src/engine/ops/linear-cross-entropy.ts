/**
 * The output head and the cross-entropy fused, in row chunks: per-row NLL of
 * softmax(x W^T) against targets, without materialising the [N, V] logits.
 *
 * For next-token and MTP losses (DeepSeek-V3 Eqs. 24-25) the logits are the largest tensor of a
 * training step (bench-small: 2048 x 4096 floats = 32 MiB per head, and as much again for their
 * gradient) and are only ever read by the cross-entropy. Here the rows are processed a chunk at
 * a time (a few MiB of logits, cache-resident): the chunk's logits are computed by one GEMM,
 * the cross-entropy kernel reduces each row to its log-sum-exp and loss, and — when a gradient
 * will be needed — the same buffer is turned in place into softmax − onehot, from which two
 * GEMMs produce the chunk's rows of Gx = (P − Y) W and its contribution to Gw = (P − Y)^T X.
 *
 * The backward then costs almost nothing: with per-row upstream gradients g (the NLL is per
 * row, as crossEntropy 'none'), dX = diag(g) Gx exactly, and when every g_r is the same value c
 * (the loss is a mean over rows, as in training) dW = c Gw. For any other g, dW is recomputed
 * chunk by chunk (a second pass of the GEMMs), so the op is correct for every use and fast for
 * the one that matters. This is the "fused linear cross-entropy" of Liger-Kernel / Apple's
 * Cut Cross-Entropy, on the CPU.
 *
 * Rows whose target is < 0 are ignored (loss 0, no gradient), as in crossEntropy.
 *
 * With `bf16` (BF16 mixed-precision training) the three GEMMs take bfloat16 operands with
 * float32 accumulation: W's bf16 copy of this optimizer step (bf16-weights.ts), X rounded to
 * bf16 once (its bf16 copy is the A operand of the logits and the B operand of Gw), the logits
 * gradient P − Y rounded once per chunk for both of its GEMMs (Kernels.gemmBf16Ab), its bf16
 * bits written by the cross-entropy's own pass over each row (Kernels.crossEntropyGradBf16: the
 * same bits as rounding the float32 P − Y, which is never stored). The cross-entropy itself
 * (log-sum-exp, softmax) stays float32.
 */
import { accumulateWeightGrad, attach, isGradEnabled } from '../autograd.js';
import { dropActivations } from '../active-arena.js';
import { kernels } from '../backend.js';
import { scratchScope } from '../scratch.js';
import { acquireBf16Weight, releaseBf16Weight } from '../bf16-weights.js';
import { Tensor } from '../tensor.js';
import { allocBf16, scratchBf16 } from './bf16-linear.js';
import { as2d } from './matmul.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape, indicesOf } from './util.js';

/** Rows per chunk: about 8 MiB of logits (inside the L3), at least 64 rows for a useful GEMM. */
function chunkRows(vocab: number): number {
  return Math.max(64, Math.min(1024, Math.floor((1 << 21) / Math.max(vocab, 1) / 8) * 8));
}

export interface LinearCrossEntropyOptions {
  /** Rows per chunk (default: about 8 MiB of logits, 64..1024 rows). */
  chunkRows?: number;
  /** BF16 mixed precision: bf16 operands, float32 accumulation (see the module comment). */
  bf16?: boolean;
}

/**
 * Per-row NLL [...] of targets under softmax(x W^T): x [..., D] float32, w [V, D] float32,
 * targets one int32 per row of x. Gradients flow to x and w.
 */
export function linearCrossEntropy(x: Tensor, w: Tensor, targets: Int32Array | Tensor, o: LinearCrossEntropyOptions = {}): Tensor {
  return scratchScope(() => linearCrossEntropyIn(x, w, targets, o)); // the bf16 P − Y chunk is scratch (scratch.ts)
}
function linearCrossEntropyIn(x: Tensor, w: Tensor, targets: Int32Array | Tensor, o: LinearCrossEntropyOptions): Tensor {
  checkF32('linearCrossEntropy', x, 'x');
  checkF32('linearCrossEntropy', w, 'weight');
  if (w.ndim !== 2) throw new Error(`linearCrossEntropy: weight must be [vocab, hidden], got ${fmtShape(w.shape)}`);
  const [V, D] = w.shape as [number, number];
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== D) {
    throw new Error(`linearCrossEntropy: x ${fmtShape(x.shape)} does not match weight [vocab, hidden] ${fmtShape(w.shape)} (last dim of x must be ${D})`);
  }
  if (V === 0) throw new Error('linearCrossEntropy: empty vocabulary');
  const lead = x.shape.slice(0, -1);
  const x2 = as2d(x).contiguous();
  const N = x2.shape[0]!;
  const { data: tg0 } = indicesOf('linearCrossEntropy', targets, 'targets');
  if (tg0.length !== N) throw new Error(`linearCrossEntropy: ${tg0.length} targets for x ${fmtShape(x.shape)} (${N} rows)`);
  for (let r = 0; r < N; r++) {
    if (tg0[r]! >= V) throw new RangeError(`linearCrossEntropy: target ${tg0[r]} at row ${r} is out of range for a vocabulary of ${V}`);
  }
  const tg = tg0.slice(); // the caller may reuse its buffer before backward
  const xd = dataOf(x2);
  const wd = dataOf(w);
  const wantGrad = isGradEnabled() && (x.requiresGrad || w.requiresGrad);
  const k = kernels();
  const R = o.chunkRows ?? chunkRows(V);
  if (!Number.isInteger(R) || R < 1) throw new Error(`linearCrossEntropy: chunkRows must be a positive integer, got ${R}`);
  const loss = alloc(N);
  const lse = alloc(N);
  const buf = allocUninit(Math.min(R, N) * V);
  // unscaled gradients (dloss = 1 on every row): Gx [N, D], Gw [V, D]
  const gx = wantGrad && x.requiresGrad ? allocUninit(N * D) : null;
  const gw = wantGrad && w.requiresGrad ? alloc(V * D) : null;
  const ones = wantGrad && !o.bf16 ? alloc(Math.min(R, N)).fill(1) : null; // (bf16: crossEntropyGradBf16 has dloss 1 built in)
  // bf16: W's bf16 copy (this step), X's bf16 bits (the A operand of the logits, the B operand
  // of Gw) and a chunk of P - Y in bf16 (the A operand of Gx and Gw)
  const wb = o.bf16 ? acquireBf16Weight(w) : null;
  let xb: Uint16Array | null = null;
  if (wb) {
    xb = allocBf16(N * D);
    k.bf16Round(xd, xb, N * D);
  }
  // (its rows 64 bytes longer than V values: Gw reads P - Y transposed, down a column of rows,
  // and rows 2V bytes apart (8 KB at V = 4096) would crowd into a few cache sets)
  const ldp = V + 32;
  const pb = wb && (gx || gw) ? scratchBf16(Math.min(R, N) * ldp) : null; // read only inside this call
  for (let r0 = 0; r0 < N; r0 += R) {
    const rows = Math.min(R, N - r0);
    const logits = buf.subarray(0, rows * V);
    const xc = xd.subarray(r0 * D, (r0 + rows) * D);
    const tc = tg.subarray(r0, r0 + rows);
    const xbc = xb?.subarray(r0 * D, (r0 + rows) * D);
    if (wb) k.gemmBf16Ab(false, true, rows, V, D, 1, xbc!, D, wb, D, 0, logits, V); // logits = X_c W^T
    else k.gemm(false, true, rows, V, D, 1, xc, D, wd, D, 0, logits, V);
    if (pb) {
      // the loss and P - Y's bf16 bits (for both GEMMs) in one pass per row: the bits of
      // crossEntropy + crossEntropyBackward + bf16RoundRows, without the float32 P - Y
      k.crossEntropyGradBf16(logits, tc, loss.subarray(r0, r0 + rows), lse.subarray(r0, r0 + rows), pb, rows, V, ldp);
    } else {
      k.crossEntropy(logits, tc, loss.subarray(r0, r0 + rows), lse.subarray(r0, r0 + rows), rows, V);
      if (!ones) continue;
      k.crossEntropyBackward(logits, tc, lse.subarray(r0, r0 + rows), ones.subarray(0, rows), logits, rows, V); // P - Y, in place
    }
    const gxc = gx?.subarray(r0 * D, (r0 + rows) * D);
    if (gxc && pb) k.gemmBf16Ab(false, false, rows, D, V, 1, pb, ldp, wb!, D, 0, gxc, D);
    else if (gxc) k.gemm(false, false, rows, D, V, 1, logits, V, wd, D, 0, gxc, D);
    if (gw && pb) k.gemmBf16Ab(true, false, V, D, rows, 1, pb, ldp, xbc!, D, 1, gw, D);
    else if (gw) k.gemm(true, false, V, D, rows, 1, logits, V, xc, D, 1, gw, D);
  }
  dropActivations(buf); // the logits of the last chunk: scratch, never read again
  releaseBf16Weight(wb);
  const out = new Tensor(loss, lead, 'f32');
  if (!wantGrad) return out;
  return attach(out, 'linearCrossEntropy', [x, w], (g) => {
    const gd = dataOf(g);
    let uniform = true;
    for (let r = 1; r < N && uniform; r++) if (gd[r] !== gd[0]) uniform = false;
    let dx: Tensor | null = null;
    if (gx) {
      const d = allocUninit(N * D);
      k.scaleRows(gx, gd, d, N, D); // dX_r = g_r (P_r - Y_r) W
      dx = new Tensor(d, x.shape, 'f32');
    }
    let dw: Tensor | null = null;
    if (gw) {
      // dW = Σ_r g_r (P_r - Y_r)^T x_r: c Gw when g is uniform, else recomputed chunk by chunk
      let src = gw;
      if (!uniform) src = recomputeGradW(wb ? null : xd, wd, tg, lse, gd, N, V, D, R, wb, xb);
      else if (gd[0] !== 1) k.scaleRows(gw, Float32Array.of(gd[0]!), gw, 1, V * D); // in place: runs once
      if (!accumulateWeightGrad(w, (into, beta) => {
        const t = into.f32();
        if (beta === 0) t.set(src);
        else k.axpy(1, src, t, src.length);
      })) dw = new Tensor(src, [V, D], 'f32');
    }
    return [dx, dw];
  }, [wb ? null : xd, wd], [lse, gx, gw, xb]); // bf16: x only as its bf16 copy (the float32 x can be dropped)
}

/** Σ_r g_r (softmax(x_r W^T) − onehot(t_r))^T x_r, a chunk of rows at a time. */
function recomputeGradW(xd: Float32Array | null, wd: Float32Array, tg: Int32Array, lse: Float32Array, gd: Float32Array,
  N: number, V: number, D: number, R: number, wb: Uint16Array | null, xb: Uint16Array | null): Float32Array {
  const k = kernels();
  const dw = alloc(V * D);
  const buf = allocUninit(Math.min(R, N) * V);
  for (let r0 = 0; r0 < N; r0 += R) {
    const rows = Math.min(R, N - r0);
    const logits = buf.subarray(0, rows * V);
    const tc = tg.subarray(r0, r0 + rows);
    if (wb && xb) k.gemmBf16Ab(false, true, rows, V, D, 1, xb.subarray(r0 * D, (r0 + rows) * D), D, wb, D, 0, logits, V);
    else k.gemm(false, true, rows, V, D, 1, xd!.subarray(r0 * D, (r0 + rows) * D), D, wd, D, 0, logits, V);
    k.crossEntropyBackward(logits, tc, lse.subarray(r0, r0 + rows), gd.subarray(r0, r0 + rows), logits, rows, V);
    if (xb) k.gemmBf16(true, false, V, D, rows, 1, logits, V, xb.subarray(r0 * D, (r0 + rows) * D), D, 1, dw, D);
    else k.gemm(true, false, V, D, rows, 1, logits, V, xd!.subarray(r0 * D, (r0 + rows) * D), D, 1, dw, D);
  }
  return dw;
}
