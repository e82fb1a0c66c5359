/**
 * MLA's absorbed per-head products (paper section 2.1.2, Eqs. 1-11 with W^UK absorbed into the
 * query and W^UV into the output) on an FP8 kv_b_proj read in place (issue 12): one byte per
 * weight instead of the float32 copy plan.ts used to decode.
 *
 * kv_b_proj [H * (dn + dv), r] holds, for head h, W^UK[h] = rows h(dn+dv) .. +dn and W^UV[h] =
 * the next dv rows, with one scale per 128 x 128 block. When dn and dv are multiples of 128 each
 * head's blocks start on a scale block, so W^UK[h] / W^UV[h] are FP8 weights of their own
 * (views of the codes and of the scale rows, no copy):
 *   q^C_h [M, r] = q_h [M, dn] · W^UK[h]       Kernels.linearFp8T (W used untransposed)
 *   o_h  [M, dv] = ctx_h [M, r] · W^UV[h]^T    Kernels.linearFp8 (a linear layer)
 * Both multiply by float32(e4m3 * scale), the dequantised weights the model's absorbed path
 * (src/model/mla.ts, `weightRows`) multiplies by, so the results differ from it only in float32
 * summation order (and, for linearFp8, its one rounding of x * scale; see fp8_weight_gemv.c).
 * DSV3_KVB_FP8=0 in the environment keeps the float32 copy (A/B).
 */
import type { Kernels } from '../engine/kernels.js';
import type { Fp8Linear } from '../model/weights.js';

let inPlace = process.env.DSV3_KVB_FP8 !== '0';

/** Sets whether plans read an FP8 kv_b_proj in place (tests, A/B); returns the previous setting. */
export function setFp8KvBInPlace(on: boolean): boolean {
  const was = inPlace;
  inPlace = on;
  return was;
}

export interface Fp8HeadWeights {
  /** W^UK[h]: codes [dn][r] and scales [dn/128][ceil(r/128)] per head. */
  readonly ukCodes: readonly Uint8Array[];
  readonly ukScales: readonly Float32Array[];
  /** W^UV[h]: codes [dv][r] and scales [dv/128][ceil(r/128)] per head. */
  readonly uvCodes: readonly Uint8Array[];
  readonly uvScales: readonly Float32Array[];
}

/** Per-head views of an FP8 kv_b_proj, or null when it is not read in place (switch off, or a
 * head's row blocks do not start on 128-row scale blocks). */
export function fp8KvBHeads(w: Fp8Linear, H: number, dn: number, dv: number, r: number): Fp8HeadWeights | null {
  if (!inPlace || dn % 128 !== 0 || dv % 128 !== 0 || w.outFeatures !== H * (dn + dv) || w.inFeatures !== r) return null;
  const kb = Math.ceil(r / 128);
  const codes = (row: number, rows: number) => w.codes.subarray(row * r, (row + rows) * r);
  const scales = (row: number, rows: number) => w.scaleInv.subarray((row / 128) * kb, ((row + rows) / 128) * kb);
  const at = (h: number) => h * (dn + dv);
  return {
    ukCodes: Array.from({ length: H }, (_, h) => codes(at(h), dn)),
    ukScales: Array.from({ length: H }, (_, h) => scales(at(h), dn)),
    uvCodes: Array.from({ length: H }, (_, h) => codes(at(h) + dn, dv)),
    uvScales: Array.from({ length: H }, (_, h) => scales(at(h) + dn, dv)),
  };
}

/** Contiguous [M, n] scratch (rows of one head gathered from the workspace's [M, H, n] layout). */
let bufA = new Float32Array(0);
let bufB = new Float32Array(0);
function scratch(a: number, b: number): [Float32Array, Float32Array] {
  if (bufA.length < a) bufA = new Float32Array(a);
  if (bufB.length < b) bufB = new Float32Array(b);
  return [bufA.subarray(0, a), bufB.subarray(0, b)];
}

/** Rows i < M of length n at src + i*ld  <->  dst + i*n (gather), or back (scatter). */
function gather(src: Float32Array, ld: number, M: number, n: number, dst: Float32Array): void {
  for (let i = 0; i < M; i++) dst.set(src.subarray(i * ld, i * ld + n), i * n);
}
function scatter(src: Float32Array, M: number, n: number, dst: Float32Array, ld: number): void {
  for (let i = 0; i < M; i++) dst.set(src.subarray(i * n, i * n + n), i * ld);
}

/** qcatHead[h][i][0:r] = q^C_h for every head: qHead[h] rows (ld H*(dn+dr)) times W^UK[h]
 * (the workspace's per-head views, src/inference/workspace.ts). */
export function absorbQueryFp8(kern: Kernels, f: Fp8HeadWeights, ws: { qHead: Float32Array[]; qcatHead: Float32Array[] },
  M: number, H: number, dn: number, dr: number, r: number): void {
  const ldq = H * (dn + dr);
  const ldc = H * (r + dr);
  for (let h = 0; h < H; h++) {
    const q = ws.qHead[h]!;
    const out = ws.qcatHead[h]!;
    if (M === 1) kern.linearFp8T(1, r, dn, q.subarray(0, dn), f.ukCodes[h]!, f.ukScales[h]!, out.subarray(0, r));
    else {
      const [x, y] = scratch(M * dn, M * r);
      gather(q, ldq, M, dn, x);
      kern.linearFp8T(M, r, dn, x, f.ukCodes[h]!, f.ukScales[h]!, y);
      scatter(y, M, r, out, ldc);
    }
  }
}

/** oHead[h][i][0:dv] = W^UV[h] ctx_h for every head: ctxHead[h] rows (ld H*r). */
export function absorbOutputFp8(kern: Kernels, f: Fp8HeadWeights, ws: { ctxHead: Float32Array[]; oHead: Float32Array[] },
  M: number, H: number, dv: number, r: number): void {
  for (let h = 0; h < H; h++) {
    const c = ws.ctxHead[h]!;
    const out = ws.oHead[h]!;
    if (M === 1) kern.linearFp8(1, dv, r, c.subarray(0, r), f.uvCodes[h]!, f.uvScales[h]!, 0, out.subarray(0, dv));
    else {
      const [x, y] = scratch(M * r, M * dv);
      gather(c, H * r, M, r, x);
      kern.linearFp8(M, dv, r, x, f.uvCodes[h]!, f.uvScales[h]!, 0, y);
      scatter(y, M, dv, out, H * dv);
    }
  }
}
