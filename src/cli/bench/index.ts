/** Every benchmark of `dsv3 bench`, in the order `dsv3 bench --help` lists them. */
import type { Bench } from '../command.js';
import { decodeBench } from './decode.js';
import { dispatchBench } from './dispatch.js';
import { fp8Bench } from './fp8.js';
import { fp8GemmBench } from './fp8-gemm.js';
import { gemmBench } from './gemm.js';
import { kernelsBench } from './kernels.js';
import { memoryBench } from './memory.js';
import { memoryBandwidthBench } from './memory-bandwidth.js';
import { peakBench } from './peak.js';
import { prefillBench } from './prefill.js';
import { trainBench } from './train.js';

export const benches: readonly Bench[] = [dispatchBench, memoryBench, kernelsBench, peakBench, gemmBench, decodeBench, prefillBench, trainBench, fp8Bench, fp8GemmBench, memoryBandwidthBench];
