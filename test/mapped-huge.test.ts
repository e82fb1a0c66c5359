/**
 * Huge-page mappings of checkpoint files (issue 12; native/src/mapped_file_napi.c): a file mapped
 * with huge = 1 sits at a 2 MiB-aligned address and reads exactly the file's bytes, read-ahead and
 * advice on it leave it readable, DSV3_MMAP_HUGE=0 maps plainly, and, where this kernel maps a
 * huge mapping's file pages with 2 MiB entries after plain page faults, pages brought in by
 * dsv3's read-ahead are mapped that way too (MADV_WILLNEED would read them as 4 KiB folios).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { nativeAddon, nativeAddonPath } from '../src/engine/native.js';
import { dropPageCache, filePmdMappedBytes, mappingAvailable, mappingInfo, mapReadOnly } from '../src/io/mapped-file.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-huge-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const canMap = mappingAvailable();

/** A file of `bytes` bytes whose every 4-byte word holds its own index plus `salt`. */
function patterned(name: string, bytes: number, salt: number): { file: string; data: Buffer } {
  const data = Buffer.alloc(bytes);
  for (let i = 0; i + 4 <= bytes; i += 4) data.writeUInt32LE((i / 4 + salt) >>> 0, i);
  for (let i = bytes & ~3; i < bytes; i++) data[i] = (i * 7 + salt) & 0xff;
  const file = path.join(tmp, name);
  fs.writeFileSync(file, data);
  return { file, data };
}

