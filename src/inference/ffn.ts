/**
 * The FFN half of a decoder layer for the engine, accumulating straight into the residual
 * stream h (the projections' beta = 1): the dense SwiGLU MLP, and DeepSeekMoE (paper Eq. 12)
 *   h' = h + FFN_shared(u) + sum_{i in TopK} g_i FFN_i(u)
 * where only the K selected experts run, each on exactly the rows that chose it. A lone row
 * (decode) feeds the expert straight from u and adds its output into h in place; several rows
 * are gathered into a contiguous block, run as one GEMM per projection and scattered back.
 * The gate g_i scales the expert's output (the GEMM's alpha for a lone row; a multiply while
 * scattering for several), as the model does.
 */
import type { Kernels } from '../engine/kernels.js';
import type { PhaseProfiler } from './profile.js';
import { addScaledRow, runLinear } from './linear.js';
import { mlpRowFused, moeRowFused } from './moe-row.js';
import { readAheadChosen } from './read-ahead.js';
import type { MlpPlan, MoePlan } from './plan.js';
import { routeRows } from './route.js';
import type { Workspace } from './workspace.js';

/** h[m, D] += down(silu(gate x) * up x) for x [m, D]. */
export function mlpAdd(kern: Kernels, p: MlpPlan, ws: Workspace, x: Float32Array, m: number, h: Float32Array): void {
  if (m === 1 && mlpRowFused(kern, p, ws, x, p.gate.k, h)) return;
  const n = m * p.inter;
  runLinear(kern, p.gate, m, x, ws.g, 0);
  runLinear(kern, p.up, m, x, ws.u, 0);
  kern.siluMul(ws.g, ws.u, ws.act, n);
  runLinear(kern, p.down, m, ws.act, h, 1);
}

/**
 * One routed expert on `cnt` rows listed in ws.byExpertRow[start ..], each output scaled by its
 * gate and added into h [m, D].
 */
function expertAdd(kern: Kernels, p: MlpPlan, ws: Workspace, x: Float32Array, D: number, start: number, cnt: number, h: Float32Array): void {
  const I = p.inter;
  let xin: Float32Array;
  if (cnt === 1) {
    const row = ws.byExpertRow[start]!;
    xin = row === 0 ? x : x.subarray(row * D, (row + 1) * D);
  } else {
    for (let j = 0; j < cnt; j++) {
      const row = ws.byExpertRow[start + j]!;
      ws.xs.set(x.subarray(row * D, (row + 1) * D), j * D);
    }
    xin = ws.xs;
  }
  runLinear(kern, p.gate, cnt, xin, ws.g, 0);
  runLinear(kern, p.up, cnt, xin, ws.u, 0);
  kern.siluMul(ws.g, ws.u, ws.act, cnt * I);
  if (cnt === 1) {
    const row = ws.byExpertRow[start]!;
    addScaledRow(kern, p.down, ws.topW[ws.byExpertSlot[start]!]!, ws.act, row === 0 ? h : h.subarray(row * D, (row + 1) * D));
    return;
  }
  runLinear(kern, p.down, cnt, ws.act, ws.ys, 0);
  const ys = ws.ys;
  for (let j = 0; j < cnt; j++) {
    const w = ws.topW[ws.byExpertSlot[start + j]!]!;
    const o = ws.byExpertRow[start + j]! * D;
    const so = j * D;
    for (let d = 0; d < D; d++) h[o + d] = h[o + d]! + Math.fround(ys[so + d]! * w);
  }
}

/**
 * One decode row with float32 weights: the gate and up projections of the K chosen experts and
 * of the shared expert run as ONE batched call (kernels().gemmBatch runs each GEMV on its own
 * thread, so both cores stream weights at once instead of splitting many tiny GEMVs), then the
 * K down projections as a second batch; each routed output is added into h scaled by its gate.
 * Returns false (nothing done) when some weight is not float32 or the shapes differ.
 */
