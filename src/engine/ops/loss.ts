/**
 * Cross-entropy over a vocabulary, fused (kernels().crossEntropy): no probability matrix is
 * materialised; the backward recomputes softmax rows from the saved log-sum-exp. This is the
 * next-token loss and the MTP loss L^k_MTP = -1/T Σ_i log P^k_i[t_{i+1+k}] (DeepSeek-V3 Eq. 24).
 */
import { attach } from '../autograd.js';
import { kernels } from '../backend.js';
import { Tensor } from '../tensor.js';
import { alloc, allocUninit, checkF32, dataOf, fmtShape, indicesOf } from './util.js';

export type Reduction = 'mean' | 'sum' | 'none';

/**
 * logits [..., V], targets with one int32 per row (Int32Array or i32 tensor of size N = rows).
 * Rows with target < 0 are ignored: they contribute 0 and get no gradient; 'mean' divides by
 * the number of non-ignored rows (and is 0 when every row is ignored). 'none' returns the
 * per-row losses with logits' leading shape.
 */
export function crossEntropy(logits: Tensor, targets: Int32Array | Tensor, reduction: Reduction = 'mean'): Tensor {
  checkF32('crossEntropy', logits, 'logits');
  if (logits.ndim < 1) throw new Error('crossEntropy: logits must be [..., vocab]');
  if (reduction !== 'mean' && reduction !== 'sum' && reduction !== 'none') {
    throw new Error(`crossEntropy: reduction must be 'mean', 'sum' or 'none', got ${String(reduction)}`);
  }
  const V = logits.shape[logits.ndim - 1]!;
  const lead = logits.shape.slice(0, -1);
  const { data: tg0 } = indicesOf('crossEntropy', targets, 'targets');
  const ld = dataOf(logits);
  const rows = V === 0 ? lead.reduce((a, b) => a * b, 1) : ld.length / V;
  if (tg0.length !== rows) {
    throw new Error(`crossEntropy: ${tg0.length} targets for logits ${fmtShape(logits.shape)} (${rows} rows)`);
  }
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const t = tg0[r]!;
    if (t >= V) throw new RangeError(`crossEntropy: target ${t} at row ${r} is out of range for a vocabulary of ${V}`);
    if (t >= 0) count++;
  }
  if (V === 0 && count > 0) throw new Error('crossEntropy: empty vocabulary');
  const tg = tg0.slice(); // the caller may reuse its buffer before backward
  const loss = alloc(rows);
  const lse = alloc(rows);
  if (rows > 0 && V > 0) kernels().crossEntropy(ld, tg, loss, lse, rows, V);
  let out: Tensor;
  if (reduction === 'none') out = new Tensor(loss, lead, 'f32');
  else {
    let s = 0;
    for (let r = 0; r < rows; r++) s += loss[r]!;
    if (reduction === 'mean') s = count > 0 ? s / count : 0;
    out = Tensor.scalar(s);
  }
  if (!logits.requiresGrad) return out;
  const shape = logits.shape;
  return attach(out, 'crossEntropy', [logits], (g) => {
    const dloss = alloc(rows);
    if (reduction === 'none') dloss.set(dataOf(g));
    else dloss.fill(reduction === 'mean' ? (count > 0 ? g.item() / count : 0) : g.item());
    const dl = rows > 0 && V > 0 ? allocUninit(ld.length) : alloc(ld.length); // every row written (ignored rows: 0)
    if (rows > 0 && V > 0) kernels().crossEntropyBackward(ld, tg, lse, dloss, dl, rows, V);
    return [new Tensor(dl, shape, 'f32')];
  });
}
