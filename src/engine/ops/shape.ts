/**
 * Concatenation and splitting along a dim. `cat` copies into one contiguous tensor (backward:
 * each input gets its slice of the gradient); `split` returns differentiable slice views (no
 * copy), so the parts can go straight to ops that accept strided operands (attention).
 */
import { attach } from '../autograd.js';
import { Tensor } from '../tensor.js';
import { alloc, checkF32, dataOf, fmtShape, normDim, splitAt } from './util.js';

/** Elements [start, start + len) of a contiguous buffer of `shape` along dim d, copied. */
function narrowCopy(src: Float32Array, shape: readonly number[], d: number, start: number, len: number): Tensor {
  const { outer, len: full, inner } = splitAt(shape, d);
  const outShape = shape.slice();
  outShape[d] = len;
  const block = len * inner;
  const y = alloc(outer * block);
  for (let o = 0; o < outer; o++) {
    const s = (o * full + start) * inner;
    y.set(src.subarray(s, s + block), o * block);
  }
  return new Tensor(y, outShape, 'f32');
}

/** Concatenates tensors along dim; all other dims must match. */
export function cat(tensors: readonly Tensor[], dim: number): Tensor {
  if (!tensors || tensors.length === 0) throw new Error('cat: needs a non-empty array of tensors');
  tensors.forEach((t, i) => checkF32('cat', t, `tensor ${i}`));
  const first = tensors[0]!;
  if (first.ndim === 0) throw new Error('cat: cannot concatenate scalars (0-dim tensors)');
  const d = normDim('cat', first, dim);
  let total = 0;
  for (const t of tensors) {
    const ok = t.ndim === first.ndim && t.shape.every((s, i) => i === d || s === first.shape[i]);
    if (!ok) throw new Error(`cat: shapes ${tensors.map((x) => fmtShape(x.shape)).join(', ')} differ outside dim ${dim}`);
    total += t.shape[d]!;
  }
  const shape = first.shape.slice();
  shape[d] = total;
  const { outer, inner } = splitAt(shape, d);
  const y = alloc(outer * total * inner);
  let start = 0;
  const starts: number[] = [];
  for (const t of tensors) {
    const td = dataOf(t);
    const block = t.shape[d]! * inner;
    for (let o = 0; o < outer; o++) y.set(td.subarray(o * block, (o + 1) * block), (o * total + start) * inner);
    starts.push(start);
    start += t.shape[d]!;
  }
  const out = new Tensor(y, shape, 'f32');
  return attach(out, 'cat', tensors, (g) => {
    const gd = dataOf(g);
    return tensors.map((t, i) => (t.requiresGrad ? narrowCopy(gd, shape, d, starts[i]!, t.shape[d]!) : null));
  }, []); // shapes only
}

/** Splits x along dim into parts of the given sizes (which must sum to x's size there). */
export function split(x: Tensor, sizes: readonly number[], dim: number): Tensor[] {
  checkF32('split', x);
  const d = normDim('split', x, dim);
  let total = 0;
  for (const s of sizes) {
    if (!Number.isInteger(s) || s < 0) throw new Error(`split: invalid part size ${s} in [${sizes.join(', ')}]`);
    total += s;
  }
  if (total !== x.shape[d]) {
    throw new Error(`split: sizes [${sizes.join(', ')}] sum to ${total}, but dim ${dim} of ${fmtShape(x.shape)} has size ${x.shape[d]}`);
  }
  const parts: Tensor[] = [];
  let start = 0;
  for (const s of sizes) {
    parts.push(x.slice(d, start, start + s));
    start += s;
  }
  return parts;
}
