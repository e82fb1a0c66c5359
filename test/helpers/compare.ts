/** Tolerance comparisons of float arrays/tensors with informative failures. */
import assert from 'node:assert/strict';
import { Tensor } from '../../src/engine/tensor.js';

function arr(x: Float32Array | Float64Array | Tensor | ArrayLike<number>): ArrayLike<number> {
  return x instanceof Tensor ? x.toF32Array() : x;
}

/**
 * |a - e| <= rtol * (|e| + rms(e)) + atol for every element (equal non-finite values match).
 * The rms term makes the tolerance relative to the array's magnitude for entries near zero.
 */
export function assertClose(actual: Float32Array | Float64Array | Tensor | ArrayLike<number>,
  expected: Float32Array | Float64Array | Tensor | ArrayLike<number>, rtol = 1e-5, what = 'values', atol = 0): void {
  if (actual instanceof Tensor && expected instanceof Tensor) {
    assert.deepEqual(actual.shape, expected.shape, `${what}: shape ${JSON.stringify(actual.shape)} vs ${JSON.stringify(expected.shape)}`);
  }
  const a = arr(actual);
  const e = arr(expected);
  assert.equal(a.length, e.length, `${what}: ${a.length} vs ${e.length} elements`);
  let ss = 0;
  let n = 0;
  for (let i = 0; i < e.length; i++) {
    if (Number.isFinite(e[i]!)) {
      ss += e[i]! * e[i]!;
      n++;
    }
  }
  const rms = n ? Math.sqrt(ss / n) : 0;
  for (let i = 0; i < e.length; i++) {
    const x = a[i]!;
    const y = e[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) {
      if (Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y))) continue;
      assert.fail(`${what}[${i}]: ${x} vs expected ${y}`);
    }
    const tol = rtol * (Math.abs(y) + rms) + atol;
    if (!(Math.abs(x - y) <= tol)) assert.fail(`${what}[${i}]: ${x} vs expected ${y} (|diff| ${Math.abs(x - y).toExponential(3)} > tol ${tol.toExponential(3)}, rms ${rms.toExponential(3)})`);
  }
}

/**
 * The per-row rule of tolerances.json `fp8_linear` for a [rows, cols] result: for every row,
 * max_j |got - exp| <= tol * max_j |exp| (so a row whose expected values are all zero must be
 * exactly zero). Returns the worst max_j |diff| / max_j |exp| over the rows.
 */
export function assertRowRel(got: Float32Array, exp: Float32Array, cols: number, tol: number, what: string): number {
  assert.equal(got.length, exp.length, `${what}: length`);
  let worst = 0;
  for (let r = 0; r < exp.length / Math.max(cols, 1); r++) {
    let maxE = 0;
    let maxD = 0;
    for (let c = r * cols; c < (r + 1) * cols; c++) {
      maxE = Math.max(maxE, Math.abs(exp[c]!));
      maxD = Math.max(maxD, Math.abs(got[c]! - exp[c]!));
    }
    if (!(maxD <= tol * maxE)) assert.fail(`${what}: row ${r} max|diff| ${maxD} > ${tol} * ${maxE}`);
    if (maxE > 0) worst = Math.max(worst, maxD / maxE);
  }
  return worst;
}

/** The IEEE bit patterns of a float32 array (for bit-for-bit comparisons with assert.deepEqual). */
export const f32Bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** |got - want| <= rtol * max|want| for every element: a tolerance on the array's scale (kernels vs references). */
export function assertCloseToScale(got: Float32Array, want: Float32Array, what: string, rtol = 1e-5): void {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  const tol = rtol * scale + 1e-30;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= tol)) assert.fail(`${what}[${i}]: ${got[i]}, reference ${want[i]} (tol ${tol})`);
  }
}
