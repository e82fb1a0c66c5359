/**
 * Finite-difference gradient checker.
 *
 * For an op out = fn(...inputs) it compares the autograd gradient of the random projection
 * L = Σ out ⊙ R (R fixed, normal) with central differences (L(x + h) - L(x - h)) / (h+ + h-),
 * where h± are the perturbations actually representable in float32 (fround(x ± eps) - x) and
 * L is accumulated in float64. Outputs that do not depend on the perturbed element are
 * recomputed bit-identically, so the float32 noise is confined to the affected entries.
 * Large inputs are checked at a random subset of positions.
 */
import assert from 'node:assert/strict';
import { backward, customOp, noGrad } from '../../src/engine/autograd.js';
import { Tensor } from '../../src/engine/tensor.js';
import { randData, rng, type Rng } from './random.js';

export interface GradcheckOptions {
  /** Perturbation (default 1e-3). */
  eps?: number;
  /** Relative tolerance per element (default 1e-2). */
  rtol?: number;
  /** Absolute tolerance as a fraction of the largest numeric gradient of the input (default 1e-2). */
  atol?: number;
  /** Positions checked per input at most (default 40). */
  maxPerInput?: number;
  seed?: number;
  name?: string;
}

type Out = Tensor | readonly Tensor[];

function outputs(o: Out): readonly Tensor[] {
  return o instanceof Tensor ? [o] : o;
}

/** L = Σ_k Σ out_k ⊙ R_k in float64. */
function project(outs: readonly Tensor[], rs: readonly Float32Array[]): number {
  let s = 0;
  outs.forEach((o, k) => {
    const d = o.toF32Array();
    const r = rs[k]!;
    for (let i = 0; i < d.length; i++) s += d[i]! * r[i]!;
  });
  return s;
}

function positions(r: Rng, n: number, max: number): number[] {
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  const set = new Set<number>();
  while (set.size < max) set.add(Math.floor(r() * n));
  return [...set].sort((a, b) => a - b);
}

/**
 * Checks d(Σ fn(...inputs) ⊙ R)/d inputs. `inputs` are float32 tensors (their data is copied,
 * they are not modified); fn may return one tensor or several (split).
 */
export function gradcheck(fn: (...xs: Tensor[]) => Out, inputs: readonly Tensor[], opts: GradcheckOptions = {}): void {
  const eps = opts.eps ?? 1e-3;
  const rtol = opts.rtol ?? 1e-2;
  const atol = opts.atol ?? 1e-2;
  const max = opts.maxPerInput ?? 40;
  const r = rng(opts.seed ?? 1234);
  const name = opts.name ?? 'gradcheck';
  const datas = inputs.map((x) => x.toF32Array());
  const params = inputs.map((x, i) => Tensor.param(datas[i]!, x.shape));
  const plain = inputs.map((x, i) => Tensor.fromF32(datas[i]!, x.shape));

  // analytic: one backward from the scalar L = Σ out ⊙ R (a custom op whose gradient is R)
  const outs = outputs(fn(...params));
  const rs = outs.map((o) => randData(r, o.size));
  assert.ok(outs.some((o) => o.requiresGrad), `${name}: no output requires grad`);
  const loss = customOp('projection', outs, (...xs) => Tensor.scalar(project(xs, rs)),
    (g, ...xs) => xs.map((x, k) => Tensor.fromF32(rs[k]!.map((v) => v * g.item()), x.shape)));
  backward(loss);

  const evalL = (): number => noGrad(() => project(outputs(fn(...plain)), rs));
  inputs.forEach((x, i) => {
    const d = datas[i]!;
    const grad = params[i]!.grad?.toF32Array() ?? new Float32Array(x.size);
    const pos = positions(r, x.size, max);
    const numeric: number[] = [];
    for (const p of pos) {
      const orig = d[p]!;
      d[p] = orig + eps;
      const hp = d[p]! - orig;
      const lp = evalL();
      d[p] = orig - eps;
      const hm = orig - d[p]!;
      const lm = evalL();
      d[p] = orig;
      numeric.push((lp - lm) / (hp + hm));
    }
    const scale = Math.max(1e-6, ...numeric.map(Math.abs));
    pos.forEach((p, j) => {
      const a = grad[p]!;
      const n = numeric[j]!;
      const tol = rtol * Math.abs(n) + atol * scale;
      if (!(Math.abs(a - n) <= tol)) {
        assert.fail(`${name}: input ${i} ${JSON.stringify(x.shape)} at flat position ${p}: analytic ${a} vs numeric ${n} (tol ${tol.toExponential(2)})`);
      }
    });
  });
}