function moeRowF32(kern: Kernels, p: MoePlan, ws: Workspace, x: Float32Array, D: number, h: Float32Array): boolean {
  const K = p.rc.topK;
  const sh = p.shared;
  const I = p.experts[0]!.inter;
  if (sh && !(sh.gate.f32 && sh.up.f32 && sh.down.f32)) return false;
  const slots = K + (sh ? 1 : 0);
  const dims = ws.rowDimsGu;
  if (dims.length < 6 * slots) return false;
  for (let j = 0; j < slots; j++) {
    const q = j < K ? p.experts[ws.topIdx[j]!]! : sh!;
    if (!q.gate.f32 || !q.up.f32 || !q.down.f32 || (j < K && q.inter !== I)) return false;
    for (let t = 0; t < 2; t++) {
      const c = 2 * j + t;
      dims[3 * c] = 1;
      dims[3 * c + 1] = q.inter;
      dims[3 * c + 2] = D;
      ws.rowA[c] = x;
      ws.rowB[c] = t === 0 ? q.gate.f32 : q.up.f32;
      ws.rowC[c] = ws.rowGu[c]!;
    }
  }
  const ld = ws.rowGu[0]!.length;
  kern.gemmBatch(false, true, dims.length === 6 * slots ? dims : dims.subarray(0, 6 * slots), 1, ws.rowA, D, ws.rowB, D, 0, ws.rowC, ld);
  for (let j = 0; j < slots; j++) {
    const n = j < K ? I : sh!.inter;
    kern.siluMul(ws.rowGu[2 * j]!, ws.rowGu[2 * j + 1]!, ws.rowAct[j]!, n);
  }
  const dd = ws.rowDimsDown;
  for (let j = 0; j < K; j++) {
    dd[3 * j] = 1;
    dd[3 * j + 1] = D;
    dd[3 * j + 2] = I;
    ws.rowA[j] = ws.rowAct[j]!;
    ws.rowB[j] = p.experts[ws.topIdx[j]!]!.down.f32!;
    ws.rowC[j] = ws.rowY[j]!;
  }
  kern.gemmBatch(false, true, dd, 1, ws.rowA, ld, ws.rowB, I, 0, ws.rowC, D);
  for (let j = 0; j < K; j++) kern.axpy(ws.topW[j]!, ws.rowY[j]!, h, D);
  if (sh) runLinear(kern, sh.down, 1, ws.rowAct[K]!, h, 1);
  return true;
}

/**
 * Several rows with float32 or bf16 routed experts (batched decode, verification, the bf16
 * draft path, prefill chunks; kernels().moeRowsBf16 for bf16, up to MOE_ROWS_MAX rows): every
 * routed (row, expert) pair is gathered into one block grouped by expert. Up to MOE_ROWS_MAX rows,
 * ALL active experts run in ONE kernels().moeRows call (gate, up, SiLU, down; each weight row
 * streamed once for all the rows that chose the expert), with the shared expert as one more group
 * of all m rows when it has the routed width; above, the gate and up projections run as one
 * kernels().gemmBatch call, then the down projections as a second. Each routed output is added
 * into its row scaled by its gate (the same order and rounding as expertAdd), then the shared
 * output. Returns what it did: 'none' (FP8 or mixed storage, or bf16 above MOE_ROWS_MAX rows), 'routed' (the
 * caller adds the shared expert), 'all'.
 */
