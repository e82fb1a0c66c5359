import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DsvError } from '../src/errors.js';
import {
  INDEX_FILE,
  SafetensorsFile,
  openCheckpoint,
  shapeNumel,
  writeSafetensors,
  writeShardedCheckpoint,
} from '../src/io/safetensors.js';
import type { TensorToWrite } from '../src/io/safetensors.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-st-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));

let counter = 0;
function tmpPath(name = 'f.safetensors'): string {
  return path.join(TMP, `${counter++}-${name}`);
}

/** Builds a safetensors file from a header (object or raw string) and a data area. */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const buf = new Uint8Array(8 + json.length + data.length);
  new DataView(buf.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  buf.set(json, 8);
  buf.set(data, 8 + json.length);
  const p = tmpPath();
  fs.writeFileSync(p, buf);
  return p;
}

function expectDsv(fn: () => unknown, re: RegExp, file?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DsvError, `expected DsvError, got ${String(e)}`);
    assert.match(e.message, re);
    if (file) assert.ok(e.message.includes(file), `message does not name the file: ${e.message}`);
    return true;
  });
}

function openAndReadAll(p: string): void {
  const f = SafetensorsFile.open(p);
  try {
    for (const n of f.names()) f.get(n);
  } finally {
    f.close();
  }
}

test('reads fixture files lazily with correct dtypes and shapes', () => {
  const inp = SafetensorsFile.open(FIX + 'tiny-dense-moe/inputs.safetensors');
  const meta = JSON.parse(fs.readFileSync(FIX + 'tiny-dense-moe/meta.json', 'utf8')) as { input_ids: number[][] };
  const ids = inp.get('input_ids');
  assert.equal(ids.dtype, 'i32');
  assert.deepEqual(ids.shape, [2, 17]);
  assert.deepEqual([...(ids.data as Int32Array)], meta.input_ids.flat());
  assert.equal(inp.metadata, null);
  inp.close();
  expectDsv(() => inp.get('input_ids'), /closed/);

  const m = SafetensorsFile.open(FIX + 'tiny-fp8/model.safetensors');
  const tags = new Set(m.names().map((n) => m.info(n).tag));
  assert.deepEqual([...tags].sort(), ['BF16', 'F32', 'F8_E4M3']);
  const emb = m.get('model.embed_tokens.weight');
  assert.equal(emb.dtype, 'bf16');
  assert.deepEqual(emb.shape, [300, 200]);
  assert.equal(m.getF32('model.embed_tokens.weight').length, 300 * 200);
  const q = m.get('model.layers.0.self_attn.q_a_proj.weight');
  assert.equal(q.dtype, 'f8_e4m3');
  assert.deepEqual(m.info('model.layers.0.self_attn.q_a_proj.weight_scale_inv').shape, [2, 2]);
  expectDsv(() => m.getF32('model.layers.0.self_attn.q_a_proj.weight'), /expected a floating-point tensor/);
  expectDsv(() => m.info('nope'), /no tensor named "nope"/, 'model.safetensors');
  assert.deepEqual(m.metadata, { format: 'pt' });
  m.close();
  m.close();
});

