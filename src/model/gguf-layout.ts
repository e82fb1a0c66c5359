/**
 * A DeepSeek-V3/V2 checkpoint in llama.cpp's `deepseek2` GGUF layout — tensor names, ggml shapes
 * (ne = the reversed PyTorch shape), types and the architecture keys — as llama.cpp's converter
 * writes it (convert_hf_to_gguf.py DeepseekV2Model, which also handles DeepseekV3ForCausalLM) and
 * its loader reads it (src/models/deepseek2.cpp, llama-arch.cpp), checked against the llama.cpp
 * bundled with node-llama-cpp 3.21.1:
 *
 *   model.embed_tokens → token_embd · model.norm → output_norm · lm_head → output (absent when tied)
 *   layers.i: input_layernorm → attn_norm · q_proj → attn_q, or q_a_proj / q_a_layernorm / q_b_proj
 *     → attn_q_a / attn_q_a_norm / attn_q_b · kv_a_proj_with_mqa → attn_kv_a_mqa · kv_a_layernorm
 *     → attn_kv_a_norm · kv_b_proj [H·(dn+dv), r] split per head into attn_k_b (ne {dn, r, H}: the
 *     key part transposed, for absorbed MLA) and attn_v_b (ne {r, dv, H}) · o_proj → attn_output ·
 *     post_attention_layernorm → ffn_norm
 *   dense layers (i < leading_dense_block_count, the first MoE layer): mlp.{gate,up,down}_proj → ffn_{gate,up,down}
 *   MoE layers: mlp.gate → ffn_gate_inp (F32) · mlp.gate.e_score_correction_bias → exp_probs_b.bias
 *     · experts.e.{gate,up,down}_proj stacked per layer → ffn_{gate,up,down}_exps (ne {in, out, E})
 *     · shared_experts → ffn_{gate,up,down}_shexp
 *   MTP module k at layer L+k (block_count = L + num_nextn_predict_layers): the decoder tensors
 *     above plus enorm / hnorm / eh_proj / shared_head.norm → nextn.{enorm, hnorm, eh_proj,
 *     shared_head_norm}; its copies of the embedding and head are left out (llama.cpp falls back
 *     to token_embd / output for the optional nextn.embed_tokens / nextn.shared_head_head).
 *
 * Types follow the converter: 1-D tensors, norms, ffn_gate_inp and biases stay F32; the rest is
 * the chosen type, and Q8_0 falls back to F16 for a tensor whose ne[0] is not a multiple of 32.
 * FP8 weights are dequantised (W = e4m3 · scale_inv per 128x128 block), BF16 upcast exactly.
 */
import type { Checkpoint } from '../io/checkpoint-read.js';
import { dequantFp8Weight } from '../engine/fp8/checkpoint-weights.js';
import { kv, type GgmlTypeName, type GgufValue } from '../io/gguf-format.js';
import type { GgufTensorToWrite } from '../io/gguf-write.js';
import { DsvError } from '../errors.js';
import { isMoeLayer, type ModelConfig } from './config.js';
import { LATENT_NORM_EPS } from './rmsnorm.js';
import { ropeAttentionFactor, yarnMscale } from './yarn.js';

export type GgufExportType = 'f32' | 'bf16' | 'q8_0';

const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, bf16: 32, q8_0: 7 }; // llama_ftype
const TARGET: Record<GgufExportType, GgmlTypeName> = { f32: 'F32', bf16: 'BF16', q8_0: 'Q8_0' };

/** A tensor of the layout before data: name, ggml shape, type and where its data comes from. */
export interface GgufLayoutTensor extends GgufTensorToWrite {
  /** The checkpoint tensors it is made of (for messages and tests). */
  sources: string[];
}

/** The ggml type of a tensor under the converter's rules. */
export function ggufTensorType(name: string, ne: readonly number[], target: GgufExportType, outputTarget: GgufExportType = target): GgmlTypeName {
  if (ne.length <= 1 || name.endsWith('_norm.weight') || name.endsWith('norm.weight') || !name.endsWith('.weight')) return 'F32';
  if (/\.ffn_gate_inp\.weight$/.test(name)) return 'F32';
  // The output head may take its own type (llama-quantize's --output-tensor-type): DeepSeek's FP8
  // release keeps lm_head in BF16 (paper §3.3), so a like-for-like q8_0 file keeps output.weight BF16.
  const t = TARGET[name === 'output.weight' ? outputTarget : target];
  if (t === 'Q8_0' && ne[0]! % 32 !== 0) return 'F16';
  return t;
}

