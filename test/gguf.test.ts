/**
 * GGUF export (issue 12 item 3): the writer round-trips through an independent reader
 * (test/helpers/gguf-read.ts: header, every KV type, tensor infos, alignment, data); F16 and
 * Q8_0 encode bit for bit like llama.cpp (against reference implementations written here:
 * nearest-half by search, gguf-py's np_roundf); the deepseek2 layout of a tiny config has the
 * names, ggml shapes and types llama.cpp's loader expects, with MLA's kv_b split into k_b
 * (transposed) and v_b and the experts stacked; `dsv3 export gguf` writes the architecture
 * and tokenizer keys and the checkpoint's data (FP8 dequantised); bad input is one clear error
 * and leaves no file. (That llama.cpp itself loads and agrees: scripts/compare/check-gguf.mjs.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeGgufHeader, kv, type GgufValue } from '../src/io/gguf-format.js';
import { f16ToF32, f32ToF16, quantizeQ8_0 } from '../src/io/gguf-quant.js';
import { writeGguf } from '../src/io/gguf-write.js';
import { f32ToBf16 } from '../src/engine/dtype.js';
import { quantizeBlocks128, dequantFp8Weight } from '../src/engine/fp8/checkpoint-weights.js';
import { openCheckpoint } from '../src/io/checkpoint-read.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors-write.js';
import { PLAIN_CHAT_TEMPLATE, saveTokenizerJson, trainBpe } from '../src/data/tokenizer/index.js';
import { configToJson, parseModelConfig } from '../src/model/config.js';
import { f32CheckpointTensors } from '../src/model/checkpoint-layout.js';
import { ggufTensors } from '../src/model/gguf-layout.js';
import { DeepseekV3 } from '../src/model/model.js';
import { readGguf, tensorF32 } from './helpers/gguf-read.js';
import { tinyConfigJson } from './helpers/tiny-config.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dsv3 = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-gguf-'));

/** A random tiny checkpoint directory (config, model.safetensors, tokenizer files); `edit` may change its tensors. */
function tinyCheckpoint(dir: string, over: Record<string, unknown> = {}, edit?: (t: Record<string, TensorToWrite>) => void): Record<string, TensorToWrite> {
  const cfg = parseModelConfig(tinyConfigJson(over));
  const model = DeepseekV3.randomInit(cfg, 7);
  const tensors = f32CheckpointTensors(model);
  edit?.(tensors);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configToJson(cfg)));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  const tok = trainBpe(['The whale swims in the sea, and the sea is wide. '.repeat(30)], { vocabSize: 300 });
  saveTokenizerJson(tok, path.join(dir, 'tokenizer.json'), { writeConfig: true });
  const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: PLAIN_CHAT_TEMPLATE }));
  return tensors;
}

// ---------- reference encoders (independent of src/io/gguf-quant.ts) ----------

/** All finite non-negative halves in order; the value after 0x7bff stands for +inf's rounding boundary. */
const HALVES = Float64Array.from({ length: 0x7c01 }, (_, h) => (h === 0x7c00 ? 65536 : f16ToF32(h)));

function refF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0;
  let hi = 0x7c00;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (HALVES[mid]! <= a) lo = mid;
    else hi = mid;
  }
  if (a >= 65536) return sign | 0x7c00;
  const dl = a - HALVES[lo]!;
  const dh = HALVES[hi]! - a;
  const h = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  return sign | h;
}

/** gguf-py's Q8_0.quantize_blocks with np_roundf, in float32 arithmetic. */
function refQ8(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 34);
  const v = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]!));
    const d = Math.fround(amax / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    v.setUint16(34 * b, refF16(d), true);
    for (let j = 0; j < 32; j++) {
      const n = Math.fround(x[32 * b + j]! * id);
      const a = Math.abs(n);
      const fl = Math.floor(a);
      v.setInt8(34 * b + 2 + j, Math.sign(n) * (fl + Math.floor(2 * (a - fl))));
    }
  }
  return out;
}