function moeRowsGrouped(kern: Kernels, p: MoePlan, ws: Workspace, x: Float32Array, m: number, D: number, h: Float32Array): 'none' | 'routed' | 'all' {
  const E = p.rc.experts;
  const I = p.experts[0]!.inter;
  if (ws.gg.length < m * (p.rc.topK + 1) * I) return 'none';
  const kind = storageOf(p.experts[0]!);
  if (kind === null || (kind === 'bf16' && m > MOE_ROWS_MAX)) return 'none';
  for (let e = 0; e < E; e++) {
    const q = p.experts[e]!;
    if (storageOf(q) !== kind || q.inter !== I) return 'none';
  }
  const off = ws.offsets;
  const n = off[E]!; // routed pairs
  // gather each expert's rows (dispatch order: expert-major, rows ascending)
  for (let q = 0; q < n; q++) {
    const row = ws.byExpertRow[q]!;
    ws.xg.set(row === 0 && D === x.length ? x : x.subarray(row * D, (row + 1) * D), q * D);
  }
  // the shared expert as one more group of all m rows (same width), when it is float32 too
  const sh = p.shared;
  const withShared = m <= MOE_ROWS_MAX && sh !== null && sh.inter === I && storageOf(sh) === kind;
  if (m <= MOE_ROWS_MAX) {
    // every active expert's gate, up, SiLU and down in one kernel call (weights streamed once)
    let o = off;
    if (withShared) {
      ws.xg.set(x.subarray(0, m * D), n * D);
      o = ws.offsetsShared;
      o.set(off);
      o[E + 1] = n + m;
    }
    if (kind === 'f32') {
      const w = expertWeights(p, withShared);
      kern.moeRows(ws.xg, o, w.gates, w.ups, w.downs, D, I, ws.gg, ws.ug, ws.ag, ws.yg);
    } else {
      const w = expertBits(p, withShared);
      kern.moeRowsBf16(ws.xg, o, w.gates, w.ups, w.downs, D, I, ws.gg, ws.ug, ws.ag, ws.yg);
    }
  } else moeRowsBatched(kern, p, ws, D, I);
  const ys = ws.yg;
  for (let q = 0; q < n; q++) {
    const w = ws.topW[ws.byExpertSlot[q]!]!;
    const o = ws.byExpertRow[q]! * D;
    const so = q * D;
    for (let d = 0; d < D; d++) h[o + d] = h[o + d]! + Math.fround(ys[so + d]! * w);
  }
  if (!withShared) return 'routed';
  // h += FFN_shared(x), after the routed outputs (the order of moeAdd's mlpAdd)
  for (let q = 0, so = n * D; q < m * D; q++) h[q] = h[q]! + ys[so + q]!;
  return 'all';
}

/** Rows per call up to which moeRowsGrouped runs kernels().moeRows (decode batches, verification);
 * above (prefill chunks: many rows per expert) the packed GEMMs of gemmBatch do better. */
const MOE_ROWS_MAX = 16;

/** 'f32' / 'bf16' when all three projections of an expert have that storage, else null (FP8, mixed). */
function storageOf(q: MlpPlan): 'f32' | 'bf16' | null {
  if (q.gate.f32 && q.up.f32 && q.down.f32) return 'f32';
  if (q.gate.bits && q.up.bits && q.down.bits) return 'bf16';
  return null;
}

interface BitLists { gates: Uint16Array[]; ups: Uint16Array[]; downs: Uint16Array[] }
const bitLists = new WeakMap<MoePlan, BitLists>();
const bitListsShared = new WeakMap<MoePlan, BitLists>();
/** expertWeights for bf16 experts (kernels().moeRowsBf16). */
function expertBits(p: MoePlan, shared: boolean): BitLists {
  const map = shared ? bitListsShared : bitLists;
  let w = map.get(p);
  if (!w) {
    const all = shared ? [...p.experts, p.shared!] : p.experts;
    w = { gates: all.map((q) => q.gate.bits!), ups: all.map((q) => q.up.bits!), downs: all.map((q) => q.down.bits!) };
    map.set(p, w);
  }
  return w;
}

interface WeightLists { gates: Float32Array[]; ups: Float32Array[]; downs: Float32Array[] }
/** The routed experts' float32 weights (then the shared expert's) as the arrays kernels().moeRows
 * takes, made once per plan. */
