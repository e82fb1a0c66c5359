/**
 * Durable atomic file writes: the data goes to a temporary file in the same directory, which is
 * fsynced, renamed over the target, and the directory fsynced, so after a crash (process or
 * power) a reader sees the old file or the whole new one, never a partial one. The one helper
 * for the token cache, tokenizers, safetensors, checkpoints, metrics and schedules.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DsvError } from '../errors.js';

/** What `writeFileAtomic` writes: bytes, text, or a function writing to the open file. */
export type AtomicData = string | NodeJS.ArrayBufferView | ((fd: number) => void);

/**
 * Flushes a directory's entries (renames, creations) to disk. Platforms that cannot open or
 * fsync a directory (EISDIR, EPERM, EINVAL, ...) are skipped; the rename is atomic there anyway.
 */
export function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    if (!['EISDIR', 'EPERM', 'EINVAL', 'EBADF', 'EACCES', 'ENOTSUP'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/**
 * Writes `data` to `file` atomically and durably (temporary file, fsync, rename, fsync of the
 * directory). `mkdir` (default true) creates the parent directory first. File-system errors
 * are DsvErrors naming the file.
 */
export function writeFileAtomic(file: string, data: AtomicData, opts: { mkdir?: boolean } = {}): void {
  const dir = path.dirname(file);
  if (opts.mkdir ?? true) fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx');
  } catch (e) {
    throw new DsvError(`${file}: cannot create a temporary file in ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let ok = false;
  try {
    if (typeof data === 'function') data(fd);
    else fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, file);
    ok = true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw e instanceof DsvError || code === undefined ? e : new DsvError(`${file}: cannot write (${code})`);
  } finally {
    if (!ok) {
      if (fd >= 0) fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
    }
  }
  fsyncDir(dir);
}
