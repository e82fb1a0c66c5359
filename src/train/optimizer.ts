/**
 * AdamW with decoupled weight decay (Loshchilov & Hutter), as the DeepSeek-V3 report trains
 * with it (section 4.2: β1 = 0.9, β2 = 0.95, weight_decay = 0.1), and global-norm gradient
 * clipping (max norm 1.0).
 *
 * One step for a parameter p with gradient g, at step t (1-based):
 *   p ← p·(1 − lr·wd)                      only for parameters with ≥ 2 dimensions
 *   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
 *   p ← p − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
 * Element arithmetic runs in float64 and is rounded once into the float32 parameter.
 *
 * The moments are kept in float32 (default) or, as in the paper's FP8 recipe (section 3.3.3,
 * "AdamW moments in BF16"), as bfloat16 bit patterns. `state()`/`loadState()` round-trip the
 * moments bit-exactly so a resumed run continues identically.
 */
import { kernels } from '../engine/backend.js';
import { bf16WeightCopyFor, invalidateBf16Weights, markBf16WeightsCurrent } from '../engine/bf16-weights.js';
import { bf16ToF32, f32ToBf16 } from '../engine/dtype.js';
import type { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import { PAPER, TRAIN } from './recipe.js';

export interface AdamWOptions {
  /** Learning rate (may be overridden per step). */
  lr: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
  /** Storage of the first and second moments: 'f32' (default) or 'bf16'. */
  momentDtype?: 'f32' | 'bf16';
}

/** Moments of one parameter (float32, or bfloat16 bits). */
export type Moment = Float32Array | Uint16Array;

/** Serialisable optimizer state: step count and the moments by parameter name. */
export interface AdamWState {
  step: number;
  momentDtype: 'f32' | 'bf16';
  m: Record<string, Moment>;
  v: Record<string, Moment>;
}

/** True for the parameters that get decoupled weight decay (matrices; not norm weights). */
export function decays(p: Tensor): boolean {
  return p.ndim >= 2;
}

function paramName(p: Tensor, i: number): string {
  return p.name ?? `param.${i}`;
}

/** Distinct parameters (a tied parameter listed twice is one parameter with one gradient). */
export function uniqueParams(params: readonly Tensor[]): Tensor[] {
  const seen = new Set<Tensor>();
  const out: Tensor[] = [];
  for (const p of params) {
    if (seen.has(p)) continue;
    seen.add(p);
    out.push(p);
  }
  return out;
}

export class AdamW {
  readonly params: Tensor[];
  readonly names: string[];
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly momentDtype: 'f32' | 'bf16';
  /** Number of steps taken. */
  stepCount = 0;
  private readonly m: Moment[];
  private readonly v: Moment[];

  constructor(params: readonly Tensor[], opts: AdamWOptions) {
    this.params = uniqueParams(params);
    this.names = this.params.map(paramName);
    if (new Set(this.names).size !== this.names.length) throw new DsvError('AdamW: two different parameters share one name');
    for (const p of this.params) {
      if (p.dtype !== 'f32' || !p.isContiguous()) throw new DsvError(`AdamW: parameter ${p.name ?? '?'} must be a contiguous float32 tensor`);
    }
    this.lr = opts.lr;
    [this.beta1, this.beta2] = opts.betas ?? [PAPER.beta1, PAPER.beta2];
    this.eps = opts.eps ?? TRAIN.adamEps;
    this.weightDecay = opts.weightDecay ?? PAPER.weightDecay;
    this.momentDtype = opts.momentDtype ?? TRAIN.momentDtype;
    const alloc = (n: number): Moment => (this.momentDtype === 'bf16' ? new Uint16Array(n) : new Float32Array(n));
    this.m = this.params.map((p) => alloc(p.size));
    this.v = this.params.map((p) => alloc(p.size));
  }

  /**
   * One AdamW step using each parameter's `.grad` (or `grads[name]` when given), each gradient
   * multiplied by `gradScale` first (the clipping coefficient, so clipping costs no extra pass).
   * A parameter with no gradient is skipped entirely (no decay either), as in PyTorch.
   */
  step(lr: number = this.lr, grads?: ReadonlyMap<string, Float32Array>, gradScale = 1): void {
    this.stepCount++;
    const t = this.stepCount;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const c1 = 1 - b1;
    const c2 = 1 - b2;
    const bc1 = 1 - Math.pow(b1, t);
    const bc2 = 1 - Math.pow(b2, t);
    const eps = this.eps;
    const rounded: Tensor[] = []; // weights whose bf16 copy the update rewrote (bf16-weights.ts)
    for (let i = 0; i < this.params.length; i++) {
      const p = this.params[i]!;
      const g = grads ? grads.get(this.names[i]!) : p.grad?.contiguous().f32();
      if (!g) continue;
      const w = p.f32();
      if (g.length !== w.length) throw new DsvError(`AdamW: gradient of ${this.names[i]} has ${g.length} elements, parameter has ${w.length}`);
      const decay = decays(p) ? 1 - lr * this.weightDecay : 1;
      const m = this.m[i]!;
      const v = this.v[i]!;
      // float32 moments: the fused kernel (native, multi-threaded; float64 element arithmetic)
      // a weight with a bf16 copy (BF16 training) gets its new bits in the same pass
      const wb = bf16WeightCopyFor(p) ?? undefined;
      if (m instanceof Float32Array && v instanceof Float32Array) kernels().adamw(w, g, m, v, w.length, gradScale, decay, b1, b2, c1, c2, lr, bc1, bc2, eps, wb);
      else kernels().adamwBf16(w, g, m as Uint16Array, v as Uint16Array, w.length, gradScale, decay, b1, b2, c1, c2, lr, bc1, bc2, eps, wb);
      if (wb) rounded.push(p);
    }
    invalidateBf16Weights(); // every other bf16 weight copy is rounded afresh on its next use (engine/bf16-weights.ts)
    markBf16WeightsCurrent(rounded);
  }

  /** Clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  /** The state (moments are copies). */
  state(): AdamWState {
    const m: Record<string, Moment> = {};
    const v: Record<string, Moment> = {};
    this.names.forEach((n, i) => {
      m[n] = this.m[i]!.slice();
      v[n] = this.v[i]!.slice();
    });
    return { step: this.stepCount, momentDtype: this.momentDtype, m, v };
  }

  /** Restores a state saved by `state()` (names, sizes and moment dtype must match). */
  loadState(s: AdamWState): void {
    if (s.momentDtype !== this.momentDtype) throw new DsvError(`AdamW state: moments are ${s.momentDtype}, optimizer uses ${this.momentDtype}`);
    this.names.forEach((n, i) => {
      for (const [which, src, dst] of [['m', s.m[n], this.m[i]!], ['v', s.v[n], this.v[i]!]] as const) {
        if (!src) throw new DsvError(`AdamW state: no ${which} moment for parameter ${n}`);
        if (src.length !== dst.length || src.constructor !== dst.constructor) {
          throw new DsvError(`AdamW state: ${which} moment of ${n} has ${src.length} ${src.constructor.name} elements, expected ${dst.length} ${dst.constructor.name}`);
        }
        dst.set(src as never);
      }
    });
    if (!Number.isInteger(s.step) || s.step < 0) throw new DsvError(`AdamW state: invalid step ${s.step}`);
    this.stepCount = s.step;
  }
}

/** Global L2 norm (float64) over the gradients of `params`; NaN/Inf propagate. */
export function gradGlobalNorm(params: readonly Tensor[]): number {
  let ss = 0;
  for (const p of uniqueParams(params)) {
    if (!p.grad) continue;
    const g = p.grad.contiguous().f32();
    ss += kernels().sumSquares(g, g.length);
  }
  return Math.sqrt(ss);
}

/** The clipping coefficient min(1, maxNorm / (norm + 1e-6)). */
export function clipCoefficient(norm: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (norm + 1e-6));
}

/**
 * Global-norm clipping: every gradient is multiplied by min(1, maxNorm / (norm + 1e-6)).
 * Returns the norm before clipping. (Gradients are replaced by contiguous scaled copies when
 * they are not plain contiguous float32.)
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const norm = gradGlobalNorm(params);
  const coef = clipCoefficient(norm, maxNorm);
  if (coef < 1) scaleGrads(params, coef);
  return norm;
}

/** Multiplies every gradient by `factor` in place (gradient accumulation divides by n). */
export function scaleGrads(params: readonly Tensor[], factor: number): void {
  for (const p of uniqueParams(params)) {
    if (!p.grad) continue;
    if (!p.grad.isContiguous() || p.grad.dtype !== 'f32') p.grad = p.grad.contiguous().clone();
    const g = p.grad.f32();
    for (let j = 0; j < g.length; j++) g[j] = g[j]! * factor;
  }
}

/** True when every gradient element is finite. */
export function gradsFinite(params: readonly Tensor[]): boolean {
  for (const p of uniqueParams(params)) {
    if (!p.grad) continue;
    const g = p.grad.contiguous().f32();
    for (let j = 0; j < g.length; j++) if (!Number.isFinite(g[j]!)) return false;
  }
  return true;
}
