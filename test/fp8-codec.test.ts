import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  E4M3_TABLE,
  E5M2_TABLE,
  decodeE4M3,
  encodeE4M3,
  encodeE4M3Array,
  encodeE5M2,
  e4m3FromBits,
  e5m2FromBits,
} from '../src/engine/fp8/codec.js';
import { dequantFp8Weight, quantizeBlocks128 } from '../src/engine/fp8/checkpoint-weights.js';
import { dequantizeBlocks128, dequantizeTiles1x128, quantizeTiles1x128 } from './helpers/fp8-gemm-oracle.js';
import { SafetensorsFile } from '../src/io/safetensors.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

function load(file: string): SafetensorsFile {
  return SafetensorsFile.open(FIX + file);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** Bitwise float32 equality (NaN == NaN, +0 != -0); returns the first mismatch index or -1. */
function firstBitMismatch(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  }
  return -1;
}

function firstMismatch(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Slow reference encoder: nearest finite code by value (ties to the even code), saturating at
 * the largest finite code, NaN -> 0x7F, sign kept.
 */
function refEncode(x: number, table: Float32Array, maxCode: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  if (a >= table[maxCode]!) return sign | maxCode;
  let lo = 0;
  let hi = maxCode;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[mid]! <= a) lo = mid;
    else hi = mid;
  }
  if (table[lo] === a) return sign | lo;
  const half = (table[lo]! + table[hi]!) / 2;
  const c = a < half ? lo : a > half ? hi : lo % 2 === 0 ? lo : hi;
  return sign | c;
}

test('E4M3 decode table matches table.safetensors and table.json bit for bit', () => {
  const f = load('e4m3/table.safetensors');
  const codes = f.get('codes').data as Uint8Array;
  const values = f.getF32('values');
  f.close();
  for (let i = 0; i < 256; i++) assert.equal(codes[i], i);
  assert.equal(firstBitMismatch(E4M3_TABLE, values), -1);
  const json = JSON.parse(fs.readFileSync(FIX + 'e4m3/table.json', 'utf8')) as { code: number; value: number | null; is_nan: boolean }[];
  for (const e of json) {
    if (e.is_nan) assert.ok(Number.isNaN(decodeE4M3(e.code)));
    else assert.ok(Object.is(decodeE4M3(e.code), e.value) || (e.value === 0 && decodeE4M3(e.code) === 0), `code ${e.code}`);
  }
  assert.equal(E4M3_TABLE[0x7e], 448);
  assert.equal(E4M3_TABLE[0x01], 2 ** -9);
  assert.ok(Object.is(E4M3_TABLE[0x80], -0));
});

test('E4M3 encode is bit-exact on every fixture vector (all tie categories, subnormals, saturation)', () => {
  const f = load('e4m3/encode.safetensors');
  const x = f.getF32('x');
  const codes = f.get('codes').data as Uint8Array;
  const cat = f.get('category').data as Int32Array;
  f.close();
  const seen = new Set<number>();
  for (let i = 0; i < x.length; i++) {
    seen.add(cat[i]!);
    assert.equal(encodeE4M3(x[i]!), codes[i], `x=${x[i]} category ${cat[i]} (index ${i})`);
  }
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.equal(firstMismatch(encodeE4M3Array(x), codes), -1);
});

test('E4M3 and E5M2 encoders agree with a slow reference over a sweep of float32 bit patterns', () => {
  const E4M3_MAXCODE = 0x7e;
  const E5M2_MAXCODE = 0x7b;
  for (let c = 0; c < 256; c++) {
    if (!Number.isNaN(E4M3_TABLE[c]!)) assert.equal(encodeE4M3(E4M3_TABLE[c]!), c);
    if (Number.isFinite(E5M2_TABLE[c]!)) assert.equal(encodeE5M2(E5M2_TABLE[c]!), c);
  }
  // every float32 pattern with a stride, plus dense sweeps around the E4M3 / E5M2 ranges
  const check = (u: number): void => {
    u32[0] = u >>> 0;
    const x = f32[0]!;
    const a = e4m3FromBits(u >>> 0);
    const ra = refEncode(x, E4M3_TABLE, E4M3_MAXCODE);
    if (a !== ra) assert.fail(`E4M3 bits 0x${(u >>> 0).toString(16)} (${x}): got ${a}, reference ${ra}`);
    const b = e5m2FromBits(u >>> 0);
    const rb = refEncode(x, E5M2_TABLE, E5M2_MAXCODE);
    if (b !== rb) assert.fail(`E5M2 bits 0x${(u >>> 0).toString(16)} (${x}): got ${b}, reference ${rb}`);
  };
  for (let u = 0; u < 2 ** 32; u += 7919) check(u);
  for (const lo of [bitsOf(2 ** -20), bitsOf(2 ** 6)]) for (let u = lo; u < lo + (1 << 21); u += 3) check(u);
  for (const lo of [bitsOf(2 ** -18), bitsOf(2 ** 14)]) for (let u = lo; u < lo + (1 << 21); u += 3) check(u);
  // special values
  assert.equal(encodeE4M3(NaN), 0x7f);
  assert.equal(encodeE4M3(Infinity), 0x7e);
  assert.equal(encodeE4M3(-Infinity), 0xfe);
  assert.equal(encodeE4M3(-0), 0x80);
  assert.equal(encodeE4M3(-1e-30), 0x80);
  assert.equal(encodeE4M3(464), 0x7e);
  assert.equal(encodeE4M3(1e9), 0x7e);
  assert.equal(encodeE5M2(Infinity), 0x7b);
  assert.equal(encodeE5M2(-1e9), 0xfb);
  assert.equal(encodeE5M2(NaN), 0x7f);
  assert.ok(Number.isNaN(E5M2_TABLE[0x7d]!));
  assert.equal(E5M2_TABLE[0x7c], Infinity);
});

