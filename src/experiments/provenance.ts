/**
 * Where and from what an experiment ran: the machine (CPU model, the native addon's ISA and
 * threads, cores) and the git commit of the package, read from .git without running git
 * (a worktree's `.git` file, symbolic HEAD, loose or packed refs); null when there is none.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeAddon, packageRoot } from '../engine/native.js';

export interface Machine {
  cpu: string;
  cores: number;
  /** The native kernels' ISA (avx512 | avx2 | scalar), or 'reference' without the addon. */
  isa: string;
  threads: number;
  platform: string;
  node: string;
}

export function machine(): Machine {
  const info = process.env.DSV3_BACKEND === 'reference' ? null : nativeAddon()?.info();
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.cpus().length,
    isa: info?.isa ?? 'reference',
    threads: info?.threads ?? 1,
    platform: `${os.platform()} ${os.arch()}`,
    node: process.version,
  };
}

const read = (f: string): string | null => {
  try {
    return fs.readFileSync(f, 'utf8').trim();
  } catch {
    return null;
  }
};

/** The commit checked out at `root` (default: the package root), or null. */
export function gitCommit(root = packageRoot()): string | null {
  let gitDir = path.join(root, '.git');
  const file = fs.existsSync(gitDir) && fs.statSync(gitDir).isFile() ? read(gitDir) : null;
  if (file?.startsWith('gitdir:')) gitDir = path.resolve(root, file.slice(7).trim()); // a worktree
  const head = read(path.join(gitDir, 'HEAD'));
  if (!head) return null;
  if (/^[0-9a-f]{40}$/.test(head)) return head;
  if (!head.startsWith('ref:')) return null;
  const ref = head.slice(4).trim();
  const common = read(path.join(gitDir, 'commondir'));
  const dirs = [gitDir, ...(common ? [path.resolve(gitDir, common)] : [])];
  for (const d of dirs) {
    const loose = read(path.join(d, ref));
    if (loose && /^[0-9a-f]{40}$/.test(loose)) return loose;
  }
  for (const d of dirs) {
    for (const line of (read(path.join(d, 'packed-refs')) ?? '').split('\n')) {
      const [sha, name] = line.split(' ');
      if (name === ref && sha && /^[0-9a-f]{40}$/.test(sha)) return sha;
    }
  }
  return null;
}
