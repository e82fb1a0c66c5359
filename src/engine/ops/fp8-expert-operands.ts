/**
 * The FP8 operands of the grouped experts op (fp8-training-grouped.ts): each expert weight's
 * 128x128-block copy as a GEMM operand, the activations' 1x128-tile operands gathered, sliced and
 * dequantised per expert, and the runs of experts the backward recomputes Y in (paper §3.3).
 */
import { kernels } from '../backend.js';
import { dequantTiles1x128Into, groups128, type Fp8Blocks } from '../fp8/quant.js';
import { Fp8GemmLayout, codeBytes, type Fp8Operand } from '../fp8/train-gemm.js';
import { quantizeFp8Weight } from './fp8-training-linear.js';
import type { ExpertWeights } from './grouped-plan.js';
import { allocUninit } from './util.js';

/** A weight's 128x128-block FP8 copy as the B operand: W (Fprop) or W^T (Dgrad, `t`). */
export function blocks(q: Fp8Blocks, t = false): Fp8Operand {
  return { codes: q.codes, scales: q.scaleInv, layout: t ? Fp8GemmLayout.colsBlocks : Fp8GemmLayout.rowsBlocks };
}

export type ProjBlocks = { gate: Fp8Blocks; up: Fp8Blocks; down: Fp8Blocks };

/**
 * Every expert weight per 128x128 block (routed per expert, and the shared expert's): the Fprop
 * operands, and, made again from the same master weights in backward, the Dgrad operands (a
 * weight does not change between a step's forward and backward, so the codes are the same bits;
 * not keeping them from forward to backward frees 1 byte per expert weight element per layer).
 */
export function quantizeWeights(w: ExpertWeights, sh: ExpertWeights['shared'] | null): { wq: { gate: Fp8Blocks[]; up: Fp8Blocks[]; down: Fp8Blocks[] }; sq: ProjBlocks | null } {
  const wq = { gate: w.gate.map(quantizeFp8Weight), up: w.up.map(quantizeFp8Weight), down: w.down.map(quantizeFp8Weight) };
  const sq = sh ? { gate: quantizeFp8Weight(sh.gate), up: quantizeFp8Weight(sh.up), down: quantizeFp8Weight(sh.down) } : null;
  return { wq, sq };
}

/** The buffers of quantizeWeights' copies (to give back to the step arena). */
export function weightBuffers(wq: { gate: Fp8Blocks[]; up: Fp8Blocks[]; down: Fp8Blocks[] }, sq: ProjBlocks | null): (Uint8Array | Float32Array)[] {
  return [...wq.gate, ...wq.up, ...wq.down, ...(sq ? [sq.gate, sq.up, sq.down] : [])].flatMap((b) => [b.codes, b.scaleInv]);
}

/** out [rows, cols] = the dequantised values of a 1x128-tile operand. */
export function dequant(o: Fp8Operand, rows: number, cols: number, out: Float32Array): Float32Array {
  dequantTiles1x128Into({ rows, cols, codes: o.codes, scales: o.scales }, out);
  return out;
}

/** The rows `rows` of a 1x128-tile operand with `cols` columns, gathered into a new operand. */
export function gatherOperand(src: Fp8Operand, rows: Int32Array, cols: number): Fp8Operand {
  const P = rows.length;
  const g = groups128(cols);
  const codes = codeBytes(P * cols);
  const k = kernels();
  if (k.name === 'native' && cols % 4 === 0 && src.codes.byteOffset % 4 === 0 && codes.byteOffset % 4 === 0) {
    // 4 codes per float32 lane: the native row gather copies the bits (memmove); the JS
    // reference's float copy could quiet a NaN pattern, so it keeps the byte copy below
    const f = (u: Uint8Array): Float32Array => new Float32Array(u.buffer, u.byteOffset, u.length >> 2);
    k.gatherRows(f(src.codes), rows, null, f(codes), P, cols >> 2);
  } else {
    for (let p = 0; p < P; p++) {
      const r = rows[p]!;
      codes.set(src.codes.subarray(r * cols, (r + 1) * cols), p * cols);
    }
  }
  const scales = allocUninit(P * g);
  kernels().gatherRows(src.scales, rows, null, scales, P, g);
  return { codes, scales, layout: src.layout };
}

/** Expert e's part (rows offsets[e] .. offsets[e+1]-1) of a colTilesOperand with `cols` columns. */
export function expertCols(o: Fp8Operand, offsets: Int32Array, so: Int32Array, e: number, cols: number): Fp8Operand {
  return { codes: o.codes.subarray(offsets[e]! * cols, offsets[e + 1]! * cols), scales: o.scales.subarray(so[e]!, so[e + 1]!), layout: o.layout };
}

/**
 * Runs [e0, e1) of consecutive experts whose pairs (offsets[e0] .. offsets[e1]) number at most
 * `budget`, or one expert when it alone has more; together they cover all E experts in order.
 */
export function expertRuns(offsets: Int32Array, E: number, budget: number): [number, number][] {
  const runs: [number, number][] = [];
  let e0 = 0;
  for (let e = 1; e <= E; e++) {
    if (e === E || offsets[e + 1]! - offsets[e0]! > budget) {
      runs.push([e0, e]);
      e0 = e;
    }
  }
  return runs;
}
