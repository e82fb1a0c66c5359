/**
 * DeepSeek-V3 (Hugging Face `DeepseekV3ForCausalLM` semantics, paper section 2):
 *   h_0 = Emb(t);  h_l = Block_l(h_{l-1}) for l = 1..L;  logits = lm_head(RMSNorm(h_L))
 * plus the optional MTP modules (mtp.ts), MLA's latent cache for incremental decoding and
 * greedy generation. Built from differentiable ops on float32 parameters, so training can call
 * `forward` and `backward(loss)`; decoding with the cache and FP8/bf16 weights run under noGrad.
 */
import { embedding } from '../engine/ops/index.js';
import { noGrad } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { Seed } from '../data/rng.js';
import { DsvError } from '../errors.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { type Capture, DecoderLayer } from './decoder-layer.js';
import { LatentCache } from './latent-cache.js';
import type { AttentionContext, AttentionPath } from './mla.js';
import { MtpModule, type MtpOutput } from './mtp.js';
import { CheckpointParams, type Init, type ParamSource, RandomParams, type WeightMode } from './params.js';
import { RMSNorm } from './rmsnorm.js';
import { RotaryEmbedding } from './rope.js';
import type { Routing } from './router.js';
import { applyLinear, f32Linear, type LinearWeight } from './weights.js';

export interface LoadOptions {
  /** Linear weight storage (see WeightMode); default 'auto'. */
  weights?: WeightMode;
  /** Load the MTP modules (default true); without them their tensors are skipped. */
  mtp?: boolean;
}

export interface ForwardOptions {
  path?: AttentionPath;
  /** Receives every intermediate tensor under its fixture name. */
  capture?: Capture;
  /** Continue from (and append to) this latent cache: positions start at cache.length. */
  cache?: LatentCache;
}

export interface HiddenResult {
  /** [B, T, D]: the final-norm hidden state (input of lm_head and of the MTP hnorm). */
  hidden: Tensor;
  /** Routing of every MoE layer, by layer index. */
  routing: Map<number, Routing>;
}

export interface ForwardResult {
  /** [B, T, V] */
  logits: Tensor;
  /** [B, T, D]: the final-norm hidden state (input of lm_head and of the MTP hnorm). */
  hidden: Tensor;
  /** Routing of every MoE layer, by layer index. */
  routing: Map<number, Routing>;
}

/** A ParamSource wrapper that records every tensor it hands out, in module order. */
class Recorder implements ParamSource {
  readonly params = new Map<string, Tensor>();
  readonly buffers = new Map<string, Tensor>();
  readonly linears = new Map<string, LinearWeight>();
  /** Every name handed out, in module order. */
  readonly order: string[] = [];
  constructor(private readonly inner: ParamSource) {}
  tensor(name: string, shape: readonly number[], init: Init, trainable = true): Tensor {
    const t = this.inner.tensor(name, shape, init, trainable);
    (trainable ? this.params : this.buffers).set(name, t);
    this.order.push(name);
    return t;
  }
  linear(name: string, out: number, inF: number): LinearWeight {
    const w = this.inner.linear(name, out, inF);
    this.linears.set(name, w);
    this.order.push(name);
    if (w.kind === 'f32') this.params.set(name, w.weight);
    return w;
  }
}

