/** Tokenizer and training-data pipeline. */
export * from './tokenizer/index.js';
export { Rng, deriveSeed, type RngState, type Seed } from './rng.js';
export { loadCorpus, loadMobyDick, corpusHash, corpusChars, DEFAULT_CORPUS_NAME, CORPUS_EXTENSIONS, type Corpus } from './corpus.js';
export {
  tokenizeCorpus,
  encodeDocuments,
  defaultCacheDir,
  type TokenizeCorpusOptions,
  type TokenizedCorpus,
} from './token-cache.js';
export {
  BatchIterator,
  prepareData,
  splitTrainVal,
  inputsAndTargets,
  validationBatches,
  type Batch,
  type BatchIteratorOptions,
  type BatchIteratorState,
  type PrepareDataOptions,
  type PreparedData,
} from './dataset.js';