/**
 * How the FFNs map onto llama.cpp's, which makes layer i dense iff i < leading_dense_block_count
 * and gives every other layer routed experts plus ffn_*_shexp of width n_ff_exp · expert_shared_count
 * (required, and the same width in every layer). Two kinds of checkpoint do not fit as they are:
 *   - n_shared_experts = 0 (no shared expert): written as shared experts of zeros, which add
 *     exactly 0 (SiLU(0·x) · 0·x = 0, and the down projection is 0);
 *   - moe_layer_freq > 1 (DeepSeek's HF code: layer i is MoE iff i >= first_k_dense_replace and
 *     i % moe_layer_freq == 0): the layers before the first MoE one are the leading dense block
 *     (leadingDenseLayers); a dense layer after the first MoE one is written as a MoE layer
 *     whose router and routed experts are zero (they add Σ g_e · 0 = 0 whatever is chosen) and
 *     whose shared expert holds the dense MLP.
 * Shared experts are padded with zero rows (gate, up) and columns (down), which add exactly 0,
 * to one width: the smallest multiple of moe_intermediate_size holding both.
 */
export interface SharedExpertPlan {
  /** deepseek2.expert_shared_count: the shared width is count · moe_intermediate_size. */
  count: number;
  /** Layers (of all, MTP included) written as MoE whose FFN is the checkpoint's dense MLP. */
  denseAsMoe: number[];
}

export function sharedExpertPlan(cfg: ModelConfig): SharedExpertPlan {
  const F = cfg.moe_intermediate_size;
  const n = cfg.num_hidden_layers + cfg.num_nextn_predict_layers;
  const denseAsMoe: number[] = [];
  for (let i = leadingDenseLayers(cfg); i < n; i++) if (!isMoeLayer(cfg, i)) denseAsMoe.push(i);
  const width = Math.max(cfg.n_shared_experts * F, denseAsMoe.length > 0 ? cfg.intermediate_size : 0, F);
  return { count: Math.ceil(width / F), denseAsMoe };
}

/** deepseek2.leading_dense_block_count: the layers before the first MoE one (all, MTP included, when none is MoE). */
export function leadingDenseLayers(cfg: ModelConfig): number {
  const n = cfg.num_hidden_layers + cfg.num_nextn_predict_layers;
  for (let i = 0; i < n; i++) if (isMoeLayer(cfg, i)) return i;
  return n;
}

/**
 * YaRN attention scales llama.cpp cannot take as keys, folded into the query projection as
 * [factor of the nope rows, factor of the rope rows] (exact up to float rounding: q^C and q^R
 * each enter one dot product of the score, eq. 10, and RoPE is linear).
 *   DeepSeek (model/yarn.ts): score = S·(q^C·k^C + c²·q^R·k^R) / √d, S = m(mscale_all_dim)² (1 when
 *     mscale_all_dim is 0 or absent), c = m(mscale) / m(mscale_all_dim) on cos/sin.
 *   llama.cpp deepseek2 (llama-context.cpp yarn_attn_factor, deepseek2.cpp kq_scale) with
 *     yarn_log_multiplier = 0.1·mscale_all_dim: when it is not 0, A = m(mscale_all_dim)² and
 *     cos/sin factor R = 1; when it is 0, A = m(1)² and R = m(1).
 * So the query's nope rows take S/A and its rope rows S·c²/(A·R²): [1, c²] for the released
 * configs (mscale = mscale_all_dim: [1, 1]).
 */
export function yarnQueryScales(cfg: ModelConfig): [number, number] {
  const y = cfg.rope_scaling;
  if (!y) return [1, 1];
  const c = ropeAttentionFactor(cfg);
  if (y.mscale_all_dim) return [1, c * c];
  const m1 = yarnMscale(y.factor, 1);
  return [1 / (m1 * m1), (c * c) / (m1 * m1 * m1 * m1)];
}

