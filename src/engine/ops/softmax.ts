/**
 * softmax and logSoftmax along a dim, on the fused row kernels. The last dim runs directly;
 * another dim is moved last (transpose + contiguous copy), normalised, and moved back.
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf, normDim } from './util.js';

function lastDim(name: 'softmax' | 'logSoftmax', x: Tensor): Tensor {
  const xd = dataOf(x);
  const cols = x.ndim === 0 ? 1 : x.shape[x.ndim - 1]!;
  const rows = cols === 0 ? 0 : xd.length / cols;
  const y = alloc(xd.length);
  const K = kernels();
  if (rows > 0) {
    if (name === 'softmax') K.softmax(xd, y, rows, cols);
    else K.logSoftmax(xd, y, rows, cols);
  }
  const out = new Tensor(y, x.shape, 'f32');
  if (!x.requiresGrad) return out;
  return attach(out, name, [x], (g) => {
    const gd = dataOf(g);
    const dx = alloc(y.length);
    const K = kernels();
    if (rows > 0) {
      if (name === 'softmax') K.softmaxBackward(y, gd, dx, rows, cols);
      else K.logSoftmaxBackward(y, gd, dx, rows, cols);
    }
    return [new Tensor(dx, x.shape, 'f32')];
  });
}

function alongDim(name: 'softmax' | 'logSoftmax', x: Tensor, dim: number): Tensor {
  checkF32(name, x);
  if (x.ndim === 0) throw new Error(`${name}: needs at least one dim, got a scalar`);
  const d = normDim(name, x, dim);
  const last = x.ndim - 1;
  if (d === last) return lastDim(name, x);
  // the transposes are differentiable views, so autograd routes the gradient back through them
  return lastDim(name, x.transpose(d, last)).transpose(d, last).contiguous();
}

/** softmax along dim (default last): exp(x - max) / sum(exp(x - max)). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return alongDim('softmax', x, dim);
}

/** log(softmax(x)) along dim (default last), computed as x - logsumexp(x). */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return alongDim('logSoftmax', x, dim);
}
