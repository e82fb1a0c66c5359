/**
 * The two FP8 design choices DeepSeek-V3 argues for (§3.3.2, Figure 7; appendix B), measured
 * without training (the ablation arms of `dsv3 experiment fp8`):
 *
 * 1. Accumulation precision ("increased accumulation precision", Figure 7b). An FP8 GEMM
 *    C = A Bᵀ of two random matrices, uniform in [0, 1) as in the fixtures' limited-accumulation
 *    case (every output positive, so element-wise relative errors are well defined), quantised as
 *    in Fprop (A in 1x128 tiles, B in 128x128 blocks), through the accumulator models of
 *    src/engine/fp8/gemm-oracle.ts: the H800's limited accumulator (15 significant bits,
 *    truncated after every addition) over all of K ('unpromoted'), the same accumulator promoted
 *    to FP32 every N_C = 128 products ('promoted', the paper's recipe), and exact block sums
 *    promoted in FP32 ('fp32-acc', what our training path computes). Error against the ideal
 *    accumulator (float64 sum of the same quantised products): max element-wise relative error
 *    (the paper's "maximum relative error of nearly 2%" at K = 4096 without promotion) and the
 *    relative Frobenius error, for K from 128 to 16,384.
 *
 * 2. Scaling granularity ("fine-grained quantization", Figure 7a): activations X [M, K] ~ N(0, 1)
 *    with injected outliers of magnitude A — two outlier channels (columns × A), one outlier token
 *    (a row × A) and isolated spikes (0.05% of the elements set to ±A·|x|, at least 1) — quantised
 *    to E4M3 with one scale per tensor, per 1x128 tile (the paper's choice for activations) or per
 *    128x128 block (its choice for weights), scale = amax / 448. Measured: the relative error of the
 *    dequantised values on the ordinary (non-outlier) elements, over all elements, and the share of
 *    ordinary non-zero elements that quantise to 0, for A = 1 (no outliers) to 10⁵.
 */
import { deriveSeed, Rng } from '../data/rng.js';
import { encodeE4M3, E4M3_TABLE, fp8Scale } from '../engine/fp8/codec.js';
import { fp8GemmIdeal, fp8GemmLimited, fp8GemmRef, type Fp8GemmOperand } from '../engine/fp8/gemm-oracle.js';
import { groups128, quantBlocks128, quantTiles1x128 } from '../engine/fp8/quant.js';

export type Accumulation = 'unpromoted' | 'promoted' | 'fp32-acc';
export type Granularity = 'tensor' | 'tile' | 'block';

/** The Fprop operands of C = A Bᵀ: A [m, k] in 1x128 tiles, B [n, k] in 128x128 blocks. */
function fpropOperands(a: Float32Array, b: Float32Array, m: number, n: number, k: number): { a: Fp8GemmOperand; b: Fp8GemmOperand } {
  const ac = new Uint8Array(m * k);
  const as = new Float32Array(m * groups128(k));
  quantTiles1x128(a, 0, k, m, k, ac, as, null);
  const bc = new Uint8Array(n * k);
  const bs = new Float32Array(groups128(n) * groups128(k));
  quantBlocks128(b, 0, k, n, k, bc, bs, null);
  return { a: { rows: m, inner: k, codes: ac, scales: as, rowGroup: 1 }, b: { rows: n, inner: k, codes: bc, scales: bs, rowGroup: 128 } };
}

export interface GemmError {
  /** max_ij |got − ideal| / |ideal| */
  maxRel: number;
  /** ‖got − ideal‖_F / ‖ideal‖_F */
  relFro: number;
}

export function gemmError(got: Float32Array, ideal: Float32Array): GemmError {
  let maxRel = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < got.length; i++) {
    const d = got[i]! - ideal[i]!;
    num += d * d;
    den += ideal[i]! * ideal[i]!;
    if (ideal[i] !== 0) maxRel = Math.max(maxRel, Math.abs(d) / Math.abs(ideal[i]!));
  }
  return { maxRel, relFro: den > 0 ? Math.sqrt(num / den) : 0 };
}

/**
 * The error of `acc` at each inner size in `ks` (an m x n output each; operands uniform in [0, 1)
 * from `seed`; the operands of every K are drawn afresh, the same for every accumulation mode).
 */
