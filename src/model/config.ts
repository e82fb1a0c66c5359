/**
 * Model configuration: parses and validates a Hugging Face DeepSeek-V3 / V2 `config.json` into a
 * typed ModelConfig (HF field names, HF defaults for absent fields), derives the constants the
 * model needs (MoE layer rule, softmax scale, YaRN frequencies) and writes a HF-loadable config.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';

export type ModelType = 'deepseek_v3' | 'deepseek_v2';
export type ScoringFunc = 'sigmoid' | 'softmax';
export type TopkMethod = 'noaux_tc' | 'greedy' | 'group_limited_greedy';

/** YaRN context extension parameters (rope_scaling with type "yarn"). */
export interface YarnScaling {
  type: 'yarn';
  factor: number;
  original_max_position_embeddings: number;
  beta_fast: number;
  beta_slow: number;
  mscale: number;
  mscale_all_dim: number;
}

/** Block-scaled FP8 weights, as in the released DeepSeek-V3 checkpoints. */
export interface Fp8Quantization {
  quant_method: 'fp8';
  fmt: 'e4m3';
  activation_scheme: 'dynamic';
  weight_block_size: [128, 128];
  /** 'ue8m0': block scales are powers of two (DeepSeek-V3.1); null: plain float32 scales. */
  scale_fmt: 'ue8m0' | null;
}

/** A validated model configuration (every field docs/SPEC.md section 1 honours, HF names). */
export interface ModelConfig {
  model_type: ModelType;
  architectures: string[];
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  moe_intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  n_shared_experts: number;
  n_routed_experts: number;
  num_experts_per_tok: number;
  n_group: number;
  topk_group: number;
  routed_scaling_factor: number;
  scoring_func: ScoringFunc;
  topk_method: TopkMethod;
  norm_topk_prob: boolean;
  first_k_dense_replace: number;
  moe_layer_freq: number;
  /** null: the query is a plain q_proj (no q_a_proj / q_a_layernorm / q_b_proj). */
  q_lora_rank: number | null;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  rope_theta: number;
  rope_scaling: YarnScaling | null;
  max_position_embeddings: number;
  rms_norm_eps: number;
  num_nextn_predict_layers: number;
  tie_word_embeddings: boolean;
  quantization_config: Fp8Quantization | null;
  initializer_range: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
  torch_dtype: string;
}

type Defaults = Partial<Record<keyof ModelConfig, unknown>>;

const V3_DEFAULTS: Defaults = {
  vocab_size: 129280, hidden_size: 7168, intermediate_size: 18432, moe_intermediate_size: 2048,
  num_hidden_layers: 61, num_attention_heads: 128, n_shared_experts: 1, n_routed_experts: 256,
  num_experts_per_tok: 8, n_group: 8, topk_group: 4, routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, first_k_dense_replace: 3,
  moe_layer_freq: 1, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128,
  qk_rope_head_dim: 64, v_head_dim: 128, rope_theta: 10000, max_position_embeddings: 4096,
  rms_norm_eps: 1e-6, num_nextn_predict_layers: 1, tie_word_embeddings: false,
  initializer_range: 0.02, bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
};

// DeepseekV2Config: num_experts_per_tok has no default (None); n_group/topk_group None mean 1.
const V2_DEFAULTS: Defaults = {
  ...V3_DEFAULTS,
  vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, moe_intermediate_size: 1407,
  num_hidden_layers: 32, num_attention_heads: 32, n_shared_experts: 2, n_routed_experts: 64,
  num_experts_per_tok: undefined, n_group: 1, topk_group: 1, routed_scaling_factor: 1.0,
  scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: false, first_k_dense_replace: 0,
  max_position_embeddings: 2048, num_nextn_predict_layers: 0, bos_token_id: 1, eos_token_id: 2,
};

const ARCH: Record<ModelType, string> = { deepseek_v3: 'DeepseekV3ForCausalLM', deepseek_v2: 'DeepseekV2ForCausalLM' };

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Typed field access with defaults and messages that name the source and the field. */
class Fields {
  constructor(
    private readonly obj: Record<string, unknown>,
    private readonly source: string,
    private readonly defaults: Record<string, unknown>,
    private readonly prefix = '',
  ) {}

