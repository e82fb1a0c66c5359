/**
 * Reference bfloat16 conversions (Kernels.bf16Round / Kernels.bf16Widen): plain loops over
 * dtype.ts's f32ToBf16 (round to nearest even, NaN kept a quiet NaN, subnormals kept) and the
 * exact widening. The native copies (native/src/isa/bf16_convert.c) must match them bit for bit.
 * Also the fused bf16 forms siluMulRound / siluMulBf16 / siluMulBackwardBf16, rmsNormBf16, gatherRowsBf16 and
 * crossEntropyGradBf16: rows.ts's siluMul / siluMulBackward / rmsNorm / crossEntropy(Backward) and gather.ts's gatherRows composed with these
 * conversions (native: native/src/elementwise_napi.c, native/src/rowops_napi.c, native/src/fused_napi.c).
 */
import { f32ToBf16 } from '../dtype.js';
import { crossEntropy, crossEntropyBackward, rmsNorm, siluMul, siluMulBackward } from './rows.js';
import { gatherRows } from './gather.js';

function check(name: string, a: { length: number }, an: string, b: { length: number }, bn: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`${name}: n must be a non-negative integer, got ${n}`);
  if (a.length < n) throw new RangeError(`${name}: ${an} has ${a.length} elements, the call needs ${n}`);
  if (b.length < n) throw new RangeError(`${name}: ${bn} has ${b.length} elements, the call needs ${n}`);
}

/** out[i] = bf16 bits of x[i] (round to nearest even) for i < n. */
export function bf16Round(x: Float32Array, out: Uint16Array, n: number): void {
  check('bf16Round', x, 'x', out, 'out', n);
  for (let i = 0; i < n; i++) out[i] = f32ToBf16(x[i]!);
}

/** out[r * ldo + c] = bf16 bits of x[r * cols + c] for r < rows, c < cols (out's padding untouched). */
export function bf16RoundRows(x: Float32Array, out: Uint16Array, rows: number, cols: number, ldo: number): void {
  for (const [v, name] of [[rows, 'rows'], [cols, 'cols'], [ldo, 'ldo']] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`bf16RoundRows: ${name} must be a non-negative integer, got ${v}`);
  }
  if (ldo < cols) throw new RangeError(`bf16RoundRows: ldo (${ldo}) must be >= cols (${cols})`);
  if (x.length < rows * cols) throw new RangeError(`bf16RoundRows: x has ${x.length} elements, the call needs ${rows * cols}`);
  const need = rows > 0 && cols > 0 ? (rows - 1) * ldo + cols : 0;
  if (out.length < need) throw new RangeError(`bf16RoundRows: out has ${out.length} elements, the call needs ${need}`);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * ldo + c] = f32ToBf16(x[r * cols + c]!);
}

/** out[i] = float32 value of the bf16 bits h[i] for i < n (exact). */
export function bf16Widen(h: Uint16Array, out: Float32Array, n: number): void {
  check('bf16Widen', h, 'h', out, 'out', n);
  const o32 = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i++) o32[i] = h[i]! << 16;
}

/** Kernels.siluMulRound: siluMul(g, u, y), then bf16Round of g into g16 and of u into u16. */
export function siluMulRound(g: Float32Array, u: Float32Array, y: Float32Array, g16: Uint16Array, u16: Uint16Array, n: number): void {
  check('siluMulRound', g, 'g', u, 'u', n);
  check('siluMulRound', y, 'y', g16, 'g16', n);
  check('siluMulRound', u16, 'u16', u16, 'u16', n);
  siluMul(g, u, y, n);
  bf16Round(g, g16, n);
  bf16Round(u, u16, n);
}

/** Kernels.rmsNormBf16: rmsNorm(x, w, y, rstd), then bf16Round of y into y16. */
export function rmsNormBf16(x: Float32Array, w: Float32Array, y: Float32Array, y16: Uint16Array, rstd: Float32Array, rows: number, cols: number, eps: number): void {
  const n = rows * cols;
  check('rmsNormBf16', x, 'x', y16, 'y16', n);
  check('rmsNormBf16', y, 'y', y16, 'y16', n);
  if (w.length < cols || rstd.length < rows) throw new RangeError(`rmsNormBf16: w needs ${cols} and rstd ${rows} elements, got ${w.length} and ${rstd.length}`);
  rmsNorm(x, w, y, rstd, rows, cols, eps);
  bf16Round(y, y16, n);
}