/** Model-checking problems llama.cpp's deepseek2 cannot represent: thrown as one DsvError. */
function checkSupported(cfg: ModelConfig, where: string, approximate: boolean): void {
  const L = cfg.num_hidden_layers;
  const fail = (field: string, why: string): never => {
    throw new DsvError(`${where}: ${field} ${why}; llama.cpp's deepseek2 architecture cannot run this model`);
  };
  if (cfg.q_lora_rank !== null && (L === 26 || L === 27 || (L === 48 && cfg.vocab_size === 128256))) {
    fail(`num_hidden_layers = ${L} with q_lora_rank ${cfg.q_lora_rank}`, 'is taken by llama.cpp for a "Lite" model and its q_lora_rank is ignored');
  }
  // DeepSeek-V2's group-limited greedy routing scores a group by its best expert; llama.cpp by the
  // sum of its top two (DeepSeek-V3's noaux_tc): other experts are chosen. Opt-in only.
  const groups = expertGroups(cfg);
  if (cfg.topk_method === 'group_limited_greedy' && groups && !approximate) {
    throw new DsvError(`${where}: topk_method = group_limited_greedy with n_group ${groups[0]}, topk_group ${groups[1]} scores a group by its best expert; llama.cpp scores it by its top-2 sum (DeepSeek-V3's rule), so it would route tokens to other experts (--approximate writes the file anyway)`);
  }
}

/** The group-limited routing llama.cpp will do: [groups, groups kept], or null for none. */
function expertGroups(cfg: ModelConfig): [number, number] | null {
  if (cfg.topk_method === 'greedy' || cfg.n_group <= 1 || cfg.topk_group >= cfg.n_group) return null;
  return [cfg.n_group, cfg.topk_group];
}

/** The general.* and deepseek2.* keys for a config (converter: TextModel + DeepseekV2Model set_gguf_parameters). */
export function ggufArchKeys(cfg: ModelConfig, type: GgufExportType, name: string): { kvs: Map<string, GgufValue>; warnings: string[] } {
  const a = 'deepseek2';
  const warnings: string[] = [];
  const m = new Map<string, GgufValue>([
    ['general.architecture', kv.str(a)],
    ['general.type', kv.str('model')],
    ['general.name', kv.str(name)],
    ['general.file_type', kv.u32(FILE_TYPE[type])],
    ['general.quantization_version', kv.u32(2)],
    ['general.alignment', kv.u32(32)],
    [`${a}.block_count`, kv.u32(cfg.num_hidden_layers + cfg.num_nextn_predict_layers)],
    [`${a}.context_length`, kv.u32(cfg.max_position_embeddings)],
    [`${a}.embedding_length`, kv.u32(cfg.hidden_size)],
    [`${a}.feed_forward_length`, kv.u32(cfg.intermediate_size)],
    [`${a}.attention.head_count`, kv.u32(cfg.num_attention_heads)],
    // MLA runs as MQA over the latent: one KV head of kv_lora_rank + rope dims, values kv_lora_rank wide
    [`${a}.attention.head_count_kv`, kv.u32(1)],
    [`${a}.rope.freq_base`, kv.f32(cfg.rope_theta)],
    [`${a}.attention.layer_norm_rms_epsilon`, kv.f32(cfg.rms_norm_eps)],
    [`${a}.expert_count`, kv.u32(cfg.n_routed_experts)],
    [`${a}.expert_used_count`, kv.u32(cfg.num_experts_per_tok)],
  ]);
  const groups = expertGroups(cfg);
  m.set(`${a}.expert_group_count`, kv.u32(groups ? groups[0] : 1));
  m.set(`${a}.expert_group_used_count`, kv.u32(groups ? groups[1] : 1));
  if (cfg.topk_method === 'group_limited_greedy' && groups) {
    warnings.push('topk_method group_limited_greedy scores a group by its best expert; llama.cpp scores groups by their top-2 sum (DeepSeek-V3 noaux_tc), so routing can differ');
  }
  m.set(`${a}.expert_gating_func`, kv.u32(cfg.scoring_func === 'sigmoid' ? 2 : 1)); // LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX = 1, SIGMOID = 2
  m.set(`${a}.leading_dense_block_count`, kv.u32(leadingDenseLayers(cfg)));
  m.set(`${a}.vocab_size`, kv.u32(cfg.vocab_size));
  // llama.cpp requires the key (except for the layer counts it takes for "Lite" models, where it
  // never reads it); 0 means a plain q_proj (attn_q), as in llama.cpp's `q_lora_rank > 0` test
  m.set(`${a}.attention.q_lora_rank`, kv.u32(cfg.q_lora_rank ?? 0));
  m.set(`${a}.attention.kv_lora_rank`, kv.u32(cfg.kv_lora_rank));
  m.set(`${a}.attention.key_length`, kv.u32(cfg.kv_lora_rank + cfg.qk_rope_head_dim));
  m.set(`${a}.attention.value_length`, kv.u32(cfg.kv_lora_rank));
  m.set(`${a}.attention.key_length_mla`, kv.u32(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim));
  m.set(`${a}.attention.value_length_mla`, kv.u32(cfg.v_head_dim));
  m.set(`${a}.expert_feed_forward_length`, kv.u32(cfg.moe_intermediate_size));
  const plan = sharedExpertPlan(cfg);
  m.set(`${a}.expert_shared_count`, kv.u32(plan.count));
  if (plan.count !== cfg.n_shared_experts && leadingDenseLayers(cfg) < cfg.num_hidden_layers + cfg.num_nextn_predict_layers) {
    warnings.push(`n_shared_experts ${cfg.n_shared_experts}${plan.denseAsMoe.length ? `, dense layers ${plan.denseAsMoe.join(', ')} after the first MoE layer (moe_layer_freq ${cfg.moe_layer_freq})` : ''}: llama.cpp needs ${plan.denseAsMoe.length ? 'every layer after the leading dense ones to be MoE and ' : ''}one shared-expert width; wrote expert_shared_count ${plan.count} with zero padding${plan.denseAsMoe.length ? ' and those layers as MoE with zero routed experts and the dense MLP as the shared expert' : ''} (exact, the file is larger)`);
  }
  m.set(`${a}.expert_weights_scale`, kv.f32(cfg.routed_scaling_factor));
  if (cfg.norm_topk_prob) m.set(`${a}.expert_weights_norm`, kv.bool(true));
  m.set(`${a}.rope.dimension_count`, kv.u32(cfg.qk_rope_head_dim));
  const y = cfg.rope_scaling;
  if (y) {
    m.set(`${a}.rope.scaling.type`, kv.str('yarn'));
    m.set(`${a}.rope.scaling.factor`, kv.f32(y.factor));
    m.set(`${a}.rope.scaling.original_context_length`, kv.u32(y.original_max_position_embeddings));
    m.set(`${a}.rope.scaling.yarn_beta_fast`, kv.f32(y.beta_fast));
    m.set(`${a}.rope.scaling.yarn_beta_slow`, kv.f32(y.beta_slow));
    // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: the converter stores 0.1 * mscale_all_dim, the loader divides by 0.1
    m.set(`${a}.rope.scaling.yarn_log_multiplier`, kv.f32(0.1 * y.mscale_all_dim));
    // (mscale != mscale_all_dim: DeepSeek's cos/sin factor is folded into the query's rope rows, ggufTensors)
  }
  if (cfg.num_nextn_predict_layers > 0) m.set(`${a}.nextn_predict_layers`, kv.u32(cfg.num_nextn_predict_layers));
  if (cfg.rms_norm_eps !== LATENT_NORM_EPS && (cfg.q_lora_rank !== null || cfg.kv_lora_rank > 0)) {
    warnings.push(`rms_norm_eps is ${cfg.rms_norm_eps}: llama.cpp uses it for q_a_layernorm / kv_a_layernorm too, which DeepSeek (and dsv3) run with ${LATENT_NORM_EPS}`);
  }
  return { kvs: m, warnings };
}

