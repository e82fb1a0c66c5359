/**
 * `runForward`: everything `dsv3 forward` computes, as named tensors with the golden fixtures'
 * names, shapes and dtypes (tests call this same function):
 *   logits, hidden.embeddings, hidden.layers.i, hidden.final_norm, attn_out.layers.i,
 *   ffn_out.layers.i, latent.layers.i.{kv_normed,k_pe_rotated},
 *   router.layers.j.{topk_idx (i32), topk_weight, scores};
 *   with `prefill`: decode.logits (prefill N tokens, then one cached decode step per token);
 *   with `mtp`: mtp.logits, mtp.hidden and the MTP layer's router tensors;
 *   with `greedy`: greedy.ids (i32) and greedy.logits.
 */
import { noGrad } from '../engine/autograd.js';
import { cat } from '../engine/ops/index.js';
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { AttentionPath } from '../model/mla.js';
import { DeepseekV3 } from '../model/model.js';
import { idsTensor } from '../model/model-part.js';
import type { WeightMode } from '../model/params.js';
import { generate, ModelDecoder } from './generate.js';

export interface RunForwardOptions {
  path?: AttentionPath;
  /** Also compute decode.logits: prefill this many tokens, then decode the rest one by one. */
  prefill?: number;
  /** Also run the MTP module(s). */
  mtp?: boolean;
  /** Also run greedy generation from the first `prompt` tokens for `tokens` new tokens. */
  greedy?: { prompt: number; tokens: number };
  /** Weight storage when `model` is a directory. */
  weights?: WeightMode;
}

/** A detached contiguous copy-free view of t for output. */
function out(t: Tensor): Tensor {
  return t.detach().contiguous();
}

export function runForward(
  model: DeepseekV3 | string,
  inputIds: Tensor | readonly (readonly number[])[],
  opts: RunForwardOptions = {},
): Record<string, Tensor> {
  const m = typeof model === 'string' ? DeepseekV3.load(model, { weights: opts.weights ?? 'auto', mtp: opts.mtp ?? false, map: true }) : model;
  const ids = idsTensor(inputIds);
  const [B, S] = ids.shape as [number, number];
  if (B < 1 || S < 1) throw new DsvError(`input_ids must be [B, S] with B, S >= 1, got [${B}, ${S}]`);
  const V = m.cfg.vocab_size;
  for (const id of ids.contiguous().i32()) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new DsvError(`input_ids: token id ${id} is outside the vocabulary [0, ${V})`);
  }
  const path = opts.path ?? 'naive';
  const res: Record<string, Tensor> = {};
  const capture = (name: string, t: Tensor): void => {
    res[name] = out(t);
  };
  return noGrad(() => {
    const { hidden } = m.forward(ids, { path, capture });
    if (opts.mtp) {
      if (S < 2) throw new DsvError('--mtp needs sequences of at least 2 tokens');
      m.mtpForward(hidden, ids, { path, capture });
    }
    if (opts.prefill !== undefined) {
      const N = opts.prefill;
      if (!Number.isInteger(N) || N < 1 || N > S) throw new DsvError(`prefill length must be an integer in [1, ${S}], got ${N}`);
      const cache = m.newCache(B, S);
      const steps = [m.prefill(ids.slice(1, 0, N).contiguous(), cache, { path })];
      for (let t = N; t < S; t++) steps.push(m.decodeStep(ids.slice(1, t, t + 1).contiguous().i32().slice(), cache, { path }));
      res['decode.logits'] = out(steps.length === 1 ? steps[0]! : cat(steps, 1));
    }
    if (opts.greedy) {
      const { prompt, tokens } = opts.greedy;
      if (!Number.isInteger(prompt) || prompt < 1 || prompt > S) throw new DsvError(`greedy prompt length must be an integer in [1, ${S}], got ${prompt}`);
      if (!Number.isInteger(tokens) || tokens < 1) throw new DsvError(`greedy token count must be a positive integer, got ${tokens}`);
      const p = ids.slice(1, 0, prompt).contiguous().i32();
      const g = generate(new ModelDecoder(m, B, prompt + tokens, path), p, prompt, { maxNew: tokens, logits: true });
      const all = new Int32Array(B * (prompt + tokens));
      for (let b = 0; b < B; b++) all.set([...p.subarray(b * prompt, (b + 1) * prompt), ...g.tokens[b]!], b * (prompt + tokens));
      res['greedy.ids'] = Tensor.fromI32(all, [B, prompt + tokens]);
      res['greedy.logits'] = Tensor.fromF32(g.logits!, [B, tokens, m.cfg.vocab_size]);
    }
    return res;
  });
}
