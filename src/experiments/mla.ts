/**
 * `dsv3 experiment mla` (DeepSeek-V3 report §2.1.1; DeepSeek-V2 §2.1, Table 1): what Multi-head
 * Latent Attention caches, and what it costs to decode from that cache.
 *
 * 1. KV-cache numbers per token per layer, computed exactly from the config, at ours
 *    (configs/bench-small.json) and at DeepSeek-V3's (128 heads, qk_nope 128, qk_rope 64,
 *    v_head 128, kv_lora 512). Convention: a head's key is as wide as its query–key product,
 *    qk_nope + qk_rope (192 at V3), its value v_head (128), so
 *    - MHA caches heads × (qk_nope + qk_rope + v_head) (V3: 128 × 320 = 40,960);
 *    - GQA with g groups caches g × (qk_nope + qk_rope + v_head) (V3, g = 8: 2,560);
 *    - naive MLA (HF's reference: K and V up-projected from the latent, then cached with the
 *      shared RoPE key copied into every head) caches what MHA does (40,960);
 *    - the latent cache holds c_KV and the shared RoPE key: kv_lora + qk_rope (V3: 576).
 *    Beside them, DeepSeek-V2 Table 1's convention (MHA 2·n_h·d_h with d_h = v_head: 32,768; MLA
 *    (d_c + d_h^R) = 4.5·d_h). Bytes are at 4 per number (our cache is f32).
 * 2. Decode time per token against context length, for the model's two attention paths
 *    (src/model/mla.ts): 'naive' up-projects the whole cached latent to per-head K and V at every
 *    step, 'absorbed' folds W_UK into the query and W_UV into the output and attends in the
 *    latent space. A random bench-small model (src/inference/random-model.ts), batch 1: prefill
 *    the context L, then time decode steps at position L (the cache rewound to L after each, so
 *    every step attends over exactly L + 1 positions; 4 untimed steps first) and take the median. An arm is a path; a "seed" is a
 *    repetition (another random prompt).
 */
import * as path from 'node:path';
import { deriveSeed, Rng } from '../data/rng.js';
import { noGrad } from '../engine/autograd.js';
import { packageRoot } from '../engine/native.js';
import { Tensor } from '../engine/tensor.js';
import { randomModel } from '../inference/random-model.js';
import { loadModelConfig, type ModelConfig } from '../model/config.js';
import type { AttentionPath } from '../model/mla.js';
import type { DeepseekV3 } from '../model/model.js';
import { escapeXml } from '../train/svg.js';
import { finalsOf, type Arm, type Experiment, type Measured, type RunContext, type RunRecord } from './experiment.js';
import type { Claim } from './verdict.js';

/** The attention dimensions the cache sizes depend on. */
export type AttentionDims = Pick<ModelConfig, 'num_attention_heads' | 'qk_nope_head_dim' | 'qk_rope_head_dim' | 'v_head_dim' | 'kv_lora_rank'>;

/** DeepSeek-V3's attention (the released config.json; hidden size 7,168). */
export const DEEPSEEK_V3_ATTENTION: AttentionDims & { hidden_size: number } = {
  hidden_size: 7168, num_attention_heads: 128, qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, kv_lora_rank: 512,
};

/** Numbers cached per token per layer (see the module comment for the convention). */
export interface KvCacheSizes {
  mha: number;
  gqa: number;
  gqaGroups: number;
  naiveMla: number;
  latent: number;
  /** DeepSeek-V2 Table 1: MHA 2·n_h·d_h with d_h = v_head_dim. */
  mhaPaper: number;
}

export function kvCacheSizes(d: AttentionDims, gqaGroups: number): KvCacheSizes {
  const perHead = d.qk_nope_head_dim + d.qk_rope_head_dim + d.v_head_dim;
  const mha = d.num_attention_heads * perHead;
  return { mha, gqa: gqaGroups * perHead, gqaGroups, naiveMla: mha, latent: d.kv_lora_rank + d.qk_rope_head_dim, mhaPaper: 2 * d.num_attention_heads * d.v_head_dim };
}

interface Size {
  config: string;
  contexts: number[];
  decodeSteps: number;
  /** GQA groups at our config and at DeepSeek-V3's. */
  gqaOurs: number;
  gqaV3: number;
}

