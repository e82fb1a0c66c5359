/**
 * Batched matrix product [..., m, k] @ [..., k, n] with broadcast batch dims, on `kernels().gemm`.
 *
 * Operands are used in place when their last two dims are row-major (stride pattern [ld, 1]) or
 * a transposed view ([1, ld]): the trans flag is passed to gemm instead of copying. Batch dims
 * may have any strides (0 for broadcast). When B has no batch dims and A's batch and row dims
 * collapse into one strided matrix, the whole product is one GEMM of (batch*m) rows.
 * Backward: dA = dC B^T, dB = A^T dC, again via trans flags (no transposed copies).
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor, sumToShape } from '../tensor.js';
import { alloc, broadcastShapes, checkF32, fmtShape, shapeSize } from './util.js';

/** How a matrix (the last two dims of t) is stored: row-major with row stride ld, or transposed. */
export interface MatLayout {
  trans: boolean;
  ld: number;
}

/** The gemm layout of t's last two dims, or null if they need a copy. */
export function matLayout(t: Tensor): MatLayout | null {
  const nd = t.ndim;
  const r = t.shape[nd - 2]!;
  const c = t.shape[nd - 1]!;
  const sr = t.strides[nd - 2]!;
  const sc = t.strides[nd - 1]!;
  if ((c <= 1 || sc === 1) && (r <= 1 || sr >= c)) return { trans: false, ld: r <= 1 ? Math.max(c, 1) : Math.max(sr, 1) };
  if ((r <= 1 || sr === 1) && (c <= 1 || sc >= r)) return { trans: true, ld: c <= 1 ? Math.max(r, 1) : Math.max(sc, 1) };
  return null;
}

/** t with its last two dims swapped (a view, no graph). */
export function tview(t: Tensor): Tensor {
  const nd = t.ndim;
  const shape = t.shape.slice();
  const strides = t.strides.slice();
  shape[nd - 2] = t.shape[nd - 1]!;
  shape[nd - 1] = t.shape[nd - 2]!;
  strides[nd - 2] = t.strides[nd - 1]!;
  strides[nd - 1] = t.strides[nd - 2]!;
  return new Tensor(t.data, shape, t.dtype, strides, t.offset);
}

/**
 * If the batch and row dims of t (row-major layout `l`) collapse into one matrix of
 * (batch*rows) rows with row stride l.ld, that 2-D view; else null.
 */
export function foldRows(t: Tensor, l: MatLayout): Tensor | null {
  if (l.trans) return null;
  const nd = t.ndim;
  let expect = t.shape[nd - 2]! * l.ld;
  for (let i = nd - 3; i >= 0; i--) {
    if (t.shape[i] !== 1 && t.strides[i] !== expect) return null;
    expect *= t.shape[i]!;
  }
  const rows = shapeSize(t.shape.slice(0, nd - 1));
  return new Tensor(t.data, [rows, t.shape[nd - 1]!], 'f32', [l.ld, 1], t.offset);
}

function layoutOrCopy(t: Tensor): [Tensor, MatLayout] {
  const l = matLayout(t);
  if (l) return [t, l];
  const c = t.detach().contiguous();
  return [c, { trans: false, ld: Math.max(c.shape[c.ndim - 1]!, 1) }];
}

