/**
 * RMSNorm (Zhang & Sennrich 2019), used by DeepSeek-V3 before every attention and FFN block,
 * after the compressed MLA latents c^Q and c^KV (§4.2), and in the MTP modules (Eq. 21):
 *   y = x / sqrt(mean(x^2) + eps) * w     over the last dim,
 * fused on kernels().rmsNorm; the per-row 1/rms is saved for kernels().rmsNormBackward.
 * With `bf16Out` (a BF16 Linear reads y next, the `bf16` training precision) the same pass also
 * writes y's bf16 bits (kernels().rmsNormBf16) and offers them to that Linear (bf16-linear.ts
 * offerBf16Copy), which then does not round y again; y and the gradients are unchanged.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { dropActivations } from '../active-arena.js';
import type { OverBuffer } from '../arena.js';
import { Tensor } from '../tensor.js';
import { allocBf16, offerBf16Copy } from './bf16-linear.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape } from './util.js';

export interface RmsNormOptions {
  /** Also write y's bf16 bits for the BF16 Linear that reads y next (see the module comment). */
  bf16Out?: boolean;
  /**
   * Recomputation instead of storage (DeepSeek-V3 §3.2.3): the backward gets x's elements again
   * (row-major, contiguous) from `x()`, which must return exactly the values given, recomputed
   * from what `from` lists (held until this backward ran) instead of keeping a float32 copy of x
   * (e.g. of a strided x). The returned array is dropped to the step arena once read.
   */
  recomputeInput?: { from: readonly OverBuffer[]; x: () => Float32Array };
}

/** RMSNorm over the last dim: x [..., D], w [D]. */
export function rmsNorm(x: Tensor, w: Tensor, eps = 1e-6, opts: RmsNormOptions = {}): Tensor {
  checkF32('rmsNorm', x, 'x');
  checkF32('rmsNorm', w, 'weight');
  if (x.ndim < 1) throw new Error('rmsNorm: x must have at least one dim');
  const cols = x.shape[x.ndim - 1]!;
  if (w.ndim !== 1 || w.shape[0] !== cols) {
    throw new Error(`rmsNorm: weight ${fmtShape(w.shape)} does not match the last dim of x ${fmtShape(x.shape)}`);
  }
  if (!(eps >= 0)) throw new Error(`rmsNorm: eps must be a non-negative number, got ${eps}`);
  const xd = dataOf(x);
  const wd = dataOf(w);
  const rows = cols === 0 ? 0 : xd.length / cols;
  const y = allocUninit(xd.length); // the kernel writes every row
  const rstd = alloc(rows);
  const y16 = opts.bf16Out && rows > 0 ? allocBf16(xd.length) : null;
  if (y16) kernels().rmsNormBf16(xd, wd, y, y16, rstd, rows, cols, eps);
  else if (rows > 0) kernels().rmsNorm(xd, wd, y, rstd, rows, cols, eps);
  const out = new Tensor(y, x.shape, 'f32');
  if (y16) offerBf16Copy(out, y16);
  if (!x.requiresGrad && !w.requiresGrad) return out;
  const rc = opts.recomputeInput;
  const copy = xd.buffer !== x.data.buffer;
  const saved = rc ? null : xd; // with recomputation the closure keeps no float32 x
  const n = xd.length;
  const res = attach(out, 'rmsNorm', [x, w], (g) => {
    const xr = rc ? rc.x() : saved!;
    if (xr.length !== n) throw new Error(`rmsNorm: the recomputed input has ${xr.length} elements, not ${n}`);
    const dx = allocUninit(n);
    const dw = alloc(cols); // accumulated into
    if (rows > 0) kernels().rmsNormBackward(xr, wd, rstd, dataOf(g), dx, dw, rows, cols);
    if (rc) dropActivations(xr); // the recomputed input: read
    return [x.requiresGrad ? new Tensor(dx, x.shape, 'f32') : null, w.requiresGrad ? new Tensor(dw, w.shape, 'f32') : null];
  }, rc ? [...rc.from, wd] : [xd, wd], [rstd, copy && !rc ? xd : null]); // not the output; x's copy (strided x) is its own
  if (copy && rc) dropActivations(xd); // not kept: recomputed in backward
  return res;
}

/**
 * rmsNorm(x, w, eps)'s output recomputed later instead of kept (DeepSeek-V3 §3.2.3,
 * "Recomputation of RMSNorm"), as a LinearRecompute / recomputeInput: `x()` runs the forward's
 * kernel (kernels().rmsNorm) on the same x and w again, so it returns the same bits as
 * `rmsNorm(x, w, eps)` without bf16Out; `from` lists x's and w's buffers. Null for a strided x
 * (its contiguous copy would have to be kept: nothing saved).
 */
export function rmsNormAgain(x: Tensor, w: Tensor, eps = 1e-6): { from: readonly OverBuffer[]; x: () => Float32Array } | null {
  checkF32('rmsNormAgain', x, 'x');
  checkF32('rmsNormAgain', w, 'weight');
  if (!x.isContiguous() || !w.isContiguous() || x.ndim < 1) return null;
  const xd = dataOf(x);
  const wd = dataOf(w);
  const cols = x.shape[x.ndim - 1]!;
  if (wd.length !== cols) throw new Error(`rmsNormAgain: weight ${fmtShape(w.shape)} does not match the last dim of x ${fmtShape(x.shape)}`);
  const rows = cols === 0 ? 0 : xd.length / cols;
  return {
    from: [xd, wd],
    x: () => {
      const y = allocUninit(xd.length);
      const rstd = allocUninit(rows);
      if (rows > 0) kernels().rmsNorm(xd, wd, y, rstd, rows, cols, eps);
      dropActivations(rstd);
      return y;
    },
  };
}