export function accumulationErrors(acc: Accumulation, seed: number, ks: readonly number[], m: number, n: number): GemmError[] {
  return ks.map((k) => {
    const rng = new Rng(deriveSeed(seed, 'fp8-accumulation', k));
    const a = Float32Array.from({ length: m * k }, () => rng.nextFloat());
    const b = Float32Array.from({ length: n * k }, () => rng.nextFloat());
    const o = fpropOperands(a, b, m, n, k);
    const got = acc === 'fp32-acc' ? fp8GemmRef(o.a, o.b) : fp8GemmLimited(o.a, o.b, acc === 'promoted');
    return gemmError(got, fp8GemmIdeal(o.a, o.b));
  });
}

/** Activations with injected outliers (see the module comment); `ordinary[i]` = 1 where x[i] is not an outlier. */
export function activationsWithOutliers(seed: number, m: number, k: number, magnitude: number): { x: Float32Array; ordinary: Uint8Array } {
  const rng = new Rng(deriveSeed(seed, 'fp8-outliers'));
  const x = Float32Array.from({ length: m * k }, () => rng.nextNormal());
  const ordinary = new Uint8Array(m * k).fill(1);
  // the positions depend on the seed only, so every magnitude perturbs the same elements
  const channels = [rng.nextInt(k), rng.nextInt(k)];
  const token = rng.nextInt(m);
  const spikes = Math.max(1, Math.round(m * k * 0.0005));
  const mark = (i: number): void => {
    ordinary[i] = 0;
  };
  for (const c of channels) for (let r = 0; r < m; r++) mark(r * k + c);
  for (let c = 0; c < k; c++) mark(token * k + c);
  const spikeAt: number[] = [];
  for (let s = 0; s < spikes; s++) spikeAt.push(rng.nextInt(m * k));
  if (magnitude !== 1) {
    const spikeV = spikeAt.map((i) => Math.fround((x[i]! < 0 ? -1 : 1) * magnitude * Math.max(1, Math.abs(x[i]!))));
    for (let i = 0; i < x.length; i++) if (!ordinary[i]) x[i] = Math.fround(x[i]! * magnitude);
    spikeAt.forEach((i, s) => (x[i] = spikeV[s]!));
  }
  for (const i of spikeAt) mark(i);
  return { x, ordinary };
}

/** x [m, k] quantised to E4M3 and back with one scale per tensor, per 1x128 tile or per 128x128 block. */
export function quantDequant(x: Float32Array, m: number, k: number, g: Granularity): Float32Array {
  const out = new Float32Array(x.length);
  if (g === 'tile') quantTiles1x128(x, 0, k, m, k, null, null, out);
  else if (g === 'block') quantBlocks128(x, 0, k, m, k, null, null, out);
  else {
    let amax = 0;
    for (let i = 0; i < x.length; i++) amax = Math.max(amax, Math.abs(x[i]!));
    const s = fp8Scale(amax); // the same rule as every group: float32(max(amax, 1e-4) / 448)
    for (let i = 0; i < x.length; i++) out[i] = Math.fround(E4M3_TABLE[encodeE4M3(Math.fround(x[i]! / s))]! * s);
  }
  return out;
}

export interface QuantError {
  /** ‖x̂ − x‖ / ‖x‖ over the ordinary elements. */
  relOrdinary: number;
  /** ‖x̂ − x‖ / ‖x‖ over all elements. */
  relAll: number;
  /** Share of the ordinary non-zero elements that quantise to 0. */
  underflow: number;
}

export function quantError(x: Float32Array, q: Float32Array, ordinary: Uint8Array): QuantError {
  let no = 0, dO = 0, na = 0, dA = 0, nz = 0, zero = 0;
  for (let i = 0; i < x.length; i++) {
    const d = (q[i]! - x[i]!) ** 2;
    const v = x[i]! ** 2;
    na += d;
    dA += v;
    if (!ordinary[i]) continue;
    no += d;
    dO += v;
    if (x[i] !== 0) {
      nz++;
      if (q[i] === 0) zero++;
    }
  }
  return { relOrdinary: Math.sqrt(no / dO), relAll: Math.sqrt(na / dA), underflow: nz ? zero / nz : 0 };
}

/** The quantisation error of granularity `g` at each outlier magnitude. */
export function granularityErrors(g: Granularity, seed: number, magnitudes: readonly number[], m: number, k: number): QuantError[] {
  return magnitudes.map((a) => {
    const { x, ordinary } = activationsWithOutliers(seed, m, k, a);
    return quantError(x, quantDequant(x, m, k, g), ordinary);
  });
}