test('E4M3 array encode is fast (no per-element allocation)', () => {
  const n = 1 << 20;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i) * 500;
  const dst = new Uint8Array(n);
  encodeE4M3Array(x, dst);
  const t0 = performance.now();
  for (let r = 0; r < 5; r++) encodeE4M3Array(x, dst);
  const ms = (performance.now() - t0) / 5;
  const q0 = performance.now();
  quantizeTiles1x128(x, 1024, 1024);
  const qms = performance.now() - q0;
  console.log(`encodeE4M3Array: ${(n / ms / 1e3).toFixed(0)} Melem/s; quantizeTiles1x128 1M: ${qms.toFixed(1)} ms`);
  assert.ok(ms < 200, `encoding 1M values took ${ms} ms`);
});

test('1x128 tile quantisation is bit-exact (float and ue8m0 scales)', () => {
  const f = load('e4m3/tiles_1x128.safetensors');
  const x = f.getF32('x');
  const [R, C] = f.info('x').shape as [number, number];
  for (const sfx of ['', '_ue8m0']) {
    const q = quantizeTiles1x128(x, R, C, sfx !== '');
    assert.equal(firstMismatch(q.codes, f.get('codes' + sfx).data as Uint8Array), -1, 'codes' + sfx);
    assert.equal(firstBitMismatch(q.scales, f.getF32('scales' + sfx)), -1, 'scales' + sfx);
    assert.equal(firstBitMismatch(dequantizeTiles1x128(q.codes, q.scales, R, C), f.getF32('dequant' + sfx)), -1, 'dequant' + sfx);
  }
  f.close();
});

test('128x128 block quantisation is bit-exact (float and ue8m0 scales)', () => {
  const f = load('e4m3/blocks_128x128.safetensors');
  const w = f.getF32('w');
  const [M, N] = f.info('w').shape as [number, number];
  for (const sfx of ['', '_ue8m0']) {
    const q = quantizeBlocks128(w, M, N, sfx !== '');
    assert.equal(firstMismatch(q.codes, f.get('codes' + sfx).data as Uint8Array), -1, 'codes' + sfx);
    assert.equal(firstBitMismatch(q.scaleInv, f.getF32('scale_inv' + sfx)), -1, 'scale_inv' + sfx);
    assert.equal(firstBitMismatch(dequantizeBlocks128(q.codes, q.scaleInv, M, N), f.getF32('dequant' + sfx)), -1, 'dequant' + sfx);
  }
  f.close();
});

test('dequantFp8Weight is bit-exact against tiny-fp8 dequant.* tensors', () => {
  const model = load('tiny-fp8/model.safetensors');
  const exp = load('tiny-fp8/expected.safetensors');
  const names = exp.names().filter((n) => n.startsWith('dequant.'));
  assert.ok(names.length > 0);
  for (const en of names) {
    const wn = en.slice('dequant.'.length);
    const w = model.get(wn);
    assert.equal(w.dtype, 'f8_e4m3', wn);
    const [rows, cols] = w.shape as [number, number];
    const dense = dequantFp8Weight(w.data as Uint8Array, model.getF32(wn + '_scale_inv'), rows, cols, wn);
    assert.equal(firstBitMismatch(dense, exp.getF32(en)), -1, en);
  }
  assert.throws(() => dequantFp8Weight(new Uint8Array(4), new Float32Array(2), 2, 2, 'w'), /w: weight_scale_inv has 2 values/);
  model.close();
  exp.close();
});

function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c]!;
  return out;
}

test('fp8-linear operands: every codes/scales tensor is reproduced bit for bit', () => {
  const f = load('fp8-linear/gemm.safetensors');
  const x = f.getF32('x');
  const w = f.getF32('w');
  const dy = f.getF32('dy');
  const [M, K] = f.info('x').shape as [number, number];
  const N = f.info('w').shape[0]!;
  const same = (got: { codes: Uint8Array; s: Float32Array }, codes: string, scales: string): void => {
    assert.equal(firstMismatch(got.codes, f.get(codes).data as Uint8Array), -1, codes);
    assert.equal(firstBitMismatch(got.s, f.getF32(scales)), -1, scales);
  };
  const tiles = (a: Float32Array, r: number, c: number): { codes: Uint8Array; s: Float32Array } => {
    const q = quantizeTiles1x128(a, r, c);
    return { codes: q.codes, s: q.scales };
  };
  same(tiles(x, M, K), 'fprop.x_codes', 'fprop.x_scales');
  const wq = quantizeBlocks128(w, N, K);
  same({ codes: wq.codes, s: wq.scaleInv }, 'fprop.w_codes', 'fprop.w_scale_inv');
  same(tiles(dy, M, N), 'dgrad.dy_codes', 'dgrad.dy_scales');
  same(tiles(transpose(dy, M, N), N, M), 'wgrad.dy_t_codes', 'wgrad.dy_t_scales');
  same(tiles(transpose(x, M, K), K, M), 'wgrad.x_t_codes', 'wgrad.x_t_scales');
  const xq = quantizeTiles1x128(x, M, K);
  const xCached = dequantizeTiles1x128(xq.codes, xq.scales, M, K);
  same(tiles(transpose(xCached, M, K), K, M), 'wgrad_cached.x_t_codes', 'wgrad_cached.x_t_scales');
  f.close();
});
