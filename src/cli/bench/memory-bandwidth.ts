/**
 * `dsv3 bench memory-bandwidth`: the streaming-read bandwidth of this machine's memory, the
 * ceiling of batch-1 decode at real model sizes (every weight byte of a token is read once from
 * DRAM). The native kernel (native/src/isa/stream_read.c, active ISA) reads a buffer much larger
 * than the last-level cache with vector loads, each pool thread its own contiguous slice; the
 * figure is the best of --reps passes. Not to be confused with `bench memory` (RSS over a
 * training loop) or `bench peak` (FMA throughput).
 */
import { availableParallelism } from 'node:os';
import { nativeAddon } from '../../engine/native.js';
import { type Bench, UsageError } from '../command.js';
import { bool, int, parseFlags } from '../flags.js';

interface BandwidthAddon {
  info(): { isa: string };
  memoryBandwidth(bytes: number, threads: number, reps: number): number;
}

function addon(): BandwidthAddon {
  const a = nativeAddon();
  if (!a || typeof a.memoryBandwidth !== 'function') throw new UsageError('bench memory-bandwidth needs the native addon (run `npm run install` to build it)');
  return a as unknown as BandwidthAddon;
}

/** Streaming-read GB/s (1e9 bytes/s) over `mib` MiB on `threads` threads, best of `reps`; null without the addon. */
export function measureBandwidth(threads: number, mib = 1024, reps = 5): number | null {
  const a = nativeAddon();
  if (!a || typeof a.memoryBandwidth !== 'function') return null;
  return (a as unknown as BandwidthAddon).memoryBandwidth(mib * 1048576, threads, reps);
}

const FLAGS = { mb: int(16, 65536), reps: int(1, 1000), threads: int(1, 256), json: bool() };

export const memoryBandwidthBench: Bench = {
  name: 'memory-bandwidth',
  summary: 'streaming-read memory bandwidth (GB/s) for 1..cores threads: the decode roofline',
  help: `Usage: dsv3 bench memory-bandwidth [--mb N] [--reps N] [--threads N] [--json]

Reads a buffer of N MiB (default 1024, far larger than the caches; on huge pages unless
DSV3_HUGEPAGES=0, written first so every page is real memory) with the native streaming-read
kernel, each thread its own contiguous slice, --reps times (default 5), for 1, 2, ... cores
threads (or only --threads N). Prints one JSON line per thread count:
  {"bench":"memory-bandwidth","threads":t,"gb_per_s":x,"mib":N,"isa":"avx512"}
(GB = 1e9 bytes; best pass). Without --json a table also goes to stderr.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench memory-bandwidth', argv, FLAGS);
    const a = addon();
    const mib = values.mb ?? 1024;
    const reps = values.reps ?? 5;
    const isa = a.info().isa;
    const counts = values.threads !== undefined ? [values.threads] : Array.from({ length: availableParallelism() }, (_, i) => i + 1);
    if (!values.json) process.stderr.write(`streaming read of ${mib} MiB (${isa})\n threads    GB/s\n`);
    for (const t of counts) {
      const gb = a.memoryBandwidth(mib * 1048576, t, reps);
      process.stdout.write(JSON.stringify({ bench: 'memory-bandwidth', threads: t, gb_per_s: +gb.toFixed(2), mib, isa }) + '\n');
      if (!values.json) process.stderr.write(`${String(t).padStart(8)} ${gb.toFixed(2).padStart(7)}\n`);
    }
  },
};
