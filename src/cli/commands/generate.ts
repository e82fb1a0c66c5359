/**
 * `dsv3 generate` (and its alias `dsv3 sample`): text from a trained checkpoint on the fast
 * decode engine, streamed to stdout as it is produced. Greedy decoding without penalties runs
 * the SpeculativeDecoder in "auto" mode when the checkpoint has an MTP module: each round is a
 * speculative round or a plain step, whichever measures cheaper per token (same tokens either
 * way: inference/speculative.ts, speculation-policy.ts; the flags: ./speculation.ts); with
 * --speculative every round speculates, sampling too (exact speculative sampling); everything
 * else runs the generation loop
 * (inference/generate.ts) with the sampler (inference/sampling.ts). Text is detokenized
 * incrementally, never splitting a UTF-8 character, and cut at stop strings
 * (inference/text-stream.ts).
 */
import * as fs from 'node:fs';
import { type Command, type FlagTable, UsageError } from '../command.js';
import { bool, exists, int, parseFlags, required, text, texts, type FlagValues } from '../flags.js';
import { loadTokenizer, quietEpipe, SAMPLING_FLAGS, SAMPLING_HELP, samplingOptions } from './decoding.js';
import { rememberVerdict } from '../../inference/speculation-verdict.js';
import { autoJson, autoText, autoVerdict, depthText, SPECULATION_FLAGS, SPECULATION_HELP, speculationChoice, speculationPolicy } from './speculation.js';
import { DsvError } from '../../errors.js';
import { DecodeSession } from '../../inference/decode-session.js';
import { generate as runLoop, type FinishReason } from '../../inference/generate.js';
import { hasPenalties, Sampler } from '../../inference/sampling.js';
import { SpeculativeDecoder } from '../../inference/speculative.js';
import { TextStream } from '../../inference/text-stream.js';
import { loadModelConfig } from '../../model/config.js';
import { DeepseekV3 } from '../../model/model.js';
import { resolveCheckpointDir } from '../../train/run-checkpoints.js';

const OPTIONS = `Options:
  --max-tokens N           most tokens to generate (default 100; fewer at EOS or a stop string)
${SAMPLING_HELP}  --stop STR               end the text before STR (repeatable; STR is not printed)
${SPECULATION_HELP}  --json                   print one JSON line at the end instead of streaming: tokens (the
                           generated ids), text, finish_reason (eos, stop or length),
                           prompt_tokens, tokens_per_s (generated tokens per second of
                           generation, prefill included), speculation (on, off or auto),
                           speculative (whether the MTP decoder ran), acceptance_rate (the
                           share of MTP drafts kept; speculative only), draft_depth and
                           acceptance_by_depth (per depth k: the share of module k's drafts
                           kept; a depth-k draft is kept only if the ones before it were); in
                           auto mode also auto: decision (speculative or plain), probes,
                           switches, speculative_tokens, plain_tokens and the measured
                           speculative_cpu_ms_per_token and plain_cpu_ms_per_token
  --verbose                tokens, tokens/s, the acceptance rates and the auto decision on
                           stderr
`;

const GENERATE_HELP = `Usage: dsv3 generate --model DIR [--prompt TEXT] [options]

Generates a continuation of TEXT (read from stdin when --prompt is not given; one trailing
newline is dropped) with a trained model and streams it to stdout. DIR is a checkpoint
directory (config.json, model.safetensors, tokenizer.json) or a dsv3 train run directory (its
latest checkpoint is used). Runs on the fast decode engine over MLA's latent cache.

${OPTIONS}`;

const SAMPLE_HELP = `Usage: dsv3 sample --model DIR --prompt TEXT [options]

An alias of dsv3 generate that prints the prompt before its continuation; --max-new N is
--max-tokens N. See dsv3 generate --help.

${OPTIONS}  --max-new N              the same as --max-tokens N
`;

const FLAGS = {
  model: exists('model directory', 'dir'),
  prompt: text(true),
  'max-tokens': int(0),
  ...SAMPLING_FLAGS,
  stop: texts(),
  ...SPECULATION_FLAGS,
  json: bool(),
  verbose: bool(),
} satisfies FlagTable;

const SAMPLE_FLAGS = { ...FLAGS, 'max-new': int(0) } satisfies FlagTable;

/** All of stdin, less one trailing newline. */
function readStdin(): string {
  return fs.readFileSync(0, 'utf8').replace(/\r?\n$/, '');
}

