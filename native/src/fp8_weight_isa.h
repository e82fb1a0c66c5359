/* Internal to native/src/isa/fp8_weight_*.c (the FP8-weight linear, fp8_weight.h): the problem
 * descriptor and the E4M3 decoders.
 *
 * Decoding E4M3FN (1 sign, 4 exponent bits with bias 7, 3 mantissa bits) to float32:
 *   - scalar: a 256-entry float table built at compile time (fp8_e4m3_table of fp8_codec.h).
 *   - AVX2 (and AVX-512 without VBMI): exact arithmetic, no table, no gather.  Sign-extend the
 *     code byte to 32 bits and shift it left by 20: bits 26..23 now hold the E4M3 exponent e,
 *     bits 22..20 the mantissa m, bit 27 and bits 31..28 copies of the sign. AND with 0x87F00000
 *     keeps the sign (bit 31) and e/m. Read as a float32 that is the "raw" value
 *     e4m3(c) * 2^-120 exactly: 2^(e-127)(1+m/8) for e >= 1 and, for e = 0, the float32
 *     denormal m*2^-129. Three instructions per 8 weights (vpmovsxbd with the load, vpslld,
 *     vpand). The 2^120 and the block scale are applied outside the inner loop (the GEMV folds
 *     them into a scaled copy of x, the panel decoder multiplies each weight by 2^120 and then
 *     by the scale, which is exactly float32(e4m3 * scale)). Denormals must be honoured:
 *     DAZ/FTZ are cleared in MXCSR around the kernels (fp8_csr_enter). On Zen 3, FMAs take the
 *     denormal raw values at full speed (a vmulps with a denormal input is slower).
 *     NaN codes come out as raw +-480*2^-120, so the GEMV also keeps a byte-wise max of
 *     (code+code) (= magnitude << 1): a byte >= 0xFE marks a NaN code and the affected rows
 *     are rescanned (rare path). The panel decoder instead blends NaN in per lane.
 *   - AVX-512 VBMI: a table lookup with byte permutes. A raw value has only its top 16 bits
 *     non-zero, so a 128-entry table of its high byte and one of the next byte (256 bytes:
 *     4 zmm registers, with NaN entries for 0x7F) decode 64 codes with two vpermt2b (bit 7 of
 *     the index, the sign, is ignored by the instruction and ORed back with one vpternlogd);
 *     four masked vpermt2b then spread the byte pairs into the top halves of 4 x 16 float32
 *     lanes: 7 instructions per 64 weights instead of 12. Gathers are not used anywhere (they
 *     measured 2-3x slower than decoding). */
#ifndef DSV3_FP8_WEIGHT_ISA_H
#define DSV3_FP8_WEIGHT_ISA_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "fp8_codec.h" /* FP8_BLOCK, fp8_e4m3_table and the FP8_E table macros */
#include "fp8_weight.h"
#include "gemm_isa.h" /* SIMD headers, GEMM blocking, gemm_pack_a, gemm_kernel, gemm_transpose8 */
#if !defined(DSV3_ISA_AVX512) && !defined(DSV3_ISA_AVX2) && defined(__SSE__)
#include <xmmintrin.h>
#endif

#define FP8_GEMV_MAX 8 /* most x rows the GEMV path handles */

/* raw values e4m3(c) * 2^-120 (exact; denormal for e = 0), what the vector decoders produce */
#undef FP8_E
#define FP8_E(c) (FP8_E_(c) * 0x1p-120f)
static const float fp8_raw_table[256] = {FP8_E64(0), FP8_E64(64), FP8_E64(128), FP8_E64(192)};

typedef struct {
  int64_t m, n, k, kb; /* kb = ceil(k/128): columns of the scale grid */
  const float* x;      /* [m][k] */
  const uint8_t* w;    /* codes [n][k] */
  const float* s;      /* scale_inv [ceil(n/128)][kb] */
  float beta;
  float* y; /* [m][n] */
  int vbmi; /* AVX-512 build on a VBMI CPU: table decode */
} fp8_prob;

