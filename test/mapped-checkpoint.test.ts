/**
 * Checkpoints mapped, not copied (issue 12): a mapped load gives the same logits as a copied one
 * (BF16 and FP8 checkpoints, 'bf16' and 'auto' weight modes, and with mapping off, the path of
 * the pure TypeScript backend); kept weights are views of the file mapping (external buffers)
 * and opening does not grow the resident set by the file size; misaligned tensors fall back to
 * copies and are counted; truncated or corrupt files are errors naming the file.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { nativeAddon, nativeAddonPath, packageRoot } from '../src/engine/native.js';
import { DsvError } from '../src/errors.js';
import { openCheckpoint } from '../src/io/checkpoint-read.js';
import { isMappedBuffer, mappingAvailable } from '../src/io/mapped-file.js';
import { SafetensorsFile } from '../src/io/safetensors-read.js';
import { writeSafetensorsStreamed } from '../src/io/safetensors-write.js';
import { DecodeSession } from '../src/inference/decode-session.js';
import { writeRandomCheckpoint } from '../src/inference/random-checkpoint.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { DeepseekV3, type LoadOptions } from '../src/model/model.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-mmap-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const canMap = mappingAvailable();

function smallConfig(): ModelConfig {
  const cfg = loadModelConfig(path.join(packageRoot(), 'configs', 'bench-small.json'));
  return { ...cfg, num_hidden_layers: 2, num_nextn_predict_layers: 0 };
}

/** Logits of a 5-token prefill and 3 greedy steps through the inference engine. */
function logitsOf(model: DeepseekV3): Float32Array[] {
  const s = new DecodeSession(model, { maxLen: 16 });
  const out: Float32Array[] = [];
  let l = s.prefill(Int32Array.from([3, 1, 4, 1, 5]), 5);
  out.push(l.slice());
  for (let i = 0; i < 3; i++) {
    let best = 0;
    for (let v = 1; v < l.length; v++) if (l[v]! > l[best]!) best = v;
    l = s.step(Int32Array.from([best]));
    out.push(l.slice());
  }
  return out;
}

function withMmapOff<T>(fn: () => T): T {
  const old = process.env.DSV3_MMAP;
  process.env.DSV3_MMAP = '0';
  try {
    return fn();
  } finally {
    if (old === undefined) delete process.env.DSV3_MMAP;
    else process.env.DSV3_MMAP = old;
  }
}

/** VmRSS of this process in bytes (Linux). */
function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return Number(m![1]) * 1024;
}

