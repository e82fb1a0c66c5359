/** The pure-TypeScript reference kernels: the oracle in tests and the fallback backend. */
import type { Kernels } from '../kernels.js';
import { attention, attentionBackward } from './attention.js';
import { attentionBackwardBf16, attentionBf16 } from './attention-bf16.js';
import { axpy, binary } from './elementwise.js';
import { copyStrided, gatherRows, ropeRows, rowDot, scaleRows, scatterAddRows } from './gather.js';
import { moeRows, moeRowsBf16 } from './moe-rows.js';
import { gemm, gemmBf16, gemmBf16Ab } from './gemm.js';
import { gemmBatch, gemmBatchBf16, gemmBatchBf16Ab } from './gemm-batch.js';
import { bf16Round, bf16RoundRows, bf16Widen, crossEntropyGradBf16, gatherRowsBf16, rmsNormBf16, siluMulBackwardBf16, siluMulBf16, siluMulRound } from './bf16.js';
import { linearFp8, linearFp8T } from './fp8-weight.js';
import { moeRowBf16, moeRowFp8 } from './moe-row.js';
import { fp8Dequant, fp8QuantBlocks128, fp8QuantTiles128x1, fp8QuantTiles1x128 } from './fp8-quant.js';
import { fp8QuantTiles128x1Segments, fp8QuantTilesDual, fp8RequantTiles128x1, fp8SiluMulQuant, fp8SwigluBackwardDual } from './fp8-requant.js';
import { fp8Gemm, fp8GemmBatch } from './fp8-gemm.js';
import { adamw, adamwBf16, sumSquares } from './optim.js';
import * as rows from './rows.js';

export const referenceKernels: Kernels = {
  name: 'reference',
  gemm,
  gemmBatch,
  gemmBf16,
  gemmBatchBf16,
  moeRows,
  moeRowsBf16,
  gemmBf16Ab,
  gemmBatchBf16Ab,
  bf16Round,
  bf16RoundRows,
  bf16Widen,
  linearFp8,
  linearFp8T,
  moeRowBf16,
  moeRowFp8,
  fp8QuantTiles1x128,
  fp8QuantTiles128x1,
  fp8QuantBlocks128,
  fp8Dequant,
  fp8RequantTiles128x1,
  fp8QuantTiles128x1Segments,
  fp8QuantTilesDual,
  fp8SwigluBackwardDual,
  fp8SiluMulQuant,
  fp8Gemm,
  fp8GemmBatch,
  binary,
  axpy,
  gatherRows,
  scatterAddRows,
  rowDot,
  scaleRows,
  copyStrided,
  ropeRows,
  softmax: rows.softmax,
  softmaxBackward: rows.softmaxBackward,
  logSoftmax: rows.logSoftmax,
  logSoftmaxBackward: rows.logSoftmaxBackward,
  rmsNorm: rows.rmsNorm,
  rmsNormBackward: rows.rmsNormBackward,
  rmsNormBf16,
  siluMul: rows.siluMul,
  siluMulBackward: rows.siluMulBackward,
  siluMulRound,
  siluMulBackwardBf16,
  siluMulBf16,
  gatherRowsBf16,
  crossEntropy: rows.crossEntropy,
  crossEntropyBackward: rows.crossEntropyBackward,
  crossEntropyGradBf16,
  adamw,
  adamwBf16,
  sumSquares,
  attention,
  attentionBackward,
  attentionBf16,
  attentionBackwardBf16,
};