static inline float fp8_scale(const fp8_prob* P, int64_t row, int64_t col) {
  return P->s[(row >> 7) * P->kb + (col >> 7)];
}
/* The weight of code c with block scale sc, exactly float32(e4m3(c) * sc). */
static inline float fp8_weight(uint8_t c, float sc) { return fp8_e4m3_table[c] * sc; }

/* y[i][j] = v (beta 0) or beta*y[i][j] + v. */
static inline void fp8_put(const fp8_prob* P, int64_t i, int64_t j, float v) {
  float* o = P->y + i * P->n + j;
  *o = P->beta == 0.0f ? v : P->beta * *o + v;
}

/* DAZ (bit 6) and FTZ (bit 15) off while a kernel runs: the arithmetic decode goes through
 * float32 denormals, and the reference never flushes. Returns the caller's MXCSR. */
static inline unsigned fp8_csr_enter(void) {
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2) || defined(__SSE__)
  const unsigned c = _mm_getcsr();
  if (c & 0x8040u) _mm_setcsr(c & ~0x8040u);
  return c;
#else
  return 0;
#endif
}
static inline void fp8_csr_leave(unsigned c) {
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2) || defined(__SSE__)
  if (c & 0x8040u) _mm_setcsr(c);
#else
  (void)c;
#endif
}

/* Bytes of 8 codes: nonzero in bit 7 of a byte iff that code is a NaN ((c & 0x7F) == 0x7F). */
static inline uint64_t fp8_nan_swar(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return ((v & 0x7F7F7F7F7F7F7F7FULL) + 0x0101010101010101ULL) & 0x8080808080808080ULL;
}
/* 1 if codes [p, p+len) contain a NaN code. */
static inline int fp8_row_has_nan(const uint8_t* p, int64_t len) {
  for (int64_t q = 0; q < len; q++)
    if ((p[q] & 0x7F) == 0x7F) return 1;
  return 0;
}

#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
/* 8 codes -> e4m3(c) * 2^-120 as float32 (exact; see the top of this file). */
static inline __m256 fp8_raw8(const uint8_t* p) {
  const __m256i u = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(u, 20), _mm256_set1_epi32((int)0x87F00000u)));
}
/* 8 codes -> float32(e4m3(c) * sc) for any sc (two multiplies), NaN codes -> NaN. */
static inline __m256 fp8_dec8_exact(const uint8_t* p, __m256 sc) {
  const __m256i u = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p));
  const __m256i t = _mm256_and_si256(_mm256_slli_epi32(u, 20), _mm256_set1_epi32((int)0x87F00000u));
  const __m256 w = _mm256_mul_ps(_mm256_mul_ps(_mm256_castsi256_ps(t), _mm256_set1_ps(0x1p120f)), sc);
  const __m256i seven = _mm256_set1_epi32(0x7F);
  const __m256i nan = _mm256_cmpeq_epi32(_mm256_and_si256(u, seven), seven);
  return _mm256_or_ps(w, _mm256_castsi256_ps(nan));
}
#endif

#if defined(DSV3_ISA_AVX512)
/* 16 codes -> e4m3(c) * 2^-120 (the same trick, 16 lanes). */
static inline __m512 fp8_raw16(const uint8_t* p) {
  const __m512i u = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(u, 20), _mm512_set1_epi32((int)0x87F00000u)));
}
/* The VBMI decode table: high and second byte of the raw float32 value of each magnitude 0..127,
 * and the byte-spreading permutes: for output vector q, lane i takes (second, high) byte of
 * code 16q+i into its bytes 2 and 3 (index 16q+i selects from the first table operand,
 * 64+16q+i from the second). */
