/* The E4M3FN format shared by both FP8 roles (the TypeScript codec: src/engine/fp8/codec.ts):
 * the FP8-weight linear of inference checkpoints (fp8_weight_isa.h, isa/fp8_weight_*.c) and the
 * operand quantisers of FP8 training (fp8_quant.h, isa/fp8_quant.c).
 * E4M3FN: 1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; NaN = S.1111.111
 * (0x7F / 0xFF); max finite 448; subnormals m * 2^-9. Groups of FP8_BLOCK elements share a
 * scale (1x128 / 128x1 tiles, 128x128 blocks). */
#ifndef DSV3_FP8_CODEC_H
#define DSV3_FP8_CODEC_H

#define FP8_BLOCK 128

/* E4M3FN value of code c (compile-time constant expression). FP8_E64(c) lists FP8_E(c) ..
 * FP8_E(c + 63); FP8_E may be redefined to build other tables (fp8_weight_isa.h). */
#define FP8_E_(c)                                                                                                  \
  ((((c) & 0x7F) == 0x7F) ? (((c) & 0x80) ? -__builtin_nanf("") : __builtin_nanf(""))                            \
                          : (((c) & 0x80) ? -1.0f : 1.0f) *                                                       \
                                ((((c) >> 3) & 15) ? (float)((8 + ((c) & 7)) << (((c) >> 3) & 15)) / 1024.0f      \
                                                   : (float)((c) & 7) / 512.0f))
#define FP8_E4(c) FP8_E(c), FP8_E((c) + 1), FP8_E((c) + 2), FP8_E((c) + 3)
#define FP8_E16(c) FP8_E4(c), FP8_E4((c) + 4), FP8_E4((c) + 8), FP8_E4((c) + 12)
#define FP8_E64(c) FP8_E16(c), FP8_E16((c) + 16), FP8_E16((c) + 32), FP8_E16((c) + 48)
#define FP8_E(c) FP8_E_(c)
/* The value of every E4M3FN code (NaN at 0x7F / 0xFF). */
static const float fp8_e4m3_table[256] = {FP8_E64(0), FP8_E64(64), FP8_E64(128), FP8_E64(192)};
#endif
