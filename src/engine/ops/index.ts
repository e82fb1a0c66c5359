/**
 * Differentiable tensor ops (forward + backward). All heavy math goes through `kernels()`, so
 * every op runs on both the native and the reference backend. Ops take float32 tensors (bf16
 * weights are accepted by `linear` and `embedding`, without gradient) and record the graph
 * only when gradients are enabled and an input requires one.
 */
export { add, sub, mul, div, binaryRaw } from './elementwise.js';
export { neg, exp, log, sqrt, rsqrt, sigmoid, silu, pow, scale, roundBf16 } from './unary.js';
export { sum, mean, max, argmax } from './reduce.js';
export { matmul } from './matmul.js';
export { linear, linearWith, linearGradInput, linearGradWeight, type LinearRecompute } from './linear.js';
export { bf16Linear, bf16LinearFromBits, pendingBf16Copy } from './bf16-linear.js';
export { deferWeightGrads, accumulateWeightGrad } from '../autograd.js';
export { groupedExperts } from './grouped.js';
export { expertPlan, type ExpertPlan, type ExpertWeights } from './grouped-plan.js';
export { fp8GroupedExperts } from './fp8-training-grouped.js';
export { softmax, logSoftmax } from './softmax.js';
export { rmsNorm, rmsNormAgain, type RmsNormOptions } from './norm.js';
export { swiglu, swigluWith, type SwigluRecompute } from './activation.js';
export { embedding, indexSelect, indexAdd, gather, scatterAdd } from './indexing.js';
export { topk } from './topk.js';
export { cat, split } from './shape.js';
export { ropeInterleaved, ropeTail } from './rope.js';
export { attention, type AttentionOptions } from './attention.js';
export { mlaAttention, type MlaAttentionOptions } from './mla-attention.js';
export { crossEntropy, type Reduction } from './loss.js';
export { linearCrossEntropy, type LinearCrossEntropyOptions } from './linear-cross-entropy.js';
export {
  fp8TrainingLinear, fp8LinearGradInput, fp8LinearGradWeight, quantizeFp8Activation, quantizeFp8Weight,
  pendingFp8Fprop, fp8FpropBuffers, fp8LinearFromOperands,
  type Fp8Blocks, type Fp8Tiles, type Fp8Fprop,
} from './fp8-training-linear.js';