typedef struct {
  __m512i lo0, lo1, hi0, hi1, idx[4];
} fp8_vbmi_tab;
static inline void fp8_vbmi_init(fp8_vbmi_tab* T) {
  uint8_t lo[128], hi[128], ix[4][64];
  for (int c = 0; c < 128; c++) {
    uint32_t b;
    memcpy(&b, &fp8_raw_table[c], 4);
    lo[c] = (uint8_t)(b >> 16);
    hi[c] = (uint8_t)(b >> 24);
  }
  for (int q = 0; q < 4; q++)
    for (int i = 0; i < 16; i++) {
      ix[q][4 * i] = ix[q][4 * i + 1] = 0;
      ix[q][4 * i + 2] = (uint8_t)(16 * q + i);
      ix[q][4 * i + 3] = (uint8_t)(64 + 16 * q + i);
    }
  T->lo0 = _mm512_loadu_si512((const void*)lo);
  T->lo1 = _mm512_loadu_si512((const void*)(lo + 64));
  T->hi0 = _mm512_loadu_si512((const void*)hi);
  T->hi1 = _mm512_loadu_si512((const void*)(hi + 64));
  for (int q = 0; q < 4; q++) T->idx[q] = _mm512_loadu_si512((const void*)ix[q]);
}
/* 64 codes -> (second byte, high byte) vectors of their raw float32 values (sign included). */
static inline void fp8_vbmi_bytes(const fp8_vbmi_tab* T, __m512i c, __m512i* lo, __m512i* hi) {
  *lo = _mm512_permutex2var_epi8(T->lo0, c, T->lo1);
  const __m512i h = _mm512_permutex2var_epi8(T->hi0, c, T->hi1);
  *hi = _mm512_ternarylogic_epi32(h, c, _mm512_set1_epi32((int)0x80808080u), 0xF8); /* h | (c & 0x80) */
}
/* The same two byte vectors in two GFNI affine transforms (one VGF2P8AFFINEQB each, issue 12):
 * a code s.eeee.mmm (bits 7..0) has the raw float32 value e4m3(c) * 2^-120 = bits s<<31 |
 * eeeemmm<<20, whose second byte is e0.m2.m1.m0.0000 and whose high byte is s.0000.e3.e2.e1 —
 * both pure bit selections of the code, i.e. GF(2) matrices (row r of the matrix, the byte 7-r of
 * the qword, picks the input bits of output bit r). Exactly fp8_vbmi_bytes' values, NaN codes
 * included (they decode to 448 * 2^-120; the callers check for them separately). The instruction
 * is written as asm so that the AVX-512 library need not be compiled with -mgfni (which would let
 * the compiler use GFNI anywhere); callers use it only where dsv3_has_gfni(). */
#define FP8_GF_LO 0x0000000001020408ll /* out bits 7..4 = in bits 3..0 */
#define FP8_GF_HI 0x1020400000000080ll /* out bit 7 = in bit 7, out bits 2..0 = in bits 6..4 */
#ifdef DSV3_SIMD_EMULATED /* the SIMDe verification build: vectors are structs, not registers */
#include <simde/x86/gfni.h>
static inline __m512i fp8_gf_affine(__m512i x, long long m) {
  return simde_mm512_gf2p8affine_epi64_epi8(x, _mm512_set1_epi64(m), 0);
}
#else
static inline __m512i fp8_gf_affine(__m512i x, long long m) {
  __m512i r;
  __asm__("vgf2p8affineqb $0, %2, %1, %0" : "=v"(r) : "v"(x), "v"(_mm512_set1_epi64(m)));
  return r;
}
#endif
static inline void fp8_gfni_bytes(__m512i c, __m512i* lo, __m512i* hi) {
  *lo = fp8_gf_affine(c, FP8_GF_LO);
  *hi = fp8_gf_affine(c, FP8_GF_HI);
}
/* Raw floats of codes 16q..16q+15 of the 64 decoded by fp8_vbmi_bytes. */
static inline __m512 fp8_vbmi_spread(const fp8_vbmi_tab* T, __m512i lo, __m512i hi, int q) {
  return _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(0xCCCCCCCCCCCCCCCCull, lo, T->idx[q], hi));
}
#endif

/* Thread-local 64-byte aligned scratch that only grows (fp8_weight_gemm.c); slots 0..2. */
void* ISA_FN(fp8_scratch)(int slot, size_t bytes);
/* The packed-GEMM path for any m (fp8_weight_gemm.c). 0, or -1 when scratch memory ran out. */
int ISA_FN(fp8_weight_gemm)(const fp8_prob* P);
/* The GEMV path's pieces for callers that split rows themselves (fp8_weight_gemv.c). */
int ISA_FN(fp8_gemv_exponent)(const float* x, int64_t k);
int ISA_FN(fp8_gemv_rows)(const fp8_prob* P, const int* ex, int64_t j0, int64_t j1);
#endif