function randn(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const r = (): number => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(r())) * Math.cos(2 * Math.PI * r()) * scale);
}

// ---------- tests ----------

test('f32 -> f16 rounds to nearest even like the hardware: edge cases and 20000 random values', () => {
  const cases: [number, number][] = [[1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519.99, 0x7bff], [65520, 0x7c00], [1e9, 0x7c00],
    [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -26, 0x0001], [2 ** -14, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02],
    [0, 0], [-0, 0x8000], [Infinity, 0x7c00], [-Infinity, 0xfc00]];
  for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f16(${x})`);
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  for (const [i, x] of randn(20000, 3).entries()) {
    const y = Math.fround(x * 2 ** ((i % 40) - 28));
    assert.equal(f32ToF16(y), refF16(y), `f16(${y})`);
  }
});

test('Q8_0 equals the reference rounding (d = amax/127 in f32, fp16 d, roundf half away from zero)', () => {
  const x = randn(32 * 64, 11, 0.05);
  x.fill(0, 64, 96); // an all-zero block: d = 0, codes 0
  for (let j = 0; j < 32; j++) x[96 + j] = Math.fround(x[96 + j]! * 1e-6); // tiny scale (subnormal half d)
  const got = new Uint8Array(64 * 34);
  quantizeQ8_0(x, got);
  assert.deepEqual(got, refQ8(x));
  // exact ties: amax 127 gives d = 1, id = 1, so x * id is x
  const ties = new Float32Array(32);
  ties.set([127, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5]);
  const q = new Uint8Array(34);
  quantizeQ8_0(ties, q);
  assert.equal(new DataView(q.buffer).getUint16(0, true), 0x3c00);
  assert.deepEqual(Array.from(new Int8Array(q.buffer, 2, 8)), [127, 3, -3, 1, -1, 2, -2, 127]);
  const zero = new Uint8Array(34);
  quantizeQ8_0(new Float32Array(32), zero);
  assert.ok(zero.every((b) => b === 0));
  assert.throws(() => quantizeQ8_0(new Float32Array(31), new Uint8Array(34)), /32-value blocks/);
});

test('GGUF writer round-trips header, every KV type, tensor infos, alignment and data', () => {
  const dir = tmp();
  try {
    for (const alignment of [32, 64]) {
      const kvs = new Map<string, GgufValue>([
        ['general.architecture', kv.str('deepseek2')],
        ['general.alignment', kv.u32(alignment)],
        ['t.u8', { type: 'u8', value: 255 }], ['t.i8', { type: 'i8', value: -128 }], ['t.u16', { type: 'u16', value: 65535 }],
        ['t.i16', { type: 'i16', value: -32768 }], ['t.i32', kv.i32(-5)], ['t.f32', kv.f32(0.1)], ['t.bool', kv.bool(true)],
        ['t.u64', { type: 'u64', value: 2n ** 40n }], ['t.i64', { type: 'i64', value: -(2n ** 40n) }], ['t.f64', { type: 'f64', value: Math.PI }],
        ['t.strs', kv.strs(['Ġa b', 'ü', ''])], ['t.i32s', kv.i32s([1, -2, 3])], ['t.bools', { type: 'array', itemType: 'bool', value: [true, false] }],
        ['t.unicode', kv.str('<｜begin▁of▁sentence｜> 鲸')],
      ]);
      const a = randn(3 * 5, 1);
      const b = randn(64 * 3, 2);
      const c = randn(7, 3);
      const tensors = [
        { name: 'a.weight', ne: [5, 3], type: 'F32' as const, chunks: () => [a] },
        { name: 'b.weight', ne: [64, 3], type: 'Q8_0' as const, chunks: () => [b.subarray(0, 64), b.subarray(64)] },
        { name: 'c.weight', ne: [7], type: 'BF16' as const, chunks: () => [c] },
        { name: 'd.weight', ne: [7, 1, 1], type: 'F16' as const, chunks: () => [c] },
      ];
      const file = path.join(dir, `x${alignment}.gguf`);
      const size = writeGguf(file, kvs, tensors, { alignment });
      const g = readGguf(file);
      assert.equal(g.fileSize, size);
      assert.equal(g.version, 3);
      assert.equal(g.alignment, alignment);
      assert.equal(g.dataStart % alignment, 0);
      assert.deepEqual([...g.kv.keys()], [...kvs.keys()]);
      assert.equal(g.kv.get('t.u8')!.value, 255);
      assert.equal(g.kv.get('t.i16')!.value, -32768);
      assert.equal(g.kv.get('t.f32')!.value, Math.fround(0.1));
      assert.equal(g.kv.get('t.u64')!.value, 2n ** 40n);
      assert.equal(g.kv.get('t.i64')!.value, -(2n ** 40n));
      assert.equal(g.kv.get('t.f64')!.value, Math.PI);
      assert.deepEqual(g.kv.get('t.strs')!.value, ['Ġa b', 'ü', '']);
      assert.equal(g.kv.get('t.strs')!.itemType, 8);
      assert.deepEqual(g.kv.get('t.i32s')!.value, [1, -2, 3]);
      assert.deepEqual(g.kv.get('t.bools')!.value, [true, false]);
      assert.equal(g.kv.get('t.unicode')!.value, '<｜begin▁of▁sentence｜> 鲸');
      assert.deepEqual(g.tensors.map((t) => [t.name, t.ne, t.type]), [['a.weight', [5, 3], 0], ['b.weight', [64, 3], 8], ['c.weight', [7], 30], ['d.weight', [7, 1, 1], 1]]);
      for (const t of g.tensors) assert.equal(t.offset % alignment, 0);
      assert.deepEqual(tensorF32(g.tensors[0]!), a);
      assert.deepEqual(g.tensors[1]!.data, refQ8(b));
      assert.deepEqual(Array.from(tensorF32(g.tensors[2]!)), Array.from(c, (x) => f16ToF32(0) + new Float32Array(new Uint32Array([f32ToBf16(x) << 16]).buffer)[0]!));
      assert.deepEqual(Array.from(tensorF32(g.tensors[3]!)), Array.from(c, (x) => f16ToF32(refF16(x))));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('GGUF writer errors: duplicate tensor, bad block size, wrong amount of data, bad KV value; no file left', () => {
  const dir = tmp();
  try {
    const kvs = new Map<string, GgufValue>([['general.architecture', kv.str('x')]]);
    const one = (ne: number[], type: 'F32' | 'Q8_0', n: number) => ({ name: 't', ne, type, chunks: () => [new Float32Array(n)] });
    assert.throws(() => encodeGgufHeader(kvs, [one([4], 'F32', 4), one([4], 'F32', 4)]), /t is listed twice/);
    assert.throws(() => encodeGgufHeader(kvs, [one([48], 'Q8_0', 48)]), /ne\[0\] = 48 is not a multiple of 32/);
    assert.throws(() => encodeGgufHeader(new Map([['k', { type: 'u8', value: 300 }]]), []), /GGUF key k: 300 is not a valid u8/);
    const file = path.join(dir, 'bad.gguf');
    assert.throws(() => writeGguf(file, kvs, [one([4, 2], 'F32', 4)]), /t produced 4 values, expected 8/);
    assert.throws(() => writeGguf(file, kvs, [one([4, 2], 'F32', 6)]), /not whole rows of 4/);
    assert.deepEqual(fs.readdirSync(dir), [], 'no file and no temporary file');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('deepseek2 layout of the tiny config: names, ggml shapes, types; k_b / v_b split of kv_b', () => {
  const dir = tmp();
  try {
    const src = tinyCheckpoint(dir);
    const cfg = parseModelConfig(tinyConfigJson());
    const ckpt = openCheckpoint(dir);
    try {
      const ts = ggufTensors(cfg, ckpt, 'q8_0');
      const by = new Map(ts.map((t) => [t.name, t]));
      const layer = (i: number, moe: boolean, mtp: boolean): string[] => [
        ...(mtp ? ['nextn.eh_proj', 'nextn.enorm', 'nextn.hnorm', 'nextn.shared_head_norm'] : []),
        'attn_norm', 'attn_q_a', 'attn_q_a_norm', 'attn_q_b', 'attn_kv_a_mqa', 'attn_kv_a_norm', 'attn_k_b', 'attn_v_b', 'attn_output', 'ffn_norm',
        ...(moe ? ['ffn_gate_inp', 'exp_probs_b', 'ffn_down_exps', 'ffn_gate_exps', 'ffn_up_exps', 'ffn_gate_shexp', 'ffn_down_shexp', 'ffn_up_shexp'] : ['ffn_gate', 'ffn_down', 'ffn_up']),
      ].map((n) => `blk.${i}.${n}.${n === 'exp_probs_b' ? 'bias' : 'weight'}`);
      assert.deepEqual(ts.map((t) => t.name), ['token_embd.weight', ...layer(0, false, false), ...layer(1, true, false), ...layer(2, true, true), 'output_norm.weight', 'output.weight']);
      // tiny: D 32, H 2, q_lora 24, kv_lora 16, nope 8, rope 4, v 8, experts 8 x 16, dense 48, vocab 320
      const expect: [string, number[], string][] = [
        ['token_embd.weight', [32, 320], 'Q8_0'], ['output.weight', [32, 320], 'Q8_0'], ['output_norm.weight', [32], 'F32'],
        ['blk.0.attn_q_a.weight', [32, 24], 'Q8_0'], ['blk.0.attn_q_b.weight', [24, 24], 'F16'], ['blk.0.attn_q_a_norm.weight', [24], 'F32'],
        ['blk.0.attn_kv_a_mqa.weight', [32, 20], 'Q8_0'], ['blk.0.attn_k_b.weight', [8, 16, 2], 'F16'], ['blk.0.attn_v_b.weight', [16, 8, 2], 'F16'],
        ['blk.0.attn_output.weight', [16, 32], 'F16'], ['blk.0.ffn_gate.weight', [32, 48], 'Q8_0'], ['blk.0.ffn_down.weight', [48, 32], 'F16'],
        ['blk.1.ffn_gate_inp.weight', [32, 8], 'F32'], ['blk.1.exp_probs_b.bias', [8], 'F32'], ['blk.1.ffn_gate_exps.weight', [32, 16, 8], 'Q8_0'],
        ['blk.1.ffn_down_exps.weight', [16, 32, 8], 'F16'], ['blk.1.ffn_up_shexp.weight', [32, 16], 'Q8_0'], ['blk.2.nextn.eh_proj.weight', [64, 32], 'Q8_0'],
      ];
      for (const [n, ne, type] of expect) assert.deepEqual([n, by.get(n)!.ne, by.get(n)!.type], [n, ne, type]);
      const data = (n: string): Float32Array => Float32Array.from([...by.get(n)!.chunks()].flatMap((c) => Array.from(c)));
      const kvb = src['model.layers.1.self_attn.kv_b_proj.weight']!.data as Float32Array; // [H*(8+8), 16]
      const kb = data('blk.1.attn_k_b.weight');
      const vb = data('blk.1.attn_v_b.weight');
      for (let h = 0; h < 2; h++) {
        for (let c = 0; c < 16; c++) {
          for (let j = 0; j < 8; j++) {
            assert.equal(kb[(h * 16 + c) * 8 + j], kvb[(h * 16 + j) * 16 + c], `k_b[${h}][${c}][${j}]`);
            assert.equal(vb[(h * 8 + j) * 16 + c], kvb[(h * 16 + 8 + j) * 16 + c], `v_b[${h}][${j}][${c}]`);
          }
        }
      }
      const up = data('blk.1.ffn_up_exps.weight');
      for (let e = 0; e < 8; e++) assert.deepEqual(up.subarray(e * 512, (e + 1) * 512), src[`model.layers.1.mlp.experts.${e}.up_proj.weight`]!.data);
    } finally {
      ckpt.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dsv3 export gguf: architecture and tokenizer keys, the data of every tensor, FP8 dequantised', () => {
  const dir = tmp();
  try {
    const ck = path.join(dir, 'ckpt');
    fs.mkdirSync(ck);
    let fp8: { codes: Uint8Array; scaleInv: Float32Array } | undefined;
    const src = tinyCheckpoint(ck, {}, (t) => {
      const n = 'model.layers.1.self_attn.q_a_proj.weight';
      const q = quantizeBlocks128(t[n]!.data as Float32Array, 24, 32);
      fp8 = { codes: q.codes, scaleInv: q.scaleInv };
      t[n] = { dtype: 'f8_e4m3', shape: [24, 32], data: q.codes };
      t[`${n}_scale_inv`] = { dtype: 'f32', shape: [1, 1], data: q.scaleInv };
    });
    const out = path.join(dir, 'm.gguf');
    const r = dsv3(['export', 'gguf', '--model', ck, '--out', out, '--type', 'f32']);
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(res['tokenizer_pre'], 'dbrx');
    assert.equal(res['tokenizer_pre_exact'], true);
    const g = readGguf(out);
    const k = (n: string): unknown => g.kv.get(n)?.value;
    const want: Record<string, unknown> = {
      'general.architecture': 'deepseek2', 'general.file_type': 0, 'deepseek2.block_count': 3, 'deepseek2.nextn_predict_layers': 1,
      'deepseek2.context_length': 256, 'deepseek2.embedding_length': 32, 'deepseek2.feed_forward_length': 48, 'deepseek2.attention.head_count': 2,
      'deepseek2.attention.head_count_kv': 1, 'deepseek2.leading_dense_block_count': 1, 'deepseek2.attention.q_lora_rank': 24,
      'deepseek2.attention.kv_lora_rank': 16, 'deepseek2.attention.key_length': 20, 'deepseek2.attention.value_length': 16,
      'deepseek2.attention.key_length_mla': 12, 'deepseek2.attention.value_length_mla': 8, 'deepseek2.rope.dimension_count': 4,
      'deepseek2.expert_count': 8, 'deepseek2.expert_used_count': 2, 'deepseek2.expert_shared_count': 1, 'deepseek2.expert_feed_forward_length': 16,
      'deepseek2.expert_group_count': 2, 'deepseek2.expert_group_used_count': 1, 'deepseek2.expert_gating_func': 2,
      'deepseek2.expert_weights_scale': 2.5, 'deepseek2.expert_weights_norm': true, 'deepseek2.vocab_size': 320, 'deepseek2.rope.freq_base': 10000,
      'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'dbrx', 'tokenizer.ggml.bos_token_id': 0, 'tokenizer.ggml.eos_token_id': 1,
      'tokenizer.ggml.add_bos_token': true, 'tokenizer.chat_template': PLAIN_CHAT_TEMPLATE,
    };
    for (const [n, v] of Object.entries(want)) assert.equal(k(n), v, n);
    const toks = k('tokenizer.ggml.tokens') as string[];
    const types = k('tokenizer.ggml.token_type') as number[];
    assert.equal(toks.length, 320);
    assert.equal(toks[0], '<｜begin▁of▁sentence｜>');
    assert.deepEqual([types[0], types[1], types[100], types[319]], [3, 3, 1, 5], 'control, control, normal, unused padding');
    assert.equal(toks[319], '[PAD319]');
    const tj = JSON.parse(fs.readFileSync(path.join(ck, 'tokenizer.json'), 'utf8'));
    assert.deepEqual(k('tokenizer.ggml.merges'), (tj.model.merges as (string | string[])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m)));
    const by = new Map(g.tensors.map((t) => [t.name, t]));
    assert.equal(g.tensors.length, 56);
    assert.deepEqual(tensorF32(by.get('token_embd.weight')!), src['model.embed_tokens.weight']!.data);
    assert.deepEqual(tensorF32(by.get('blk.2.nextn.eh_proj.weight')!), src['model.layers.2.eh_proj.weight']!.data);
    assert.deepEqual(tensorF32(by.get('blk.1.exp_probs_b.bias')!), src['model.layers.1.mlp.gate.e_score_correction_bias']!.data);
    assert.deepEqual(tensorF32(by.get('blk.1.attn_q_a.weight')!), dequantFp8Weight(fp8!.codes, fp8!.scaleInv, 24, 32));
    // bf16 and q8_0 of the same checkpoint: the encodings of the float32 data
    for (const type of ['bf16', 'q8_0']) {
      const o = path.join(dir, `m-${type}.gguf`);
      const r2 = dsv3(['export', 'gguf', '--model', ck, '--out', o, '--type', type]);
      assert.equal(r2.status, 0, r2.stderr);
      const g2 = readGguf(o);
      assert.equal(g2.kv.get('general.file_type')!.value, type === 'bf16' ? 32 : 7);
      const emb = g2.tensors.find((t) => t.name === 'token_embd.weight')!;
      const e32 = src['model.embed_tokens.weight']!.data as Float32Array;
      if (type === 'q8_0') assert.deepEqual(emb.data, refQ8(e32));
      else assert.deepEqual(Array.from(new Uint16Array(emb.data.slice().buffer)), Array.from(e32, (x) => f32ToBf16(x)));
      assert.equal(g2.tensors.find((t) => t.name === 'blk.1.ffn_gate_inp.weight')!.type, 0, 'the router stays F32');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dsv3 export gguf bad input: one line, exit 2, no file', () => {
  const dir = tmp();
  try {
    const ck = path.join(dir, 'ckpt');
    fs.mkdirSync(ck);
    tinyCheckpoint(ck, {}, (t) => {
      delete t['model.layers.1.mlp.experts.3.up_proj.weight'];
    });
    const out = path.join(dir, 'o.gguf');
    const fails = (args: string[], re: RegExp): void => {
      const r = dsv3(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!fs.existsSync(out));
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp')), []);
    };
    fails(['export', '--model', ck, '--out', out], /expected the format 'gguf'/);
    fails(['export', 'onnx', '--model', ck, '--out', out], /expected the format 'gguf'.*'onnx'/);
    fails(['export', 'gguf', '--model', ck, '--out', out, '--type', 'q4_0'], /--type/);
    fails(['export', 'gguf', '--model', ck], /--out is required/);
    fails(['export', 'gguf', '--model', ck, '--out', out], /missing tensor "model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight"/);
    const cfg = JSON.parse(fs.readFileSync(path.join(ck, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(ck, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 26 }));
    fails(['export', 'gguf', '--model', ck, '--out', out], /num_hidden_layers = 26 with q_lora_rank 24 .*Lite.*llama\.cpp/);
    fs.writeFileSync(path.join(ck, 'config.json'), JSON.stringify(cfg));
    fs.rmSync(path.join(ck, 'tokenizer.json'));
    fails(['export', 'gguf', '--model', ck, '--out', out], /no tokenizer\.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the llama.cpp pre-tokenizer name follows tokenizer.json: regexes, ByteLevel regex, ignore_merges', async () => {
  const { ggufPreTokenizer } = await import('../src/data/tokenizer/gguf-vocab.js');
  const { parseTokenizerJson, tokenizerToJson } = await import('../src/data/tokenizer/hf-json.js');
  const base = tokenizerToJson(trainBpe(['the whale and the sea '.repeat(20)], { vocabSize: 280 })) as Record<string, any>;
  const variant = (edit: (j: Record<string, any>) => void) => {
    const j = JSON.parse(JSON.stringify(base)) as Record<string, any>;
    edit(j);
    return ggufPreTokenizer(parseTokenizerJson(j));
  };
  assert.deepEqual(variant(() => {}), { name: 'dbrx', exact: true });
  assert.deepEqual(variant((j) => (j.model.ignore_merges = true)), { name: 'llama-bpe', exact: true });
  assert.deepEqual(variant((j) => (j.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true })), { name: 'gpt-2', exact: true });
  const ds = variant((j) => {
    j.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      ...['\\p{N}{1,3}', '[一-龥\u3040-ゟ゠-ヿ]+', "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"]
        .map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })),
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  });
  assert.deepEqual(ds, { name: 'deepseek-v3', exact: true });
  const odd = variant((j) => (j.pre_tokenizer.pretokenizers[0].pattern.Regex = '\\p{L}+|\\p{N}+'));
  assert.equal(odd.exact, false);
  assert.match(odd.why!, /no llama\.cpp pre-tokenizer has the Split regexes/);
  const prefixed = variant((j) => (j.pre_tokenizer.pretokenizers[1].add_prefix_space = true));
  assert.deepEqual([prefixed.name, prefixed.exact], ['dbrx', false]);
});

test('deepseek2 keys: YaRN, softmax gating, no q_lora, groups only when they limit, and what llama.cpp cannot run', async () => {
  const { ggufArchKeys } = await import('../src/model/gguf-layout.js');
  const v2 = parseModelConfig(tinyConfigJson({
    model_type: 'deepseek_v2', q_lora_rank: null, scoring_func: 'softmax', topk_method: 'greedy', n_group: 1, topk_group: 1,
    norm_topk_prob: false, routed_scaling_factor: 1, rms_norm_eps: 1e-5,
    rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
  }));
  const { kvs, warnings } = ggufArchKeys(v2, 'f32', 'x');
  const k = (n: string): unknown => kvs.get(`deepseek2.${n}`)?.value;
  assert.equal(k('attention.q_lora_rank'), 0, 'llama.cpp requires the key; 0 = plain attn_q');
  assert.equal(k('expert_gating_func'), 1);
  assert.equal(k('expert_weights_norm'), undefined);
  assert.equal(k('expert_weights_scale'), 1);
  assert.deepEqual([k('expert_group_count'), k('expert_group_used_count')], [1, 1]);
  assert.equal(k('rope.scaling.type'), 'yarn');
  assert.equal(k('rope.scaling.factor'), 4);
  assert.equal(k('rope.scaling.original_context_length'), 64);
  assert.ok(Math.abs((k('rope.scaling.yarn_log_multiplier') as number) - 0.0707) < 1e-12, 'the converter stores 0.1 * mscale_all_dim');
  assert.deepEqual([k('rope.scaling.yarn_beta_fast'), k('rope.scaling.yarn_beta_slow')], [32, 1]);
  assert.match(warnings.join('\n'), /rms_norm_eps is 0\.00001: llama\.cpp uses it for q_a_layernorm \/ kv_a_layernorm/);
  // every group kept: no group limit (llama.cpp asserts groups used < groups)
  assert.equal(ggufArchKeys(parseModelConfig(tinyConfigJson({ topk_group: 2 })), 'f32', 'x').kvs.get('deepseek2.expert_group_count')!.value, 1);
  const glg = ggufArchKeys(parseModelConfig(tinyConfigJson({ topk_method: 'group_limited_greedy', scoring_func: 'softmax' })), 'f32', 'x');
  assert.equal(glg.kvs.get('deepseek2.expert_group_count')!.value, 2);
  assert.match(glg.warnings.join('\n'), /group_limited_greedy/);
  const dir = tmp();
  try {
    tinyCheckpoint(dir);
    const ckpt = openCheckpoint(dir);
    try {
      assert.throws(() => ggufTensors(parseModelConfig(tinyConfigJson({ num_hidden_layers: 27 })), ckpt, 'f32'), /num_hidden_layers = 27 with q_lora_rank 24.*Lite/);
      assert.equal(ggufTensors(parseModelConfig(tinyConfigJson({ tie_word_embeddings: true })), ckpt, 'f32').some((t) => t.name === 'output.weight'), false);
    } finally {
      ckpt.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
