/**
 * The inference engine: DeepSeek-V3's forward (paper section 2, Figure 2) for a block of token
 * rows, run layer by layer with the kernels directly on preallocated Float32Arrays:
 *
 *   h = Emb(t);  per layer: h += MLA(RMSNorm(h)); h += FFN(RMSNorm(h));  hidden = RMSNorm(h)
 *   logits = lm_head(hidden)                                      (only for the rows asked)
 *
 * and the MTP module's step (section 2.2, Eqs. 21-23):
 *   h' = eh_proj([enorm(Emb(t_{i+1})) ; hnorm(h_i)]);  h^1 = TRM(h');  logits = head(norm(h^1))
 *
 * No Tensor, no autograd, no allocation per step: the weights are resolved once into plans
 * (plan.ts), every intermediate lives in the Workspace, latents go to the model's LatentCache
 * buffers. The math is the model's absorbed path, with the same kernels, so logits agree with
 * `DeepseekV3.decodeStep` to float32 rounding.
 */
import { kernels } from '../engine/backend.js';
import { bf16ArrayToF32 } from '../engine/dtype.js';
import { DsvError } from '../errors.js';
import type { LatentCache } from '../model/latent-cache.js';
import type { DeepseekV3 } from '../model/model.js';
import { bf16Layer, bf16Linear } from './draft-bf16.js';
import { mlpAdd, moeAdd } from './ffn.js';
import { type PreparedLinear, preparedBytes, prepareLinear, runLinear } from './linear.js';
import { useDecodePoolSpin } from './pool-spin.js';
import { readAheadKvB } from './read-ahead.js';
import { attentionAdd, rmsNormRows, type RopeTables, type StepShape } from './mla.js';
import { type LayerPlan, type NormPlan, planLayer, planNorm } from './plan.js';
import type { PhaseProfiler } from './profile.js';
import { Workspace } from './workspace.js';

export interface EngineOptions {
  /** Most token rows (batch x tokens) one forward call handles. */
  rows: number;
  /** Most rows whose logits one `head` call computes. */
  logitRows: number;
  /** Positions the RoPE tables cover (the cache length). */
  maxLen: number;
  /** Also plan MTP modules 1 .. depth (speculative decoding): true is 1, a number that many
   * (at most the model's). */
  mtp?: boolean | number;
  /** Run the MTP modules, and the head for their logits (`draftHead`), on bf16 copies of float32
   * weights: the cheaper draft path of speculative decoding (draft-bf16.ts). */
  draftBf16?: boolean;
  /** Allow an MTP depth past the model's modules: depth k > D reuses module D's weights (on its
   * own output, each depth in its own cache slot L + k - 1), as vLLM / SGLang chain DeepSeek-V3's
   * single MTP module to draft several tokens. */
  mtpChain?: boolean;
}

interface MtpPlan {
  enorm: NormPlan;
  hnorm: NormPlan;
  ehProj: PreparedLinear;
  layer: LayerPlan;
  headNorm: NormPlan;
}

export class Engine {
  readonly ws: Workspace;
  readonly layers: readonly LayerPlan[];
  /** Planned MTP modules, depth 1 first. */
  readonly mtps: readonly MtpPlan[];
  readonly D: number;
  readonly V: number;
  /** Profiler charged by every phase when set. */
  profiler: PhaseProfiler | null = null;
  /** Embedding rows: float32, or bf16 bits (a mapped checkpoint's embed_tokens kept in place). */
  private readonly embed: Float32Array | null;
  private readonly embedBf16: Uint16Array | null;
  private readonly norm: NormPlan;
  private readonly lmHead: PreparedLinear;
  /** The head of the MTP modules' logits: lmHead, or its bf16 copy (draftBf16). */
  private readonly mtpHead: PreparedLinear;
  private readonly rope: RopeTables;

