/**
 * Unary elementwise ops: neg, exp, log, sqrt, rsqrt, sigmoid, silu, pow (number exponent),
 * scale (multiply by a number) and roundBf16. Each is one typed-array loop forward and one backward, with no
 * per-element closures; the backward uses the saved input and/or output as cheapest.
 */
import { attach } from '../autograd.js';
import { bf16ToF32, f32ToBf16 } from '../dtype.js';
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf } from './util.js';

/** Forward loop: y[i] = f(x[i]). */
type Fwd = (x: Float32Array, y: Float32Array, n: number, p: number) => void;
/** Backward loop: dx[i] = g[i] * f'(x[i]) using x and/or y = f(x). */
type Bwd = (g: Float32Array, x: Float32Array, y: Float32Array, dx: Float32Array, n: number, p: number) => void;

function unary(name: string, x: Tensor, p: number, fwd: Fwd, bwd: Bwd): Tensor {
  checkF32(name, x);
  const xd = dataOf(x);
  const n = xd.length;
  const y = alloc(n);
  fwd(xd, y, n, p);
  const out = new Tensor(y, x.shape, 'f32');
  if (!x.requiresGrad) return out;
  return attach(out, name, [x], (g) => {
    const dx = alloc(n);
    bwd(dataOf(g), xd, y, dx, n, p);
    return [new Tensor(dx, x.shape, 'f32')];
  });
}

/** -x */
export function neg(x: Tensor): Tensor {
  return unary('neg', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = -x[i]!; },
    (g, _x, _y, dx, n) => { for (let i = 0; i < n; i++) dx[i] = -g[i]!; });
}

/** e^x */
export function exp(x: Tensor): Tensor {
  return unary('exp', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = Math.exp(x[i]!); },
    (g, _x, y, dx, n) => { for (let i = 0; i < n; i++) dx[i] = g[i]! * y[i]!; });
}

/** Natural logarithm. */
export function log(x: Tensor): Tensor {
  return unary('log', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = Math.log(x[i]!); },
    (g, x, _y, dx, n) => { for (let i = 0; i < n; i++) dx[i] = g[i]! / x[i]!; });
}

/** Square root. */
export function sqrt(x: Tensor): Tensor {
  return unary('sqrt', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = Math.sqrt(x[i]!); },
    (g, _x, y, dx, n) => { for (let i = 0; i < n; i++) dx[i] = (0.5 * g[i]!) / y[i]!; });
}

/** 1 / sqrt(x); d/dx = -y^3 / 2. */
export function rsqrt(x: Tensor): Tensor {
  return unary('rsqrt', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = 1 / Math.sqrt(x[i]!); },
    (g, _x, y, dx, n) => {
      for (let i = 0; i < n; i++) {
        const v = y[i]!;
        dx[i] = -0.5 * g[i]! * v * v * v;
      }
    });
}

/** 1 / (1 + e^-x); d/dx = y (1 - y). (DeepSeek-V3's gating affinity s = sigmoid(u^T e), Eq. 15.) */
export function sigmoid(x: Tensor): Tensor {
  return unary('sigmoid', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = 1 / (1 + Math.exp(-x[i]!)); },
    (g, _x, y, dx, n) => {
      for (let i = 0; i < n; i++) {
        const s = y[i]!;
        dx[i] = g[i]! * s * (1 - s);
      }
    });
}

/** x * sigmoid(x); d/dx = s (1 + x (1 - s)). */
export function silu(x: Tensor): Tensor {
  return unary('silu', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = x[i]! / (1 + Math.exp(-x[i]!)); },
    (g, x, _y, dx, n) => {
      for (let i = 0; i < n; i++) {
        const z = x[i]!;
        const s = 1 / (1 + Math.exp(-z));
        dx[i] = g[i]! * s * (1 + z * (1 - s));
      }
    });
}

/** x^p for a number p; d/dx = p x^(p-1). */
export function pow(x: Tensor, p: number): Tensor {
  if (typeof p !== 'number') throw new TypeError(`pow: the exponent must be a number, got ${typeof p}`);
  if (p === 2) {
    return unary('pow', x, p,
      (x, y, n) => { for (let i = 0; i < n; i++) y[i] = x[i]! * x[i]!; },
      (g, x, _y, dx, n) => { for (let i = 0; i < n; i++) dx[i] = 2 * g[i]! * x[i]!; });
  }
  return unary('pow', x, p,
    (x, y, n, p) => { for (let i = 0; i < n; i++) y[i] = Math.pow(x[i]!, p); },
    (g, x, _y, dx, n, p) => { for (let i = 0; i < n; i++) dx[i] = p === 0 ? 0 : g[i]! * p * Math.pow(x[i]!, p - 1); });
}

/** s * x for a number s. */
export function scale(x: Tensor, s: number): Tensor {
  if (typeof s !== 'number') throw new TypeError(`scale: the factor must be a number, got ${typeof s}`);
  return unary('scale', x, s,
    (x, y, n, s) => { for (let i = 0; i < n; i++) y[i] = x[i]! * s; },
    (g, _x, _y, dx, n, s) => { for (let i = 0; i < n; i++) dx[i] = g[i]! * s; });
}

/**
 * x rounded to the nearest bfloat16 (ties to even; f32ToBf16, the rounding gemmBf16 applies to
 * its A operand), as float32 values. Backward: identity (the rounding's straight-through
 * gradient, as bf16 linears treat it).
 */
export function roundBf16(x: Tensor): Tensor {
  return unary('roundBf16', x, 0,
    (x, y, n) => { for (let i = 0; i < n; i++) y[i] = bf16ToF32(f32ToBf16(x[i]!)); },
    (g, _x, _y, dx, n) => { dx.set(g.subarray(0, n)); });
}
