/**
 * What the HTTP side of `dsv3 serve` knows about the served checkpoint (the main thread; the
 * weights live in the model worker): its id in the API, its config, its tokenizer (requests
 * are tokenized and checked against the context before they are queued) and its chat template
 * with the stop strings that end an assistant turn (data/tokenizer/chat-template.ts, as
 * `dsv3 chat`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChatTemplate, loadTokenizerJson, type Tokenizer } from '../data/tokenizer/index.js';
import { DsvError } from '../errors.js';
import { loadModelConfig, type ModelConfig } from '../model/config.js';

export interface ModelInfo {
  /** The model's name in the API (`model` of requests, GET /v1/models). */
  id: string;
  /** The checkpoint directory. */
  dir: string;
  cfg: ModelConfig;
  tok: Tokenizer;
  template: ChatTemplate;
  /** Where an assistant reply ends in the template's format. */
  chatStops: string[];
  /** Unix seconds the checkpoint was written (GET /v1/models' `created`). */
  created: number;
}

/** Reads the checkpoint's config, tokenizer and chat template (DsvError naming the file on bad input). */
export function loadModelInfo(dir: string, id: string): ModelInfo {
  const cfg = loadModelConfig(dir);
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new DsvError(`${dir}: no tokenizer.json (needed to encode prompts)`);
  const tok = loadTokenizerJson(file);
  if (tok.vocabSize > cfg.vocab_size) throw new DsvError(`${file}: the tokenizer has ${tok.vocabSize} tokens, more than the model's vocab_size ${cfg.vocab_size} (${path.join(dir, 'config.json')})`);
  const template = ChatTemplate.fromDir(dir, tok);
  template.render([{ role: 'user', content: 'hi' }], true); // a broken template fails here, before the model loads
  const created = Math.floor(fs.statSync(path.join(dir, 'config.json')).mtimeMs / 1000);
  return { id, dir, cfg, tok, template, chatStops: template.stopStrings(), created };
}