describe('mapped checkpoints', () => {
  const cfg = smallConfig();
  const dirs: Record<string, string> = {};
  for (const dtype of ['bf16', 'fp8'] as const) {
    dirs[dtype] = path.join(tmp, dtype);
    // small shards, so the index path (several mapped files) is exercised
    writeRandomCheckpoint(dirs[dtype], cfg, dtype, 7, 4_000_000);
  }

  for (const dtype of ['bf16', 'fp8'] as const) {
    for (const weights of ['bf16', 'auto'] as const) {
      it(`${dtype} checkpoint, weights ${weights}: mapped and copied loads give identical logits`, () => {
        const opts: LoadOptions = { weights, mtp: false };
        const copied = DeepseekV3.load(dirs[dtype]!, opts);
        const mapped = DeepseekV3.load(dirs[dtype]!, { ...opts, map: true });
        const off = withMmapOff(() => DeepseekV3.load(dirs[dtype]!, { ...opts, map: true }));
        const want = logitsOf(copied);
        assert.deepEqual(logitsOf(mapped), want);
        assert.deepEqual(logitsOf(off), want);
        assert.ok(want[0]!.every(Number.isFinite));
        // kept weights are views of the mapping; copies and the mapping-off load are not
        const name = dtype === 'fp8' ? 'model.layers.1.mlp.experts.3.down_proj.weight' : 'model.layers.1.self_attn.o_proj.weight';
        const w = mapped.linears.get(name)!;
        const data = w.kind === 'fp8' ? w.codes : w.kind === 'bf16' ? w.bits : w.weight.data;
        const keptInPlace = w.kind !== 'f32';
        assert.equal(isMappedBuffer(data.buffer), canMap && keptInPlace);
        const cw = copied.linears.get(name)!;
        assert.equal(isMappedBuffer((cw.kind === 'fp8' ? cw.codes : cw.kind === 'bf16' ? cw.bits : cw.weight.data).buffer), false);
        const ow = off.linears.get(name)!;
        assert.equal(isMappedBuffer((ow.kind === 'fp8' ? ow.codes : ow.kind === 'bf16' ? ow.bits : ow.weight.data).buffer), false);
        // weights 'bf16' keeps the BF16 embedding in place too
        if (weights === 'bf16') {
          assert.equal(mapped.embedTokens.dtype, canMap ? 'bf16' : 'f32');
          assert.equal(isMappedBuffer(mapped.embedTokens.data.buffer), canMap);
        }
      });
    }
  }

  it('opening a large file mapped does not grow the resident set; touching its pages does', { skip: !canMap || !fs.existsSync('/proc/self/status') }, () => {
    const file = path.join(tmp, 'big.safetensors');
    const rows = 3 * 1024;
    const cols = 32 * 1024; // 3 * 2^15 * 2 bytes = 192 MiB of BF16
    writeSafetensorsStreamed(file, { w: { dtype: 'bf16', shape: [rows, cols] } }, () => {
      const bits = new Uint16Array(rows * cols);
      for (let i = 0; i < bits.length; i += 1024) bits[i] = 0x3f80; // 1.0 at every 2 KiB
      return bits;
    });
    const size = fs.statSync(file).size;
    const before = rss();
    const f = SafetensorsFile.open(file, { map: true });
    const v = f.view('w');
    const opened = rss();
    assert.equal(v.mapped, true);
    assert.ok(isMappedBuffer(v.data.buffer));
    assert.equal(v.data.buffer.byteLength, size, 'the view is of the whole-file mapping, not a copy of the tensor');
    assert.ok(opened - before < 16 * 1024 * 1024, `RSS grew by ${opened - before} bytes on opening a ${size}-byte file`);
    const bits = v.data as Uint16Array;
    let ones = 0;
    for (let i = 0; i < bits.length; i += 1024) if (bits[i] === 0x3f80) ones++;
    assert.equal(ones, bits.length / 1024);
    const touched = rss();
    assert.ok(touched - opened > size / 2, `RSS grew by only ${touched - opened} bytes after touching every page of ${size}`);
    f.close();
    assert.equal(bits[0], 0x3f80, 'views stay valid after close (the mapping outlives the descriptor)');
  });

  it('tensors at offsets misaligned for their type are copied (and counted); bytes stay in place', () => {
    // header of length 8k + 1: the data area starts at an odd offset
    const entries = {
      a: { dtype: 'BF16', shape: [3], data_offsets: [0, 6] },
      b: { dtype: 'U8', shape: [5], data_offsets: [6, 11] },
      c: { dtype: 'F32', shape: [2], data_offsets: [11, 19] },
    };
    let json = JSON.stringify(entries);
    while ((8 + json.length) % 8 !== 1) json += ' ';
    const data = Buffer.alloc(19);
    data.writeUInt16LE(0x3f80, 0);
    data.writeUInt16LE(0x4000, 2);
    data.writeUInt16LE(0xbf80, 4);
    for (let i = 0; i < 5; i++) data[6 + i] = 10 + i;
    data.writeFloatLE(1.5, 11);
    data.writeFloatLE(-2.25, 15);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(tmp, 'misaligned.safetensors');
    fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), data]));
    const dataStart = 8 + json.length;
    assert.equal(dataStart % 2, 1);
    assert.equal((dataStart + 11) % 4, 0, 'c lands 4-aligned');
    const f = SafetensorsFile.open(file, { map: true });
    const a = f.view('a');
    const b = f.view('b');
    const c = f.view('c');
    assert.deepEqual(Array.from(a.data), [0x3f80, 0x4000, 0xbf80]);
    assert.deepEqual(Array.from(b.data), [10, 11, 12, 13, 14]);
    assert.deepEqual(Array.from(c.data), [1.5, -2.25]);
    assert.equal(a.mapped, false);
    assert.equal(b.mapped, canMap);
    assert.equal(c.mapped, canMap);
    assert.equal(f.misalignedCopies, canMap ? 1 : 0);
    f.close();
  });

  it('a truncated shard is an error naming the file, mapped or not', () => {
    const dir = path.join(tmp, 'truncated');
    writeRandomCheckpoint(dir, cfg, 'fp8', 7, 4_000_000);
    const shard = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')).sort()[1]!;
    const p = path.join(dir, shard);
    fs.truncateSync(p, fs.statSync(p).size - 1000);
    for (const map of [true, false]) {
      assert.throws(() => DeepseekV3.load(dir, { weights: 'bf16', map }), (e: unknown) => {
        assert.ok(e instanceof DsvError);
        assert.ok(e.message.includes(p), e.message);
        assert.match(e.message, /truncated/);
        return true;
      });
    }
  });

  it('a corrupt header is an error naming the file', () => {
    const p = path.join(tmp, 'corrupt.safetensors');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(12n);
    fs.writeFileSync(p, Buffer.concat([len, Buffer.from('{"a": {"dty'), Buffer.alloc(64)]));
    assert.throws(() => openCheckpoint(p, { map: true }), (e: unknown) => e instanceof DsvError && e.message.startsWith(p) && /not valid JSON/.test(e.message));
  });

  it('the addon maps only what it is asked to and rejects bad arguments', { skip: !canMap }, () => {
    const a = nativeAddon()!;
    const fd = fs.openSync(path.join(tmp, 'misaligned.safetensors'), 'r');
    try {
      assert.throws(() => a.mapFile(fd, 0, 0), RangeError);
      assert.throws(() => a.mapFile(fd, 16, 9), RangeError);
      const buf = a.mapFile(fd, 16, 1) as ArrayBuffer;
      assert.equal(buf.byteLength, 16);
      assert.throws(() => a.adviseMapped(buf, 8, 16, 3), RangeError);
      assert.throws(() => a.adviseMapped(new ArrayBuffer(8), 0, 8, 3), TypeError);
      a.adviseMapped(buf, 0, 16, 3);
      assert.throws(() => a.adviseMapped(buf, 0, 16, 6), RangeError);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('background read-ahead (advice 5) leaves the mapping readable, also when it is dropped while queued', { skip: !canMap }, () => {
    const a = nativeAddon()!;
    const p = path.join(tmp, 'readahead.bin');
    const data = Buffer.alloc(12 << 20);
    for (let i = 0; i < data.length; i += 4096) data[i] = (i >> 12) & 0xff;
    fs.writeFileSync(p, data);
    const fd = fs.openSync(p, 'r');
    try {
      const buf = a.mapFile(fd, data.length, 0) as ArrayBuffer;
      for (let r = 0; r < 4; r++) a.adviseMapped(buf, r * 4096, data.length - r * 4096, 5);
      assert.throws(() => a.adviseMapped(buf, 8, data.length, 5), RangeError);
      const v = new Uint8Array(buf);
      for (let i = 0; i < data.length; i += 4096) assert.equal(v[i], data[i]);
      // a mapping whose ArrayBuffer goes away with ranges still queued is unmapped by the
      // background thread after them (a child process: gc, then exit cleanly)
      const script = `const a = require(${JSON.stringify(nativeAddonPath())}); const fs = require('fs');
        const fd = fs.openSync(${JSON.stringify(p)}, 'r');
        for (let k = 0; k < 8; k++) { let b = a.mapFile(fd, ${data.length}, 0); for (let r = 0; r < 8; r++) a.adviseMapped(b, 0, ${data.length}, 5); b = null; global.gc(); }
        const b = a.mapFile(fd, ${data.length}, 0); a.adviseMapped(b, 0, ${data.length}, 5);
        if (new Uint8Array(b)[4096] !== 1) process.exit(3);`;
      execFileSync(process.execPath, ['--expose-gc', '-e', script], { stdio: 'pipe' });
    } finally {
      fs.closeSync(fd);
    }
  });
});