const FULL: Size = { config: 'configs/bench-small.json', contexts: [64, 128, 256, 512, 768, 1000], decodeSteps: 256, gqaOurs: 2, gqaV3: 8 };
const QUICK: Size = { config: 'configs/bench-small.json', contexts: [16, 64], decodeSteps: 4, gqaOurs: 2, gqaV3: 8 };

const ARMS: Array<{ name: AttentionPath; label: string }> = [
  { name: 'naive', label: "naive path: K, V up-projected from the latent cache every step" },
  { name: 'absorbed', label: 'absorbed path: W_UK into the query, W_UV into the output, attention in the latent space' },
];

/** Decode steps before the timed ones (JIT, caches). */
const WARMUP = 4;

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function cacheFinals(cfg: ModelConfig, z: Size): Record<string, number> {
  const ours = kvCacheSizes(cfg, z.gqaOurs);
  const v3 = kvCacheSizes(DEEPSEEK_V3_ATTENTION, z.gqaV3);
  const out: Record<string, number> = {};
  for (const [tag, s] of [['ours', ours], ['v3', v3]] as const) {
    out[`mha_${tag}`] = s.mha;
    out[`gqa_${tag}`] = s.gqa;
    out[`naive_mla_${tag}`] = s.naiveMla;
    out[`latent_${tag}`] = s.latent;
    out[`mha_paper_${tag}`] = s.mhaPaper;
  }
  return out;
}

function runArm(arm: Arm, ctx: RunContext, model: DeepseekV3, z: Size): Measured {
  const p = arm.settings['path'] as AttentionPath;
  const V = model.cfg.vocab_size;
  const rng = new Rng(deriveSeed(ctx.seed, 'mla-prompt'));
  const ms: number[] = [];
  const finals: Record<string, number> = {};
  z.contexts.forEach((L, i) => {
    // prefill L tokens, then decode one token at position L again and again: the cache is rewound to L
    // after every step, so every timed step attends over exactly L + 1 positions
    const cache = model.newCache(1, L + 1);
    noGrad(() => model.prefill(Tensor.fromI32(Int32Array.from({ length: L }, () => Math.floor(rng.nextFloat() * V)), [1, L]), cache, { path: p }));
    const times: number[] = [];
    for (let s = -WARMUP; s < z.decodeSteps; s++) {
      const tok = Int32Array.of(Math.floor(rng.nextFloat() * V));
      cache.length = L;
      const t0 = performance.now();
      model.decodeStep(tok, cache, { path: p });
      if (s >= 0) times.push(performance.now() - t0);
    }
    const m = median(times);
    ms.push(m);
    finals[`decode_ms_${L}`] = m;
    ctx.tick(i + 1);
  });
  finals['growth_ms'] = ms[ms.length - 1]! - ms[0]!;
  finals['growth_ratio'] = ms[ms.length - 1]! / ms[0]!;
  Object.assign(finals, cacheFinals(model.cfg, z));
  return { finals, curves: { decode_ms: { x: [...z.contexts], y: ms } } };
}

