/**
 * Attention scaling and rotary frequencies derived from a config: the softmax scale (times the
 * YaRN mscale^2), the cos/sin attention factor and the YaRN inverse frequencies (the rules of
 * test/fixtures/README.md, "Softmax scale" and "YaRN inverse frequencies").
 */
import { qkHeadDim, type ModelConfig } from './config.js';

/** YaRN's m(x) = 0.1 * x * ln(factor) + 1 (1 when factor <= 1). */
export function yarnMscale(factor: number, mscale: number): number {
  return factor <= 1 ? 1 : 0.1 * mscale * Math.log(factor) + 1;
}

/** Attention softmax scale: (dn + dr)^-0.5, times m(mscale_all_dim)^2 under YaRN with factor > 1. */
export function softmaxScale(cfg: ModelConfig): number {
  let s = 1 / Math.sqrt(qkHeadDim(cfg));
  const rs = cfg.rope_scaling;
  if (rs && rs.mscale_all_dim) {
    const m = yarnMscale(rs.factor, rs.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

/** Factor applied to RoPE cos/sin: m(mscale) / m(mscale_all_dim) under YaRN, else 1. */
export function ropeAttentionFactor(cfg: ModelConfig): number {
  const rs = cfg.rope_scaling;
  return rs ? yarnMscale(rs.factor, rs.mscale) / yarnMscale(rs.factor, rs.mscale_all_dim) : 1;
}

/**
 * RoPE inverse frequencies (qk_rope_head_dim / 2 of them, float64): rope_theta^(-2i/d), with the
 * YaRN interpolation ramp of the fixtures README when rope_scaling is YaRN.
 */
export function yarnInvFreq(cfg: ModelConfig): Float64Array {
  const d = cfg.qk_rope_head_dim;
  const base = cfg.rope_theta;
  const half = d / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / base ** ((2 * i) / d);
  const rs = cfg.rope_scaling;
  if (!rs) return inv;
  const corr = (rot: number): number =>
    (d * Math.log(rs.original_max_position_embeddings / (rot * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(corr(rs.beta_fast)), 0);
  let high = Math.min(Math.ceil(corr(rs.beta_slow)), d - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < half; i++) {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    inv[i] = (inv[i]! / rs.factor) * ramp + inv[i]! * (1 - ramp);
  }
  return inv;
}

