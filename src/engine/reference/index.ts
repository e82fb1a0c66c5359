/** The pure-TypeScript reference kernels: the oracle in tests and the fallback backend. */
import type { Kernels } from '../kernels.js';
import { attention, attentionBackward } from './attention.js';
import { axpy, binary } from './elementwise.js';
import { copyStrided, gatherRows, ropeRows, rowDot, scaleRows, scatterAddRows } from './gather.js';
import { gemm, gemmBf16 } from './gemm.js';
import { gemmBatch, gemmBatchBf16 } from './gemm-batch.js';
import { bf16Round, bf16Widen } from './bf16.js';
import { linearFp8 } from './fp8-weight.js';
import { moeRowBf16, moeRowFp8 } from './moe-row.js';
import { fp8Dequant, fp8QuantBlocks128, fp8QuantTiles128x1, fp8QuantTiles1x128 } from './fp8-quant.js';
import { fp8Gemm } from './fp8-gemm.js';
import { adamw, adamwBf16, sumSquares } from './optim.js';
import * as rows from './rows.js';

export const referenceKernels: Kernels = {
  name: 'reference',
  gemm,
  gemmBatch,
  gemmBf16,
  gemmBatchBf16,
  bf16Round,
  bf16Widen,
  linearFp8,
  moeRowBf16,
  moeRowFp8,
  fp8QuantTiles1x128,
  fp8QuantTiles128x1,
  fp8QuantBlocks128,
  fp8Dequant,
  fp8Gemm,
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
  siluMul: rows.siluMul,
  siluMulBackward: rows.siluMulBackward,
  crossEntropy: rows.crossEntropy,
  crossEntropyBackward: rows.crossEntropyBackward,
  adamw,
  adamwBf16,
  sumSquares,
  attention,
  attentionBackward,
};
