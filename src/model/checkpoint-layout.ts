/**
 * The Hugging Face checkpoint layout of a model (docs/SPEC.md §1), the one place that writes it: every
 * tensor under its checkpoint name, in module order — float32 parameters and buffers, bf16
 * weights as bf16, FP8 weights as codes (dtype f8_e4m3) followed by their float32
 * `<name>_scale_inv` — plus, for each MTP module at layer L+k−1, the copies
 * `embed_tokens.weight` and `shared_head.head.weight` of the shared embedding and output head
 * (the layout repeats them; they are one parameter in the model and in training).
 */
import { Tensor } from '../engine/tensor.js';
import { DsvError } from '../errors.js';
import type { TensorToWrite } from '../io/safetensors-write.js';
import type { DeepseekV3 } from './model.js';

/** Every checkpoint tensor, sharing storage with the model. */
export function checkpointTensors(model: DeepseekV3): Map<string, Tensor> {
  const stored = (name: string): [string, Tensor][] => {
    const w = model.linears.get(name);
    if (!w) return [[name, model.params.get(name) ?? model.buffers.get(name) ?? model.embedTokens]];
    const shape = [w.outFeatures, w.inFeatures];
    if (w.kind === 'f32') return [[name, w.weight]];
    if (w.kind === 'bf16') return [[name, new Tensor(w.bits, shape, 'bf16')]];
    const grid = [Math.ceil(w.outFeatures / 128), Math.ceil(w.inFeatures / 128)];
    return [[name, new Tensor(w.codes, shape, 'f8_e4m3')], [`${name}_scale_inv`, Tensor.fromF32(w.scaleInv, grid)]];
  };
  const out = new Map<string, Tensor>();
  for (const name of model.registry.order) {
    const m = /^model\.layers\.(\d+)\.(enorm|shared_head\.norm)\.weight$/.exec(name);
    if (m?.[2] === 'enorm') out.set(`model.layers.${m[1]}.embed_tokens.weight`, model.embedTokens);
    for (const [n, t] of stored(name)) out.set(n, t);
    if (m?.[2] === 'shared_head.norm') {
      for (const [n, t] of stored('lm_head.weight')) out.set(n.replace('lm_head.weight', `model.layers.${m[1]}.shared_head.head.weight`), t);
    }
  }
  return out;
}

/** The checkpoint tensors of a float32 (training) model as float32 copies, ready to write. */
export function f32CheckpointTensors(model: DeepseekV3): Record<string, TensorToWrite> {
  for (const [name, w] of model.linears) {
    if (w.kind !== 'f32') throw new DsvError(`cannot save ${name}: it is stored as ${w.kind}, not as a float32 parameter`);
  }
  const out: Record<string, TensorToWrite> = {};
  for (const [name, t] of checkpointTensors(model)) out[name] = { dtype: 'f32', shape: t.shape.slice(), data: t.contiguous().f32().slice() };
  return out;
}
