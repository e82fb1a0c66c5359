/**
 * `dsv3 export gguf --output-type`: the output head alone takes its own ggml type (llama-quantize's
 * --output-tensor-type), so an FP8 checkpoint, whose lm_head DeepSeek keeps in BF16, can be compared
 * with a llama.cpp q8_0 file that reads the same head bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ggufTensorType } from '../src/model/gguf-layout.js';

test('ggufTensorType: --output-type changes output.weight only; norms, router, biases stay F32', () => {
  const ne = [64, 320];
  assert.equal(ggufTensorType('output.weight', ne, 'q8_0'), 'Q8_0', 'default: the head follows --type');
  assert.equal(ggufTensorType('output.weight', ne, 'q8_0', 'bf16'), 'BF16');
  assert.equal(ggufTensorType('output.weight', ne, 'bf16', 'q8_0'), 'Q8_0');
  assert.equal(ggufTensorType('output.weight', ne, 'q8_0', 'f32'), 'F32');
  assert.equal(ggufTensorType('output.weight', [48, 320], 'bf16', 'q8_0'), 'F16', 'rows not a multiple of 32: f16, as for --type q8_0');
  for (const n of ['token_embd.weight', 'blk.1.ffn_gate_exps.weight', 'blk.0.attn_q_a.weight']) {
    assert.equal(ggufTensorType(n, ne, 'q8_0', 'bf16'), 'Q8_0', n);
    assert.equal(ggufTensorType(n, ne, 'bf16', 'q8_0'), 'BF16', n);
  }
  assert.equal(ggufTensorType('output_norm.weight', [64], 'q8_0', 'bf16'), 'F32');
  assert.equal(ggufTensorType('blk.1.ffn_gate_inp.weight', ne, 'q8_0', 'bf16'), 'F32');
  assert.equal(ggufTensorType('blk.1.exp_probs_b.bias', [8], 'bf16', 'q8_0'), 'F32');
});