  constructor(readonly model: DeepseekV3, opts: EngineOptions) {
    const cfg = model.cfg;
    this.D = cfg.hidden_size;
    this.V = cfg.vocab_size;
    this.ws = new Workspace(cfg, opts.rows, opts.logitRows);
    useDecodePoolSpin();
    readAheadKvB(model.layers);
    this.layers = model.layers.map(planLayer);
    const e = model.embedTokens.contiguous();
    this.embed = e.dtype === 'bf16' ? null : e.f32();
    this.embedBf16 = e.dtype === 'bf16' ? (e.data as Uint16Array).subarray(e.offset, e.offset + e.size) : null;
    this.norm = planNorm(model.norm);
    this.lmHead = prepareLinear(model.lmHead);
    const { cos, sin } = model.rope.tables(0, opts.maxLen);
    this.rope = { cos: cos.f32(), sin: sin.f32(), half: model.rope.pairs };
    const depth = opts.mtp === true ? 1 : opts.mtp === false || opts.mtp === undefined ? 0 : opts.mtp;
    if (!(Number.isInteger(depth) && depth >= 0)) throw new DsvError(`engine: MTP depth must be an integer >= 0, got ${depth}`);
    if (depth > model.mtp.length && !(opts.mtpChain === true && model.mtp.length > 0)) {
      throw new DsvError(`speculative decoding needs ${depth} MTP module(s), the model has ${model.mtp.length} (num_nextn_predict_layers, loaded with mtp: true)`);
    }
    const bf = opts.draftBf16 === true && depth > 0;
    const own: MtpPlan[] = model.mtp.slice(0, depth).map((m) => ({
      enorm: planNorm(m.enorm),
      hnorm: planNorm(m.hnorm),
      ehProj: bf ? bf16Linear(kernels(), prepareLinear(m.ehProj)) : prepareLinear(m.ehProj),
      layer: bf ? bf16Layer(kernels(), planLayer(m.layer)) : planLayer(m.layer),
      headNorm: planNorm(m.sharedHeadNorm),
    }));
    // chained depths past the model's modules: the last module's plan (same weight arrays), its
    // attention writing cache slot L + k - 1
    const L = cfg.num_hidden_layers;
    this.mtps = Array.from({ length: depth }, (_, k) => {
      if (k < own.length) return own[k]!;
      const last = own[own.length - 1]!;
      return { ...last, layer: { ...last.layer, attn: { ...last.layer.attn, slot: L + k } } };
    });
    this.mtpHead = bf ? bf16Linear(kernels(), this.lmHead) : this.lmHead;
  }

  /** Bytes of float32 copies made at planning (decoded bf16/FP8 kv_b_proj), and of the workspace. */
  memory(): { decodedKvB: number; workspace: number; weightsPerToken: number } {
    const all = [...this.layers, ...this.mtps.map((m) => m.layer)];
    let decodedKvB = 0;
    for (const l of all) if (l.attn.kvBDecoded) decodedKvB += l.attn.kvB.byteLength;
    return { decodedKvB, workspace: this.ws.bytes, weightsPerToken: this.weightBytesPerToken() };
  }

  /** Weight bytes one decode token reads (dense layers, K routed + shared experts, head). */
  private weightBytesPerToken(): number {
    const cfg = this.model.cfg;
    let n = preparedBytes(this.lmHead);
    for (const l of this.layers) {
      const a = l.attn;
      for (const w of [a.qA, a.qB, a.q, a.kvA, a.o]) if (w) n += preparedBytes(w);
      const kvB = a.heads * (a.dn + a.dv) * a.r;
      n += a.kvBFp8 ? kvB + 4 * (kvB / (128 * 128)) : kvB * (a.ukHeadBits ? 2 : 4);
      const mlps = l.mlp ? [l.mlp] : [...(l.moe!.shared ? [l.moe!.shared] : []), ...l.moe!.experts.slice(0, cfg.num_experts_per_tok)];
      for (const m of mlps) n += preparedBytes(m.gate) + preparedBytes(m.up) + preparedBytes(m.down);
      if (l.moe) n += l.moe.gateW.byteLength;
    }
    return n;
  }

  private layerStep(l: LayerPlan, cache: LatentCache, shape: StepShape): void {
    const kern = kernels();
    const ws = this.ws;
    const M = shape.B * shape.T;
    const prof = this.profiler;
    attentionAdd(kern, l.attn, l.inNorm, ws, cache.layers[l.attn.slot]!, cache.maxLen, shape, this.rope, prof);
    rmsNormRows(kern, l.postNorm, ws, ws.h, ws.xn, M);
    if (l.moe) moeAdd(kern, l.moe, ws, ws.xn, M, this.D, ws.h, prof);
    else {
      prof?.lap('ffn.router');
      mlpAdd(kern, l.mlp!, ws, ws.xn, M, ws.h);
      prof?.lap('ffn.shared');
    }
  }

  private checkShape(cache: LatentCache, shape: StepShape): void {
    const M = shape.B * shape.T;
    if (M < 1 || M > this.ws.rows) throw new DsvError(`engine: ${M} rows per call, the workspace holds ${this.ws.rows}`);
    if (!shape.slots) {
      if (shape.starts) throw new DsvError('engine: per-sequence starts need per-sequence slots');
      if (shape.B !== cache.batch) throw new DsvError(`engine: batch ${shape.B} does not match the cache batch ${cache.batch}`);
      if (shape.start + shape.T > cache.maxLen) {
        throw new DsvError(`engine: positions ${shape.start}..${shape.start + shape.T - 1} exceed the cache length ${cache.maxLen}`);
      }
      return;
    }
    // sequences at their own positions, each in its own cache slot (continuous batching)
    const { slots, starts, B, T } = shape;
    if (slots.length < B || (starts && starts.length < B)) throw new DsvError(`engine: slots/starts hold fewer than ${B} sequences`);
    for (let b = 0; b < B; b++) {
      const s = slots[b]!;
      if (!(s >= 0 && s < cache.batch)) throw new DsvError(`engine: cache slot ${s} is not in [0, ${cache.batch})`);
      for (let c = 0; c < b; c++) if (slots[c] === s) throw new DsvError(`engine: cache slot ${s} appears twice in one step`);
      const start = starts ? starts[b]! : shape.start;
      if (!(start >= 0 && start + T <= cache.maxLen)) {
        throw new DsvError(`engine: slot ${s} positions ${start}..${start + T - 1} exceed the cache length ${cache.maxLen}`);
      }
    }
  }

