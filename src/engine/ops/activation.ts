/**
 * SwiGLU (Shazeer 2020), the activation of DeepSeek-V3's FFN experts:
 *   FFN(x) = W2 (silu(W1 x) * W3 x),  silu(z) = z * sigmoid(z),
 * whose elementwise core silu(g) * u is fused on kernels().siluMul / siluMulBackward.
 * With `{ bf16: true }` (BF16 mixed-precision training) the backward keeps g and u as bf16
 * copies (half the bytes), rounded in the forward's own pass (siluMulRound) and widened block
 * by block inside the backward's (siluMulBackwardBf16), as the grouped experts keep theirs.
 */
import { attach, isGradEnabled } from '../autograd.js';
import { allocBf16 } from './bf16-linear.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { allocUninit, checkF32, dataOf, fmtShape, sameShape } from './util.js';

/** silu(g) * u for same-shaped g (gate) and u (up). */
export function swiglu(g: Tensor, u: Tensor): Tensor {
  return swigluWith(g, u);
}

/** swiglu, with `bf16: true` keeping bf16 copies of g and u for the backward (see above). */
export function swigluWith(g: Tensor, u: Tensor, o: { bf16?: boolean } = {}): Tensor {
  checkF32('swiglu', g, 'gate');
  checkF32('swiglu', u, 'up');
  if (!sameShape(g.shape, u.shape)) throw new Error(`swiglu: gate ${fmtShape(g.shape)} and up ${fmtShape(u.shape)} must have the same shape`);
  const gd = dataOf(g);
  const ud = dataOf(u);
  const n = gd.length;
  const y = allocUninit(n); // siluMul / siluMulBackward write every element
  const k = kernels();
  const grad = g.requiresGrad || u.requiresGrad;
  // bf16: g, u rounded to bf16 in the SwiGLU's own pass (siluMulRound)
  const g16 = grad && o.bf16 && isGradEnabled() ? allocBf16(n) : null;
  const u16 = g16 ? allocBf16(n) : null;
  if (n > 0) {
    if (g16) k.siluMulRound(gd, ud, y, g16, u16!, n);
    else k.siluMul(gd, ud, y, n);
  }
  const out = new Tensor(y, g.shape, 'f32');
  if (!grad) return out;
  const [gs, us] = g16 ? [null, null] : [gd, ud]; // what the closure reads of the float32 inputs
  return attach(out, 'swiglu', [g, u], (dy) => {
    const dg = allocUninit(n);
    const du = allocUninit(n);
    if (n > 0) {
      if (g16) k.siluMulBackwardBf16(g16, u16!, dataOf(dy), dg, du, n); // g, u widened block by block
      else k.siluMulBackward(gs!, us!, dataOf(dy), dg, du, n);
    }
    return [g.requiresGrad ? new Tensor(dg, g.shape, 'f32') : null, u.requiresGrad ? new Tensor(du, u.shape, 'f32') : null];
  }, g16 ? [] : [gd, ud], [g16, u16]);
}
