/* FP8 (E4M3) operand quantisation of the training GEMMs (paper §3.3.2; fixtures README
 * `fp8-linear/`): group amax, scale, E4M3 codes and dequantised values, bit-identical to the
 * TypeScript reference (src/engine/reference/fp8-quant.ts). Contracts: fp8_quant.h.
 *
 * Encoding q = float32(x / s) (a true float32 division, equal to the reference's float64
 * x * (1/s); see fp8_quant.h), on the float32 bits of |q| = a, as codec.ts e4m3FromBits:
 *   - a >= 2^-6 (normal E4M3): t = a + 0x7FFFF + bit20(a) rounds the mantissa to 3 bits (ties
 *     to even); code = (t >> 20) - 960 (rebias 127 -> 7), value = the float32 t & 0xFFF00000;
 *   - a < 2^-6 (E4M3 subnormals and zero): n = round_half_even(a * 2^9) in float arithmetic
 *     (exact scaling; n in 0..8, 8 being the smallest normal 0x08); code n, value n * 2^-9;
 *   - a >= 448 and infinities: code 0x7E, value 448; NaN: code 0x7F, value NaN (0x7FC00000);
 *   - the sign bit is ORed back (to the value only where it is non-zero when no codes are
 *     written: the reference's float64 rounding yields +0 there, see fp8_quant.h).
 * The AVX-512 copy encodes q0 = x * float32(1/s) instead, with the exponent-based encoder
 * q8_enc_fast (no division); wherever q0 lies so near an E4M3 rounding midpoint that q0 and the true quotient might
 * round apart (about 1 lane in 2^16), that vector is divided and encoded by q8_enc. Same codes.
 * The dequantised output is value * s, exactly float32(e4m3(code) * s). No float32 denormal is
 * produced or consumed on the vector paths, so the MXCSR DAZ/FTZ state does not matter.
 * Decoding (fp8Dequant) is the inverse with normal floats only: for the 7-bit magnitude m of a
 * code, the float32 bits (m << 20) + (120 << 23) are e4m3(m) for m >= 8, and m * 2^-9 below.
 * The scalar copy uses codec.ts's integer encoder and the E4M3 table of fp8_codec.h. */
#include "fp8_quant_enc.h" /* q8_scale, q8_seg, q8_amax, q8_dec, ... */


/* 1x128 tiles in batches of Q8_BATCH tiles (row-major order): first every tile's amax, then the
 * scales and their reciprocals, then the codes, so the serial amax -> scale -> reciprocal chain
 * of one tile overlaps the others' instead of stalling each tile's encoding. */
#define Q8_BATCH 32
void ISA_FN(dsv3_fp8_quant_rows)(const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t cols, uint8_t* codes,
                            float* scales, float* out) {
  const int64_t nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK, total = (r1 - r0) * nt;
  const q8_consts K = q8_consts_init();
  float sb[Q8_BATCH], rb[Q8_BATCH];
  for (int64_t i0 = 0; i0 < total; i0 += Q8_BATCH) {
    const int nb = total - i0 < Q8_BATCH ? (int)(total - i0) : Q8_BATCH;
    for (int b = 0; b < nb; b++) {
      const int64_t r = r0 + (i0 + b) / nt, c0 = ((i0 + b) % nt) * FP8_BLOCK;
      sb[b] = q8_amax(x + r * ld + c0, cols - c0 < FP8_BLOCK ? cols - c0 : FP8_BLOCK);
    }
    for (int b = 0; b < nb; b++) {
      sb[b] = q8_scale(sb[b]);
      rb[b] = 1.0f / sb[b];
    }
    for (int b = 0; b < nb; b++) {
      const int64_t r = r0 + (i0 + b) / nt, t = (i0 + b) % nt, c0 = t * FP8_BLOCK;
      const int64_t n = cols - c0 < FP8_BLOCK ? cols - c0 : FP8_BLOCK;
      if (scales) scales[r * nt + t] = sb[b];
      q8_seg(&K, x + r * ld + c0, n, NULL, NULL, sb[b], rb[b], codes ? codes + r * cols + c0 : NULL,
             out ? out + r * cols + c0 : NULL);
    }
  }
}

