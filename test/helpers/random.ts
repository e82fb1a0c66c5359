/** Seeded random numbers and tensors for tests (mulberry32 + Box-Muller). */
import { Tensor, shapeSize, type Shape } from '../../src/engine/tensor.js';

export type Rng = () => number;

/** A uniform [0, 1) generator from a 32-bit seed. */
export function rng(seed: number): Rng {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal sample. */
export function randn(r: Rng): number {
  const u = Math.max(r(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
}

/** Normal values times `scale`, as a Float32Array. */
export function randData(r: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = randn(r) * scale;
  return a;
}

/** A random float32 tensor (normal * scale); a parameter (requiresGrad) when `param`. */
export function randTensor(r: Rng, shape: Shape, scale = 1, param = false): Tensor {
  const d = randData(r, shapeSize(shape), scale);
  return param ? Tensor.param(d, shape) : Tensor.fromF32(d, shape);
}

/** Uniform values in [lo, hi). */
export function randUniform(r: Rng, shape: Shape, lo: number, hi: number): Tensor {
  const n = shapeSize(shape);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return Tensor.fromF32(a, shape);
}

/** Integers in [0, n). */
export function randInts(r: Rng, count: number, n: number): Int32Array {
  const a = new Int32Array(count);
  for (let i = 0; i < count; i++) a[i] = Math.floor(r() * n);
  return a;
}

/** A random permutation of 0..n-1 scaled into well-separated values (for max/topk checks). */
export function distinctValues(r: Rng, n: number, gap = 0.05): Float32Array {
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  return Float32Array.from(perm, (p) => (p - n / 2) * gap);
}