function claims(runs: readonly RunRecord[], arms: readonly Arm[]): Claim[] {
  const v = (arm: string, key: string): number[] => finalsOf(runs, arm, key);
  const ctxs = ((runs[0]?.settings['contexts'] as number[] | undefined) ?? FULL.contexts);
  const first = ctxs[0]!;
  const last = ctxs[ctxs.length - 1]!;
  const a0 = arms[0]?.name ?? 'naive';
  return [
    {
      paper: `§2.1.1: only c_KV and the shared RoPE key k^R are cached — at DeepSeek-V3's config ${512 + 64} numbers per token per layer (kv_lora 512 + qk_rope 64) vs MHA's 128 × (192 + 128) = 40,960: more than 50× smaller (DeepSeek-V2 Table 1's convention 2·n_h·d_h = 32,768 gives 56.9×).`,
      a: { label: 'latent cache at V3 × 50', values: v(a0, 'latent_v3').map((x) => 50 * x) },
      b: { label: 'MHA cache at V3', values: v(a0, 'mha_v3') },
      direction: 'lower',
    },
    {
      paper: 'DeepSeek-V2 §2.1.4 (Table 1): MLA caches about as much as GQA with 2.25 groups — here the latent cache at V3 is smaller than GQA with 8 groups.',
      a: { label: 'latent cache at V3', values: v(a0, 'latent_v3') },
      b: { label: 'GQA (8 groups) at V3', values: v(a0, 'gqa_v3') },
      direction: 'lower',
    },
    {
      paper: `The absorbed path's decode cost grows more slowly with context than the naive path's (which up-projects the whole cache every step): decode ms/token at ${last} minus at ${first} tokens of context.`,
      a: { label: 'absorbed growth (ms)', values: v('absorbed', 'growth_ms') },
      b: { label: 'naive growth (ms)', values: v('naive', 'growth_ms') },
      direction: 'lower',
    },
    {
      paper: `The absorbed path decodes faster than the naive path at ${last} tokens of context.`,
      a: { label: `absorbed ms/token at ${last}`, values: v('absorbed', `decode_ms_${last}`) },
      b: { label: `naive ms/token at ${last}`, values: v('naive', `decode_ms_${last}`) },
      direction: 'lower',
    },
  ];
}

function extraHtml(runs: readonly RunRecord[]): string {
  const f = runs[0]?.finals;
  if (!f) return '';
  const row = (name: string, key: string): string => {
    const o = f[`${key}_ours`]!;
    const d = f[`${key}_v3`]!;
    return `<tr><td>${escapeXml(name)}</td><td>${o}</td><td>${o * 4}</td><td>${(o / f['latent_ours']!).toFixed(2)}×</td><td>${d}</td><td>${d * 4}</td><td>${(d / f['latent_v3']!).toFixed(2)}×</td></tr>`;
  };
  const g = runs[0]!.settings;
  return '<h2>KV cache per token per layer (computed from the config; bytes at 4 per number)</h2><table>' +
    '<tr><th>cache</th><th>ours: numbers</th><th>ours: bytes</th><th>ours: × latent</th><th>DeepSeek-V3: numbers</th><th>V3: bytes</th><th>V3: × latent</th></tr>' +
    row('MHA: heads × (qk_nope + qk_rope + v_head)', 'mha') +
    row(`GQA (${String(g['gqaOurs'])} groups ours, ${String(g['gqaV3'])} at V3)`, 'gqa') +
    row('naive MLA (full K, V after up-projection)', 'naive_mla') +
    row('MLA latent: kv_lora + qk_rope', 'latent') +
    row('MHA, DeepSeek-V2 Table 1 convention: 2 · heads · v_head', 'mha_paper') +
    '</table>';
}

export const mlaExperiment: Experiment = {
  name: 'mla',
  summary: 'MLA: KV-cache numbers per token (MHA, GQA, naive, latent) and decode time vs context, naive vs absorbed',
  source: 'DeepSeek-V3 report §2.1.1 (MLA: only c_KV and k^R are cached); DeepSeek-V2 §2.1 (Table 1, weight absorption).',
  plan(size) {
    const z: Size = { ...(size.quick ? QUICK : FULL) };
    if (size.steps !== undefined) z.decodeSteps = size.steps;
    const cfg = loadModelConfig(path.join(packageRoot(), z.config));
    let model: DeepseekV3 | null = null;
    return {
      arms: ARMS.map((a) => ({ name: a.name, label: a.label, settings: { path: a.name } })),
      steps: z.contexts.length,
      settings: { ...z, model: 'random (seed 0), f32 weights', batch: 1 },
      run: (arm, ctx) => runArm(arm, ctx, (model ??= randomModel(cfg, 0, 'f32')), z),
    };
  },
  metrics: {
    decode_ms_64: 'decode ms/token at 64',
    decode_ms_256: 'at 256',
    decode_ms_512: 'at 512',
    decode_ms_1000: 'at 1000',
    growth_ms: 'growth, longest − shortest context (ms)',
    growth_ratio: 'longest / shortest',
  },
  curves: { decode_ms: { title: 'Decode time per token (median) against context length', yLabel: 'ms per token', xLabel: 'context (tokens)' } },
  claims,
  extraHtml,
};