void ISA_FN(dsv3_fp8_quant_cols)(const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                            int64_t cols, int block, uint8_t* codes, float* scales, float* out) {
  float cm[FP8_QUANT_CHUNK] __attribute__((aligned(64))), rc[FP8_QUANT_CHUNK] __attribute__((aligned(64)));
  const int64_t w = c1 - c0;
  const q8_consts K = q8_consts_init();
  int64_t j;
  for (j = 0; j < w; j++) cm[j] = 0.0f;
  for (int64_t r = r0; r < r1; r++) { /* column amax over the row group */
    const float* xr = x + r * ld + c0;
    for (j = 0; j + VL <= w; j += VL) vstore(cm + j, vmax(vabs(vload(xr + j)), vload(cm + j)));
    if (j < w) {
      const int m = (int)(w - j);
      vstoret(cm + j, vmax(vabs(vloadt(xr + j, m, 0.0f)), vloadt(cm + j, m, 0.0f)), m);
    }
  }
  if (!block) {
    for (j = 0; j < w; j++) cm[j] = q8_scale(cm[j]);
    if (scales) memcpy(scales + c0, cm, (size_t)w * sizeof(float));
  } else {
    for (int64_t g = 0; g < w; g += FP8_BLOCK) { /* one scale per 128 columns */
      const int64_t e = g + FP8_BLOCK < w ? g + FP8_BLOCK : w;
      float amax = 0.0f;
      for (j = g; j < e; j++) amax = cm[j] > amax ? cm[j] : amax;
      const float s = q8_scale(amax);
      if (scales) scales[(c0 + g) / FP8_BLOCK] = s;
      for (j = g; j < e; j++) cm[j] = s;
    }
  }
  for (j = 0; j < w; j++) rc[j] = 1.0f / cm[j];
  for (int64_t r = r0; r < r1; r++)
    q8_seg(&K, x + r * ld + c0, w, cm, rc, 1.0f, 1.0f, codes ? codes + r * cols + c0 : NULL, out ? out + r * cols + c0 : NULL);
}

void ISA_FN(dsv3_fp8_quant_dequant)(const uint8_t* codes, const float* scales, int64_t r0, int64_t r1, int64_t cols,
                               int64_t block_rows, float* out) {
  const int64_t nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
  for (int64_t r = r0; r < r1; r++) {
    const float* sr = scales + (r / block_rows) * nt;
    const uint8_t* cr = codes + r * cols;
    float* o = out + r * cols;
    for (int64_t t = 0; t < nt; t++) {
      const vf s = vset1(sr[t]);
      const int64_t e = cols - t * FP8_BLOCK < FP8_BLOCK ? cols : (t + 1) * FP8_BLOCK;
      int64_t j = t * FP8_BLOCK;
      for (; j + VL <= e; j += VL) vstore(o + j, vmul(q8_dec(q8_load_codes(cr + j, VL)), s));
      if (j < e) vstoret(o + j, vmul(q8_dec(q8_load_codes(cr + j, (int)(e - j))), s), (int)(e - j));
    }
  }
}

/* fp8RequantTiles128x1's group (fp8_quant.h): the values and the column amax of
 * dsv3_fp8_quant_dequant + dsv3_fp8_quant_cols (block 0) in one pass: each row's 1x128-tile
 * codes are dequantised into buf (vmul(q8_dec(c), s), as dsv3_fp8_quant_dequant) and folded into
 * the column amax from the same register (vmax(|v|, m), as dsv3_fp8_quant_cols: the maximum of
 * the same values), then encoded per column scale from buf with q8_seg, as dsv3_fp8_quant_cols
 * encodes. Same bits, one pass over the group's float32 values fewer. (Dequantising again in the
 * encoding pass instead of storing buf was slower than even the two-pass base: 0.60-0.63 vs 0.49-0.60 ns
 * per element in one A/B, bench-fp8-quant.mjs rq128x1.) */
void ISA_FN(dsv3_fp8_requant_cols)(const uint8_t* codes, const float* scales, int64_t n, int64_t c0, int64_t c1,
                                   int64_t cols, float* buf, uint8_t* ocodes, float* oscales) {
  float cm[FP8_QUANT_CHUNK] __attribute__((aligned(64))), rc[FP8_QUANT_CHUNK] __attribute__((aligned(64)));
  const int64_t w = c1 - c0, nt = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
  const q8_consts K = q8_consts_init();
  int64_t j;
  for (j = 0; j < w; j++) cm[j] = 0.0f;
  for (int64_t r = 0; r < n; r++) {
    const uint8_t* cr = codes + r * cols + c0;
    const float* sr = scales + r * nt + c0 / FP8_BLOCK;
    float* o = buf + r * cols + c0;
    for (j = 0; j + VL <= w; j += VL) {
      const vf v = vmul(q8_dec(q8_load_codes(cr + j, VL)), vset1(sr[j / FP8_BLOCK]));
      vstore(o + j, v);
      vstore(cm + j, vmax(vabs(v), vload(cm + j)));
    }
    if (j < w) {
      const int m = (int)(w - j);
      const vf v = vmul(q8_dec(q8_load_codes(cr + j, m)), vset1(sr[j / FP8_BLOCK]));
      vstoret(o + j, v, m);
      vstoret(cm + j, vmax(vabs(v), vloadt(cm + j, m, 0.0f)), m);
    }
  }
  for (j = 0; j < w; j++) cm[j] = q8_scale(cm[j]);
  memcpy(oscales + c0, cm, (size_t)w * sizeof(float));
  for (j = 0; j < w; j++) rc[j] = 1.0f / cm[j];
  for (int64_t r = 0; r < n; r++)
    q8_seg(&K, buf + r * cols + c0, w, cm, rc, 1.0f, 1.0f, ocodes + r * cols + c0, NULL);
}