/** Token ids as an int32 tensor [B, S] (from a Tensor, or number[][]). */
export function idsTensor(ids: Tensor | readonly (readonly number[])[]): Tensor {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'i32' || ids.ndim !== 2) throw new DsvError(`token ids must be an int32 tensor [B, S], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    return ids;
  }
  const B = ids.length;
  const S = B ? ids[0]!.length : 0;
  if (!ids.every((r) => r.length === S)) throw new DsvError('token ids: every row must have the same length');
  return Tensor.fromI32(Int32Array.from(ids.flat()), [B, S]);
}

function argmaxRow(v: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[off + i]! > v[off + best]!) best = i;
  return best;
}

export class DeepseekV3 {
  readonly embedTokens: Tensor;
  readonly layers: DecoderLayer[] = [];
  readonly norm: RMSNorm;
  readonly lmHead: LinearWeight;
  readonly mtp: MtpModule[] = [];
  readonly rope: RotaryEmbedding;
  /** Trainable float32 parameters by checkpoint name (MTP copies of embed/head not repeated). */
  readonly params: Map<string, Tensor>;
  /** Non-trainable tensors (the balance biases `e_score_correction_bias`). */
  readonly buffers: Map<string, Tensor>;
  /** Every linear weight by name, in whatever storage it was loaded. */
  readonly linears: Map<string, LinearWeight>;
  private readonly order: string[];

  private constructor(
    readonly cfg: ModelConfig,
    source: ParamSource,
    withMtp: boolean,
  ) {
    const rec = new Recorder(source);
    const D = cfg.hidden_size;
    this.embedTokens = rec.tensor('model.embed_tokens.weight', [cfg.vocab_size, D], 'normal');
    for (let i = 0; i < cfg.num_hidden_layers; i++) this.layers.push(new DecoderLayer(cfg, rec, i, i));
    this.norm = new RMSNorm(rec, 'model.norm', D, cfg.rms_norm_eps);
    this.lmHead = cfg.tie_word_embeddings ? f32Linear('lm_head.weight', this.embedTokens) : rec.linear('lm_head.weight', cfg.vocab_size, D);
    if (withMtp) for (let k = 1; k <= cfg.num_nextn_predict_layers; k++) this.mtp.push(new MtpModule(cfg, rec, k));
    this.rope = new RotaryEmbedding(cfg);
    this.params = rec.params;
    this.buffers = rec.buffers;
    this.linears = rec.linears;
    this.order = rec.order;
  }

  /**
   * Loads a Hugging Face checkpoint directory (config.json + model.safetensors or a sharded
   * index). Each tensor is read once; missing tensors, wrong shapes and unknown extra tensors
   * are DsvErrors naming the tensor.
   */
  static load(dir: string, opts: LoadOptions = {}): DeepseekV3 {
    const cfg = loadModelConfig(dir);
    const ckpt = openCheckpoint(dir);
    try {
      const src = new CheckpointParams(ckpt, opts.weights ?? 'auto');
      const withMtp = opts.mtp ?? true;
      const model = new DeepseekV3(cfg, src, withMtp);
      const L = cfg.num_hidden_layers;
      for (let k = 1; k <= cfg.num_nextn_predict_layers; k++) {
        const p = `model.layers.${L + k - 1}.`;
        for (const n of ckpt.names()) {
          if (!withMtp && n.startsWith(p)) src.skip(n);
        }
        // MTP copies of the shared embedding and head: same parameters as the main model's.
        for (const [n, shape] of [[`${p}embed_tokens.weight`, [cfg.vocab_size, cfg.hidden_size]], [`${p}shared_head.head.weight`, [cfg.vocab_size, cfg.hidden_size]]] as const) {
          if (!ckpt.has(n)) continue;
          const got = ckpt.info(n).shape;
          if (got.length !== 2 || got[0] !== shape[0] || got[1] !== shape[1]) {
            throw new DsvError(`${ckpt.location}: tensor "${n}" has shape [${got.join(', ')}], expected [${shape.join(', ')}]`);
          }
          src.skip(n);
        }
      }
      if (cfg.tie_word_embeddings) src.skip('lm_head.weight');
      for (const n of ckpt.names()) if (n.endsWith('rotary_emb.inv_freq')) src.skip(n);
      const extra = src.unused();
      if (extra.length > 0) {
        const shown = extra.slice(0, 8).map((n) => `"${n}"`).join(', ');
        throw new DsvError(`${ckpt.location}: ${extra.length} unexpected tensor(s) not used by a ${cfg.model_type} model with this config: ${shown}${extra.length > 8 ? ', ...' : ''}`);
      }
      return model;
    } finally {
      ckpt.close();
    }
  }

  /** A randomly initialised float32 model (Hugging Face initialisation, seeded). */
  static randomInit(cfg: ModelConfig, seed: Seed, opts: { mtp?: boolean } = {}): DeepseekV3 {
    return new DeepseekV3(cfg, new RandomParams(seed, cfg.initializer_range), opts.mtp ?? true);
  }

  /** A model whose tensors come from any ParamSource (e.g. random weights stored as FP8 or bf16). */
  static fromParams(cfg: ModelConfig, source: ParamSource, opts: { mtp?: boolean } = {}): DeepseekV3 {
    return new DeepseekV3(cfg, source, opts.mtp ?? true);
  }

  /** Trainable parameters (float32 leaves), in module order. */
  parameters(): Tensor[] {
    return [...this.params.values()];
  }

  /**
   * Every tensor of the Hugging Face checkpoint layout, in module order, sharing storage with
   * the model: float32 parameters and buffers, bf16 weights as bf16, FP8 weights as codes
   * (dtype f8_e4m3) followed by their float32 `<name>_scale_inv`, and the MTP layers' copies of
   * the shared `embed_tokens` / `shared_head.head`.
   */
  checkpointTensors(): Map<string, Tensor> {
    const stored = (name: string): [string, Tensor][] => {
      const w = this.linears.get(name);
      if (!w) return [[name, this.params.get(name) ?? this.buffers.get(name) ?? this.embedTokens]];
      const shape = [w.outFeatures, w.inFeatures];
      if (w.kind === 'f32') return [[name, w.weight]];
      if (w.kind === 'bf16') return [[name, new Tensor(w.bits, shape, 'bf16')]];
      const grid = [Math.ceil(w.outFeatures / 128), Math.ceil(w.inFeatures / 128)];
      return [[name, new Tensor(w.codes, shape, 'f8_e4m3')], [`${name}_scale_inv`, Tensor.fromF32(w.scaleInv, grid)]];
    };
    const out = new Map<string, Tensor>();
    for (const name of this.order) {
      const m = /^model\.layers\.(\d+)\.(enorm|shared_head\.norm)\.weight$/.exec(name);
      if (m?.[2] === 'enorm') out.set(`model.layers.${m[1]}.embed_tokens.weight`, this.embedTokens);
      for (const [n, t] of stored(name)) out.set(n, t);
      if (m?.[2] === 'shared_head.norm') {
        for (const [n, t] of stored('lm_head.weight')) out.set(n.replace('lm_head.weight', `model.layers.${m[1]}.shared_head.head.weight`), t);
      }
    }
    return out;
  }

  /** Balance bias of each MoE layer (main layers and MTP layers), by layer index. */
  balanceBiases(): Map<number, Tensor> {
    const out = new Map<number, Tensor>();
    for (const l of [...this.layers, ...this.mtp.map((m) => m.layer)]) {
      const mlp = l.mlp;
      if ('bias' in mlp && mlp.bias) out.set(l.index, mlp.bias);
    }
    return out;
  }

  /** A latent cache for `batch` sequences of up to maxLen tokens (main layers; + MTP layers if asked). */
  newCache(batch: number, maxLen: number, opts: { mtp?: boolean } = {}): LatentCache {
    const n = this.cfg.num_hidden_layers + (opts.mtp ? this.mtp.length : 0);
    return new LatentCache(n, batch, maxLen, this.cfg.kv_lora_rank, this.cfg.qk_rope_head_dim);
  }

  /**
   * Full forward of ids [B, T] (int32). With a cache, the tokens continue the cached sequence
   * (positions cache.length ..) and their latents are appended.
   */
  forward(ids: Tensor, opts: ForwardOptions = {}): ForwardResult {
    const { hidden, routing } = this.forwardHidden(ids, opts);
    const logits = applyLinear(hidden, this.lmHead, { highPrecision: true }); // never FP8 (§3.3)
    opts.capture?.('logits', logits);
    return { logits, hidden, routing };
  }

  /**
   * `forward` without the output head: the final-norm hidden state, whose logits the caller
   * computes (the training loss fuses lm_head with the cross-entropy, linearCrossEntropy).
   */
  forwardHidden(ids: Tensor, opts: ForwardOptions = {}): HiddenResult {
    const idsT = idsTensor(ids);
    const cache = opts.cache;
    const start = cache ? cache.length : 0;
    const ctx: AttentionContext = { rope: this.rope, start, path: opts.path ?? 'naive', ...(cache ? { cache } : {}) };
    const capture = opts.capture;
    let h = embedding(this.embedTokens, idsT);
    capture?.('hidden.embeddings', h);
    const routing = new Map<number, Routing>();
    for (const layer of this.layers) {
      const r = layer.forward(h, ctx, capture);
      h = r.out;
      if (r.routing) routing.set(layer.index, r.routing);
      capture?.(`hidden.layers.${layer.index}`, h);
    }
    const hidden = this.norm.forward(h);
    capture?.('hidden.final_norm', hidden);
    if (cache) cache.length = start + idsT.shape[1]!;
    return { hidden, routing };
  }

  /**
   * The MTP modules on the main model's final-norm hidden state [B, S, D] and its ids [B, S]:
   * module k sees positions 0 .. S-k-1 (RoPE positions from 0) and the tokens k ahead.
   * Captures `mtp.logits`, `mtp.hidden` (depth 1; `mtp.depth.k.*` for deeper modules) and the
   * MTP layers' router tensors. With `head: false` the logits are not computed (null): the
   * caller applies the head to each output's `headInput` (the fused training loss).
   */
  mtpForward(hidden: Tensor, ids: Tensor, opts: { path?: AttentionPath; capture?: Capture; head?: boolean } = {}): MtpOutput[] {
    const idsT = idsTensor(ids);
    const S = idsT.shape[1]!;
    if (this.mtp.length === 0) throw new DsvError('this model has no MTP module (num_nextn_predict_layers is 0, or it was loaded with mtp: false)');
    const ctx: AttentionContext = { rope: this.rope, start: 0, path: opts.path ?? 'naive' };
    const cap = opts.capture;
    const routerOnly: Capture | undefined = cap ? (name, t) => name.startsWith('router.') && cap(name, t) : undefined;
    const outs: MtpOutput[] = [];
    let hPrev = hidden;
    for (const m of this.mtp) {
      const k = m.depth;
      if (S - k < 1) break;
      const next = idsT.slice(1, k, S).contiguous();
      const o = m.forward(hPrev.slice(1, 0, S - k), next, this.embedTokens, opts.head === false ? null : this.lmHead, ctx, routerOnly);
      const tag = k === 1 ? 'mtp' : `mtp.depth.${k}`;
      if (o.logits) cap?.(`${tag}.logits`, o.logits);
      cap?.(`${tag}.hidden`, o.hidden);
      outs.push(o);
      hPrev = o.hidden;
    }
    return outs;
  }

  /** Runs ids [B, T] through the model appending to the cache; returns logits [B, T, V]. */
  prefill(ids: Tensor, cache: LatentCache, opts: { path?: AttentionPath } = {}): Tensor {
    return noGrad(() => this.forward(ids, { ...opts, cache }).logits);
  }

  /** One decoding step: tokens [B] at position cache.length; returns logits [B, 1, V]. */
  decodeStep(tokens: Int32Array, cache: LatentCache, opts: { path?: AttentionPath } = {}): Tensor {
    return this.prefill(Tensor.fromI32(tokens, [tokens.length, 1]), cache, opts);
  }

  /**
   * Greedy generation: prefill the prompt [B, P], then n argmax tokens, one decode step each.
   * Returns ids [B, P + n] and the logits [B, n, V] that produced each new token.
   */
  greedy(prompt: Tensor, n: number, opts: { path?: AttentionPath } = {}): { ids: Tensor; logits: Tensor } {
    const p = idsTensor(prompt);
    const [B, P] = p.shape as [number, number];
    const V = this.cfg.vocab_size;
    const ids = new Int32Array(B * (P + n));
    const src = p.contiguous().i32();
    for (let b = 0; b < B; b++) ids.set(src.subarray(b * P, (b + 1) * P), b * (P + n));
    const logits = new Float32Array(B * n * V);
    const cache = this.newCache(B, P + n);
    let step = this.prefill(p, cache, opts);
    for (let k = 0; k < n; k++) {
      const T = step.shape[1]!;
      const l = step.contiguous().f32();
      const next = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        const off = (b * T + T - 1) * V;
        logits.set(l.subarray(off, off + V), (b * n + k) * V);
        next[b] = argmaxRow(l, off, V);
        ids[b * (P + n) + P + k] = next[b]!;
      }
      if (k + 1 < n) step = this.decodeStep(next, cache, opts);
    }
    return { ids: Tensor.fromI32(ids, [B, P + n]), logits: Tensor.fromF32(logits, [B, n, V]) };
  }
}
