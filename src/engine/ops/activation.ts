/**
 * SwiGLU (Shazeer 2020), the activation of DeepSeek-V3's FFN experts:
 *   FFN(x) = W2 (silu(W1 x) * W3 x),  silu(z) = z * sigmoid(z),
 * whose elementwise core silu(g) * u is fused on kernels().siluMul / siluMulBackward.
 * With `{ bf16: true }` (BF16 mixed-precision training) the backward keeps g and u as bf16
 * copies (half the bytes), rounded in the forward's own pass (siluMulRound) and widened block
 * by block inside the backward's (siluMulBackwardBf16), as the grouped experts keep theirs; that
 * pass also writes dG's and dU's bf16 bits, which the gate and up bf16 Linears' backward take
 * as their rounded dY (bf16-linear.ts offerBf16Grad) instead of rounding dY again.
 */
import { attach, isGradEnabled } from '../autograd.js';
import { allocBf16, offerBf16Grad } from './bf16-linear.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { allocUninit, checkF32, dataOf, fmtShape, sameShape } from './util.js';
import { dropActivations } from '../active-arena.js';
import type { OverBuffer } from '../arena.js';

/** silu(g) * u for same-shaped g (gate) and u (up). */
export function swiglu(g: Tensor, u: Tensor): Tensor {
  return swigluWith(g, u);
}

/**
 * What a SwiGLU's backward needs of g and u, recomputed instead of kept (`swigluWith`'s
 * `recompute`): `from` lists the buffers the two functions read (held until the backward ran);
 * `g()` and `u()` must return exactly the forward's g and u, as fresh buffers the backward may
 * overwrite (it writes dU over g's and dG over u's).
 */
export interface SwigluRecompute {
  from: readonly OverBuffer[];
  g: () => Float32Array;
  u: () => Float32Array;
}

/**
 * swiglu, with `bf16: true` keeping bf16 copies of g and u for the backward (see above), or with
 * `recompute` keeping neither (the FP8 dense FFN: g and u recomputed from the FP8 operands their
 * Linears keep anyway, model/mlp.ts; the same bits, so the same gradients).
 */
export function swigluWith(g: Tensor, u: Tensor, o: { bf16?: boolean; recompute?: SwigluRecompute } = {}): Tensor {
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
  const rc = g16 ? undefined : o.recompute;
  if (rc) return attach(out, 'swiglu', [g, u], (dy) => swigluBackwardAgain(rc, n, dy, g, u), rc.from);
  const [gs, us] = g16 ? [null, null] : [gd, ud]; // what the closure reads of the float32 inputs
  return attach(out, 'swiglu', [g, u], (dy) => {
    const dg = allocUninit(n);
    const du = allocUninit(n);
    // bf16: dG and dU also as bf16 bits, written in the same pass, for the backward of the
    // bf16 Linears (gate, up) that produced g and u: their rounded dY (offerBf16Grad)
    const dg16 = g16 && n > 0 && g.requiresGrad ? allocBf16(n) : undefined;
    const du16 = g16 && n > 0 && u.requiresGrad ? allocBf16(n) : undefined;
    if (n > 0) {
      if (g16) k.siluMulBackwardBf16(g16, u16!, dataOf(dy), dg, du, n, dg16, du16); // g, u widened block by block
      else k.siluMulBackward(gs!, us!, dataOf(dy), dg, du, n);
    }
    const dgt = g.requiresGrad ? new Tensor(dg, g.shape, 'f32') : null;
    const dut = u.requiresGrad ? new Tensor(du, u.shape, 'f32') : null;
    if (dgt && dg16) offerBf16Grad(dgt, dg16);
    if (dut && du16) offerBf16Grad(dut, du16);
    return [dgt, dut];
  }, g16 ? [] : [gd, ud], [g16, u16]);
}

/**
 * The SwiGLU backward on recomputed g and u: siluMulBackward reads each element's g, u and dy
 * before it writes that element's dG and dU (native and reference kernels alike), so dU goes
 * over the recomputed g and dG over the recomputed u, and the step needs no more buffers than
 * when g and u were kept.
 */
function swigluBackwardAgain(rc: SwigluRecompute, n: number, dy: Tensor, g: Tensor, u: Tensor): (Tensor | null)[] {
  const ga = rc.g();
  const ua = rc.u();
  if (ga.length !== n || ua.length !== n || ga.buffer === ua.buffer) {
    throw new Error(`swiglu: the recomputed g (${ga.length}) and u (${ua.length}) must be ${n} elements in separate buffers`);
  }
  if (n > 0) kernels().siluMulBackward(ga, ua, dataOf(dy), ua, ga, n); // dG over u, dU over g
  const dgt = g.requiresGrad ? new Tensor(ua, g.shape, 'f32') : null;
  const dut = u.requiresGrad ? new Tensor(ga, u.shape, 'f32') : null;
  dropActivations(dgt ? null : ua, dut ? null : ga);
  return [dgt, dut];
}