  fail(field: string, problem: string): never {
    throw new DsvError(`${this.source}: field "${this.prefix}${field}" ${problem}`);
  }

  raw(field: string): unknown {
    const v = this.obj[field];
    if (v !== undefined && v !== null) return v;
    const d = this.defaults[field];
    if (d === undefined) this.fail(field, 'is required (no default)');
    return d;
  }

  int(field: string, min = 1): number {
    const v = this.raw(field);
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(field, `must be an integer, got ${JSON.stringify(v)}`);
    if (v < min) this.fail(field, `must be ${min === 1 ? 'positive' : `>= ${min}`}, got ${v}`);
    return v;
  }

  num(field: string, positive: boolean): number {
    const v = this.raw(field);
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(field, `must be a finite number, got ${JSON.stringify(v)}`);
    if (positive ? v <= 0 : v < 0) this.fail(field, `must be ${positive ? 'positive' : 'non-negative'}, got ${v}`);
    return v;
  }

  bool(field: string): boolean {
    const v = this.raw(field);
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(field: string, allowed: readonly T[]): T {
    const v = this.raw(field);
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(field, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${JSON.stringify(v)}`);
    }
    return v as T;
  }

  /** A field that must have one given value when present (it changes math we do not implement). */
  fixed(field: string, value: unknown, why: string): void {
    const v = this.obj[field];
    if (v !== undefined && v !== null && v !== value) this.fail(field, `must be ${JSON.stringify(value)} (${why}), got ${JSON.stringify(v)}`);
  }
}

function parseRopeScaling(raw: unknown, source: string): YarnScaling | null {
  if (raw === undefined || raw === null) return null;
  if (!isObj(raw)) throw new DsvError(`${source}: field "rope_scaling" must be null or an object`);
  const typeKey = raw['type'] !== undefined ? 'type' : 'rope_type';
  const type = raw[typeKey];
  if (type === 'default' && Object.keys(raw).every((k) => k === 'type' || k === 'rope_type')) return null;
  if (type !== 'yarn') {
    throw new DsvError(`${source}: field "rope_scaling.${typeKey}" must be "yarn" (other RoPE scalings are not supported), got ${JSON.stringify(type)}`);
  }
  const f = new Fields(raw, source, { beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 0 }, 'rope_scaling.');
  const factor = f.num('factor', true);
  if (factor < 1) f.fail('factor', `must be >= 1, got ${factor}`);
  return {
    type: 'yarn',
    factor,
    original_max_position_embeddings: f.int('original_max_position_embeddings'),
    beta_fast: f.num('beta_fast', true),
    beta_slow: f.num('beta_slow', true),
    mscale: f.num('mscale', false),
    mscale_all_dim: f.num('mscale_all_dim', false),
  };
}

function parseQuantization(raw: unknown, source: string): Fp8Quantization | null {
  if (raw === undefined || raw === null) return null;
  if (!isObj(raw)) throw new DsvError(`${source}: field "quantization_config" must be null or an object`);
  const f = new Fields(raw, source, { fmt: 'e4m3', activation_scheme: 'dynamic' }, 'quantization_config.');
  f.oneOf('quant_method', ['fp8'] as const);
  f.oneOf('fmt', ['e4m3'] as const);
  f.oneOf('activation_scheme', ['dynamic'] as const);
  const wbs = raw['weight_block_size'] ?? [128, 128];
  if (!Array.isArray(wbs) || wbs.length !== 2 || wbs[0] !== 128 || wbs[1] !== 128) {
    f.fail('weight_block_size', `must be [128, 128] (the only block size supported), got ${JSON.stringify(wbs)}`);
  }
  const sf = raw['scale_fmt'];
  if (sf !== undefined && sf !== null && sf !== 'ue8m0') f.fail('scale_fmt', `must be "ue8m0" or absent, got ${JSON.stringify(sf)}`);
  return {
    quant_method: 'fp8',
    fmt: 'e4m3',
    activation_scheme: 'dynamic',
    weight_block_size: [128, 128],
    scale_fmt: sf === 'ue8m0' ? 'ue8m0' : null,
  };
}

function parseOptionalId(obj: Record<string, unknown>, field: string, dflt: unknown, source: string): number | null {
  const v = field in obj ? obj[field] : dflt;
  if (v === null || v === undefined) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new DsvError(`${source}: field "${field}" must be a non-negative integer or null, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Parses and validates a HF config object (`source` names it in errors, e.g. its path).
 * Absent fields take the HF DeepseekV3Config (or DeepseekV2Config) defaults; extra fields are
 * ignored; unsupported values and inconsistencies throw a DsvError naming the field.
 */
export function parseModelConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (!isObj(json)) throw new DsvError(`${source}: a config must be a JSON object`);
  const mt = json['model_type'];
  if (mt !== 'deepseek_v3' && mt !== 'deepseek_v2') {
    throw new DsvError(`${source}: field "model_type" must be "deepseek_v3" or "deepseek_v2", got ${JSON.stringify(mt)}`);
  }
  const defaults = (mt === 'deepseek_v3' ? V3_DEFAULTS : V2_DEFAULTS) as Record<string, unknown>;
  const f = new Fields(json, source, defaults);
  f.fixed('hidden_act', 'silu', 'SwiGLU experts');
  f.fixed('attention_bias', false, 'no biases in attention');
  f.fixed('mlp_bias', false, 'no biases in the MLPs');
  f.fixed('rope_interleave', true, 'RoPE on interleaved pairs, as the released checkpoints store it');
  const arch = json['architectures'] ?? [ARCH[mt]];
  if (!Array.isArray(arch) || !arch.every((a) => typeof a === 'string')) f.fail('architectures', 'must be a list of strings');
  const dtype = json['torch_dtype'] ?? json['dtype'] ?? defaults['torch_dtype'];
  if (typeof dtype !== 'string') f.fail('torch_dtype', `must be a string, got ${JSON.stringify(dtype)}`);

  const qRaw = json['q_lora_rank'];
  const cfg: ModelConfig = {
    model_type: mt,
    architectures: (arch as string[]).slice(),
    vocab_size: f.int('vocab_size'),
    hidden_size: f.int('hidden_size'),
    intermediate_size: f.int('intermediate_size'),
    moe_intermediate_size: f.int('moe_intermediate_size'),
    num_hidden_layers: f.int('num_hidden_layers'),
    num_attention_heads: f.int('num_attention_heads'),
    n_shared_experts: f.int('n_shared_experts', 0),
    n_routed_experts: f.int('n_routed_experts'),
    num_experts_per_tok: f.int('num_experts_per_tok'),
    n_group: f.int('n_group'),
    topk_group: f.int('topk_group'),
    routed_scaling_factor: f.num('routed_scaling_factor', true),
    scoring_func: f.oneOf('scoring_func', ['sigmoid', 'softmax'] as const),
    topk_method: f.oneOf('topk_method', ['noaux_tc', 'greedy', 'group_limited_greedy'] as const),
    norm_topk_prob: f.bool('norm_topk_prob'),
    first_k_dense_replace: f.int('first_k_dense_replace', 0),
    moe_layer_freq: f.int('moe_layer_freq'),
    q_lora_rank: 'q_lora_rank' in json && qRaw === null ? null : f.int('q_lora_rank'),
    kv_lora_rank: f.int('kv_lora_rank'),
    qk_nope_head_dim: f.int('qk_nope_head_dim'),
    qk_rope_head_dim: f.int('qk_rope_head_dim'),
    v_head_dim: f.int('v_head_dim'),
    rope_theta: f.num('rope_theta', true),
    rope_scaling: parseRopeScaling(json['rope_scaling'], source),
    max_position_embeddings: f.int('max_position_embeddings'),
    rms_norm_eps: f.num('rms_norm_eps', true),
    num_nextn_predict_layers: f.int('num_nextn_predict_layers', 0),
    tie_word_embeddings: f.bool('tie_word_embeddings'),
    quantization_config: parseQuantization(json['quantization_config'], source),
    initializer_range: f.num('initializer_range', false),
    bos_token_id: parseOptionalId(json, 'bos_token_id', defaults['bos_token_id'], source),
    eos_token_id: parseOptionalId(json, 'eos_token_id', defaults['eos_token_id'], source),
    torch_dtype: dtype as string,
  };
  validateConsistency(cfg, f);
  return cfg;
}

function validateConsistency(cfg: ModelConfig, f: Fields): void {
  if (cfg.qk_rope_head_dim % 2 !== 0) f.fail('qk_rope_head_dim', `must be even (RoPE rotates channel pairs), got ${cfg.qk_rope_head_dim}`);
  const E = cfg.n_routed_experts;
  if (cfg.num_experts_per_tok > E) {
    f.fail('num_experts_per_tok', `(${cfg.num_experts_per_tok}) must not exceed n_routed_experts (${E})`);
  }
  if (cfg.topk_method !== 'greedy') {
    if (E % cfg.n_group !== 0) f.fail('n_routed_experts', `(${E}) must be divisible by n_group (${cfg.n_group})`);
    if (cfg.topk_group > cfg.n_group) f.fail('topk_group', `(${cfg.topk_group}) must not exceed n_group (${cfg.n_group})`);
    const perGroup = E / cfg.n_group;
    if (cfg.num_experts_per_tok > cfg.topk_group * perGroup) {
      f.fail(
        'num_experts_per_tok',
        `(${cfg.num_experts_per_tok}) must not exceed topk_group * experts per group (${cfg.topk_group} * ${perGroup}): the kept groups hold too few experts`,
      );
    }
    if (cfg.topk_method === 'noaux_tc' && perGroup < 2) {
      f.fail('n_group', `(${cfg.n_group}) leaves ${perGroup} expert per group; noaux_tc scores a group by its top-2 experts`);
    }
  }
  const rs = cfg.rope_scaling;
  if (rs && rs.original_max_position_embeddings > cfg.max_position_embeddings) {
    f.fail('rope_scaling.original_max_position_embeddings', `(${rs.original_max_position_embeddings}) exceeds max_position_embeddings (${cfg.max_position_embeddings})`);
  }
}

/** Reads and parses `config.json` (pass the file or the checkpoint directory). */
export function loadModelConfig(location: string): ModelConfig {
  const file = fs.existsSync(location) && fs.statSync(location).isDirectory() ? path.join(location, 'config.json') : location;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DsvError(`${file}: cannot read config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DsvError(`${file}: config is not valid JSON (${(e as Error).message})`);
  }
  return parseModelConfig(json, file);
}

/** Layer i's FFN is MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0 (also for MTP layers). */
export function isMoeLayer(cfg: ModelConfig, i: number): boolean {
  return i >= cfg.first_k_dense_replace && i % cfg.moe_layer_freq === 0;
}

/** Indices of the MoE layers, main layers first, then (if includeMtp) the MTP layers L .. L+D-1. */
export function moeLayerIndices(cfg: ModelConfig, includeMtp = true): number[] {
  const n = cfg.num_hidden_layers + (includeMtp ? cfg.num_nextn_predict_layers : 0);
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (isMoeLayer(cfg, i)) out.push(i);
  return out;
}

/** Query/key head width qk_nope_head_dim + qk_rope_head_dim. */
export function qkHeadDim(cfg: ModelConfig): number {
  return cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
}

/** Numbers cached per token per layer by absorbed MLA decoding: kv_lora_rank + qk_rope_head_dim. */
export function latentCacheWidth(cfg: ModelConfig): number {
  return cfg.kv_lora_rank + cfg.qk_rope_head_dim;
}

/** A HF-loadable config.json object for cfg (model_type, architectures and every field). */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: cfg.architectures.slice(),
    model_type: cfg.model_type,
    hidden_act: 'silu',
    attention_bias: false,
    attention_dropout: 0.0,
    num_key_value_heads: cfg.num_attention_heads,
    use_cache: true,
  };
  for (const [k, v] of Object.entries(cfg)) {
    if (k === 'architectures' || k === 'model_type') continue;
    out[k] = v === null || typeof v !== 'object' ? v : JSON.parse(JSON.stringify(v));
  }
  const q = cfg.quantization_config;
  if (q && q.scale_fmt === null) delete (out['quantization_config'] as Record<string, unknown>)['scale_fmt'];
  if (q === null) delete out['quantization_config'];
  return out;
}