  private embedRows(ids: Int32Array, M: number, out: Float32Array): void {
    const D = this.D;
    for (let row = 0; row < M; row++) {
      const id = ids[row]!;
      if (!(id >= 0 && id < this.V)) throw new DsvError(`token id ${id} is outside the vocabulary [0, ${this.V})`);
      const src = id * D;
      const dst = row * D;
      if (this.embedBf16) bf16ArrayToF32(this.embedBf16.subarray(src, src + D), out.subarray(dst, dst + D));
      else for (let d = 0; d < D; d++) out[dst + d] = this.embed![src + d]!;
    }
  }

  /**
   * The main model on ids [B, T] (row-major, B*T rows) at positions shape.start .. (or each
   * sequence at its own slot and position: StepShape): appends their latents to the cache
   * (layer slots 0 .. L-1) and leaves hidden = RMSNorm(h_L) in ws.hidden. Every weight is read
   * once per call for all B*T rows (GEMMs over the rows; each routed expert on the rows that chose it).
   */
  forwardMain(ids: Int32Array, shape: StepShape, cache: LatentCache): void {
    this.checkShape(cache, shape);
    const M = shape.B * shape.T;
    const ws = this.ws;
    this.profiler?.start();
    this.embedRows(ids, M, ws.h);
    this.profiler?.lap('embed');
    for (const l of this.layers) this.layerStep(l, cache, shape);
    rmsNormRows(kernels(), this.norm, ws, ws.h, ws.hidden, M);
  }

  /**
   * MTP module k = `depth` (Eqs. 21-22) on rows i with ws.hPrev[row] = h^{k-1}_i (k = 1: the
   * main model's final-norm hidden; k > 1: module k-1's layer output h^{k-1}, which this call
   * leaves in ws.h) and nextIds[row] = t_{i+k}, at module-k positions shape.start ..: appends to
   * module k's cache slot, leaves h^k in ws.h and RMSNorm_shared_head(h^k) in ws.hidden (feed
   * `head` for the logits of t_{i+k+1}, Eq. 23).
   */
  forwardMtp(nextIds: Int32Array, shape: StepShape, cache: LatentCache, depth = 1): void {
    const p = this.mtps[depth - 1];
    if (!p) throw new DsvError(`engine: built without MTP module ${depth} (planned: ${this.mtps.length})`);
    this.checkShape(cache, shape);
    const kern = kernels();
    const M = shape.B * shape.T;
    const D = this.D;
    const ws = this.ws;
    this.profiler?.start();
    this.embedRows(nextIds, M, ws.xs);
    rmsNormRows(kern, p.enorm, ws, ws.xs, ws.ys, M);
    rmsNormRows(kern, p.hnorm, ws, ws.hPrev, ws.xn, M);
    for (let row = 0; row < M; row++) {
      ws.cat.set(ws.ys.subarray(row * D, (row + 1) * D), 2 * row * D); // embedding first (released weights)
      ws.cat.set(ws.xn.subarray(row * D, (row + 1) * D), (2 * row + 1) * D);
    }
    runLinear(kern, p.ehProj, M, ws.cat, ws.h, 0);
    this.profiler?.lap('embed');
    this.layerStep(p.layer, cache, shape);
    rmsNormRows(kern, p.headNorm, ws, ws.h, ws.hidden, M);
  }

  /**
   * Logits of `n` rows of ws.hidden into ws.logits [n, V]: rows first .. first+n-1, or, with
   * `stride`, rows first, first+stride, ... (the last token of each sequence).
   */
  head(first: number, n: number, stride = 1): Float32Array {
    return this.headWith(this.lmHead, first, n, stride);
  }

  /** `head` for rows of an MTP module's output (Eq. 23's shared head): the draft path's head. */
  draftHead(first: number, n: number): Float32Array {
    return this.headWith(this.mtpHead, first, n, 1);
  }

  private headWith(w: PreparedLinear, first: number, n: number, stride: number): Float32Array {
    if (n > this.ws.logitRows) throw new DsvError(`engine: ${n} logit rows, the workspace holds ${this.ws.logitRows}`);
    const kern = kernels();
    const D = this.D;
    const ws = this.ws;
    let x = first === 0 ? ws.hidden : ws.hidden.subarray(first * D);
    if (stride !== 1 && n > 1) {
      for (let j = 0; j < n; j++) ws.headIn.set(ws.hidden.subarray((first + j * stride) * D, (first + j * stride + 1) * D), j * D);
      x = ws.headIn;
    }
    runLinear(kern, w, n, x, ws.logits, 0);
    this.profiler?.lap('head');
    return ws.logitView[n]!;
  }
}
