/**
 * SwiGLU (Shazeer 2020), the activation of DeepSeek-V3's FFN experts:
 *   FFN(x) = W2 (silu(W1 x) * W3 x),  silu(z) = z * sigmoid(z),
 * whose elementwise core silu(g) * u is fused on kernels().siluMul / siluMulBackward.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { allocUninit, checkF32, dataOf, fmtShape, sameShape } from './util.js';

/** silu(g) * u for same-shaped g (gate) and u (up). */
export function swiglu(g: Tensor, u: Tensor): Tensor {
  checkF32('swiglu', g, 'gate');
  checkF32('swiglu', u, 'up');
  if (!sameShape(g.shape, u.shape)) throw new Error(`swiglu: gate ${fmtShape(g.shape)} and up ${fmtShape(u.shape)} must have the same shape`);
  const gd = dataOf(g);
  const ud = dataOf(u);
  const n = gd.length;
  const y = allocUninit(n); // siluMul / siluMulBackward write every element
  if (n > 0) kernels().siluMul(gd, ud, y, n);
  const out = new Tensor(y, g.shape, 'f32');
  if (!g.requiresGrad && !u.requiresGrad) return out;
  return attach(out, 'swiglu', [g, u], (dy) => {
    const dg = allocUninit(n);
    const du = allocUninit(n);
    if (n > 0) kernels().siluMulBackward(gd, ud, dataOf(dy), dg, du, n);
    return [g.requiresGrad ? new Tensor(dg, g.shape, 'f32') : null, u.requiresGrad ? new Tensor(du, u.shape, 'f32') : null];
  }, [gd, ud]);
}
