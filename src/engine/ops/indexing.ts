/**
 * Indexing ops: embedding lookup, indexSelect / indexAdd along a dim with a list of indices
 * (the MoE dispatch and combine: token rows gathered per expert, expert outputs added back at
 * their token rows, DeepSeek-V3 Eq. 12), and torch-style gather / scatterAdd with an index
 * tensor. Each is the other's backward.
 */
import { accumulateWeightGrad, attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { bf16ArrayToF32 } from '../dtype.js';
import { Tensor, contiguousStrides } from '../tensor.js';
import { alloc, allocUninit, checkF32, dataOf, empty, fmtShape, indicesOf, normDim, sameShape, shapeSize, splitAt } from './util.js';

function checkRange(op: string, ids: Int32Array, n: number, what: string): void {
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (v < 0 || v >= n) throw new RangeError(`${op}: index ${v} at position ${i} is out of range for ${what} of size ${n}`);
  }
}

/** Rows of weight [V, D] at ids -> [...ids.shape, D]. weight may be bf16 (then not trainable). */
export function embedding(weight: Tensor, ids: Tensor | Int32Array): Tensor {
  if (!(weight instanceof Tensor) || (weight.dtype !== 'f32' && weight.dtype !== 'bf16')) {
    throw new TypeError(`embedding: weight must be a float32 or bf16 Tensor${weight instanceof Tensor ? `, got ${weight.dtype}` : ''}`);
  }
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be [vocab, dim], got ${fmtShape(weight.shape)}`);
  const { data: id, shape: idShape } = indicesOf('embedding', ids, 'ids');
  const V = weight.shape[0]!;
  const D = weight.shape[1]!;
  for (let i = 0; i < id.length; i++) {
    const v = id[i]!;
    if (v < 0 || v >= V) throw new RangeError(`embedding: id ${v} at position ${i} is out of range for a vocabulary of ${V} (weight ${fmtShape(weight.shape)})`);
  }
  const n = id.length;
  const w = weight.strides[1] === 1 || D <= 1 ? weight : weight.detach().contiguous();
  const rs = V <= 1 ? D : w.strides[0]!;
  const dense = w.dtype === 'f32' && rs === D;
  const y = dense ? allocUninit(n * D) : alloc(n * D); // (dense: gatherRows writes every element)
  if (dense) {
    // rows packed [V, D]: one kernel call instead of a typed-array copy per id
    if (n > 0 && D > 0) kernels().gatherRows((w.data as Float32Array).subarray(w.offset, w.offset + V * D), id, null, y, n, D);
  } else if (w.dtype === 'bf16') {
    const bits = w.data as Uint16Array;
    for (let i = 0; i < n; i++) {
      const o = w.offset + id[i]! * rs;
      bf16ArrayToF32(bits.subarray(o, o + D), y.subarray(i * D, (i + 1) * D));
    }
  } else {
    const wd = w.data as Float32Array;
    for (let i = 0; i < n; i++) {
      const o = w.offset + id[i]! * rs;
      y.set(wd.subarray(o, o + D), i * D);
    }
  }
  const out = new Tensor(y, [...idShape, D], 'f32');
  if (weight.dtype !== 'f32' || !weight.requiresGrad) return out;
  const idc = id.slice(); // the caller may reuse its id buffer before backward
  return attach(out, 'embedding', [weight], (g) => {
    // dW: the rows of g scatter-added at the ids, straight into weight.grad when it is a leaf
    const gd = dataOf(g);
    const addRows = (into: Tensor, beta: 0 | 1): void => {
      if (beta === 0) into.f32().fill(0);
      if (n > 0 && D > 0) kernels().scatterAddRows(gd, idc, null, into.f32(), n, D);
    };
    if (accumulateWeightGrad(weight, addRows)) return [null];
    const dw = empty([V, D]);
    addRows(dw, 1);
    return [dw];
  });
}

/** out[o, i, :] = x[o, idx[i], :] along dim (no graph). */
function indexSelectRaw(x: Tensor, d: number, idx: Int32Array): Tensor {
  const { outer, len, inner } = splitAt(x.shape, d);
  const xd = dataOf(x);
  const k = idx.length;
  const shape = x.shape.slice();
  shape[d] = k;
  const y = alloc(outer * k * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < k; i++) {
      const src = (o * len + idx[i]!) * inner;
      y.set(xd.subarray(src, src + inner), (o * k + i) * inner);
    }
  }
  return new Tensor(y, shape, 'f32');
}

/** acc[o, idx[i], :] += src[o, i, :] in place (acc contiguous with acc's shape). */
function indexAddInto(acc: Float32Array, accShape: readonly number[], d: number, idx: Int32Array, src: Float32Array): void {
  const { outer, len, inner } = splitAt(accShape, d);
  const k = idx.length;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < k; i++) {
      const dst = (o * len + idx[i]!) * inner;
      const s = (o * k + i) * inner;
      for (let j = 0; j < inner; j++) acc[dst + j] = acc[dst + j]! + src[s + j]!;
    }
  }
}

/** Slices of x along dim at idx: the result's dim has idx.length entries. */
export function indexSelect(x: Tensor, dim: number, idx: Int32Array): Tensor {
  checkF32('indexSelect', x);
  const d = normDim('indexSelect', x, dim);
  if (!(idx instanceof Int32Array)) throw new TypeError('indexSelect: idx must be an Int32Array');
  checkRange('indexSelect', idx, x.shape[d]!, `dim ${dim}`);
  const ix = idx.slice();
  const out = indexSelectRaw(x, d, ix);
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  return attach(out, 'indexSelect', [x], (g) => {
    const dx = empty(shape);
    indexAddInto(dx.f32(), shape, d, ix, dataOf(g));
    return [dx];
  });
}

/**
 * base + src added at idx along dim: out = base; out[.., idx[i], ..] += src[.., i, ..].
 * src has base's shape except src.shape[dim] = idx.length; repeated indices accumulate.
 */
export function indexAdd(base: Tensor, dim: number, idx: Int32Array, src: Tensor): Tensor {
  checkF32('indexAdd', base, 'base');
  checkF32('indexAdd', src, 'src');
  const d = normDim('indexAdd', base, dim);
  if (!(idx instanceof Int32Array)) throw new TypeError('indexAdd: idx must be an Int32Array');
  const want = base.shape.slice();
  want[d] = idx.length;
  if (!sameShape(src.shape, want)) {
    throw new Error(`indexAdd: src ${fmtShape(src.shape)} must have shape ${fmtShape(want)} (base ${fmtShape(base.shape)} with dim ${dim} of size ${idx.length})`);
  }
  checkRange('indexAdd', idx, base.shape[d]!, `dim ${dim}`);
  const ix = idx.slice();
  const y = dataOf(base).slice();
  indexAddInto(y, base.shape, d, ix, dataOf(src));
  const out = new Tensor(y, base.shape, 'f32');
  if (!base.requiresGrad && !src.requiresGrad) return out;
  return attach(out, 'indexAdd', [base, src], (g) => [base.requiresGrad ? g : null, src.requiresGrad ? indexSelectRaw(g, d, ix) : null]);
}

/**
 * For each element p of idx (shape idxShape): the flat offset into a contiguous tensor of
 * xShape at p's multi-index with coordinate `dim` replaced by idx[p]; calls visit(p, offset).
 * Implemented as two loops: gather copies, scatter accumulates.
 */
function gatherScatter(mode: 'gather' | 'scatter', xd: Float32Array, xShape: readonly number[], dim: number,
  id: Int32Array, idShape: readonly number[], vals: Float32Array): void {
  const nd = xShape.length;
  const xs = contiguousStrides(xShape);
  const inner = idShape[nd - 1]!;
  const rows = inner === 0 ? 0 : id.length / inner;
  const cnt = new Array<number>(nd).fill(0);
  const sd = xs[dim]!;
  const sl = dim === nd - 1 ? 0 : xs[nd - 1]!;
  let base = 0; // offset of the row with coordinate dim taken as 0
  for (let r = 0; r < rows; r++) {
    const p0 = r * inner;
    if (mode === 'gather') for (let j = 0; j < inner; j++) vals[p0 + j] = xd[base + j * sl + id[p0 + j]! * sd]!;
    else {
      for (let j = 0; j < inner; j++) {
        const o = base + j * sl + id[p0 + j]! * sd;
        xd[o] = xd[o]! + vals[p0 + j]!;
      }
    }
    for (let i = nd - 2; i >= 0; i--) {
      const st = i === dim ? 0 : xs[i]!;
      base += st;
      if (++cnt[i]! < idShape[i]!) break;
      base -= cnt[i]! * st;
      cnt[i] = 0;
    }
  }
}

function checkGatherIndex(op: string, x: Tensor, d: number, idShape: readonly number[], id: Int32Array): void {
  if (idShape.length !== x.ndim) throw new Error(`${op}: index ${fmtShape(idShape)} must have as many dims as ${fmtShape(x.shape)}`);
  for (let i = 0; i < x.ndim; i++) {
    if (i !== d && idShape[i]! > x.shape[i]!) throw new Error(`${op}: index ${fmtShape(idShape)} is larger than ${fmtShape(x.shape)} in dim ${i}`);
  }
  checkRange(op, id, x.shape[d]!, `dim ${d}`);
}

/** torch.gather: out[..i..] = x[..idx[..i..] at dim..]; out has idx's shape. */
export function gather(x: Tensor, dim: number, idx: Tensor): Tensor {
  checkF32('gather', x);
  const d = normDim('gather', x, dim);
  const { data: id0, shape: idShape } = indicesOf('gather', idx, 'idx');
  checkGatherIndex('gather', x, d, idShape, id0);
  const id = id0.slice();
  const y = alloc(shapeSize(idShape));
  gatherScatter('gather', dataOf(x), x.shape, d, id, idShape, y);
  const out = new Tensor(y, idShape, 'f32');
  if (!x.requiresGrad) return out;
  const shape = x.shape;
  return attach(out, 'gather', [x], (g) => {
    const dx = empty(shape);
    gatherScatter('scatter', dx.f32(), shape, d, id, idShape, dataOf(g));
    return [dx];
  });
}

/** torch.scatter_add: out = base; out[..idx[p] at dim..] += src[p]; src has idx's shape. */
export function scatterAdd(base: Tensor, dim: number, idx: Tensor, src: Tensor): Tensor {
  checkF32('scatterAdd', base, 'base');
  checkF32('scatterAdd', src, 'src');
  const d = normDim('scatterAdd', base, dim);
  const { data: id0, shape: idShape } = indicesOf('scatterAdd', idx, 'idx');
  if (!sameShape(src.shape, idShape)) throw new Error(`scatterAdd: src ${fmtShape(src.shape)} must have the index's shape ${fmtShape(idShape)}`);
  checkGatherIndex('scatterAdd', base, d, idShape, id0);
  const id = id0.slice();
  const y = dataOf(base).slice();
  gatherScatter('scatter', y, base.shape, d, id, idShape, dataOf(src));
  const out = new Tensor(y, base.shape, 'f32');
  if (!base.requiresGrad && !src.requiresGrad) return out;
  return attach(out, 'scatterAdd', [base, src], (g) => {
    let gs: Tensor | null = null;
    if (src.requiresGrad) {
      const v = alloc(id.length);
      gatherScatter('gather', dataOf(g), base.shape, d, id, idShape, v);
      gs = new Tensor(v, idShape, 'f32');
    }
    return [base.requiresGrad ? g : null, gs];
  });
}
