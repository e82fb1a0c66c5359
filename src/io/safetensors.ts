/**
 * safetensors and Hugging Face checkpoint I/O: one import for the reader, the writer and the
 * checkpoint (single file or sharded) helpers.
 */
export * from './safetensors-format.js';
export * from './safetensors-read.js';
export * from './safetensors-write.js';
export * from './checkpoint-read.js';
export * from './checkpoint-write.js';
export * from './mapped-file.js';
