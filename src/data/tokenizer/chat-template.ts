/**
 * Chat templates: a conversation (system / user / assistant messages) as the text a model was
 * trained on, from the Jinja `chat_template` of a checkpoint's tokenizer_config.json (Hugging
 * Face convention; rendered by @huggingface/jinja with `messages`, `bos_token`, `eos_token` and
 * `add_generation_prompt`). Models trained here have no chat data; `dsv3 train` writes
 * PLAIN_CHAT_TEMPLATE, a plain-text format ("User: ...", "Assistant: ..."), into each checkpoint
 * so `dsv3 chat` works on what it trained.
 *
 * The end of an assistant turn is found from the template itself (`stopStrings`): render a
 * conversation with a known assistant reply and read what follows it (the end-of-turn marker,
 * e.g. `<｜end▁of▁sentence｜>`) and what starts the next user turn (e.g. `<｜User｜>` or
 * "\nUser:"); generation stops at either.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { DsvError } from '../../errors.js';
import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/**
 * The plain-text conversation format of models trained here: the system text, then
 * "User: ...\n\n" and "Assistant: ...<eos>\n\n" turns; the generation prompt is "Assistant:".
 */
export const PLAIN_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}" +
  "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n" +
  "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n" +
  "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n\n{% endif %}" +
  "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

/** tokenizer_config.json for a checkpoint written here: its BOS / EOS tokens and the plain chat template. */
export function tokenizerConfigJson(tok: Tokenizer, chatTemplate = PLAIN_CHAT_TEMPLATE): Record<string, unknown> {
  return {
    bos_token: tok.bosToken ?? null,
    eos_token: tok.eosToken ?? null,
    tokenizer_class: 'PreTrainedTokenizerFast',
    chat_template: chatTemplate,
  };
}

export class ChatTemplate {
  private readonly template: Template;

  /**
   * @param source the Jinja template
   * @param specials the BOS / EOS token texts ('' when the tokenizer has none)
   * @param origin where the template comes from, for messages
   */
  constructor(
    readonly source: string,
    readonly specials: { bos: string; eos: string },
    readonly origin = 'chat_template',
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new DsvError(`${origin}: not a valid Jinja template: ${(e as Error).message}`);
    }
  }

  /**
   * The template of a checkpoint directory: `chat_template` of its tokenizer_config.json (a
   * string, or a list of {name, template} of which 'default' is taken), else the plain format.
   */
  static fromDir(dir: string, tok: Tokenizer): ChatTemplate {
    const specials = { bos: tok.bosToken ?? '', eos: tok.eosToken ?? '' };
    const file = path.join(dir, 'tokenizer_config.json');
    if (!fs.existsSync(file)) return new ChatTemplate(PLAIN_CHAT_TEMPLATE, specials, 'the plain chat format');
    let cfg: unknown;
    try {
      cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new DsvError(`${file}: not valid JSON: ${(e as Error).message}`);
    }
    const t = typeof cfg === 'object' && cfg !== null ? (cfg as Record<string, unknown>)['chat_template'] : undefined;
    if (t === undefined || t === null) return new ChatTemplate(PLAIN_CHAT_TEMPLATE, specials, 'the plain chat format');
    if (typeof t === 'string') return new ChatTemplate(t, specials, `${file}: chat_template`);
    if (Array.isArray(t)) {
      const named = t.find((x): x is { name: string; template: string } => typeof x === 'object' && x !== null && x.name === 'default' && typeof x.template === 'string');
      if (named) return new ChatTemplate(named.template, specials, `${file}: chat_template (default)`);
    }
    throw new DsvError(`${file}: chat_template must be a string or a list with a {"name": "default", "template": ...} entry`);
  }

  /** The conversation as text; with `addGenerationPrompt`, followed by the start of the assistant's turn. */
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.template.render({
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        bos_token: this.specials.bos,
        eos_token: this.specials.eos,
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (e) {
      throw new DsvError(`${this.origin}: ${(e as Error).message}`);
    }
  }

  /**
   * Strings that end an assistant reply in this format: the end-of-turn marker that follows an
   * assistant message, and the start of the next user turn (leading whitespace reduced to one
   * newline when it holds one). Empty when the template cannot be probed.
   */
  stopStrings(): string[] {
    const A = '\u0001ASSISTANT\u0001';
    const U = '\u0001USER\u0001';
    let one: string;
    let two: string;
    try {
      one = this.render([{ role: 'user', content: 'hi' }, { role: 'assistant', content: A }], false);
      two = this.render([{ role: 'user', content: 'hi' }, { role: 'assistant', content: A }, { role: 'user', content: U }], false);
    } catch {
      return [];
    }
    const a1 = one.indexOf(A);
    const a2 = two.indexOf(A);
    const u = two.indexOf(U);
    if (a1 < 0 || a2 < 0 || u < a2) return [];
    const after = one.slice(a1 + A.length);
    const endOfTurn = after.trim();
    let between = two.slice(a2 + A.length, u).trimEnd();
    if (endOfTurn !== '' && between.trimStart().startsWith(endOfTurn)) between = between.trimStart().slice(endOfTurn.length);
    const ws = /^\s*/.exec(between)![0];
    const userStart = between.trim() === '' ? '' : (ws.includes('\n') ? '\n' : '') + between.trimStart();
    return [...new Set([endOfTurn, userStart].filter((s) => s !== ''))];
  }
}