test('writer round-trips every dtype, pads the header to 8 bytes and sorts names', () => {
  const base = new Float32Array([1, 2, 3, 4, 5, 6, 7]);
  const tensors: Record<string, TensorToWrite> = {
    'z.f32': { dtype: 'f32', shape: [2, 3], data: base.subarray(1) },
    'a.bf16': { dtype: 'bf16', shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x7f80]) },
    'm.e4m3': { dtype: 'f8_e4m3', shape: [1, 2], data: new Uint8Array([0x7e, 0x80]) },
    'm.e5m2': { dtype: 'f8_e5m2', shape: [2], data: new Uint8Array([0x3c, 0x7b]) },
    'b.i32': { dtype: 'i32', shape: [2], data: new Int32Array([-5, 2147483647]) },
    'c.u8': { dtype: 'u8', shape: [1], data: new Uint8Array([9]) },
    'empty': { dtype: 'f32', shape: [0, 4], data: new Float32Array(0) },
  };
  const p = tmpPath();
  writeSafetensors(p, tensors, { note: 'x' });
  const raw = fs.readFileSync(p);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0);
  const hdr = JSON.parse(raw.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: number[] }>;
  assert.deepEqual(hdr['__metadata__'], { format: 'pt', note: 'x' });
  const order = Object.keys(hdr).filter((k) => k !== '__metadata__');
  assert.deepEqual(order, Object.keys(tensors).sort());
  let off = 0;
  for (const k of order) {
    assert.equal(hdr[k]!.data_offsets[0], off, `${k} contiguous`);
    off = hdr[k]!.data_offsets[1]!;
  }
  assert.equal(raw.length, 8 + n + off);
  const f = SafetensorsFile.open(p);
  for (const [name, t] of Object.entries(tensors)) {
    const got = f.get(name);
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual([...got.data], [...t.data], name);
    assert.equal(got.data.byteOffset % got.data.BYTES_PER_ELEMENT, 0);
  }
  assert.deepEqual(f.metadata, { format: 'pt', note: 'x' });
  f.close();
  assert.deepEqual(fs.readdirSync(TMP).filter((x) => x.includes('.tmp-')), []);

  expectDsv(() => writeSafetensors(tmpPath(), { a: { dtype: 'f32', shape: [3], data: new Float32Array(2) } }), /tensor "a".*2 elements.*needs 3/);
  expectDsv(() => writeSafetensors(tmpPath(), { a: { dtype: 'bf16', shape: [2], data: new Float32Array(2) } }), /tensor "a".*not the storage of dtype bf16/);
  expectDsv(() => writeSafetensors(path.join(TMP, 'no/such/dir/x.safetensors'), {}), /cannot create a temporary file/);
});

test('F16 is widened to f32 and I64 narrowed to i32 with a range check; unloadable tags are named', () => {
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7c00, 0x8000]);
  const i64 = new BigInt64Array([5n, -7n, 2147483647n]);
  const bad = new BigInt64Array([1n, 2147483648n]);
  const data = new Uint8Array(10 + 24 + 16 + 2);
  data.set(new Uint8Array(f16.buffer), 0);
  data.set(new Uint8Array(i64.buffer), 10);
  data.set(new Uint8Array(bad.buffer), 34);
  const p = craft({
    h: { dtype: 'F16', shape: [5], data_offsets: [0, 10] },
    i: { dtype: 'I64', shape: [3], data_offsets: [10, 34] },
    j: { dtype: 'I64', shape: [2], data_offsets: [34, 50] },
    k: { dtype: 'BOOL', shape: [2], data_offsets: [50, 52] },
  }, data);
  const f = SafetensorsFile.open(p);
  assert.deepEqual([...f.getF32('h')], [1, -2, 2 ** -24, Infinity, -0]);
  const i = f.get('i');
  assert.equal(i.dtype, 'i32');
  assert.deepEqual([...i.data], [5, -7, 2147483647]);
  expectDsv(() => f.get('j'), /tensor "j" \(I64\) element 1 = 2147483648 does not fit in int32/, p);
  expectDsv(() => f.get('k'), /tensor "k" has dtype BOOL, which cannot be loaded/, p);
  f.close();
});

