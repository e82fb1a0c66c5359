/**
 * `dsv3 forward`: runs a checkpoint on token ids and writes every intermediate tensor of the
 * golden fixtures (logits, hidden states, attention/FFN outputs, latent cache, routing, and on
 * request cached decoding, MTP logits and greedy generation) to a safetensors file.
 */
import * as fs from 'node:fs';
import { type Command, UsageError } from '../command.js';
import { bool, custom, exists, int, oneOf, out, parseFlags, required } from '../flags.js';
import { Tensor } from '../../engine/tensor.js';
import { SafetensorsFile } from '../../io/safetensors-read.js';
import { type TensorToWrite, writeSafetensors } from '../../io/safetensors-write.js';
import { DsvError } from '../../errors.js';
import { loadModelConfig } from '../../model/config.js';
import { runForward, type RunForwardOptions } from '../../inference/run-forward.js';

const HELP = `Usage: dsv3 forward --model DIR --input FILE --out OUT.safetensors [options]

Runs a DeepSeek-V3 (or V2) Hugging Face checkpoint on token ids and writes the outputs.

Required:
  --model DIR          checkpoint directory (config.json + model.safetensors, or a sharded
                       model.safetensors.index.json; BF16 and FP8 weights are supported)
  --input FILE         token ids: a safetensors file with input_ids (I32 [B, S]) or a JSON
                       array of equal-length arrays of ids (number[][])
  --out OUT            output safetensors file (written atomically)

Options:
  --path naive|absorbed  MLA form: per-head keys/values (naive, default) or the weight-absorbed
                       form over the latent cache (absorbed); both give the same numbers
  --prefill N          also write decode.logits: prefill the first N tokens into the latent
                       cache, then decode the remaining tokens one step each
  --mtp                also run the MTP module: mtp.logits, mtp.hidden, its router tensors
  --greedy P,N         also write greedy.ids / greedy.logits: greedy generation of N tokens
                       from the first P tokens of each sequence
  --weights auto|f32|bf16  weight storage: auto (default) keeps FP8 as codes and upcasts BF16,
                       f32 dequantises everything, bf16 keeps BF16 weights as bf16
  -h, --help           show this help

Output tensors (F32 unless noted): logits [B,S,V], hidden.embeddings, hidden.layers.i,
hidden.final_norm, attn_out.layers.i, ffn_out.layers.i [B,S,D], latent.layers.i.kv_normed
[B,S,r], latent.layers.i.k_pe_rotated [B,S,dr], router.layers.j.topk_idx (I32 [B,T,K]),
router.layers.j.topk_weight [B,T,K], router.layers.j.scores [B,T,E].
`;

/** Reads input_ids from a safetensors file (I32 [B, S]) or a JSON number[][]. */
export function readInputIds(file: string): Tensor {
  if (!fs.existsSync(file)) throw new DsvError(`${file}: input file not found`);
  if (file.endsWith('.json')) {
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new DsvError(`${file}: not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(json) || json.length === 0 || !json.every((r) => Array.isArray(r) && r.every((x) => Number.isInteger(x)))) {
      throw new DsvError(`${file}: expected a JSON array of arrays of integer token ids`);
    }
    const rows = json as number[][];
    const S = rows[0]!.length;
    if (S === 0 || !rows.every((r) => r.length === S)) throw new DsvError(`${file}: every row must have the same (non-zero) length`);
    return Tensor.fromI32(Int32Array.from(rows.flat()), [rows.length, S]);
  }
  const f = SafetensorsFile.open(file);
  try {
    if (!f.has('input_ids')) throw new DsvError(`${file}: no tensor named "input_ids"`);
    const t = f.get('input_ids');
    if (t.dtype !== 'i32' || t.shape.length !== 2 || t.shape[0]! < 1 || t.shape[1]! < 1) {
      throw new DsvError(`${file}: input_ids must be I32 (or I64) [B, S] with B, S >= 1, got ${f.info('input_ids').tag} [${t.shape.join(', ')}]`);
    }
    return Tensor.fromI32(t.data as Int32Array, t.shape);
  } finally {
    f.close();
  }
}

/** P,N: prompt length and new tokens, both >= 1. */
function parseGreedy(raw: string): { prompt: number; tokens: number } | undefined {
  const m = /^(\d+),(\d+)$/.exec(raw);
  return m && Number(m[1]) >= 1 && Number(m[2]) >= 1 ? { prompt: Number(m[1]), tokens: Number(m[2]) } : undefined;
}

function toWritable(tensors: Record<string, Tensor>): Record<string, TensorToWrite> {
  const outT: Record<string, TensorToWrite> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const c = t.contiguous();
    outT[name] = { dtype: c.dtype, shape: c.shape.slice(), data: c.dtype === 'i32' ? c.i32() : c.f32() };
  }
  return outT;
}

const FLAGS = {
  model: exists('model directory', 'dir'),
  input: exists('input file', 'file'),
  out: out('file'),
  path: oneOf(['naive', 'absorbed'] as const),
  prefill: int(1),
  mtp: bool(),
  greedy: custom('P,N (prompt length and new tokens, both >= 1)', parseGreedy),
  weights: oneOf(['auto', 'f32', 'bf16'] as const),
};

export const forwardCommand: Command = {
  name: 'forward',
  summary: 'run a checkpoint on token ids; write logits and every intermediate tensor',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values: v } = parseFlags('forward', argv, FLAGS);
    const [modelDir, input, outFile] = [required(v, 'model'), required(v, 'input'), required(v, 'out')];
    const opts: RunForwardOptions = { path: v.path, weights: v.weights, mtp: v.mtp === true, prefill: v.prefill, greedy: v.greedy };
    const ids = readInputIds(input);
    const S = ids.shape[1]!;
    for (const [flag, n] of [['prefill', v.prefill], ['greedy', v.greedy?.prompt]] as const) {
      if (n !== undefined && n > S) throw new UsageError(`--${flag} needs ${n} prompt tokens, but the sequences of ${input} have ${S}`);
    }
    const maxLen = loadModelConfig(modelDir).max_position_embeddings;
    if (v.greedy && v.greedy.prompt + v.greedy.tokens > maxLen) throw new UsageError(`--greedy ${v.greedy.prompt},${v.greedy.tokens}: more than the model's max_position_embeddings ${maxLen} positions`);
    const result = runForward(modelDir, ids, opts);
    writeSafetensors(outFile, toWritable(result));
    process.stderr.write(`dsv3 forward: wrote ${Object.keys(result).length} tensors to ${outFile}\n`);
    return 0;
  },
};
