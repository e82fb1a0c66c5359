/**
 * Loader of the Node-API addon (build/Release/dsv3.node) and its adapter to the `Kernels`
 * interface. A kernel family missing from the addon falls back to the reference kernel, so the
 * interface is always complete.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { Kernels } from './kernels.js';
import { referenceKernels } from './reference/index.js';

/** The raw addon exports (functions are added by each kernel family). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeAddon = Record<string, any> & {
  info(): { isa: string; threads: number; avx2: boolean; avx512: boolean; avx512bf16: boolean; avx512vbmi: boolean; gfni?: boolean };
  setThreads(n: number): number;
  setIsa(isa: 'scalar' | 'avx2' | 'avx512'): boolean;
};

let addon: NativeAddon | null | undefined;
let loadError: string | null = null;
let nativeKernels: Kernels | null = null;

/** The package root (where build/ lives), found by walking up from this file. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    dir = dirname(dir);
  }
  return dirname(dirname(dirname(dirname(fileURLToPath(import.meta.url)))));
}

/** Where the addon is loaded from: build/Release/dsv3.node, or the file DSV3_ADDON names (a
 * second build: scripts/verify-avx512.sh runs the tests against an AVX-512-emulating one). */
export function nativeAddonPath(): string {
  return process.env.DSV3_ADDON || join(packageRoot(), 'build', 'Release', 'dsv3.node');
}

/** The addon, or null if it cannot be loaded (see nativeLoadError). */
export function nativeAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  const path = nativeAddonPath();
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    addon = null;
    loadError = `${path}: ${e instanceof Error ? e.message : String(e)}`;
  }
  return addon;
}

export function nativeLoadError(): string | null {
  return loadError;
}

/**
 * Whether the addon multiplies bf16 pairs in hardware (VDPBF16PS: its AVX-512 copy runs, on an
 * avx512_bf16 CPU). Where it does not, the BF16 attention kernel widens its pairs in registers
 * (~1.35-1.4x the float32 kernel's time), so training keeps the float32 attention core there.
 */
export function nativeHasBf16Dot(): boolean {
  const a = nativeAddon();
  if (!a) return false;
  const i = a.info();
  return i.isa === 'avx512' && i.avx512bf16;
}