async function run(cmd: 'generate' | 'sample', v: FlagValues<typeof SAMPLE_FLAGS>): Promise<number> {
  const location = required(v, 'model');
  if (cmd === 'sample') required(v, 'prompt');
  if (v.speculative && v['no-speculative']) throw new UsageError('--speculative and --no-speculative exclude each other');
  const o = samplingOptions(v);
  const exact = o.temperature === 0 && !hasPenalties(o);
  const dir = resolveCheckpointDir(location);
  const cfg = loadModelConfig(dir);
  const choice = speculationChoice(v, cfg.num_nextn_predict_layers, dir, exact);
  const { depth } = choice;
  const tok = loadTokenizer(dir, cfg.vocab_size);
  const promptText = v.prompt ?? readStdin();
  const prompt = Int32Array.from(tok.encode(promptText, { addBos: tok.bosId !== undefined }));
  const P = prompt.length;
  const maxPos = cfg.max_position_embeddings;
  if (P === 0) throw new DsvError(`${cmd}: the prompt encodes to no tokens`);
  if (P > maxPos) throw new DsvError(`${cmd}: the prompt has ${P} tokens, more than max_position_embeddings (${maxPos})`);
  const maxNew = Math.min(maxPos, P + (v['max-tokens'] ?? v['max-new'] ?? 100)) - P;
  // auto: an earlier run's verdict that speculation loses here starts plain (speculation-verdict.ts)
  const verdict = maxNew > 0 ? autoVerdict(choice, dir) : { file: null, plain: false };
  const speculative = maxNew > 0 && choice.mode !== 'off' && !verdict.plain;
  const policy = maxNew > 0 && choice.mode !== 'off' ? speculationPolicy(choice.mode, verdict.plain) : null;
  const model = DeepseekV3.load(dir, { mtp: speculative, map: true });

  const stream = new TextStream((id) => tok.decodeBytes([id]), v.stop ?? []);
  const out = (s: string): void => {
    if (!v.json && s !== '') process.stdout.write(s);
  };
  if (cmd === 'sample') out(promptText);
  quietEpipe();
  const onToken = (_seq: number, t: number): boolean => {
    out(stream.push(t));
    return stream.stopped !== null || process.stdout.destroyed; // a closed pipe: stop generating
  };
  const eos = tok.eosId === undefined ? {} : { eos: tok.eosId };
  let tokens: number[];
  let finish: FinishReason;
  let acceptance: number | undefined;
  let byDepth: number[] = [];
  let seconds: number;
  const sampler = new Sampler(o, { V: cfg.vocab_size, seed: v.seed ?? 0 });
  sampler.prompt(0, prompt);
  if (speculative) {
    const spec = new SpeculativeDecoder(model, { maxLen: P + maxNew, depth, chain: choice.chain });
    const t0 = performance.now();
    const r = spec.generate(prompt, maxNew, { ...eos, onToken, ...(exact ? {} : { sampler }), ...(policy ? { policy } : {}) });
    seconds = (performance.now() - t0) / 1e3;
    tokens = Array.from(r.ids.subarray(P));
    finish = r.finish;
    acceptance = r.drafted > 0 ? r.accepted / r.drafted : 0;
    byDepth = r.draftedByDepth.map((d, k) => (d > 0 ? r.acceptedByDepth[k]! / d : 0));
  } else {
    const session = new DecodeSession(model, { maxLen: P + maxNew });
    const t0 = performance.now();
    const g = runLoop(session, prompt, P, { maxNew, pick: sampler.pick, ...eos, onToken });
    seconds = (performance.now() - t0) / 1e3;
    tokens = g.tokens[0]!;
    finish = g.finish[0]!;
  }
  out(stream.finish());
  if (policy) rememberVerdict(verdict.file, dir, depth, policy.summary());
  const tokensPerS = seconds > 0 ? tokens.length / seconds : 0;
  if (v.json) {
    const res: Record<string, unknown> = { tokens, text: stream.text, finish_reason: finish, prompt_tokens: P, tokens_per_s: Number(tokensPerS.toFixed(1)), speculation: maxNew > 0 ? choice.mode : 'off', speculative };
    if (acceptance !== undefined) {
      res['acceptance_rate'] = Number(acceptance.toFixed(4));
      res['draft_depth'] = depth;
      res['acceptance_by_depth'] = byDepth.map((a) => Number(a.toFixed(4)));
    }
    if (policy) res['auto'] = autoJson(policy.summary());
    process.stdout.write(JSON.stringify(res) + '\n');
  } else if (!process.stdout.destroyed) process.stdout.write('\n');
  if (v.verbose) {
    const acc = (acceptance === undefined ? 'plain decoding' : `speculative, ${(acceptance * 100).toFixed(1)}% of MTP drafts accepted${depthText(byDepth)}`) + (policy ? `; ${autoText(policy.summary())}` : '');
    process.stderr.write(`dsv3 ${cmd}: ${P} prompt tokens, ${tokens.length} generated in ${seconds.toFixed(3)} s (${tokensPerS.toFixed(1)} tokens/s, ${acc}; finish: ${finish})\n`);
  }
  return 0;
}

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a trained checkpoint (streamed; sampling, stop strings, MTP speculative)',
  help: GENERATE_HELP,
  flags: FLAGS,
  async run(argv) {
    return run('generate', parseFlags('generate', argv, FLAGS).values);
  },
};

export const sampleCommand: Command = {
  name: 'sample',
  summary: 'alias of generate that echoes the prompt (--max-new N = --max-tokens N)',
  help: SAMPLE_HELP,
  flags: SAMPLE_FLAGS,
  async run(argv) {
    return run('sample', parseFlags('sample', argv, SAMPLE_FLAGS).values);
  },
};