/** a @ b without recording a graph (a, b float32, ndim >= 2, inner dims checked). */
export function mmRaw(a0: Tensor, b0: Tensor): Tensor {
  const na = a0.ndim;
  const nb = b0.ndim;
  const m = a0.shape[na - 2]!;
  const k = a0.shape[na - 1]!;
  const n = b0.shape[nb - 1]!;
  const batchA = a0.shape.slice(0, na - 2);
  const batchB = b0.shape.slice(0, nb - 2);
  const batch = broadcastShapes('matmul (batch dims)', batchA, batchB);
  const outShape = [...batch, m, n];
  const out = alloc(shapeSize(outShape));
  if (out.length === 0 || k === 0) return new Tensor(out, outShape, 'f32');
  const [a, la] = layoutOrCopy(a0);
  const [b, lb] = layoutOrCopy(b0);
  const K = kernels();
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const nBatch = shapeSize(batch);
  if (shapeSize(batchB) === 1) {
    const fa = foldRows(a, la);
    if (fa) {
      K.gemm(false, lb.trans, fa.shape[0]!, n, k, 1, ad.subarray(fa.offset), la.ld, bd.subarray(b.offset), lb.ld, 0, out, n);
      return new Tensor(out, outShape, 'f32');
    }
  }
  // one gemm per batch element; batch strides as seen from the broadcast batch shape
  const nd = batch.length;
  const sa = new Array<number>(nd).fill(0);
  const sb = new Array<number>(nd).fill(0);
  for (let i = 0; i < batchA.length; i++) if (batchA[i] !== 1) sa[nd - batchA.length + i] = a.strides[i]!;
  for (let i = 0; i < batchB.length; i++) if (batchB[i] !== 1) sb[nd - batchB.length + i] = b.strides[i]!;
  const idx = new Array<number>(nd).fill(0);
  let ao = a.offset;
  let bo = b.offset;
  const mn = m * n;
  for (let t = 0; t < nBatch; t++) {
    K.gemm(la.trans, lb.trans, m, n, k, 1, ad.subarray(ao), la.ld, bd.subarray(bo), lb.ld, 0, out.subarray(t * mn, (t + 1) * mn), n);
    for (let i = nd - 1; i >= 0; i--) {
      ao += sa[i]!;
      bo += sb[i]!;
      if (++idx[i]! < batch[i]!) break;
      ao -= idx[i]! * sa[i]!;
      bo -= idx[i]! * sb[i]!;
      idx[i] = 0;
    }
  }
  return new Tensor(out, outShape, 'f32');
}

/** A 2-D [rows, cols] view of t's leading dims folded (copying t if they do not fold). */
export function as2d(t: Tensor): Tensor {
  if (t.ndim >= 2) {
    const l = matLayout(t);
    const f = l ? foldRows(t, l) : null;
    if (f) return f;
  }
  const c = t.detach().contiguous();
  const cols = c.shape[c.ndim - 1] ?? 1;
  return new Tensor(c.data, [cols === 0 ? 0 : c.size / cols, cols], 'f32', undefined, c.offset);
}

/** Matrix product with broadcast batch dims: a [..., m, k] @ b [..., k, n] -> [..., m, n]. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkF32('matmul', a, 'a');
  checkF32('matmul', b, 'b');
  if (a.ndim < 2 || b.ndim < 2) {
    throw new Error(`matmul: operands need at least 2 dims, got ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  }
  if (a.shape[a.ndim - 1] !== b.shape[b.ndim - 2]) {
    throw new Error(`matmul: inner dims differ: ${fmtShape(a.shape)} @ ${fmtShape(b.shape)}`);
  }
  let out: Tensor;
  try {
    out = mmRaw(a, b);
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('matmul (batch dims)')) {
      throw new Error(`matmul: batch dims of ${fmtShape(a.shape)} and ${fmtShape(b.shape)} cannot be broadcast together`);
    }
    throw e;
  }
  if (!a.requiresGrad && !b.requiresGrad) return out;
  return attach(out, 'matmul', [a, b], (g) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (a.requiresGrad) ga = sumToShape(mmRaw(g, tview(b)), a.shape); // dA = dC B^T
    if (b.requiresGrad) {
      const nbB = shapeSize(b.shape.slice(0, b.ndim - 2));
      if (nbB === 1 && g.ndim > 2) {
        // B shared by the whole batch: dB = A^T dC with batch and rows folded into one GEMM
        gb = mmRaw(tview(as2d(a)), as2d(g)).reshape(b.shape);
      } else {
        gb = sumToShape(mmRaw(tview(a), g), b.shape); // dB = A^T dC
      }
    }
    return [ga, gb];
  });
}