/** Kernels backed by the addon (null if the addon cannot load). */
export function loadNativeKernels(): Kernels | null {
  if (nativeKernels) return nativeKernels;
  const a = nativeAddon();
  if (!a) return null;
  const ref = referenceKernels;
  const has = (name: string): boolean => typeof a[name] === 'function';
  nativeKernels = {
    name: 'native',
    gemm: has('gemmF32') ? a.gemmF32 : ref.gemm,
    gemmBatch: has('gemmBatch') ? a.gemmBatch : ref.gemmBatch,
    gemmBf16: has('gemmBf16') ? a.gemmBf16 : ref.gemmBf16,
    gemmBatchBf16: has('gemmBatchBf16') ? a.gemmBatchBf16 : ref.gemmBatchBf16,
    moeRows: has('moeRows') ? a.moeRows : ref.moeRows,
    moeRowsBf16: has('moeRowsBf16') ? a.moeRowsBf16 : ref.moeRowsBf16,
    gemmBf16Ab: has('gemmBf16Ab') ? a.gemmBf16Ab : ref.gemmBf16Ab,
    gemmBatchBf16Ab: has('gemmBatchBf16Ab') ? a.gemmBatchBf16Ab : ref.gemmBatchBf16Ab,
    bf16Round: has('bf16Round') ? a.bf16Round : ref.bf16Round,
    bf16RoundRows: has('bf16RoundRows') ? a.bf16RoundRows : ref.bf16RoundRows,
    bf16Widen: has('bf16Widen') ? a.bf16Widen : ref.bf16Widen,
    linearFp8: has('linearFp8') ? a.linearFp8 : ref.linearFp8,
    linearFp8T: has('linearFp8T') ? a.linearFp8T : ref.linearFp8T,
    moeRowBf16: has('moeRowBf16') ? a.moeRowBf16 : ref.moeRowBf16,
    moeRowFp8: has('moeRowFp8') ? a.moeRowFp8 : ref.moeRowFp8,
    fp8QuantTiles1x128: has('fp8QuantTiles1x128') ? a.fp8QuantTiles1x128 : ref.fp8QuantTiles1x128,
    fp8QuantTiles128x1: has('fp8QuantTiles128x1') ? a.fp8QuantTiles128x1 : ref.fp8QuantTiles128x1,
    fp8QuantBlocks128: has('fp8QuantBlocks128') ? a.fp8QuantBlocks128 : ref.fp8QuantBlocks128,
    fp8Dequant: has('fp8Dequant') ? a.fp8Dequant : ref.fp8Dequant,
    fp8RequantTiles128x1: has('fp8RequantTiles128x1') ? a.fp8RequantTiles128x1 : ref.fp8RequantTiles128x1,
    fp8QuantTiles128x1Segments: has('fp8QuantTiles128x1Segments') ? a.fp8QuantTiles128x1Segments : ref.fp8QuantTiles128x1Segments,
    fp8QuantTilesDual: has('fp8QuantTilesDual') ? a.fp8QuantTilesDual : ref.fp8QuantTilesDual,
    fp8SwigluBackwardDual: has('fp8SwigluBackwardDual') ? a.fp8SwigluBackwardDual : ref.fp8SwigluBackwardDual,
    fp8SiluMulQuant: has('fp8SiluMulQuant') ? a.fp8SiluMulQuant : ref.fp8SiluMulQuant,
    fp8Gemm: has('fp8Gemm') ? a.fp8Gemm : ref.fp8Gemm,
    fp8GemmBatch: has('fp8GemmBatch') ? a.fp8GemmBatch : ref.fp8GemmBatch,
    binary: has('binary') ? a.binary : ref.binary,
    axpy: has('axpy') ? a.axpy : ref.axpy,
    gatherRows: has('gatherRows') ? a.gatherRows : ref.gatherRows,
    scatterAddRows: has('scatterAddRows') ? a.scatterAddRows : ref.scatterAddRows,
    rowDot: has('rowDot') ? a.rowDot : ref.rowDot,
    scaleRows: has('scaleRows') ? a.scaleRows : ref.scaleRows,
    copyStrided: has('copyStrided') ? a.copyStrided : ref.copyStrided,
    ropeRows: has('ropeRows') ? a.ropeRows : ref.ropeRows,
    softmax: has('softmax') ? a.softmax : ref.softmax,
    softmaxBackward: has('softmaxBackward') ? a.softmaxBackward : ref.softmaxBackward,
    logSoftmax: has('logSoftmax') ? a.logSoftmax : ref.logSoftmax,
    logSoftmaxBackward: has('logSoftmaxBackward') ? a.logSoftmaxBackward : ref.logSoftmaxBackward,
    rmsNorm: has('rmsNorm') ? a.rmsNorm : ref.rmsNorm,
    rmsNormBackward: has('rmsNormBackward') ? a.rmsNormBackward : ref.rmsNormBackward,
    rmsNormBf16: has('rmsNormBf16') ? a.rmsNormBf16 : ref.rmsNormBf16,
    siluMul: has('siluMul') ? a.siluMul : ref.siluMul,
    siluMulBackward: has('siluMulBackward') ? a.siluMulBackward : ref.siluMulBackward,
    siluMulRound: has('siluMulRound') ? a.siluMulRound : ref.siluMulRound,
    siluMulBackwardBf16: has('siluMulBackwardBf16') ? a.siluMulBackwardBf16 : ref.siluMulBackwardBf16,
    siluMulBf16: has('siluMulBf16') ? a.siluMulBf16 : ref.siluMulBf16,
    gatherRowsBf16: has('gatherRowsBf16') ? a.gatherRowsBf16 : ref.gatherRowsBf16,
    crossEntropy: has('crossEntropy') ? a.crossEntropy : ref.crossEntropy,
    crossEntropyBackward: has('crossEntropyBackward') ? a.crossEntropyBackward : ref.crossEntropyBackward,
    crossEntropyGradBf16: has('crossEntropyGradBf16') ? a.crossEntropyGradBf16 : ref.crossEntropyGradBf16,
    adamw: has('adamw') ? a.adamw : ref.adamw,
    adamwBf16: has('adamwBf16') ? a.adamwBf16 : ref.adamwBf16,
    sumSquares: has('sumSquares') ? a.sumSquares : ref.sumSquares,
    attention: has('attention') ? a.attention : ref.attention,
    attentionBackward: has('attentionBackward') ? a.attentionBackward : ref.attentionBackward,
    attentionBf16: has('attentionBf16') ? a.attentionBf16 : ref.attentionBf16,
    attentionBackwardBf16: has('attentionBackwardBf16') ? a.attentionBackwardBf16 : ref.attentionBackwardBf16,
  };
  const missing = missingNativeKernels();
  if (missing.length > 0) {
    process.emitWarning(
      `dsv3: the native addon lacks ${missing.join(', ')}; those kernels run on the slow reference. ` +
        'The build is probably stale: run `npm rebuild dsv3` (a full node-gyp rebuild).',
      'DSV3NativeWarning',
    );
  }
  return nativeKernels;
}

/**
 * Kernel methods that the loaded addon does not provide (they fall back to the reference).
 * Empty for a complete build; a stale build/ (native files added after node-gyp configured)
 * shows up here instead of silently running slow code.
 */
export function missingNativeKernels(): string[] {
  const k = nativeKernels;
  if (!k) return [];
  const ref = referenceKernels as unknown as Record<string, unknown>;
  const nat = k as unknown as Record<string, unknown>;
  return Object.keys(ref).filter((m) => m !== 'name' && nat[m] === ref[m]);
}