/** Kernels.siluMulBackwardBf16: bf16Widen of g16 and u16, then siluMulBackward (and bf16Round of dg, du into dg16, du16 when given). */
export function siluMulBackwardBf16(g16: Uint16Array, u16: Uint16Array, dy: Float32Array, dg: Float32Array, du: Float32Array, n: number,
  dg16?: Uint16Array, du16?: Uint16Array): void {
  check('siluMulBackwardBf16', g16, 'g16', u16, 'u16', n);
  check('siluMulBackwardBf16', dy, 'dy', dg, 'dg', n);
  check('siluMulBackwardBf16', du, 'du', du, 'du', n);
  if (dg16) check('siluMulBackwardBf16', dg16, 'dg16', dg16, 'dg16', n);
  if (du16) check('siluMulBackwardBf16', du16, 'du16', du16, 'du16', n);
  const g = new Float32Array(n);
  const u = new Float32Array(n);
  bf16Widen(g16, g, n);
  bf16Widen(u16, u, n);
  siluMulBackward(g, u, dy, dg, du, n);
  if (dg16) bf16Round(dg, dg16, n);
  if (du16) bf16Round(du, du16, n);
}

/** Kernels.siluMulBf16: bf16Widen of g16 and u16, then siluMul. */
export function siluMulBf16(g16: Uint16Array, u16: Uint16Array, y: Float32Array, n: number): void {
  check('siluMulBf16', g16, 'g16', u16, 'u16', n);
  check('siluMulBf16', y, 'y', y, 'y', n);
  const g = new Float32Array(n);
  const u = new Float32Array(n);
  bf16Widen(g16, g, n);
  bf16Widen(u16, u, n);
  siluMul(g, u, y, n);
}

/** Kernels.gatherRowsBf16: gatherRows (no scale) into a float32 copy, then bf16Round. */
export function gatherRowsBf16(src: Float32Array, idx: Int32Array, dst16: Uint16Array, rows: number, cols: number): void {
  const n = rows * cols;
  if (dst16.length < n) throw new RangeError(`gatherRowsBf16: dst16 has ${dst16.length} elements, the call needs ${n}`);
  const tmp = new Float32Array(n);
  gatherRows(src, idx, null, tmp, rows, cols);
  bf16Round(tmp, dst16, n);
}

/** Kernels.crossEntropyGradBf16: crossEntropy, then crossEntropyBackward with dloss 1 (into a temporary), then bf16RoundRows into g16. */
export function crossEntropyGradBf16(logits: Float32Array, targets: Int32Array, loss: Float32Array, lse: Float32Array, g16: Uint16Array,
  rows: number, vocab: number, ldg: number): void {
  for (const [v, name] of [[rows, 'rows'], [vocab, 'vocab'], [ldg, 'ldg']] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`crossEntropyGradBf16: ${name} must be a non-negative integer, got ${v}`);
  }
  if (ldg < vocab) throw new RangeError(`crossEntropyGradBf16: ldg (${ldg}) must be >= vocab (${vocab})`);
  if (logits.length < rows * vocab) throw new RangeError(`crossEntropyGradBf16: logits has ${logits.length} elements, the call needs ${rows * vocab}`);
  for (const [a, name] of [[targets, 'targets'], [loss, 'loss'], [lse, 'lse']] as const) {
    if (a.length < rows) throw new RangeError(`crossEntropyGradBf16: ${name} has ${a.length} elements, the call needs ${rows}`);
  }
  const need = rows > 0 && vocab > 0 ? (rows - 1) * ldg + vocab : 0;
  if (g16.length < need) throw new RangeError(`crossEntropyGradBf16: g16 has ${g16.length} elements, the call needs ${need}`);
  crossEntropy(logits, targets, loss, lse, rows, vocab);
  const p = new Float32Array(rows * vocab);
  crossEntropyBackward(logits, targets, lse, new Float32Array(rows).fill(1), p, rows, vocab);
  bf16RoundRows(p, g16, rows, vocab, ldg);
}
