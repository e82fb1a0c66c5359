/**
 * `dsv3 bench prefill`: prompt processing speed of the inference engine on a random model,
 * batch 1: the prompt runs through the model in chunks of --chunk tokens (each chunk one GEMM
 * per projection, causal attention over the latent cache), filling the cache for decoding.
 */
import { join } from 'node:path';
import { kernels } from '../../engine/backend.js';
import { nativeAddon, packageRoot } from '../../engine/native.js';
import { measurePrefill } from '../../inference/measure.js';
import { randomModel, type WeightStorage } from '../../inference/random-model.js';
import { loadModelConfig } from '../../model/config.js';
import { type Bench, UsageError } from '../command.js';
import { bool, exists, int, oneOf, parseFlags, threads } from '../flags.js';
import { CHECKPOINT_FLAGS, CHECKPOINT_HELP, openBenchCheckpoint, rssMb } from './checkpoint-model.js';

const HELP = `Usage: dsv3 bench prefill [--config FILE] [--weights f32|bf16|fp8] [--prompt N] [--chunk C] [--reps N] [--threads N] [--json]
                         [--checkpoint-dtype bf16|fp8 [--cache-dir DIR]]

Prefill of an N-token prompt (default 512) into the latent cache of a random model (default
configs/bench-small.json), batch 1, in chunks of C tokens (default 128), on the inference
engine. One untimed warm-up, then --reps timed runs (default 3, median). --threads sets the
compute threads (default: DSV3_THREADS or all cores).

${CHECKPOINT_HELP}
Prints one JSON line:
  {bench:"prefill", weights, prompt, chunk, tokens_per_s, ms_median, threads, backend, isa}
and a summary on stderr unless --json.
`;

const FLAGS = {
  config: exists('model config', 'file'), weights: oneOf(['f32', 'bf16', 'fp8'] as const), prompt: int(1), chunk: int(2), reps: int(1), seed: int(0),
  json: bool(), threads: threads(), ...CHECKPOINT_FLAGS,
};

export const prefillBench: Bench = {
  name: 'prefill',
  summary: 'prompt tokens/s of the inference engine (chunked prefill into the latent cache)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench prefill', argv, FLAGS);
    const ckptDtype = values['checkpoint-dtype'];
    if (ckptDtype && values.weights) throw new UsageError('--weights applies to random in-memory models; with --checkpoint-dtype the storage is the checkpoint\'s');
    const weights: WeightStorage = values.weights ?? 'f32';
    const configPath = values.config ?? join(packageRoot(), 'configs', ckptDtype ? 'deepseek-v2-lite-bench.json' : 'bench-small.json');
    const cfg = loadModelConfig(configPath);
    const [prompt, chunk, reps, seed] = [values.prompt ?? 512, values.chunk ?? 128, values.reps ?? 3, values.seed ?? 1];
    if (prompt > cfg.max_position_embeddings) throw new UsageError(`--prompt ${prompt} exceeds max_position_embeddings ${cfg.max_position_embeddings}`);
    if (values.threads !== undefined) {
      const addon = nativeAddon();
      if (!addon) throw new UsageError('--threads needs the native compute core');
      addon.setThreads(values.threads);
    }
    const opened = ckptDtype ? openBenchCheckpoint(cfg, configPath, ckptDtype, values['cache-dir'], seed, !!values.cold) : null;
    const model = opened ? opened.model : randomModel(cfg, seed, weights, { mtp: false });
    const info = nativeAddon()?.info();
    const r = measurePrefill(model, { prompt, chunk, reps, seed });
    const result = {
      bench: 'prefill',
      weights: ckptDtype ? `checkpoint-${ckptDtype}` : weights,
      prompt,
      chunk,
      tokens_per_s: r.tokens_per_s,
      ms_median: r.ms_median,
      threads: info?.threads ?? 1,
      backend: kernels().name,
      isa: info?.isa ?? 'none',
      config: configPath,
      ...(opened ? {
        checkpoint: { dir: opened.dir, gb: opened.checkpoint_gb, dtype: ckptDtype, write_s: opened.write_s, mapped: opened.mapped, linears: opened.linears, fp8_bytes_per_weight: opened.fp8_bytes_per_weight, cold: opened.cold },
        open_ms: opened.open_ms, rss_after_open_mb: opened.rss_after_open_mb, rss_after_prefill_mb: rssMb(),
      } : {}),
    };
    process.stdout.write(JSON.stringify(result) + '\n');
    if (!values.json) process.stderr.write(`prefill (${result.weights}, ${result.threads} threads): ${prompt} tokens in ${r.ms_median} ms = ${r.tokens_per_s} tokens/s (chunks of ${chunk})\n`);
  },
};
