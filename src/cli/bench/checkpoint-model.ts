/**
 * The real-size path of `bench decode` / `bench prefill` (--checkpoint-dtype bf16|fp8): a random
 * checkpoint of the config written to disk once (inference/random-checkpoint.ts; cached under
 * --cache-dir, default <tmpdir>/dsv3-bench, reused when present and matching), then opened like
 * a real checkpoint: mapped, BF16 weights and embedding kept as bf16 bits, FP8 weights as E4M3
 * codes (one byte per weight) + block scales, all read in place. Reports what opening cost:
 * wall time, resident set (VmRSS) and how the weights are stored.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dropPageCache, isMappedBuffer, mappingAvailable } from '../../io/mapped-file.js';
import { type CheckpointDtype, ensureRandomCheckpoint } from '../../inference/random-checkpoint.js';
import type { ModelConfig } from '../../model/config.js';
import { DeepseekV3 } from '../../model/model.js';
import { bool, exists, oneOf, out } from '../flags.js';

/** The flags both benches add. */
export const CHECKPOINT_FLAGS = {
  'checkpoint-dtype': oneOf(['bf16', 'fp8'] as const),
  'cache-dir': out('dir'),
  cold: bool(),
};
export const CHECKPOINT_HELP = `  --checkpoint-dtype bf16|fp8
                  write a random checkpoint of the config to disk once (BF16, or FP8 like the
                  DeepSeek-V3 release), then open it mapped like a real one and run on it; the
                  config defaults to configs/deepseek-v2-lite-bench.json
  --cache-dir DIR where such checkpoints are kept (default: <tmpdir>/dsv3-bench)
  --cold          drop the checkpoint's files from the page cache before opening it
                  (posix_fadvise DONTNEED), so the first token reads the weights from disk;
                  pages small in the cache stay small until dropped, and pages read again
                  through dsv3's huge-page mapping come back as 2 MiB folios where the kernel
                  has large folios (Linux >= 6.16, ext4/xfs), mapped with 2 MiB entries by
                  every later run (file_pmd_mapped_mb)
`;
export { exists };

/** Resident set size of this process in MiB (VmRSS; process.memoryUsage where /proc is missing). */
export function rssMb(): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch {
    // not Linux
  }
  return Math.round(process.memoryUsage.rss() / 1048576);
}

export interface OpenedCheckpoint {
  model: DeepseekV3;
  dir: string;
  /** Seconds spent writing the checkpoint now (0 when it was cached). */
  write_s: number;
  checkpoint_gb: number;
  /** Wall ms of DeepseekV3.load (open, validate, build the model over the mapping). */
  open_ms: number;
  rss_before_open_mb: number;
  rss_after_open_mb: number;
  mapped: boolean;
  /** Whether the page cache was dropped before opening (--cold), null when not asked. */
  cold: boolean | null;
  /** Linear weights by storage: how many are E4M3 codes, bf16 bits, float32; how many are views of the mapping. */
  linears: { fp8: number; bf16: number; f32: number; in_place: number };
  /** Bytes per weight element over every FP8 linear (1: codes kept one byte each), null without any. */
  fp8_bytes_per_weight: number | null;
}

/** Writes (once) and opens the random checkpoint of `cfg` in `dtype`. */
export function openBenchCheckpoint(cfg: ModelConfig, configPath: string, dtype: CheckpointDtype, cacheDir: string | undefined, seed: number, cold = false): OpenedCheckpoint {
  const t0 = performance.now();
  const name = path.basename(configPath).replace(/\.json$/, '');
  const { dir } = ensureRandomCheckpoint(cacheDir ?? path.join(os.tmpdir(), 'dsv3-bench'), name, cfg, dtype, seed);
  const write_s = Math.round((performance.now() - t0) / 100) / 10;
  let bytes = 0;
  let dropped = true;
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.safetensors')) continue;
    bytes += fs.statSync(path.join(dir, f)).size;
    if (cold) dropped = dropPageCache(path.join(dir, f)) && dropped;
  }
  const rss0 = rssMb();
  const t1 = performance.now();
  const model = DeepseekV3.load(dir, { weights: 'bf16', map: true, mtp: false });
  const open_ms = Math.round((performance.now() - t1) * 10) / 10;
  const linears = { fp8: 0, bf16: 0, f32: 0, in_place: 0 };
  let fp8Bytes = 0;
  let fp8Elems = 0;
  for (const w of model.linears.values()) {
    linears[w.kind]++;
    const data = w.kind === 'fp8' ? w.codes : w.kind === 'bf16' ? w.bits : w.weight.data;
    if (isMappedBuffer(data.buffer)) linears.in_place++;
    if (w.kind === 'fp8') {
      fp8Bytes += w.codes.byteLength;
      fp8Elems += w.outFeatures * w.inFeatures;
    }
  }
  return {
    model, dir, write_s, checkpoint_gb: Math.round(bytes / 1e7) / 100, open_ms,
    rss_before_open_mb: rss0, rss_after_open_mb: rssMb(), mapped: mappingAvailable(), linears,
    fp8_bytes_per_weight: fp8Elems > 0 ? fp8Bytes / fp8Elems : null, cold: cold ? dropped : null,
  };
}