function mapWhole(file: string, huge: number): ArrayBuffer {
  const fd = fs.openSync(file, 'r');
  try {
    return nativeAddon()!.mapFile(fd, fs.statSync(file).size, 0, huge) as ArrayBuffer;
  } finally {
    fs.closeSync(fd); // the mapping keeps the file open
  }
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('huge-page file mappings', () => {
  it('map exactly the file at a 2 MiB-aligned address, with or without huge pages', { skip: !canMap }, () => {
    const { file, data } = patterned('odd.bin', (12 << 20) + 4096 * 3 + 123, 11);
    for (const huge of [1, 0]) {
      const buf = mapWhole(file, huge);
      assert.equal(buf.byteLength, data.length);
      assert.ok(Buffer.from(buf).equals(data), `huge=${huge}: mapped bytes differ from the file`);
      const info = mappingInfo(buf)!;
      assert.equal(typeof info.huge, 'boolean');
      if (huge === 1 && process.platform === 'linux') assert.equal(info.aligned, true, 'a huge mapping starts on a 2 MiB boundary');
      if (huge === 0) assert.equal(info.huge, false, 'huge=0 never advises MADV_HUGEPAGE');
    }
    // a file under 2 MiB is mapped plainly (nothing to align) and still reads exactly
    const small = patterned('small.bin', 70001, 3);
    const b = mapWhole(small.file, 1);
    assert.ok(Buffer.from(b).equals(small.data));
    assert.equal(mappingInfo(b)!.huge, false);
    assert.equal(mappingInfo(new ArrayBuffer(8)), null);
  });

  it('rejects a bad huge argument', { skip: !canMap }, () => {
    const { file } = patterned('arg.bin', 8192, 1);
    const fd = fs.openSync(file, 'r');
    try {
      assert.throws(() => nativeAddon()!.mapFile(fd, 8192, 0, 2), RangeError);
      assert.throws(() => nativeAddon()!.mapFile(fd, 8192, 0, -1), RangeError);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('DSV3_MMAP_HUGE=0 maps plainly', { skip: !canMap }, () => {
    const { file } = patterned('env.bin', 6 << 20, 5);
    const fd = fs.openSync(file, 'r');
    const saved = process.env.DSV3_MMAP_HUGE;
    try {
      process.env.DSV3_MMAP_HUGE = '0';
      assert.equal(mappingInfo(mapReadOnly(fd, 6 << 20)!)!.huge, false);
    } finally {
      if (saved === undefined) delete process.env.DSV3_MMAP_HUGE;
      else process.env.DSV3_MMAP_HUGE = saved;
      fs.closeSync(fd);
    }
  });

  it('read-ahead and advice on a huge mapping leave it readable, also when it is dropped while queued', { skip: !canMap }, () => {
    const a = nativeAddon()!;
    const { file, data } = patterned('ra.bin', (10 << 20) + 999, 7);
    const buf = mapWhole(file, 1);
    a.adviseMapped(buf, 4096, 5 << 20, 3); // willneed: populated from a thread of its own on a huge mapping
    for (let r = 0; r < 4; r++) a.adviseMapped(buf, r * 4096 + 17, data.length - r * 4096 - 17, 5);
    a.adviseMapped(buf, 1 << 20, 1 << 20, 1); // random: also MADV_NOHUGEPAGE on that range
    a.adviseMapped(buf, 0, data.length, 4); // dontneed: drops this process's entries only
    assert.ok(Buffer.from(buf).equals(data));
    sleepMs(50);
    assert.ok(Buffer.from(buf).equals(data));
    // a huge mapping whose ArrayBuffer goes away with populating read-ahead still queued is
    // unmapped by the background thread after it (a child process: gc, then exit cleanly)
    const script = `const a = require(${JSON.stringify(nativeAddonPath())}); const fs = require('fs');
      const fd = fs.openSync(${JSON.stringify(file)}, 'r');
      for (let k = 0; k < 8; k++) { let b = a.mapFile(fd, ${data.length}, 0, 1); for (let r = 0; r < 4; r++) { a.adviseMapped(b, 0, ${data.length}, 5); a.adviseMapped(b, 4096, 8192, 3); } b = null; global.gc(); }
      const b = a.mapFile(fd, ${data.length}, 0, 1); a.adviseMapped(b, 0, ${data.length}, 3);
      if (new Uint32Array(b, 0, 1 << 21)[1 << 20] !== ((1 << 20) + 7)) process.exit(3);`;
    execFileSync(process.execPath, ['--expose-gc', '-e', script], { stdio: 'pipe' });
  });

  it('read-ahead brings pages in as folios the kernel maps with 2 MiB entries, where faults do', { skip: !canMap || process.platform !== 'linux' }, (t) => {
    const a = nativeAddon()!;
    const bytes = 16 << 20;
    const touch = (buf: ArrayBuffer): number => {
      const v = new Uint8Array(buf);
      let s = 0;
      for (let i = 0; i < v.length; i += 4096) s += v[i]!;
      return s;
    };
    // file A: dropped from the cache (our own temporary file), then read by page faults
    const A = patterned('faults.bin', bytes, 1);
    const B = patterned('readahead.bin', bytes, 2);
    if (!dropPageCache(A.file) || !dropPageCache(B.file)) return t.skip('posix_fadvise unavailable');
    const bufA = mapWhole(A.file, 1);
    if (!mappingInfo(bufA)!.huge) return t.skip('MADV_HUGEPAGE not accepted here');
    const p0 = filePmdMappedBytes();
    if (p0 === null) return t.skip('no FilePmdMapped in /proc/self/smaps_rollup');
    touch(bufA);
    const byFaults = filePmdMappedBytes()! - p0;
    if (byFaults < 4 << 20) return t.skip(`this kernel/file system maps file pages with 4 KiB entries only (${byFaults} bytes with 2 MiB ones)`);
    // file B: dropped, then brought in by read-ahead (advice 3, then 5), waited for, then read
    const bufB = mapWhole(B.file, 1);
    a.adviseMapped(bufB, 0, bytes / 2, 3);
    a.adviseMapped(bufB, bytes / 2, bytes / 2, 5);
    sleepMs(300);
    const p1 = filePmdMappedBytes()!;
    assert.equal(touch(bufB), touch(bufB));
    const byReadAhead = filePmdMappedBytes()! - p1;
    assert.ok(byReadAhead >= byFaults / 2, `read-ahead left ${byReadAhead >> 20} MiB mapped with 2 MiB entries, page faults ${byFaults >> 20} MiB`);
    assert.ok(Buffer.from(bufB).equals(B.data));
    return undefined;
  });
});
