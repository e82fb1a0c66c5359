/**
 * `dsv3 chat`: an interactive conversation with a checkpoint. Each user line joins the
 * conversation, which is rendered with the checkpoint's chat template (tokenizer_config.json's
 * `chat_template`, or the plain format `dsv3 train` writes: data/tokenizer/chat-template.ts) and
 * a generation prompt; the assistant's reply is generated on the fast decode engine with the
 * sampler of `dsv3 generate`, streamed to stdout, cut at EOS or at the template's end of turn,
 * and appended to the conversation. The latent cache is kept between turns: each turn computes
 * only the tokens that do not begin the previous turn's (inference/prefix-reuse.ts; with
 * speculative decoding the SpeculativeDecoder's `reuse`, which keeps the MTP modules' cache slots
 * consistent too). Greedy replies without penalties run the SpeculativeDecoder in "auto" mode when
 * the checkpoint has MTP modules (speculative rounds or plain steps, whichever measures cheaper;
 * the same tokens: inference/speculative.ts), as in `dsv3 generate`; one policy for all turns.
 * A conversation longer than the context drops its oldest turns.
 */
import * as readline from 'node:readline';
import { type Command, type FlagTable, UsageError } from '../command.js';
import { bool, exists, int, parseFlags, required, text, type FlagValues } from '../flags.js';
import { loadTokenizer, quietEpipe, SAMPLING_FLAGS, SAMPLING_HELP, samplingOptions } from './decoding.js';
import { ChatTemplate, type ChatMessage } from '../../data/tokenizer/index.js';
import { DecodeSession } from '../../inference/decode-session.js';
import { type FinishReason, generate } from '../../inference/generate.js';
import { PrefixReuseDecoder } from '../../inference/prefix-reuse.js';
import { hasPenalties, Sampler } from '../../inference/sampling.js';
import { SpeculativeDecoder } from '../../inference/speculative.js';
import { rememberVerdict } from '../../inference/speculation-verdict.js';
import { autoText, autoVerdict, depthText, SPECULATION_FLAGS, SPECULATION_HELP, speculationChoice, speculationPolicy } from './speculation.js';
import { TextStream } from '../../inference/text-stream.js';
import { loadModelConfig } from '../../model/config.js';
import { DeepseekV3 } from '../../model/model.js';
import { resolveCheckpointDir } from '../../train/run-checkpoints.js';

const HELP = `Usage: dsv3 chat --model DIR [--system TEXT] [options]

A conversation with a trained model. Reads one user message per line from stdin (with a "> "
prompt when stdin is a terminal; piped lines work too, so a chat can be scripted), renders the
conversation with the checkpoint's chat template (chat_template of tokenizer_config.json; a
checkpoint written by dsv3 train has a plain "User: ... / Assistant: ..." format), and streams
the assistant's reply to stdout. A reply ends at EOS, at the template's end-of-turn marker or
the start of a next user turn, or after --max-tokens tokens. DIR is a checkpoint directory or a
dsv3 train run directory (its latest checkpoint).

  /reset   forget the conversation (the system text stays)
  /exit    end (so does end of input, Ctrl-D, or Ctrl-C at the prompt)

When the conversation and --max-tokens no longer fit max_position_embeddings, the oldest turns
are dropped (said on stderr). The latent cache is kept from turn to turn: a turn computes only
its new tokens (the whole conversation again after turns were dropped or a template rewrote
earlier text).

Options:
  --system TEXT            a system message at the start of the conversation
  --max-tokens N           most tokens per reply (default 256, at most half the context)
${SAMPLING_HELP}${SPECULATION_HELP}  --verbose                tokens, tokens/s, cached tokens reused, the MTP acceptance rate and
                           the auto decision, per turn, on stderr
`;

const FLAGS = {
  model: exists('model directory', 'dir'),
  system: text(),
  'max-tokens': int(1),
  ...SAMPLING_FLAGS,
  ...SPECULATION_FLAGS,
  verbose: bool(),
} satisfies FlagTable;

const err = (s: string): void => {
  process.stderr.write(`dsv3 chat: ${s}\n`);
};

/** Drops the oldest turn (a user message and the replies after it; system messages stay). */
function dropOldestTurn(messages: ChatMessage[]): number {
  const first = messages.findIndex((m) => m.role !== 'system');
  if (first < 0) return 0;
  let end = first + 1;
  while (end < messages.length && messages[end]!.role !== 'user') end++;
  messages.splice(first, end - first);
  return end - first;
}

