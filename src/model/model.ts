/**
 * DeepSeek-V3 (Hugging Face `DeepseekV3ForCausalLM` semantics, paper section 2):
 *   h_0 = Emb(t);  h_l = Block_l(h_{l-1}) for l = 1..L;  logits = lm_head(RMSNorm(h_L))
 * plus the optional MTP modules (mtp.ts) and MLA's latent cache for incremental decoding (the
 * generation loop is inference/generate.ts). Built from differentiable ops on float32 parameters, so training can call
 * `forward` and `backward(loss)`; decoding with the cache and FP8/bf16 weights run under noGrad.
 */
import { dropActivations } from '../engine/active-arena.js';
import { noGrad } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { openCheckpoint } from '../io/checkpoint-read.js';
import type { Seed } from '../data/rng.js';
import { DsvError } from '../errors.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import type { Capture } from './decoder-layer.js';
import { LatentCache } from './latent-cache.js';
import type { AttentionContext, AttentionPath } from './mla.js';
import { idsTensor, ModelPart } from './model-part.js';
import { ParamRegistry } from './param-registry.js';
import { CheckpointParams, type ParamSource, RandomParams, type WeightMode } from './params.js';
import type { RMSNorm } from './rmsnorm.js';
import type { Routing } from './router.js';
import { applyLinear, type LinearWeight } from './weights.js';

export interface LoadOptions {
  /** Linear weight storage (see WeightMode); default 'auto'. */
  weights?: WeightMode;
  /** Load the MTP modules (default true); without them their tensors are skipped. */
  mtp?: boolean;
  /**
   * Map the checkpoint files read-only and keep bf16 / FP8 weights in place (params.ts): the
   * load costs O(1) in the checkpoint size and the resident set grows with the pages used.
   * For inference only (kept weights are frozen); without the native addon it reads copies.
   */
  map?: boolean;
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

export interface ForwardResult extends HiddenResult {
  /** [B, T, V] */
  logits: Tensor;
}

/** The whole model: the part holding every piece (model-part.ts), loadable from a checkpoint. */
export class DeepseekV3 extends ModelPart {
  declare readonly embedTokens: Tensor;
  declare readonly norm: RMSNorm;
  declare readonly lmHead: LinearWeight;
  /** Trainable float32 parameters by checkpoint name (MTP copies of embed/head not repeated). */
  readonly params: Map<string, Tensor>;
  /** Non-trainable tensors (the balance biases `e_score_correction_bias`). */
  readonly buffers: Map<string, Tensor>;
  /** Every linear weight by name, in whatever storage it was loaded. */
  readonly linears: Map<string, LinearWeight>;

  private constructor(cfg: ModelConfig, source: ParamSource, withMtp: boolean) {
    const registry = new ParamRegistry(source);
    super(cfg, registry, { layers: [0, cfg.num_hidden_layers], embed: true, head: true, mtp: withMtp });
    this.params = registry.params;
    this.buffers = registry.buffers;
    this.linears = registry.linears;
  }

  /**
   * Loads a Hugging Face checkpoint directory (config.json + model.safetensors or a sharded
   * index). Each tensor is read once; missing tensors, wrong shapes and unknown extra tensors
   * are DsvErrors naming the tensor.
   */
  static load(dir: string, opts: LoadOptions = {}): DeepseekV3 {
    const cfg = loadModelConfig(dir);
    const ckpt = openCheckpoint(dir, { map: opts.map ?? false });
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
      src.startReadAhead();
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
    const h = this.embed(idsT);
    capture?.('hidden.embeddings', h);
    const routing = new Map<number, Routing>();
    const last = this.decoderLayers(h, ctx, routing, capture);
    const hidden = this.norm.forward(last);
    if (!capture && !cache) dropActivations(h, last); // read by now; their readers hold what they saved (arena.ts)
    capture?.('hidden.final_norm', hidden);
    if (cache) cache.length = start + idsT.shape[1]!;
    return { hidden, routing };
  }

  /** Runs ids [B, T] through the model appending to the cache; returns logits [B, T, V]. */
  prefill(ids: Tensor, cache: LatentCache, opts: { path?: AttentionPath } = {}): Tensor {
    return noGrad(() => this.forward(ids, { ...opts, cache }).logits);
  }

  /** One decoding step: tokens [B] at position cache.length; returns logits [B, 1, V]. */
  decodeStep(tokens: Int32Array, cache: LatentCache, opts: { path?: AttentionPath } = {}): Tensor {
    return this.prefill(Tensor.fromI32(tokens, [tokens.length, 1]), cache, opts);
  }
}
