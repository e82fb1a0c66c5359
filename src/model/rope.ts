/**
 * Rotary position embedding of MLA's decoupled rope parts (paper Eqs. 3 and 8: k^R_t =
 * RoPE(W^KR h_t), q^R_t = RoPE(W^QR c^Q_t)), with YaRN context extension (Peng et al. 2023; the
 * paper extends 4K -> 128K, factor 40).
 *
 * Layout: interleaved pairs. Channels (2i, 2i+1) rotate by angle pos * inv_freq[i]:
 * (a, b) -> (a cos - b sin, a sin + b cos), as the released checkpoints store them.
 * cos/sin are multiplied by YaRN's attention factor m(mscale) / m(mscale_all_dim).
 * Positions are 0-based absolute token positions; decoding passes the cache length as `start`.
 */
import { ropeInterleaved } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import type { ModelConfig } from './config.js';
import { ropeAttentionFactor, yarnInvFreq } from './yarn.js';

export class RotaryEmbedding {
  /** Number of rotated channel pairs (qk_rope_head_dim / 2). */
  readonly pairs: number;
  readonly invFreq: Float64Array;
  readonly attentionFactor: number;
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);
  private cached = 0;

  constructor(cfg: ModelConfig) {
    this.invFreq = yarnInvFreq(cfg);
    this.pairs = this.invFreq.length;
    this.attentionFactor = ropeAttentionFactor(cfg);
  }

  /** Grows the cos/sin tables (computed in float64, stored as float32) to cover `len` positions. */
  private ensure(len: number): void {
    if (len <= this.cached) return;
    const n = Math.max(len, this.cached * 2, 64);
    const h = this.pairs;
    const cos = new Float32Array(n * h);
    const sin = new Float32Array(n * h);
    for (let p = 0; p < n; p++) {
      for (let i = 0; i < h; i++) {
        const a = p * this.invFreq[i]!;
        cos[p * h + i] = Math.cos(a) * this.attentionFactor;
        sin[p * h + i] = Math.sin(a) * this.attentionFactor;
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.cached = n;
  }

  /** cos and sin tables [len, pairs] for positions start .. start+len-1. */
  tables(start: number, len: number): { cos: Tensor; sin: Tensor } {
    this.ensure(start + len);
    const h = this.pairs;
    return {
      cos: Tensor.fromF32(this.cos.subarray(start * h, (start + len) * h), [len, h]),
      sin: Tensor.fromF32(this.sin.subarray(start * h, (start + len) * h), [len, h]),
    };
  }

  /** Rotates x [B, T, ..., 2*pairs] for positions start .. start+T-1. */
  apply(x: Tensor, start: number): Tensor {
    const { cos, sin } = this.tables(start, x.shape[1]!);
    return ropeInterleaved(x, cos, sin);
  }
}
