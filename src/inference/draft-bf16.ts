/**
 * The draft path of self-speculative decoding on bfloat16 copies of float32 weights: the MTP
 * modules (paper section 2.2) and the output head they share with the main model, rounded to
 * bf16 once when the engine is built, run through the bf16 GEMMs (half the weight bytes of a
 * memory-bound decode step). Only the drafts come from these copies: the main model verifies
 * every draft with its own float32 weights, so greedy output is the main model's argmax at
 * every position as before (drafts only decide how many tokens one verification yields), and
 * exact speculative sampling stays exact because it tests each draft against the distribution
 * q it was actually drawn from (section 5.4.3; Leviathan et al. 2023). Weights that are not
 * float32 (bf16 / FP8 checkpoints) are used as they are.
 */
import type { Kernels } from '../engine/kernels.js';
import type { PreparedLinear } from './linear.js';
import type { AttnPlan, LayerPlan, MlpPlan } from './plan.js';

/** A bf16 copy of a float32 weight (round to nearest even, kernels().bf16Round); others as they are. */
export function bf16Linear(kern: Kernels, w: PreparedLinear): PreparedLinear {
  if (!w.f32) return w;
  const bits = new Uint16Array(w.f32.length);
  kern.bf16Round(w.f32, bits, w.f32.length);
  return { name: `${w.name} (bf16 draft copy)`, kind: 'bf16', n: w.n, k: w.k, f32: null, bits, codes: null, scaleInv: null };
}

function bf16Mlp(kern: Kernels, m: MlpPlan): MlpPlan {
  return { gate: bf16Linear(kern, m.gate), up: bf16Linear(kern, m.up), down: bf16Linear(kern, m.down), inter: m.inter };
}

/** The layer with every projection as a bf16 copy (norms, router, and the absorbed W^UK / W^UV stay float32). */
export function bf16Layer(kern: Kernels, l: LayerPlan): LayerPlan {
  const a = l.attn;
  const attn: AttnPlan = {
    ...a,
    qA: a.qA ? bf16Linear(kern, a.qA) : null,
    qB: a.qB ? bf16Linear(kern, a.qB) : null,
    q: a.q ? bf16Linear(kern, a.q) : null,
    kvA: bf16Linear(kern, a.kvA),
    o: bf16Linear(kern, a.o),
  };
  const moe = l.moe
    ? { ...l.moe, experts: l.moe.experts.map((e) => bf16Mlp(kern, e)), shared: l.moe.shared ? bf16Mlp(kern, l.moe.shared) : null }
    : null;
  return { ...l, attn, mlp: l.mlp ? bf16Mlp(kern, l.mlp) : null, moe };
}
