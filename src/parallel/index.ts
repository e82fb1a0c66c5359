/** Pipeline parallelism (DeepSeek-V3 §3.2.1, docs/DUALPIPE.md): schedules as data, their simulator and Table 2,
 * and the runtime executing them on a model (stages, single-process executor, worker threads). */
export * from './schedule-types.js';
export { buildSchedule, checkScheduleSize, checkP2pPairing, PIPELINE_ALGOS } from './schedules.js';
export { dualPipeSchedule } from './dualpipe.js';
export { dualPipeVSchedule } from './dualpipev.js';
export { oneFOneBSchedule, zb1pSchedule } from './baselines.js';
export { simulateSchedule, replaySchedule, type SimTimes, type SimMode, type SimSend, type SimResult, type TimelineEntry } from './simulate.js';
export { table2Bubble, table2Memory, table2IsExact, exactRankBubble, exactMakespan, type BubbleTimes, type Table2Memory } from './bubble.js';
export { PipelineStage, stageLayerRanges, withSideLoss, type StageBuildOptions, type StageForward, type StageLossOptions, type StageMicroBatch } from './stages.js';
export { allReduceGrads, modelParamSource } from './replicas.js';
export { RankRunner, stageHolders, streamOf, globalMb, msgKey, describeOp, type ChunkPlace, type Mailbox, type PipelineRank } from './rank-runner.js';
export { PipelineExecutor, buildPipelineRank, buildPipelineRanks, splitMicroBatches, mergeLossReport, mergeRankOutcomes, type PipelineStepResult, type RankOutcome } from './executor.js';
export { runPipelineWorkers, awaitStep, sumRankGrads, type WorkerRunOptions, type WorkerStepResult } from './workers.js';
export type { OpTiming, WorkerParamSource } from './pipeline-worker.js';
export { PipelineTrainPool, type PoolStepResult, type TrainPoolOptions } from './train-pool.js';