test('every malformed header is a DsvError naming the file, the tensor and the problem', () => {
  const d16 = new Uint8Array(16);
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const cases: [string, () => string, RegExp][] = [
    ['short file', () => { const p = tmpPath(); fs.writeFileSync(p, new Uint8Array(5)); return p; }, /too short/],
    ['length past end', () => craft({ a: ok }, d16, 4000n), /header length 4000 runs past the end/],
    ['absurd length', () => craft({ a: ok }, d16, 1n << 40n), /absurdly large/],
    ['bad json', () => craft('{"a": {', d16), /not valid JSON/],
    ['bad utf8', () => { const p = craft('{"a":1}  ', d16); const b = fs.readFileSync(p); b[10] = 0xff; fs.writeFileSync(p, b); return p; }, /UTF-8/],
    ['array header', () => craft([1, 2], d16), /must be a JSON object/],
    ['entry not object', () => craft({ a: 5 }, d16), /tensor "a": header entry must be an object/],
    ['unknown dtype', () => craft({ a: { ...ok, dtype: 'F128' } }, d16), /tensor "a": unknown dtype "F128"/],
    ['dtype not string', () => craft({ a: { ...ok, dtype: 4 } }, d16), /tensor "a": dtype must be a string/],
    ['shape string', () => craft({ a: { ...ok, shape: '2' } }, d16), /tensor "a": shape must be a list/],
    ['shape negative', () => craft({ a: { ...ok, shape: [-2] } }, d16), /tensor "a": shape must be a list of non-negative/],
    ['shape fraction', () => craft({ a: { ...ok, shape: [1.5] } }, d16), /tensor "a": shape/],
    ['offsets length', () => craft({ a: { ...ok, data_offsets: [0] } }, d16), /tensor "a": data_offsets must be \[begin, end\]/],
    ['offsets strings', () => craft({ a: { ...ok, data_offsets: ['0', '8'] } }, d16), /tensor "a": data_offsets/],
    ['end before begin', () => craft({ a: { ...ok, data_offsets: [8, 0] } }, d16), /tensor "a": data_offsets end 0 is before begin 8/],
    ['out of bounds', () => craft({ a: { ...ok, data_offsets: [12, 20] } }, d16), /tensor "a": data_offsets \[12, 20\] run past the end of the data area/],
    ['byte length', () => craft({ a: { ...ok, shape: [3] } }, d16), /tensor "a": data_offsets span 8 bytes but shape \[3\] of F32 needs 12/],
    ['huge shape', () => craft({ a: { ...ok, shape: [1e6, 1e6, 1e6] } }, d16), /tensor "a": shape .* is absurdly large/],
    ['overlap', () => craft({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, d16), /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/],
    ['metadata type', () => craft({ __metadata__: { format: 1 }, a: ok }, d16), /__metadata__\["format"\] must be a string/],
    ['empty name', () => craft({ '': ok }, d16), /empty name/],
  ];
  for (const [label, make, re] of cases) {
    const p = make();
    assert.throws(() => openAndReadAll(p), (e: unknown) => {
      assert.ok(e instanceof DsvError, `${label}: expected DsvError, got ${String(e)}`);
      assert.match(e.message, re, label);
      assert.ok(e.message.includes(p), `${label}: message does not name the file: ${e.message}`);
      return true;
    });
  }
  expectDsv(() => SafetensorsFile.open(path.join(TMP, 'missing.safetensors')), /cannot open safetensors file \(ENOENT\)/);
  expectDsv(() => SafetensorsFile.open(TMP), /not a regular file|cannot open/);
  // gaps and trailing bytes are tolerated; zero-size tensors may share an offset
  const p = craft({ a: { ...ok, data_offsets: [8, 16] }, e: { dtype: 'U8', shape: [0], data_offsets: [8, 8] } }, new Uint8Array(20));
  openAndReadAll(p);
});

test('sharded fixture loads through its index', () => {
  const dir = FIX + 'tiny-sharded';
  const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8')) as {
    metadata: { total_size: number };
    weight_map: Record<string, string>;
  };
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as {
    shards: { tensors_per_file: Record<string, number> };
  };
  const ck = openCheckpoint(dir);
  assert.deepEqual(ck.names(), Object.keys(index.weight_map).sort());
  assert.equal(ck.totalBytes(), index.metadata.total_size);
  assert.equal(ck.filePaths().length, 3);
  const perFile: Record<string, number> = {};
  for (const n of ck.names()) {
    const info = ck.info(n);
    const base = path.basename(info.file);
    assert.equal(base, index.weight_map[n]);
    perFile[base] = (perFile[base] ?? 0) + 1;
    assert.equal(info.tag, n.endsWith('e_score_correction_bias') ? 'F32' : 'BF16', n);
    const t = ck.get(n);
    assert.equal(t.data.length, shapeNumel(t.shape));
  }
  assert.deepEqual(perFile, meta.shards.tensors_per_file);
  assert.deepEqual(ck.info('model.embed_tokens.weight').shape, [256, 64]);
  ck.close();
  expectDsv(() => openCheckpoint(path.join(TMP, 'nothing-here')), /checkpoint not found/);
  const empty = path.join(TMP, 'empty-dir');
  fs.mkdirSync(empty);
  expectDsv(() => openCheckpoint(empty), /no model\.safetensors or model\.safetensors\.index\.json/);
});

