/**
 * dsv3 — DeepSeek-V3 in TypeScript. The public API, by layer (see docs/ARCHITECTURE.md):
 * engine (tensors, autograd, ops, kernels), model, inference, I/O, data and training.
 */
export { Tensor, shapeSize, contiguousStrides, sumToShape, type Shape } from './engine/tensor.js';
export { backward, noGrad, withGrad, attach, customOp, isGradEnabled, type GradNode, type BackwardFn } from './engine/autograd.js';
export * as ops from './engine/ops/index.js';
export { kernels, useBackend, withBackend } from './engine/backend.js';
export { nativeAddon, nativeLoadError, loadNativeKernels } from './engine/native.js';
export type { Kernels, AttentionParams } from './engine/kernels.js';
export { BinaryOp } from './engine/kernels.js';
export * from './engine/dtype.js';
export * as fp8 from './engine/fp8/codec.js';
export * as fp8Weights from './engine/fp8/checkpoint-weights.js';
export * from './model/index.js';
export * from './model/config.js';
export * as inference from './inference/index.js';
export { runForward, type RunForwardOptions } from './inference/run-forward.js';
export * as io from './io/safetensors.js';
export * as data from './data/index.js';
export { DsvError } from './errors.js';
export * as parallel from './parallel/index.js';
