/** The inference engine: fast cached decoding, speculative MTP decoding, benchmark protocols. */
export { DecodeSession, type DecodeSessionOptions } from './decode-session.js';
export { generate, ModelDecoder, type Decoder, type FinishReason, type GenerateOptions, type Generation } from './generate.js';
export { argmax, Sampler, applyPenalties, tokenProbs, hasPenalties, type SamplingOptions } from './sampling.js';
export { TextStream } from './text-stream.js';
export { SpeculativeDecoder, type SpeculativeOptions, type SpeculativeResult } from './speculative.js';
export { Engine, type EngineOptions } from './engine.js';
export { Workspace } from './workspace.js';
export { PhaseProfiler, PHASES, type Phase } from './profile.js';
export { prepareLinear, runLinear, addScaledRow, preparedBytes, type PreparedLinear } from './linear.js';
export { planLayer, planMlp, planNorm, type LayerPlan, type AttnPlan, type MoePlan, type MlpPlan, type NormPlan } from './plan.js';
export { randomModel, isFp8InCheckpoint, type WeightStorage } from './random-model.js';
export {
  measureDecode,
  measurePrefill,
  measureSpeculative,
  measureModelDecode,
  profileDecode,
  promptIds,
  type DecodeOptions,
  type DecodeStats,
  type SpeculativeStats,
} from './measure.js';
export { PrefixReuseDecoder } from './prefix-reuse.js';
export { ContinuousBatcher, type ContinuousBatcherOptions } from './continuous-batcher.js';
export { measureBatchDecode, profileBatchDecode, type BatchDecodeStats } from './measure-batch.js';