test('index validation names the tensor and the shard', () => {
  const dir = path.join(TMP, 'bad-index');
  fs.mkdirSync(dir);
  const src = FIX + 'tiny-sharded/';
  for (const f of fs.readdirSync(src)) if (f.startsWith('model-')) fs.copyFileSync(src + f, path.join(dir, f));
  const index = JSON.parse(fs.readFileSync(src + INDEX_FILE, 'utf8')) as { weight_map: Record<string, string> };
  const writeIndex = (wm: Record<string, unknown>): void => fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ weight_map: wm }));
  writeIndex({ ...index.weight_map, 'lm_head.weight': 'model-00009-of-00009.safetensors' });
  expectDsv(() => openCheckpoint(dir), /"lm_head\.weight" to model-00009-of-00009\.safetensors, which does not exist/, INDEX_FILE);
  writeIndex({ ...index.weight_map, 'lm_head.weight': 'model-00001-of-00003.safetensors' });
  expectDsv(() => openCheckpoint(dir), /"lm_head\.weight" to model-00001-of-00003\.safetensors, but that shard has no such tensor/);
  writeIndex({ 'lm_head.weight': '../model-00002-of-00003.safetensors' });
  expectDsv(() => openCheckpoint(dir), /points outside the checkpoint directory/);
  writeIndex({ 'lm_head.weight': 7 });
  expectDsv(() => openCheckpoint(dir), /weight_map\["lm_head\.weight"\] must be a shard file name/);
  fs.writeFileSync(path.join(dir, INDEX_FILE), '{"weight_map": ');
  expectDsv(() => openCheckpoint(dir), /shard index is not valid JSON/);
});

