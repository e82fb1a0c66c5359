/* dsv3_fp8_quant_dual (fp8_quant.h): both FP8 operands of an output gradient from one read of it,
 * on the encoders of fp8_quant.c (fp8_quant_enc.h), so the same bits as dsv3_fp8_quant_rows and
 * dsv3_fp8_quant_cols. */
#include "fp8_quant_enc.h"

/* The 1x128 and the 128x1 tiles of a row group in one read (fp8_quant.h): pass 1 takes every
 * 1x128 tile's amax and every column's amax from the same loads (vmax(|x|, m), NaN ignored, as
 * q8_amax and dsv3_fp8_quant_cols take them: the maximum of the same values, so the same scale);
 * pass 2 encodes each row twice with q8_seg, exactly the calls of dsv3_fp8_quant_rows and of
 * dsv3_fp8_quant_cols, while the group (<= 128 x FP8_QUANT_CHUNK floats) is in L2. */
void ISA_FN(dsv3_fp8_quant_dual)(const float* x, int64_t n, int64_t c0, int64_t c1, int64_t cols, uint8_t* rcodes,
                                 float* rscales, uint8_t* ccodes, float* cscales) {
  enum { TPC = FP8_QUANT_CHUNK / FP8_BLOCK };
  float cm[FP8_QUANT_CHUNK] __attribute__((aligned(64))), rc[FP8_QUANT_CHUNK] __attribute__((aligned(64)));
  float rs[FP8_BLOCK * TPC], rr[FP8_BLOCK * TPC];
  const int64_t w = c1 - c0, nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK, ntc = (w + FP8_BLOCK - 1) / FP8_BLOCK;
  const q8_consts K = q8_consts_init();
  int64_t j;
  for (j = 0; j < w; j++) cm[j] = 0.0f;
  for (int64_t r = 0; r < n; r++) {
    const float* xr = x + r * cols + c0;
    for (int64_t t = 0; t < ntc; t++) {
      const int64_t e = (t + 1) * FP8_BLOCK < w ? (t + 1) * FP8_BLOCK : w;
      vf m = vzero();
      for (j = t * FP8_BLOCK; j + VL <= e; j += VL) {
        const vf a = vabs(vload(xr + j));
        vstore(cm + j, vmax(a, vload(cm + j)));
        m = vmax(a, m);
      }
      if (j < e) {
        const int k = (int)(e - j);
        const vf a = vabs(vloadt(xr + j, k, 0.0f));
        vstoret(cm + j, vmax(a, vloadt(cm + j, k, 0.0f)), k);
        m = vmax(a, m);
      }
      rs[r * ntc + t] = vhmax(m);
    }
  }
  for (j = 0; j < n * ntc; j++) {
    rs[j] = q8_scale(rs[j]);
    rr[j] = 1.0f / rs[j];
  }
  for (j = 0; j < w; j++) {
    cm[j] = q8_scale(cm[j]);
    rc[j] = 1.0f / cm[j];
  }
  memcpy(cscales + c0, cm, (size_t)w * sizeof(float));
  const int64_t t0 = c0 / FP8_BLOCK;
  for (int64_t r = 0; r < n; r++) {
    const float* xr = x + r * cols + c0;
    for (int64_t t = 0; t < ntc; t++) {
      const int64_t a = t * FP8_BLOCK, len = w - a < FP8_BLOCK ? w - a : FP8_BLOCK;
      rscales[r * nt + t0 + t] = rs[r * ntc + t];
      q8_seg(&K, xr + a, len, NULL, NULL, rs[r * ntc + t], rr[r * ntc + t], rcodes + r * cols + c0 + a, NULL);
    }
    q8_seg(&K, xr, w, cm, rc, 1.0f, 1.0f, ccodes + r * cols + c0, NULL);
  }
}
