/**
 * SwiGLU (Shazeer 2020), the activation of DeepSeek-V3's FFN experts:
 *   FFN(x) = W2 (silu(W1 x) * W3 x),  silu(z) = z * sigmoid(z),
 * whose elementwise core silu(g) * u is fused on kernels().siluMul / siluMulBackward.
 * With `{ bf16: true }` (BF16 mixed-precision training) the backward keeps g and u as bf16
 * copies (half the bytes) and widens them back, as the grouped experts do (ops/grouped.ts).
 */
import { attach, isGradEnabled } from '../autograd.js';
import { dropActivations } from '../arena.js';
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
  if (n > 0) kernels().siluMul(gd, ud, y, n);
  const out = new Tensor(y, g.shape, 'f32');
  if (!g.requiresGrad && !u.requiresGrad) return out;
  const k = kernels();
  const g16 = o.bf16 && isGradEnabled() ? allocBf16(n) : null;
  const u16 = g16 ? allocBf16(n) : null;
  if (g16 && n > 0) {
    k.bf16Round(gd, g16, n);
    k.bf16Round(ud, u16!, n);
  }
  const [gs, us] = g16 ? [null, null] : [gd, ud]; // what the closure reads of the float32 inputs
  return attach(out, 'swiglu', [g, u], (dy) => {
    const dg = allocUninit(n);
    const du = allocUninit(n);
    let gw = gs;
    let uw = us;
    if (g16) {
      gw = allocUninit(n);
      uw = allocUninit(n);
      if (n > 0) {
        k.bf16Widen(g16, gw, n);
        k.bf16Widen(u16!, uw, n);
      }
    }
    if (n > 0) k.siluMulBackward(gw!, uw!, dataOf(dy), dg, du, n);
    if (g16) dropActivations(gw, uw);
    return [g.requiresGrad ? new Tensor(dg, g.shape, 'f32') : null, u.requiresGrad ? new Tensor(du, u.shape, 'f32') : null];
  }, g16 ? [] : [gd, ud], [g16, u16]);
}
