/**
 * `dsv3 bench decode`: greedy decoding speed of the inference engine (src/inference) on a
 * random model: batch 1, the absorbed MLA path over the latent cache, weights in float32,
 * bf16 or FP8 (block-quantised like an FP8 checkpoint). Optionally the per-phase profile of a
 * step, MTP self-speculative decoding, and the model's own Tensor-op decodeStep as a baseline.
 */
import { join } from 'node:path';
import { kernels } from '../../engine/backend.js';
import { nativeAddon, packageRoot } from '../../engine/native.js';
import { Engine } from '../../inference/engine.js';
import { measureDecode, measureModelDecode, measureSpeculative, profileDecode, type SpeculativeStats } from '../../inference/measure.js';
import { measureBatchDecode, profileBatchDecode } from '../../inference/measure-batch.js';
import { randomModel, type WeightStorage } from '../../inference/random-model.js';
import { loadModelConfig } from '../../model/config.js';
import { type Bench, UsageError } from '../command.js';
import { bool, exists, int, oneOf, parseFlags, threads } from '../flags.js';
import { CHECKPOINT_FLAGS, CHECKPOINT_HELP, openBenchCheckpoint, rssMb } from './checkpoint-model.js';
import { measureBandwidth } from './memory-bandwidth.js';
import { DecodeSession } from '../../inference/decode-session.js';
import { filePmdMappedBytes } from '../../io/mapped-file.js';
import { promptIds } from '../../inference/measure.js';
import type { DeepseekV3 } from '../../model/model.js';

const HELP = `Usage: dsv3 bench decode [--config FILE] [--weights f32|bf16|fp8] [--prompt N] [--tokens N]
                        [--reps N] [--threads N] [--profile] [--speculative] [--baseline]
                        [--batch N] [--profile-clock wall|cpu] [--json]
                        [--checkpoint-dtype bf16|fp8 [--cache-dir DIR]]

Greedy decoding of a random model (default configs/bench-small.json), batch 1: prefill an
N-token prompt (default 32), then --tokens decode steps (default 128), each one token, on the
inference engine (preallocated buffers, fused kernel calls, absorbed MLA over the latent cache).
One untimed warm-up generation, then --reps timed ones (default 3; tokens/s is their median).

  --weights       linear-weight storage: f32 (default), bf16 (every linear as bf16 bits), fp8
                  (attention and expert projections as E4M3 + 128x128 block scales, like an FP8
                  checkpoint; lm_head stays float32)
  --threads N     compute threads (default: DSV3_THREADS or all cores)
  --profile       also report where a step's time goes (ms per step by phase)
  --speculative   also run MTP self-speculative decoding (draft = the MTP module, verified by
                  the main model on two positions) and report its tokens/s and acceptance rate
                  (on random weights the draft is almost never right: the rate is reported as is)
  --baseline      also time the model's own decodeStep (Tensor ops, absorbed path)
  --batch N       decode N sequences together through the continuous batcher (one forward of
                  N rows per step, each row at its own position: sequence b's prompt has
                  --prompt + b tokens); reports aggregate and per-sequence tokens/s
                  (with --profile: the batched step's phases). Not with --speculative/--baseline.
  --profile-clock wall (default) or cpu: time --profile's phases by this process's CPU time
                  (all threads), which other processes on a shared machine do not inflate
${CHECKPOINT_HELP}
With --checkpoint-dtype the JSON also has: checkpoint (dir, GB, write_s, mapped, linears by
storage), open_ms, plan_ms, first_prefill_ms, ttft_ms (open + plan + prefill + argmax of the
first token, cold in this process), rss_before_open_mb, rss_before_first_token_mb,
rss_after_first_token_mb, file_pmd_mapped_mb (after the decode: MiB of the mapped weights the
kernel maps with 2 MiB entries, smaps FilePmdMapped; null where unknown), weight_bytes_per_token (attention, dense FFN, shared + the top-k
routed experts, router, lm_head, decoded kv_b), bandwidth_gb_per_s (bench memory-bandwidth on
the same threads), roofline_tokens_per_s = bandwidth / bytes per token, roofline_fraction.

Prints one JSON line:
  {bench:"decode", weights, tokens_per_s, ms_per_token_median, ms_per_token_p90, prefill_ms,
   cpu_ms_per_token, threads, backend, isa, prompt, tokens, weight_mb_per_token, decoded_kv_b_mb,
   [phases_ms], [speculative], [baseline]}
(with --batch: {bench:"decode", weights, batch, tokens_per_s (all sequences), per_sequence_tokens_per_s,
 ms_per_step_median, ms_per_step_p90, prefill_ms, cpu_ms_per_step, ..., [phases_ms]})
and a summary on stderr unless --json.
`;

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const FLAGS = {
  config: exists('model config', 'file'), weights: oneOf(['f32', 'bf16', 'fp8'] as const), prompt: int(1), tokens: int(1), reps: int(1), seed: int(0),
  profile: bool(), speculative: bool(), baseline: bool(), json: bool(), threads: threads(), ...CHECKPOINT_FLAGS,
  batch: int(1, 256), 'profile-clock': oneOf(['wall', 'cpu'] as const),
};

