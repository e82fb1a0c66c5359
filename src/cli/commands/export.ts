/**
 * `dsv3 export gguf`: a checkpoint as one GGUF file in llama.cpp's `deepseek2` layout
 * (model/gguf-layout.ts: tensors and architecture keys; data/tokenizer/gguf-vocab.ts: the
 * tokenizer and chat template; io/gguf-write.ts: the file, written atomically).
 */
import * as path from 'node:path';
import { type Command, UsageError } from '../command.js';
import { bool, exists, oneOf, out, parseFlags, required } from '../flags.js';
import { GGUF_PRE_NAMES, ggufVocab } from '../../data/tokenizer/gguf-vocab.js';
import { openCheckpoint } from '../../io/checkpoint-read.js';
import { writeGguf } from '../../io/gguf-write.js';
import { loadModelConfig } from '../../model/config.js';
import { ggufArchKeys, ggufTensors, type GgufExportType } from '../../model/gguf-layout.js';
import { resolveCheckpointDir } from '../../train/run-checkpoints.js';

const HELP = `Usage: dsv3 export gguf --model DIR --out FILE.gguf [--type f32|bf16|q8_0] [--approximate]

Writes the checkpoint in DIR (config.json, model.safetensors or shards, tokenizer.json; or a
dsv3 train run directory, whose latest checkpoint is used) as a GGUF file for llama.cpp (and
ollama, LM Studio): architecture deepseek2 with MLA (attn_k_b / attn_v_b), experts merged per
layer, gating function, expert weight scale and norm, expert groups, leading dense layers, the
MTP (nextn) layers, RoPE / YaRN, the byte-level BPE tokenizer and the chat template. FP8
weights are dequantised. What llama.cpp cannot take as it is but can compute is rewritten
exactly: no shared expert (a zero shared expert), moe_layer_freq > 1 (a dense layer after the
first MoE one becomes MoE with zero routed experts; both warned: the file grows), YaRN mscale
!= mscale_all_dim (folded into the query rows). What it cannot run is refused, naming the field.
The file is written atomically (temporary file, then renamed).

Options:
  --model DIR              checkpoint or run directory
  --out FILE               the .gguf file to write
  --type T                 f32, bf16 or q8_0 (default bf16): the type of the weight matrices;
                           norms, the router and biases stay f32, and with q8_0 a matrix whose
                           rows are not a multiple of 32 is stored f16 (as llama.cpp's converter)
  --output-type T          f32, bf16 or q8_0 (default: --type): the type of the output head
                           alone (llama-quantize's --output-tensor-type). DeepSeek's FP8 release
                           keeps lm_head in BF16, so --type q8_0 --output-type bf16 is the
                           like-for-like llama.cpp file for an FP8 checkpoint
  --approximate            write a file even where llama.cpp computes a different function:
                           topk_method group_limited_greedy with groups that limit (llama.cpp
                           scores a group by its top-2 sum, DeepSeek-V2 by its best expert);
                           without it such a checkpoint is refused
  --tokenizer-pre NAME     the llama.cpp pre-tokenizer to name (${GGUF_PRE_NAMES.join(', ')});
                           default: the one that matches tokenizer.json, detected
Prints one JSON line: file, bytes, tensors, type, output_type, tokenizer_pre (and whether it is exact).
`;

const FLAGS = {
  model: exists('model directory', 'dir'),
  out: out('file'),
  type: oneOf(['f32', 'bf16', 'q8_0'] as const),
  'output-type': oneOf(['f32', 'bf16', 'q8_0'] as const),
  'tokenizer-pre': oneOf(GGUF_PRE_NAMES),
  approximate: bool(),
};

export const exportCommand: Command = {
  name: 'export',
  summary: 'export a checkpoint for another runtime: dsv3 export gguf (llama.cpp deepseek2)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values: v, positionals } = parseFlags('export', argv, FLAGS, 1);
    if (positionals[0] !== 'gguf') throw new UsageError(`expected the format 'gguf' (dsv3 export gguf --model DIR --out FILE.gguf), got ${positionals[0] === undefined ? 'none' : `'${positionals[0]}'`}`);
    const dir = resolveCheckpointDir(required(v, 'model'));
    const file = required(v, 'out');
    const type: GgufExportType = v.type ?? 'bf16';
    const outputType: GgufExportType = v['output-type'] ?? type;
    const cfg = loadModelConfig(dir);
    const vocab = ggufVocab(dir, cfg.vocab_size, { bos: cfg.bos_token_id, eos: cfg.eos_token_id }, v['tokenizer-pre']);
    const { kvs, warnings } = ggufArchKeys(cfg, type, path.basename(path.resolve(dir)));
    if (!vocab.pre.exact) warnings.push(`tokenizer: ${vocab.pre.why}; wrote tokenizer.ggml.pre "${vocab.pre.name}", the closest, so llama.cpp may split some texts differently`);
    for (const [k, val] of vocab.kvs) kvs.set(k, val);
    const ckpt = openCheckpoint(dir);
    let bytes: number;
    let tensors: number;
    try {
      const ts = ggufTensors(cfg, ckpt, type, outputType, { approximate: v.approximate === true });
      tensors = ts.length;
      bytes = writeGguf(file, kvs, ts);
    } finally {
      ckpt.close();
    }
    for (const w of warnings) process.stderr.write(`dsv3 export: warning: ${w}\n`);
    process.stdout.write(JSON.stringify({ file, bytes, tensors, type, output_type: outputType, tokenizer_pre: vocab.pre.name, tokenizer_pre_exact: vocab.pre.exact }) + '\n');
    return 0;
  },
};