/** Reads a checkpoint tensor as float32 (FP8 dequantised with its `_scale_inv`), checking its shape. */
function readF32(ckpt: Checkpoint, name: string, shape: readonly number[]): Float32Array {
  if (!ckpt.has(name)) throw new DsvError(`${ckpt.location}: missing tensor "${name}" (expected shape [${shape.join(', ')}])`);
  const info = ckpt.info(name);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new DsvError(`${ckpt.location}: tensor "${name}" has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  if (info.tag === 'F8_E4M3') {
    const s = `${name}_scale_inv`;
    if (!ckpt.has(s)) throw new DsvError(`${ckpt.location}: FP8 tensor "${name}" has no "${s}"`);
    const [rows, cols] = shape.length === 2 ? [shape[0]!, shape[1]!] : [1, shape[0]!];
    return dequantFp8Weight(ckpt.get(name).data as Uint8Array, ckpt.getF32(s), rows, cols, name);
  }
  if (info.tag !== 'F32' && info.tag !== 'BF16' && info.tag !== 'F16') {
    throw new DsvError(`${ckpt.location}: tensor "${name}" has dtype ${info.tag}; expected F32, BF16, F16 or F8_E4M3`);
  }
  return ckpt.getF32(name);
}

/**
 * Every GGUF tensor of the checkpoint in llama.cpp's deepseek2 layout, in the converter's
 * order, with lazy data. `where` names the checkpoint in errors.
 */
export function ggufTensors(cfg: ModelConfig, ckpt: Checkpoint, type: GgufExportType, outputType: GgufExportType = type, opts: { approximate?: boolean } = {}): GgufLayoutTensor[] {
  checkSupported(cfg, ckpt.location, opts.approximate ?? false);
  const D = cfg.hidden_size;
  const V = cfg.vocab_size;
  const H = cfg.num_attention_heads;
  const dn = cfg.qk_nope_head_dim;
  const dr = cfg.qk_rope_head_dim;
  const dv = cfg.v_head_dim;
  const r = cfg.kv_lora_rank;
  const E = cfg.n_routed_experts;
  const F = cfg.moe_intermediate_size;
  const out: GgufLayoutTensor[] = [];
  const add = (name: string, ne: number[], sources: string[], chunks: () => Iterable<Float32Array>): void => {
    out.push({ name, ne, type: ggufTensorType(name, ne, type, outputType), sources, chunks });
  };
  /** A checkpoint tensor of PyTorch shape `shape` as is (ne = reversed shape). */
  const plain = (gguf: string, hf: string, shape: number[]): void => {
    add(gguf, shape.slice().reverse(), [hf], () => [readF32(ckpt, hf, shape)]);
  };

  /** Zeros of ggml shape `ne` (one chunk per outermost index). */
  const zeros = (gguf: string, ne: number[]): void => {
    const outer = ne.length > 1 ? ne[ne.length - 1]! : 1;
    const inner = ne.reduce((x, y) => x * y, 1) / outer;
    add(gguf, ne, [], function* () {
      for (let k = 0; k < outer; k++) yield new Float32Array(inner);
    });
  };
  const plan = sharedExpertPlan(cfg);
  const W = plan.count * F;
  const lead = leadingDenseLayers(cfg);
  /** A [rows, cols] checkpoint matrix padded with zeros to [R, C] (R >= rows, C >= cols); zeros when it has no rows. */
  const padded = (gguf: string, hf: string, shape: [number, number], to: [number, number]): void => {
    if (shape[0] === 0 || shape[1] === 0) return zeros(gguf, [to[1], to[0]]);
    if (shape[0] === to[0] && shape[1] === to[1]) return plain(gguf, hf, shape);
    add(gguf, [to[1], to[0]], [hf], function* () {
      const w = readF32(ckpt, hf, shape);
      const o = new Float32Array(to[0] * to[1]);
      for (let r = 0; r < shape[0]; r++) o.set(w.subarray(r * shape[1], (r + 1) * shape[1]), r * to[1]);
      yield o;
    });
  };

  const [nopeScale, ropeScale] = yarnQueryScales(cfg);
  /** The query projection [H·(dn+dr), in], its nope / rope rows scaled by yarnQueryScales. */
  const query = (gguf: string, hf: string, shape: [number, number]): void => {
    if (nopeScale === 1 && ropeScale === 1) return plain(gguf, hf, shape);
    add(gguf, [shape[1], shape[0]], [hf], function* () {
      const w = readF32(ckpt, hf, shape);
      for (let j = 0; j < shape[0]; j++) {
        const f = j % (dn + dr) < dn ? nopeScale : ropeScale;
        if (f !== 1) for (let k = j * shape[1]; k < (j + 1) * shape[1]; k++) w[k] = w[k]! * f;
      }
      yield w;
    });
  };

  plain('token_embd.weight', 'model.embed_tokens.weight', [V, D]);
  for (let i = 0; i < cfg.num_hidden_layers + cfg.num_nextn_predict_layers; i++) {
    const p = `model.layers.${i}`;
    const b = `blk.${i}`;
    if (i >= cfg.num_hidden_layers) {
      plain(`${b}.nextn.eh_proj.weight`, `${p}.eh_proj.weight`, [D, 2 * D]);
      plain(`${b}.nextn.enorm.weight`, `${p}.enorm.weight`, [D]);
      plain(`${b}.nextn.hnorm.weight`, `${p}.hnorm.weight`, [D]);
      plain(`${b}.nextn.shared_head_norm.weight`, `${p}.shared_head.norm.weight`, [D]);
    }
    plain(`${b}.attn_norm.weight`, `${p}.input_layernorm.weight`, [D]);
    const qOut = H * (dn + dr);
    if (cfg.q_lora_rank === null) query(`${b}.attn_q.weight`, `${p}.self_attn.q_proj.weight`, [qOut, D]);
    else {
      plain(`${b}.attn_q_a.weight`, `${p}.self_attn.q_a_proj.weight`, [cfg.q_lora_rank, D]);
      plain(`${b}.attn_q_a_norm.weight`, `${p}.self_attn.q_a_layernorm.weight`, [cfg.q_lora_rank]);
      query(`${b}.attn_q_b.weight`, `${p}.self_attn.q_b_proj.weight`, [qOut, cfg.q_lora_rank]);
    }
    plain(`${b}.attn_kv_a_mqa.weight`, `${p}.self_attn.kv_a_proj_with_mqa.weight`, [r + dr, D]);
    plain(`${b}.attn_kv_a_norm.weight`, `${p}.self_attn.kv_a_layernorm.weight`, [r]);
    const kvb = `${p}.self_attn.kv_b_proj.weight`;
    const kvbShape = [H * (dn + dv), r];
    // k_b[h] = kv_b[h·(dn+dv) .. +dn, :]ᵀ  → ne {dn, r, H}
    add(`${b}.attn_k_b.weight`, [dn, r, H], [kvb], function* () {
      const w = readF32(ckpt, kvb, kvbShape);
      for (let h = 0; h < H; h++) {
        const o = new Float32Array(r * dn);
        for (let c = 0; c < r; c++) for (let j = 0; j < dn; j++) o[c * dn + j] = w[(h * (dn + dv) + j) * r + c]!;
        yield o;
      }
    });
    // v_b[h] = kv_b[h·(dn+dv)+dn .. +dv, :]  → ne {r, dv, H}
    add(`${b}.attn_v_b.weight`, [r, dv, H], [kvb], function* () {
      const w = readF32(ckpt, kvb, kvbShape);
      for (let h = 0; h < H; h++) yield w.slice((h * (dn + dv) + dn) * r, (h * (dn + dv) + dn + dv) * r);
    });
    plain(`${b}.attn_output.weight`, `${p}.self_attn.o_proj.weight`, [D, H * dv]);
    plain(`${b}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`, [D]);
    if (i < lead) {
      const I = cfg.intermediate_size;
      plain(`${b}.ffn_gate.weight`, `${p}.mlp.gate_proj.weight`, [I, D]);
      plain(`${b}.ffn_down.weight`, `${p}.mlp.down_proj.weight`, [D, I]);
      plain(`${b}.ffn_up.weight`, `${p}.mlp.up_proj.weight`, [I, D]);
      continue;
    }
    // a dense layer after the first MoE one (moe_layer_freq > 1): zero router and routed experts,
    // the dense MLP as the shared expert (sharedExpertPlan)
    const denseAsMoe = plan.denseAsMoe.includes(i);
    if (denseAsMoe) {
      zeros(`${b}.ffn_gate_inp.weight`, [D, E]);
      if (cfg.topk_method === 'noaux_tc') zeros(`${b}.exp_probs_b.bias`, [E]);
      for (const [g, ne] of [['down', [F, D, E]], ['gate', [D, F, E]], ['up', [D, F, E]]] as const) zeros(`${b}.ffn_${g}_exps.weight`, [...ne]);
    } else {
      plain(`${b}.ffn_gate_inp.weight`, `${p}.mlp.gate.weight`, [E, D]);
      if (cfg.topk_method === 'noaux_tc') plain(`${b}.exp_probs_b.bias`, `${p}.mlp.gate.e_score_correction_bias`, [E]);
      for (const [g, hf, shape] of [['down', 'down_proj', [D, F]], ['gate', 'gate_proj', [F, D]], ['up', 'up_proj', [F, D]]] as const) {
        const names = Array.from({ length: E }, (_, e) => `${p}.mlp.experts.${e}.${hf}.weight`);
        add(`${b}.ffn_${g}_exps.weight`, [shape[1], shape[0], E], names, function* () {
          for (const n of names) yield readF32(ckpt, n, shape);
        });
      }
    }
    const [mlp, S] = denseAsMoe ? [`${p}.mlp`, cfg.intermediate_size] : [`${p}.mlp.shared_experts`, cfg.n_shared_experts * F];
    padded(`${b}.ffn_gate_shexp.weight`, `${mlp}.gate_proj.weight`, [S, D], [W, D]);
    padded(`${b}.ffn_down_shexp.weight`, `${mlp}.down_proj.weight`, [D, S], [D, W]);
    padded(`${b}.ffn_up_shexp.weight`, `${mlp}.up_proj.weight`, [S, D], [W, D]);
  }
  plain('output_norm.weight', 'model.norm.weight', [D]);
  if (!cfg.tie_word_embeddings) plain('output.weight', 'lm_head.weight', [V, D]);
  return out;
}