export const decodeBench: Bench = {
  name: 'decode',
  summary: 'greedy decode tokens/s of the inference engine (f32 / bf16 / fp8 weights, speculative MTP)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    const { values } = parseFlags('bench decode', argv, FLAGS);
    const ckptDtype = values['checkpoint-dtype'];
    if (ckptDtype && values.weights) throw new UsageError('--weights applies to random in-memory models; with --checkpoint-dtype the storage is the checkpoint\'s');
    if (ckptDtype && values.speculative) throw new UsageError('--speculative needs an MTP module; bench checkpoints are written without one');
    const weights: WeightStorage | 'checkpoint' = ckptDtype ? 'checkpoint' : values.weights ?? 'f32';
    const configPath = values.config ?? join(packageRoot(), 'configs', ckptDtype ? 'deepseek-v2-lite-bench.json' : 'bench-small.json');
    const cfg = loadModelConfig(configPath);
    const o = { prompt: values.prompt ?? 32, tokens: values.tokens ?? 128, reps: values.reps ?? 3, seed: values.seed ?? 1 };
    if (o.prompt + o.tokens + 1 > cfg.max_position_embeddings) {
      throw new UsageError(`--prompt + --tokens (${o.prompt + o.tokens}) must leave room within max_position_embeddings ${cfg.max_position_embeddings}`);
    }
    if (values.threads !== undefined) {
      const addon = nativeAddon();
      if (!addon) throw new UsageError('--threads needs the native compute core');
      addon.setThreads(values.threads);
    }
    if (values.batch !== undefined && (values.speculative || values.baseline)) throw new UsageError('--batch cannot be combined with --speculative or --baseline');
    if (values.batch !== undefined && o.prompt + values.batch + o.tokens + 1 > cfg.max_position_embeddings) {
      throw new UsageError(`--prompt + --batch + --tokens (${o.prompt + values.batch + o.tokens}) must leave room within max_position_embeddings ${cfg.max_position_embeddings}`);
    }
    let model: DeepseekV3;
    let real: Record<string, unknown> | null = null;
    let mem: ReturnType<Engine['memory']>;
    if (ckptDtype) {
      const c = openBenchCheckpoint(cfg, configPath, ckptDtype, values['cache-dir'], o.seed, !!values.cold);
      model = c.model;
      const first = firstToken(model, o.prompt, o.prompt + o.tokens, o.seed);
      mem = first.mem;
      real = {
        checkpoint: { dir: c.dir, gb: c.checkpoint_gb, dtype: ckptDtype, write_s: c.write_s, mapped: c.mapped, linears: c.linears, fp8_bytes_per_weight: c.fp8_bytes_per_weight, cold: c.cold },
        open_ms: c.open_ms, plan_ms: first.plan_ms, first_prefill_ms: first.prefill_ms, ttft_ms: Math.round((c.open_ms + first.total_ms) * 10) / 10,
        rss_before_open_mb: c.rss_before_open_mb, rss_before_first_token_mb: first.rss_before_mb, rss_after_first_token_mb: first.rss_after_mb,
      };
    } else {
      model = randomModel(cfg, o.seed, weights as WeightStorage, { mtp: !!values.speculative });
      mem = new Engine(model, { rows: 1, logitRows: 1, maxLen: 1 }).memory();
    }
    const info = nativeAddon()?.info();
    if (values.batch !== undefined) {
      const bo = { ...o, batch: values.batch };
      const st = measureBatchDecode(model, bo);
      const res: Record<string, unknown> = {
        bench: 'decode', weights, batch: st.batch, tokens_per_s: st.tokens_per_s, per_sequence_tokens_per_s: st.per_sequence_tokens_per_s,
        ms_per_step_median: st.ms_per_step_median, ms_per_step_p90: st.ms_per_step_p90, prefill_ms: st.prefill_ms, cpu_ms_per_step: st.cpu_ms_per_step,
        threads: info?.threads ?? 1, backend: kernels().name, isa: info?.isa ?? 'none', config: configPath, prompt: o.prompt, tokens: o.tokens, reps: o.reps,
      };
      if (values.profile) res['phases_ms'] = profileBatchDecode(model, bo, values['profile-clock'] ?? 'wall');
      process.stdout.write(JSON.stringify(res) + '\n');
      if (!values.json) {
        process.stderr.write(`decode batch ${st.batch} (${weights}, ${res['threads']} threads, ${res['isa']}): ${st.tokens_per_s} tokens/s in all, ${st.per_sequence_tokens_per_s} per sequence, median step ${st.ms_per_step_median} ms\n`);
      }
      return;
    }
    const stats = measureDecode(model, o);
    if (real) {
      const bw = measureBandwidth(info?.threads ?? 1);
      real['weight_bytes_per_token'] = mem.weightsPerToken;
      real['bandwidth_gb_per_s'] = bw === null ? null : r3(bw);
      if (bw !== null) {
        const roof = (bw * 1e9) / mem.weightsPerToken;
        real['roofline_tokens_per_s'] = r3(roof);
        real['roofline_fraction'] = r3(stats.tokens_per_s / roof);
      }
      real['rss_after_decode_mb'] = rssMb();
      const pmd = filePmdMappedBytes();
      real['file_pmd_mapped_mb'] = pmd === null ? null : Math.round(pmd / 1048576);
    }
    const result: Record<string, unknown> = {
      bench: 'decode',
      weights: ckptDtype ? `checkpoint-${ckptDtype}` : weights,
      tokens_per_s: stats.tokens_per_s,
      ms_per_token_median: stats.ms_per_token_median,
      ms_per_token_p90: stats.ms_per_token_p90,
      prefill_ms: stats.prefill_ms,
      cpu_ms_per_token: stats.cpu_ms_per_token,
      threads: info?.threads ?? 1,
      backend: kernels().name,
      isa: info?.isa ?? 'none',
      config: configPath,
      prompt: o.prompt,
      tokens: o.tokens,
      reps: o.reps,
      weight_mb_per_token: r3(mem.weightsPerToken / 1048576),
      decoded_kv_b_mb: r3(mem.decodedKvB / 1048576),
      ...real,
    };
    if (values.profile) result['phases_ms'] = profileDecode(model, o, values['profile-clock'] ?? 'wall');
    if (values.speculative) result['speculative'] = measureSpeculative(model, o, stats.ids);
    if (values.baseline) result['baseline'] = { impl: 'DeepseekV3.decodeStep (Tensor ops)', ...measureModelDecode(model, o) };
    process.stdout.write(JSON.stringify(result) + '\n');
    if (!values.json) {
      let txt = `decode (${weights}, ${result['threads']} threads, ${result['isa']}): ${stats.tokens_per_s} tokens/s, median step ${stats.ms_per_token_median} ms, prefill ${o.prompt} tokens ${stats.prefill_ms} ms\n`;
      const ph = result['phases_ms'] as Record<string, number> | undefined;
      if (ph) txt += Object.entries(ph).map(([k, v]) => `  ${k.padEnd(12)} ${v.toFixed(3).padStart(8)} ms${k === 'total' ? '' : `  ${((100 * v) / ph['total']!).toFixed(1).padStart(5)}%`}\n`).join('');
      const sp = result['speculative'] as SpeculativeStats | undefined;
      if (sp) txt += `speculative (MTP draft): ${sp.tokens_per_s} tokens/s, acceptance ${sp.acceptance_rate}, same ids as greedy: ${sp.matches_greedy}; verify ${sp.ms_per_verify} ms + draft ${sp.ms_per_draft} ms per main forward, ${sp.projected_tokens_per_s_at_085} tokens/s projected at acceptance 0.85\n`;
      if (real) {
        txt += `checkpoint ${ckptDtype} ${real['checkpoint'] && (real['checkpoint'] as { gb: number }).gb} GB: open ${real['open_ms']} ms, first token after ${real['ttft_ms']} ms, RSS before first token ${real['rss_before_first_token_mb']} MB\n`;
        txt += `file pages mapped with 2 MiB entries: ${real['file_pmd_mapped_mb']} MiB\n`;
        txt += `weights read per token ${r3(mem.weightsPerToken / 1e6)} MB; bandwidth ${real['bandwidth_gb_per_s']} GB/s -> roofline ${real['roofline_tokens_per_s']} tokens/s; measured ${stats.tokens_per_s} = ${real['roofline_fraction']} of it\n`;
      }
      const bl = result['baseline'] as { tokens_per_s: number } | undefined;
      if (bl) txt += `baseline decodeStep: ${bl.tokens_per_s} tokens/s (engine ${(stats.tokens_per_s / bl.tokens_per_s).toFixed(1)}x)\n`;
      process.stderr.write(txt);
    }
  },
};

/**
 * The first token of a freshly opened model, timed: plan the engine (DecodeSession), prefill
 * the prompt, take the argmax. RSS is read before the prefill (everything opened and planned,
 * no weight touched by a kernel yet) and after the first token.
 */
function firstToken(model: DeepseekV3, prompt: number, maxLen: number, seed: number) {
  const t0 = performance.now();
  const s = new DecodeSession(model, { maxLen });
  const t1 = performance.now();
  const rss_before_mb = rssMb();
  const l = s.prefill(promptIds(prompt, model.cfg.vocab_size, seed), prompt);
  let best = 0;
  for (let v = 1; v < l.length; v++) if (l[v]! > l[best]!) best = v;
  const t2 = performance.now();
  const r1 = (x: number): number => Math.round(x * 10) / 10;
  return { plan_ms: r1(t1 - t0), prefill_ms: r1(t2 - t1), total_ms: r1(t2 - t0), rss_before_mb, rss_after_mb: rssMb(), token: best, mem: s.engine.memory() };
}
