/**
 * topk along a dim: the k largest values in descending order and their int32 indices, ties
 * broken by the lower index (deterministic expert routing, DeepSeek-V3 Eqs. 14 and 16: the Top-K of
 * the affinity scores). NaN ranks below every number. Values are differentiable: the gradient
 * flows back to the selected positions.
 */
import { attach } from '../autograd.js';
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf, empty, fmtShape, normDim } from './util.js';

/** v ranks above w: larger, and any number ranks above NaN. */
function above(v: number, w: number): boolean {
  return v > w || (w !== w && v === v);
}

/** Top-k of each row of a contiguous [rows, n] buffer. */
function topkRows(xd: Float32Array, rows: number, n: number, k: number, vals: Float32Array, idx: Int32Array): void {
  if (k === 0) return;
  if (k <= 64) {
    // insertion into a sorted list of the best k seen so far: O(n) per row for small k
    for (let r = 0; r < rows; r++) {
      const xo = r * n;
      const o = r * k;
      let count = 0;
      for (let j = 0; j < n; j++) {
        const v = xd[xo + j]!;
        if (count === k && !above(v, vals[o + k - 1]!)) continue;
        // insert before the first entry that v ranks above (equal values keep the lower index first)
        let p = count < k ? count : k - 1;
        while (p > 0 && above(v, vals[o + p - 1]!)) p--;
        for (let q = count < k ? count : k - 1; q > p; q--) {
          vals[o + q] = vals[o + q - 1]!;
          idx[o + q] = idx[o + q - 1]!;
        }
        vals[o + p] = v;
        idx[o + p] = j;
        if (count < k) count++;
      }
    }
    return;
  }
  const order = new Int32Array(n);
  for (let r = 0; r < rows; r++) {
    const xo = r * n;
    for (let j = 0; j < n; j++) order[j] = j;
    order.sort((a, b) => {
      const va = xd[xo + a]!;
      const vb = xd[xo + b]!;
      return above(va, vb) ? -1 : above(vb, va) ? 1 : a - b;
    });
    for (let q = 0; q < k; q++) {
      idx[r * k + q] = order[q]!;
      vals[r * k + q] = xd[xo + order[q]!]!;
    }
  }
}

function topkLast(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
  const n = x.shape[x.ndim - 1]!;
  const xd = dataOf(x);
  const rows = n === 0 ? 0 : xd.length / n;
  const shape = x.shape.slice();
  shape[shape.length - 1] = k;
  const vals = alloc(rows * k);
  const idx = new Int32Array(rows * k);
  topkRows(xd, rows, n, k, vals, idx);
  const values = new Tensor(vals, shape, 'f32');
  const indices = new Tensor(idx, shape, 'i32');
  if (!x.requiresGrad) return { values, indices };
  const xShape = x.shape;
  attach(values, 'topk', [x], (g) => {
    const gd = dataOf(g);
    const dx = empty(xShape);
    const o = dx.f32();
    for (let r = 0; r < rows; r++) for (let q = 0; q < k; q++) o[r * n + idx[r * k + q]!] = gd[r * k + q]!;
    return [dx];
  });
  return { values, indices };
}

/** The k largest entries along dim (default last), descending; indices are int32. */
export function topk(x: Tensor, k: number, dim = -1): { values: Tensor; indices: Tensor } {
  checkF32('topk', x);
  if (x.ndim === 0) throw new Error('topk: needs at least one dim, got a scalar');
  const d = normDim('topk', x, dim);
  const n = x.shape[d]!;
  if (!Number.isInteger(k) || k < 0 || k > n) throw new RangeError(`topk: k = ${k} is out of range for dim ${dim} of size ${n} (shape ${fmtShape(x.shape)})`);
  const last = x.ndim - 1;
  if (d === last) return topkLast(x, k);
  const r = topkLast(x.transpose(d, last), k);
  return { values: r.values.transpose(d, last).contiguous(), indices: r.indices.transpose(d, last).contiguous() };
}
