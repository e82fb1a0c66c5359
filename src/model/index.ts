/** The DeepSeek-V3 model: one import for its public API. */
export { DeepseekV3, type ForwardOptions, type ForwardResult, type LoadOptions } from './model.js';
export { checkpointTensors, f32CheckpointTensors } from './checkpoint-layout.js';
export { ModelPart, idsTensor, type PartLayout } from './model-part.js';
export { ParamRegistry } from './param-registry.js';
export { LatentCache } from './latent-cache.js';
export { MultiHeadLatentAttention, type AttentionPath, type AttentionContext } from './mla.js';
export { MoE, dispatchPlan } from './moe.js';
export { MtpModule, type MtpOutput } from './mtp.js';
export { DecoderLayer, type Capture } from './decoder-layer.js';
export { SwiGluMlp } from './mlp.js';
export { withFp8, fp8Enabled } from './fp8-mode.js';
export { withPrecision, trainingPrecision, PRECISIONS, type Precision } from './precision-mode.js';
export { RMSNorm, LATENT_NORM_EPS } from './rmsnorm.js';
export { RotaryEmbedding } from './rope.js';
export { routeTokens, selectExperts, routerConfig, type Routing, type RouterConfig } from './router.js';
export { CheckpointParams, RandomParams, type ParamSource, type WeightMode, type Init } from './params.js';
export {
  applyLinear,
  linearFp8,
  linearBf16,
  decodeFp8Rows,
  denseRows,
  weightRows,
  linearBytes,
  f32Linear,
  bf16Linear,
  fp8Linear,
  type LinearWeight,
  type F32Linear,
  type Bf16Linear,
  type Fp8Linear,
} from './weights.js';
