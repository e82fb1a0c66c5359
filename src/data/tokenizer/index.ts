/** Byte-level BPE tokenizer compatible with Hugging Face tokenizer.json files. */
export { Tokenizer, type TokenizerParts, type EncodeOptions, type DecodeOptions, type DecoderKind } from './tokenizer.js';
export { trainBpe, DEFAULT_SPECIAL_TOKENS, type TrainBpeOptions } from './bpe-trainer.js';
export {
  loadTokenizerJson,
  saveTokenizerJson,
  parseTokenizerJson,
  tokenizerToJson,
  type LoadTokenizerOptions,
  type SaveTokenizerOptions,
} from './hf-json.js';
export { BpeModel, type BpeModelOptions } from './bpe-model.js';
export type { AddedToken } from './added-tokens.js';
export { BYTE_TO_CHAR, toByteLevel } from './byte-level.js';
export { GPT2_PATTERN, LLAMA3_PATTERN, parsePreTokenizer, type PreTokenizer } from './pre-tokenizer.js';
export { compileOnigRegex, translateOnig } from './onig-regex.js';
export { ChatTemplate, PLAIN_CHAT_TEMPLATE, tokenizerConfigJson, type ChatMessage, type ChatRole } from './chat-template.js';