const weightLists = new WeakMap<MoePlan, WeightLists>();
const weightListsShared = new WeakMap<MoePlan, WeightLists>();
function expertWeights(p: MoePlan, shared: boolean): WeightLists {
  const map = shared ? weightListsShared : weightLists;
  let w = map.get(p);
  if (!w) {
    const all = shared ? [...p.experts, p.shared!] : p.experts;
    w = { gates: all.map((q) => q.gate.f32!), ups: all.map((q) => q.up.f32!), downs: all.map((q) => q.down.f32!) };
    map.set(p, w);
  }
  return w;
}

/** gate/up of every active expert as one gemmBatch, SiLU-multiply, down as a second gemmBatch
 * (rows grouped by expert in ws.xg; outputs in ws.yg). */
function moeRowsBatched(kern: Kernels, p: MoePlan, ws: Workspace, D: number, I: number): void {
  const E = p.rc.experts;
  const off = ws.offsets;
  const n = off[E]!;
  const dims = ws.grpDims;
  let g = 0;
  for (let e = 0; e < E; e++) {
    const cnt = off[e + 1]! - off[e]!;
    if (cnt === 0) continue;
    const q0 = off[e]!;
    const w = p.experts[e]!;
    for (let t = 0; t < 2; t++, g++) {
      dims[3 * g] = cnt;
      dims[3 * g + 1] = I;
      dims[3 * g + 2] = D;
      ws.grpA[g] = ws.xgAt[q0]!;
      ws.grpB[g] = t === 0 ? w.gate.f32! : w.up.f32!;
      ws.grpC[g] = t === 0 ? ws.ggAt[q0]! : ws.ugAt[q0]!;
    }
  }
  // (the operand lists may be longer than the dims: gemmBatch reads one entry per triple)
  kern.gemmBatch(false, true, ws.grpDimsAt[g]!, 1, ws.grpA, D, ws.grpB, D, 0, ws.grpC, I);
  kern.siluMul(ws.gg, ws.ug, ws.ag, n * I);
  g = 0;
  for (let e = 0; e < E; e++) {
    const cnt = off[e + 1]! - off[e]!;
    if (cnt === 0) continue;
    const q0 = off[e]!;
    dims[3 * g] = cnt;
    dims[3 * g + 1] = D;
    dims[3 * g + 2] = I;
    ws.grpA[g] = ws.agAt[q0]!;
    ws.grpB[g] = p.experts[e]!.down.f32!;
    ws.grpC[g] = ws.ygAt[q0]!;
    g++;
  }
  kern.gemmBatch(false, true, ws.grpDimsAt[g]!, 1, ws.grpA, I, ws.grpB, I, 0, ws.grpC, D);
}

/** h[m, D] += MoE(x) for x [m, D] (x = post_attention_layernorm(h)). */
export function moeAdd(kern: Kernels, p: MoePlan, ws: Workspace, x: Float32Array, m: number, D: number, h: Float32Array,
  prof: PhaseProfiler | null): void {
  routeRows(kern, p, ws, x, m, D);
  readAheadChosen(p, ws);
  prof?.lap('ffn.router');
  if (m === 1 && (moeRowFused(kern, p, ws, x, D, h) || moeRowF32(kern, p, ws, x, D, h))) {
    prof?.lap('ffn.experts');
    return;
  }
  const done = m === 1 ? 'none' : moeRowsGrouped(kern, p, ws, x, m, D, h);
  if (done === 'none') {
    const off = ws.offsets;
    for (let e = 0; e < p.rc.experts; e++) {
      const cnt = off[e + 1]! - off[e]!;
      if (cnt > 0) expertAdd(kern, p.experts[e]!, ws, x, D, off[e]!, cnt, h);
    }
  }
  prof?.lap('ffn.experts');
  if (p.shared && done !== 'all') mlpAdd(kern, p.shared, ws, x, m, h);
  prof?.lap('ffn.shared');
}
