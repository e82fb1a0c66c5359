/**
 * `dsv3 bench peak`: the FMA peak of this CPU (active ISA) for 1..cores threads, measured by the
 * native FMA-peak kernel. Also home of the small native-loading helper the other kernel
 * benchmarks share (one function, so switching to the shared loader later is a one-line change).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { nativeAddonPath } from '../../engine/native.js';
import { type Bench, UsageError } from '../command.js';
import { bool, parseFlags, positive } from '../flags.js';

type GemmFn<B> = (transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Float32Array, lda: number, b: B, ldb: number, beta: number, c: Float32Array, ldc: number) => void;

/** The part of the native addon the kernel benchmarks use. */
export interface BenchAddon {
  info(): { isa: string; threads: number };
  setThreads(n: number): number;
  fmaPeak(threads: number, seconds: number): number;
  gemmF32: GemmFn<Float32Array>;
  gemmBf16: GemmFn<Uint16Array>;
}

/** Loads the native addon (build/Release/dsv3.node, or the file DSV3_ADDON names), the same
 * one the engine uses. */
export function loadBenchAddon(): BenchAddon {
  const path = nativeAddonPath();
  if (!existsSync(path)) throw new UsageError(`the native addon is not built (${path}); run \`npx node-gyp rebuild\``);
  return createRequire(import.meta.url)(path) as BenchAddon;
}

/** Measured FMA peak (GFLOPS) on `threads` threads. */
export function measurePeak(addon: BenchAddon, threads: number, seconds: number): number {
  return addon.fmaPeak(threads, seconds);
}

const FLAGS = { json: bool(), seconds: positive() };

export const peakBench: Bench = {
  name: 'peak',
  summary: 'FMA peak GFLOPS of this CPU for 1..cores threads',
  help: `Usage: dsv3 bench peak [--json] [--seconds S]

Runs the native FMA-peak kernel (12 independent vector FMA chains, active ISA) on 1, 2, ...
cores threads and prints one JSON line per thread count:
  {"bench":"peak","threads":t,"gflops":x,"isa":"avx2"}
Each figure is the best of 5 repetitions spread over S seconds (default 1).
Without --json a readable table also goes to stderr.
`,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench peak', argv, FLAGS);
    const json = values.json === true;
    const seconds = values.seconds ?? 1;
    const addon = loadBenchAddon();
    const isa = addon.info().isa;
    const cores = availableParallelism();
    if (!json) process.stderr.write(`FMA peak (${isa})\n threads   GFLOPS   per thread\n`);
    for (let t = 1; t <= cores; t++) {
      const gflops = measurePeak(addon, t, seconds);
      process.stdout.write(JSON.stringify({ bench: 'peak', threads: t, gflops: +gflops.toFixed(1), isa }) + '\n');
      if (!json) process.stderr.write(`${String(t).padStart(8)} ${gflops.toFixed(1).padStart(8)} ${(gflops / t).toFixed(1).padStart(12)}\n`);
    }
  },
};
