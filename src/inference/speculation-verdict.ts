/**
 * The remembered verdict of "auto" speculation (speculation-policy.ts), per checkpoint and
 * machine. When a generation's probe finds the bound (a speculative round costs at least
 * (depth + 1)(1 - margin) plain steps: speculation loses even with every draft accepted), that
 * is a property of the model's size on this machine, not of the text: the next `dsv3 generate`
 * or `dsv3 chat` on the same checkpoint would pay the same probe (~10-20 tokens of speculative
 * rounds, the larger part of a 64-token generation's loss) to learn it again. So the verdict is
 * kept in a small file and the next run starts plain, as --no-speculative does (the same
 * tokens: every mode emits the main model's tokens).
 *   - Key: the checkpoint (its real path; name, size and mtime of its config and weight files),
 *     the draft depth and chaining, and the machine (CPU model and count, arch, platform,
 *     DSV3_THREADS / DSV3_ISA / DSV3_BACKEND, the dsv3 version): a changed checkpoint, thread
 *     count or build probes again.
 *   - Where: DSV3_SPECULATION_CACHE (a directory), else the OS cache directory
 *     ($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on
 *     Windows) + dsv3/speculation; one JSON file per key, written atomically (temp + rename).
 *     DSV3_SPECULATION_CACHE=off (or 0) neither reads nor writes it.
 *   - Re-probe: one run in REPROBE_EVERY (DSV3_SPECULATION_REPROBE=N: one in N, 0: never; at random: reading a verdict writes nothing, so a
 *     remembered run pays no file write and fsync), and every run once the verdict is older than
 *     MAX_AGE_DAYS, probes again; its probe renews the verdict (the bound again) or removes it
 *     (any other decision).
 *   - A cache never fails a generation: unreadable, corrupt or unwritable files are ignored.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic-write.js';
import type { AdaptiveSummary } from './speculation-policy.js';

/** One run in this many probes again despite a remembered verdict (that run's probe renews or drops it). */
export const REPROBE_EVERY = 16;
/** Days a verdict holds before a run probes again. */
export const MAX_AGE_DAYS = 30;

interface Verdict {
  verdict: 'plain';
  reason: 'bound';
  checkpoint: string;
  depth: number;
  written: string;
  speculative_ms_per_round: number | null;
  plain_ms_per_token: number | null;
}

/** The cache directory, or null when DSV3_SPECULATION_CACHE is off / 0. */
export function verdictDir(env: NodeJS.ProcessEnv = process.env): string | null {
  const v = env['DSV3_SPECULATION_CACHE'];
  if (v === 'off' || v === '0') return null;
  if (v !== undefined && v !== '') return path.resolve(v);
  const home = os.homedir();
  const base = process.platform === 'darwin' ? path.join(home, 'Library', 'Caches')
    : process.platform === 'win32' ? (env['LOCALAPPDATA'] ?? path.join(home, 'AppData', 'Local'))
    : (env['XDG_CACHE_HOME'] || path.join(home, '.cache'));
  return path.join(base, 'dsv3', 'speculation');
}

function dsv3Version(): string {
  try {
    return (JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '?';
  } catch {
    return '?';
  }
}

/** The verdict file of checkpoint `dir` at draft depth `depth` on this machine (null: opted out). */
export function verdictFile(dir: string, depth: number, chain: boolean, env: NodeJS.ProcessEnv = process.env): string | null {
  const cache = verdictDir(env);
  if (cache === null) return null;
  let real = path.resolve(dir);
  const parts: string[] = [];
  try {
    real = fs.realpathSync(dir);
    for (const f of fs.readdirSync(real).sort()) {
      if (f !== 'config.json' && !f.endsWith('.safetensors') && !f.endsWith('.safetensors.index.json')) continue;
      const st = fs.statSync(path.join(real, f));
      parts.push(`${f}:${st.size}:${st.mtimeMs}`);
    }
  } catch {
    return null; // an unreadable checkpoint: loading it reports that, not the cache
  }
  const cpus = os.cpus();
  const machine = [cpus[0]?.model ?? '?', cpus.length, process.arch, process.platform, env['DSV3_THREADS'] ?? '', env['DSV3_ISA'] ?? '', env['DSV3_BACKEND'] ?? '', dsv3Version()];
  const key = crypto.createHash('sha256').update(JSON.stringify([real, parts, depth, chain, machine])).digest('hex').slice(0, 24);
  return path.join(cache, `${key}.json`);
}

function read(file: string): Verdict | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<Verdict>;
    if (v.verdict !== 'plain' || v.reason !== 'bound' || typeof v.written !== 'string') return null;
    return v as Verdict;
  } catch {
    return null;
  }
}

/**
 * True when `file` remembers that speculation loses here (start plain); false when there is
 * none, it is corrupt, or this run re-probes (`random()` < 1 / REPROBE_EVERY, or N of
 * DSV3_SPECULATION_REPROBE; or older than MAX_AGE_DAYS). Reads only.
 */
export function rememberedPlain(file: string | null, now = Date.now(), random: () => number = Math.random, env: NodeJS.ProcessEnv = process.env): boolean {
  if (file === null) return false;
  const v = read(file);
  if (v === null) return false;
  const age = now - Date.parse(v.written);
  const n = Number(env['DSV3_SPECULATION_REPROBE'] ?? REPROBE_EVERY);
  const every = Number.isInteger(n) && n >= 0 ? n : REPROBE_EVERY;
  return age >= 0 && age < MAX_AGE_DAYS * 864e5 && !(every > 0 && random() < 1 / every);
}

/**
 * After a generation with an AdaptiveSpeculation: a retirement by the bound is remembered (a
 * fresh verdict); a probe that decided anything else removes a remembered verdict; a run
 * too short to decide, or one that started from the verdict, leaves it as it is.
 */
export function rememberVerdict(file: string | null, dir: string, depth: number, s: AdaptiveSummary, now = Date.now()): void {
  if (file === null || s.retiredBy === 'remembered') return;
  try {
    if (s.retiredBy === 'bound') {
      const fin = (x: number): number | null => (Number.isFinite(x) ? Number(x.toFixed(4)) : null);
      const v: Verdict = { verdict: 'plain', reason: 'bound', checkpoint: path.resolve(dir), depth, written: new Date(now).toISOString(), speculative_ms_per_round: fin(s.speculativeMsPerRound), plain_ms_per_token: fin(s.plainMsPerToken) };
      writeFileAtomic(file, JSON.stringify(v) + '\n');
    } else if (Number.isFinite(s.plainMsPerToken) && Number.isFinite(s.speculativeMsPerToken)) {
      fs.rmSync(file, { force: true });
    }
  } catch {
    // a cache never fails a generation
  }
}