test('sharded writer produces HF layout that reads back identically, and cleans up old layouts', () => {
  const src = SafetensorsFile.open(FIX + 'tiny-fp8/model.safetensors');
  const tensors: Record<string, TensorToWrite> = {};
  for (const n of src.names()) {
    const t = src.get(n);
    tensors[n] = { dtype: t.dtype, shape: t.shape, data: t.data };
  }
  const total = src.names().reduce((s, n) => s + src.info(n).byteLength, 0);
  const dir = path.join(TMP, 'sharded-out');
  const res = writeShardedCheckpoint(dir, tensors, Math.ceil(total / 3));
  assert.equal(res.totalSize, total);
  assert.ok(res.files.length >= 3);
  assert.equal(path.basename(res.files[0]!), `model-00001-of-${String(res.files.length).padStart(5, '0')}.safetensors`);
  const idx = JSON.parse(fs.readFileSync(res.index!, 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
  assert.equal(idx.metadata.total_size, total);
  assert.deepEqual(Object.keys(idx.weight_map), Object.keys(idx.weight_map).slice().sort());
  const ck = openCheckpoint(dir);
  assert.deepEqual(ck.names(), src.names());
  for (const n of src.names()) {
    const a = ck.get(n);
    assert.equal(a.dtype, tensors[n]!.dtype);
    assert.deepEqual(a.shape, tensors[n]!.shape);
    assert.deepEqual(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength), Buffer.from(tensors[n]!.data.buffer), n);
  }
  for (const file of ck.filePaths()) {
    const f = SafetensorsFile.open(file);
    assert.deepEqual(f.metadata, { format: 'pt' });
    f.close();
  }
  ck.close();
  // rewriting as one file removes the shards and the index
  const one = writeShardedCheckpoint(dir, tensors);
  assert.equal(one.index, null);
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  const ck1 = openCheckpoint(dir);
  assert.equal(ck1.names().length, src.names().length);
  ck1.close();
  src.close();
  expectDsv(() => writeShardedCheckpoint(dir, tensors, 0), /maxShardBytes must be a positive integer/);
});

/** mulberry32: small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Loads everything from p; returns 'ok' or 'error' and fails on anything but a DsvError. */
function fuzzLoad(p: string, label: string): 'ok' | 'error' {
  try {
    const f = SafetensorsFile.open(p);
    try {
      for (const n of f.names()) {
        const info = f.info(n);
        assert.ok(info.fileOffset + info.byteLength <= f.fileSize, `${label}: ${n} beyond the file`);
        if (info.dtype === undefined) continue;
        const t = f.get(n);
        assert.equal(t.data.length, shapeNumel(t.shape), `${label}: ${n} length`);
      }
    } finally {
      f.close();
    }
    return 'ok';
  } catch (e) {
    if (e instanceof DsvError) return 'error';
    throw new Error(`${label}: non-DsvError ${String(e)}${e instanceof Error ? '\n' + e.stack : ''}`);
  }
}

test('fuzz: truncated files and corrupted headers load correctly or throw DsvError', () => {
  const rnd = prng(12345);
  const counts = { ok: 0, error: 0 };
  const files = [FIX + 'tiny-dense-moe/inputs.safetensors', FIX + 'train-step/model.safetensors'];
  const p = path.join(TMP, 'fuzz.safetensors');
  for (const file of files) {
    const orig = fs.readFileSync(file);
    const hdrEnd = 8 + Number(orig.readBigUInt64LE(0));
    const lengths = new Set<number>();
    if (orig.length < 400) for (let i = 0; i < orig.length; i++) lengths.add(i);
    else {
      for (let i = 0; i < 60; i++) lengths.add(Math.floor(rnd() * hdrEnd));
      for (let i = 0; i < 60; i++) lengths.add(Math.floor(rnd() * orig.length));
    }
    for (const len of lengths) {
      fs.writeFileSync(p, orig.subarray(0, len));
      counts[fuzzLoad(p, `${path.basename(file)} truncated at ${len}`)]++;
    }
    for (let c = 0; c < 200; c++) {
      const b = Buffer.from(orig);
      const flips = 1 + Math.floor(rnd() * 3);
      const desc: string[] = [];
      for (let k = 0; k < flips; k++) {
        const pos = rnd() < 0.1 ? Math.floor(rnd() * 8) : 8 + Math.floor(rnd() * (hdrEnd - 8));
        const ch = b[pos]!;
        // half the time keep digits digits (reaches the shape/offset checks), else any byte
        b[pos] = ch >= 0x30 && ch <= 0x39 && rnd() < 0.5 ? 0x30 + Math.floor(rnd() * 10) : Math.floor(rnd() * 256);
        desc.push(`${pos}:${ch}->${b[pos]}`);
      }
      fs.writeFileSync(p, b);
      counts[fuzzLoad(p, `${path.basename(file)} flips ${desc.join(',')}`)]++;
    }
  }
  console.log(`fuzz cases: ${counts.ok} loaded, ${counts.error} DsvError`);
  assert.ok(counts.ok > 0 && counts.error > 0);
});
