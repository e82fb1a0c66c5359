/**
 * The tensors of a model as a Hugging Face checkpoint holds them: every trainable parameter and
 * balance bias under its checkpoint name, plus, for each MTP module at layer L+k−1, the copies
 * `embed_tokens.weight` and `shared_head.head.weight` of the shared embedding and output head
 * (SPEC §1: the checkpoint layout repeats them; they are one parameter in training).
 */
import type { TensorToWrite } from '../io/safetensors-write.js';
import type { DeepseekV3 } from '../model/model.js';
import { DsvError } from '../errors.js';

export function modelTensors(model: DeepseekV3): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  const add = (name: string, t: { shape: readonly number[]; f32(): Float32Array }): void => {
    out[name] = { dtype: 'f32', shape: t.shape.slice(), data: t.f32().slice() };
  };
  for (const [name, p] of model.params) add(name, p);
  for (const [name, b] of model.buffers) add(name, b);
  for (const [name, w] of model.linears) {
    if (!(name in out)) throw new DsvError(`cannot save ${name}: it is stored as ${w.kind}, not as a float32 parameter`);
  }
  const cfg = model.cfg;
  const head = model.params.get('lm_head.weight') ?? model.embedTokens;
  for (const m of model.mtp) {
    const p = `model.layers.${cfg.num_hidden_layers + m.depth - 1}`;
    add(`${p}.embed_tokens.weight`, model.embedTokens);
    add(`${p}.shared_head.head.weight`, head);
  }
  return out;
}