async function run(v: FlagValues<typeof FLAGS>): Promise<number> {
  const location = required(v, 'model');
  const dir = resolveCheckpointDir(location);
  const cfg = loadModelConfig(dir);
  const tok = loadTokenizer(dir, cfg.vocab_size);
  const template = ChatTemplate.fromDir(dir, tok);
  const stops = template.stopStrings();
  const maxPos = cfg.max_position_embeddings;
  if (maxPos < 2) throw new UsageError(`${dir}: max_position_embeddings ${maxPos} leaves no room for a conversation`);
  const maxTokens = v['max-tokens'] ?? Math.min(256, Math.floor(maxPos / 2));
  if (maxTokens >= maxPos) throw new UsageError(`--max-tokens ${maxTokens} leaves no room for the conversation: max_position_embeddings is ${maxPos}`);
  const o = samplingOptions(v);
  const exact = o.temperature === 0 && !hasPenalties(o);
  const choice = speculationChoice(v, cfg.num_nextn_predict_layers, dir, exact);
  // auto: an earlier run's verdict that speculation loses here starts plain (speculation-verdict.ts)
  const verdict = autoVerdict(choice, dir);
  const speculative = choice.mode !== 'off' && !verdict.plain;
  const policy = speculationPolicy(choice.mode, verdict.plain);
  const system: ChatMessage[] = v.system !== undefined ? [{ role: 'system', content: v.system }] : [];
  template.render([...system, { role: 'user', content: 'hi' }], true); // a broken template fails here, before the model loads
  const model = DeepseekV3.load(dir, { mtp: speculative, map: true });
  const spec = speculative ? new SpeculativeDecoder(model, { maxLen: maxPos, depth: choice.depth, chain: choice.chain }) : null;
  const dec = spec ? null : new PrefixReuseDecoder(new DecodeSession(model, { maxLen: maxPos }));
  const eos = tok.eosId === undefined ? {} : { eos: tok.eosId };
  const encode = (msgs: ChatMessage[]): Int32Array => Int32Array.from(tok.encode(template.render(msgs, true), { addBos: false }));
  quietEpipe();

  const tty = Boolean(process.stdin.isTTY);
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: '> ' });
  rl.on('SIGINT', () => rl.close());
  const lines = rl[Symbol.asyncIterator]();
  let messages: ChatMessage[] = [...system];
  let turn = 0;
  let remembered = false;
  for (;;) {
    if (tty) rl.prompt();
    const next = await lines.next();
    if (next.done) break;
    const line = next.value.replace(/\r$/, '');
    const cmd = line.trim();
    if (cmd === '') continue;
    if (cmd === '/exit' || cmd === '/quit') break;
    if (cmd === '/reset') {
      messages = [...system];
      dec?.clear();
      spec?.clear();
      err('conversation cleared');
      continue;
    }
    messages.push({ role: 'user', content: line });
    let prompt = encode(messages);
    let dropped = 0;
    while (prompt.length + maxTokens > maxPos && messages.filter((m) => m.role !== 'system').length > 1) {
      dropped += dropOldestTurn(messages);
      prompt = encode(messages);
    }
    if (dropped > 0) err(`the conversation no longer fits max_position_embeddings (${maxPos}) with --max-tokens ${maxTokens}: dropped the ${dropped} oldest messages`);
    const P = prompt.length;
    if (P === 0 || P >= maxPos) {
      err(P === 0 ? 'the message encodes to no tokens' : `the message is too long: ${P} tokens, the context holds ${maxPos}; it was not sent`);
      messages.pop();
      continue;
    }
    const maxNew = Math.min(maxTokens, maxPos - P);
    if (maxNew < maxTokens) err(`only ${maxNew} tokens of context are left for this reply`);
    const sampler = new Sampler(o, { V: cfg.vocab_size, seed: (v.seed ?? 0) + turn++ });
    sampler.prompt(0, prompt);
    const stream = new TextStream((id) => tok.decodeBytes([id]), stops);
    let started = false; // leading whitespace of the reply is not printed
    const out = (s: string): void => {
      if (!started) {
        s = s.trimStart();
        started = s !== '';
      }
      if (s !== '' && !process.stdout.destroyed) process.stdout.write(s);
    };
    const onToken = (_seq: number, t: number): boolean => {
      out(stream.push(t));
      return stream.stopped !== null || process.stdout.destroyed;
    };
    const t0 = performance.now();
    let n: number;
    let finish: FinishReason;
    let reused: number;
    let acc = '';
    if (spec) {
      const r = spec.generate(prompt, maxNew, { ...eos, onToken, reuse: true, ...(exact ? {} : { sampler }), ...(policy ? { policy } : {}) });
      n = r.ids.length - P;
      finish = r.finish;
      reused = r.reused;
      const byDepth = r.draftedByDepth.map((d, k) => (d > 0 ? r.acceptedByDepth[k]! / d : 0));
      acc = `; speculative, ${((r.drafted > 0 ? r.accepted / r.drafted : 0) * 100).toFixed(1)}% of MTP drafts accepted${depthText(byDepth)}${policy ? `; ${autoText(policy.summary())}` : ''}`;
      if (policy && !remembered) {
        rememberVerdict(verdict.file, dir, choice.depth, policy.summary());
        remembered = policy.retired(); // once retired, a verdict is written once a session
      }
    } else {
      const g = generate(dec!, prompt, P, { maxNew, pick: sampler.pick, ...eos, onToken });
      n = g.tokens[0]!.length;
      finish = g.finish[0]!;
      reused = dec!.reused;
      if (policy) acc = `; plain decoding; ${autoText(policy.summary())}`;
    }
    out(stream.finish());
    const seconds = (performance.now() - t0) / 1e3;
    if (process.stdout.destroyed) break;
    process.stdout.write('\n');
    messages.push({ role: 'assistant', content: stream.text.trim() });
    if (v.verbose) {
      err(`${P} prompt tokens (${reused} reused from the cache), ${n} generated in ${seconds.toFixed(3)} s (${(n / Math.max(seconds, 1e-9)).toFixed(1)} tokens/s${acc}; finish: ${finish})`);
    }
  }
  rl.close();
  if (tty) process.stdout.write('\n');
  return 0;
}

export const chatCommand: Command = {
  name: 'chat',
  summary: 'chat with a trained checkpoint (its chat template, streamed replies, /reset, /exit)',
  help: HELP,
  flags: FLAGS,
  async run(argv) {
    return run(parseFlags('chat', argv, FLAGS).values);
  },
};
