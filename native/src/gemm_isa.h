/* Internal to native/src/isa/gemm_*.c: blocking parameters, the problem descriptor and the
 * per-ISA helpers shared by the packing, micro-kernel, GEMV and driver files.
 *
 * The design is BLIS-style. For each NC-wide column block of C and each KC-deep slice of k,
 * B is packed into NR-wide micro-panels ([kc][NR], contiguous, zero padded), then for each
 * MC-tall row block A is packed into MR-tall micro-panels ([kc][MR]); the micro-kernel then
 * computes an MR x NR tile of C in registers from one A and one B micro-panel. The B
 * micro-panel is reused by all MC/MR micro-kernel calls of a row block and so stays in L1;
 * the packed A block stays in L2; the packed B block lives in L3. Transposes (and the bf16
 * widening / rounding) all happen in packing, so the micro-kernel sees one layout. */
#ifndef DSV3_GEMM_ISA_H
#define DSV3_GEMM_ISA_H
#include <stdint.h>
#include <string.h>
#include "gemm.h"
#include "isa.h"

#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
#if defined(DSV3_GEMM_SIMDE) /* verification build only: AVX-512 emulated (SIMDe) on any x86 */
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#else
#include <immintrin.h>
#endif
#endif

#if defined(DSV3_ISA_AVX512)
/* 32 zmm registers: a 12x32 tile = 24 accumulators + 2 B vectors + 1 broadcast. Per k step
 * 24 FMAs (12 cycles on two 512-bit FMA pipes) against 2 vector loads + 12 broadcasts.
 * KC=192: the B micro-panel is 192*32*4 = 24 KB, inside a 32 KB (Zen 4) / 48 KB (Sapphire
 * Rapids) L1d next to the streaming A micro-panel (9 KB). MC=288: packed A block
 * 288*192*4 = 216 KB, well inside a 1-2 MB L2. NC=3072: packed B block 2.25 MB (L3).
 * The VDPBF16PS kernel consumes k in pairs, so its KC is doubled (same bytes per panel). */
#define GEMM_MR 12
#define GEMM_NR 32
#define GEMM_KC_DEF 192
#define GEMM_MC_DEF 288
#define GEMM_NC_DEF 3072
#define GEMM_VEC 16
#elif defined(DSV3_ISA_AVX2)
/* 16 ymm registers: a 6x16 tile = 12 accumulators + 2 B vectors + 1 broadcast. Per k step
 * 12 FMAs (6 cycles on two 256-bit FMA pipes) against 2 loads + 6 broadcasts (4 cycles at
 * two loads per cycle), so the kernel is FMA bound. 12 independent accumulators cover the
 * FMA latency (4-5 cycles) times two pipes. KC=256: B micro-panel 256*16*4 = 16 KB, half of
 * a 32 KB L1d, reused by all MC/MR kernel calls; the A micro-panel (6 KB) streams from L2.
 * MC=288: packed A block up to 288*256*4 = 288 KB, about half of Zen 3's 512 KB L2, leaving
 * room for the B micro-panels and C tiles passing through; each B micro-panel is reused by up
 * to 48 kernel calls. Row blocks are balanced (m=256 is one block of 256 rows, m=1024 four),
 * measured equal to MC=144 within noise for m=1024 and better for the m=256 linear layer.
 * (On a 256 KB-L2 Haswell..Skylake client, 144 would fit better.) NC=2048: packed B block
 * 256*2048*4 = 2 MB per thread, in L3. */
#define GEMM_MR 6
#define GEMM_NR 16
#define GEMM_KC_DEF 256
#define GEMM_MC_DEF 288
#define GEMM_NC_DEF 2048
#define GEMM_VEC 8
#else
/* Portable C: a 4x8 tile the compiler keeps in 8 SSE registers (auto-vectorised); same
 * cache blocking as AVX2. */
#define GEMM_MR 4
#define GEMM_NR 8
#define GEMM_KC_DEF 256
#define GEMM_MC_DEF 128
#define GEMM_NC_DEF 2048
#define GEMM_VEC 1
#endif

/* -DGEMM_KC=... etc. override the defaults in tuning builds */
#ifndef GEMM_KC
#define GEMM_KC GEMM_KC_DEF
#endif
#ifndef GEMM_MC
#define GEMM_MC GEMM_MC_DEF
#endif
#ifndef GEMM_NC
#define GEMM_NC GEMM_NC_DEF
#endif

/* VDPBF16PS path (AVX-512 build on CPUs with avx512_bf16): k is consumed in pairs. */
#define GEMM_KC_DP (2 * GEMM_KC)
/* m <= GEMV_MAX_M takes the streaming path (no packing of B): decode, and batched decode of up
 * to 16 sequences (continuous batching), where packing the whole weight for a few rows cost
 * more than the product itself. */
#define GEMV_MAX_M 16

typedef struct {
  int ta, tb;   /* op(A) = A^T, op(B) = B^T */
  int bf16;     /* B is bf16 bits (bh), A is rounded to bf16 */
  int dp;       /* use the VDPBF16PS pair kernels (AVX-512 bf16 only) */
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t lda;
  const float* bf;    /* fp32 B */
  const uint16_t* bh; /* bf16 B */
  int64_t ldb;
  float* c;
  int64_t ldc;
  int around;   /* bf16 without dp: A was rounded to the bf16 grid beforehand (a, lda point at
                 * that float32 copy), so packing copies it plainly and may read it in place */
  const uint16_t* ah; /* gemm_bf16ab: A as bf16 bits (lda in elements; a is NULL). The dp path
                       * packs its pairs without rounding or reads them in place; the others
                       * widen it to a float32 copy first (on the grid: around) */
} gemm_prob;

/* 1 when packing must round A to bf16 (bf16 problem whose A is not already on the grid) */
static inline int gemm_round_a(const gemm_prob* P) { return P->bf16 && !P->around && !P->ah; }

/* float32 -> bf16 -> float32, round to nearest even; NaN stays a quiet NaN (the same as
 * f32ToBf16 in src/engine/dtype.ts). Branch-free so loops using it vectorise. */
static inline float gemm_round_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  uint32_t q = (u | 0x00400000u) & 0xffff0000u;
  r = ((u & 0x7fffffffu) > 0x7f800000u) ? q : r;
  float y;
  memcpy(&y, &r, 4);
  return y;
}
static inline uint16_t gemm_bf16_bits(float x) {
  float y = gemm_round_bf16(x);
  uint32_t u;
  memcpy(&u, &y, 4);
  return (uint16_t)(u >> 16);
}
static inline float gemm_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float y;
  memcpy(&y, &u, 4);
  return y;
}

#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
/* Vector form of gemm_round_bf16 (8 lanes). */
static inline __m256 gemm_round_bf16_v8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
  __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), hi);
  const __m256i q = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), hi);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(r, q, nan));
}
/* 8 bf16 values -> 8 floats. */
static inline __m256 gemm_widen_bf16_v8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128((const __m128i*)p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
/* In-register transpose of an 8x8 block of 32-bit lanes (r[i] = row i -> r[j] = column j). */
static inline void gemm_transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

/* The gm x gn grid of C tiles for T threads: among the grids of the largest thread count
 * <= T that fit (gm <= pm MR-row panels, gn <= pn NR-column panels), the one with the smallest
 * cost(P, pm, pn, gm, gn), the estimated time of its largest tile; 1 x 1 for T = 1. Shared by
 * the fp32 GEMM (gemm_driver.c) and the FP8 linear (fp8_weight_gemm.c), whose cost models differ. */
static inline void gemm_pick_grid(int T, int64_t pm, int64_t pn,
                                  double (*cost)(const void* P, int64_t pm, int64_t pn, int gm, int gn),
                                  const void* P, int* gm_out, int* gn_out) {
  *gm_out = *gn_out = 1;
  for (; T > 1; T--) {
    double best = 0;
    for (int gm = 1; gm <= T; gm++) {
      const int gn = T / gm;
      if (gm * gn != T || gm > pm || gn > pn) continue;
      const double c = cost(P, pm, pn, gm, gn);
      if (best == 0 || c < best) {
        best = c;
        *gm_out = gm;
        *gn_out = gn;
      }
    }
    if (best > 0) return;
  }
}

/* Tile t (row-major) of a gm x gn grid over the pm GEMM_MR-row and pn GEMM_NR-column panels of
 * an m x n C: rows [*i0, *i1), columns [*j0, *j1); empty (i0 >= i1 or j0 >= j1) when the grid
 * has more rows or columns than C has panels. Shared by the FP8 GEMMs' grid tasks. */
static inline void gemm_grid_tile(int t, int gm, int gn, int64_t pm, int64_t pn, int64_t m, int64_t n, int64_t* i0,
                                  int64_t* i1, int64_t* j0, int64_t* j1) {
  const int ti = t / gn, tj = t % gn;
  const int64_t r1 = pm * (ti + 1) / gm * GEMM_MR, c1 = pn * (tj + 1) / gn * GEMM_NR;
  *i0 = pm * ti / gm * GEMM_MR;
  *i1 = r1 < m ? r1 : m;
  *j0 = pn * tj / gn * GEMM_NR;
  *j1 = c1 < n ? c1 : n;
}

/* Packing (gemm_pack.c). Panels are zero padded to full MR / NR (and, for the pair
 * layouts, to an even k), so the micro-kernels always run full width. */
void ISA_FN(gemm_pack_a)(const gemm_prob* P, int64_t i0, int mc, int64_t p0, int kc, float* dst);
void ISA_FN(gemm_pack_b)(const gemm_prob* P, int64_t p0, int kc, int64_t j0, int nc, float* dst);
void ISA_FN(gemm_pack_a_pairs)(const gemm_prob* P, int64_t i0, int mc, int64_t p0, int kc, uint32_t* dst);
void ISA_FN(gemm_pack_b_pairs)(const gemm_prob* P, int64_t p0, int kc, int64_t j0, int nc, uint32_t* dst);

/* Micro-kernels (gemm_kernel.c): C tile (mr x nr valid of MR x NR) = alpha*A*B + beta*C,
 * beta == 0 meaning overwrite. kc2 counts k pairs. */
void ISA_FN(gemm_kernel)(int kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                         float beta, int mr, int nr);
void ISA_FN(gemm_kernel_rows)(int kc, const float* a, int64_t lda, const float* an, const float* b, float* c,
                              int64_t ldc, float alpha, float beta, int nr);
void ISA_FN(gemm_kernel_dp)(int kc2, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
                            float alpha, float beta, int mr, int nr);
/* The VDPBF16PS tile with A read in place from bf16 bits stored [m,k] (gemm_bf16ab): row i of
 * the MR-row micro-panel is a + i*lda, its pair q the 32-bit word at a + i*lda + 2q; kc counts
 * k values (an odd kc ends with a half pair, the missing value 0); an is the next call's panel
 * (prefetched). All MR rows valid. */
void ISA_FN(gemm_kernel_dp_rows)(int kc, const uint16_t* a, int64_t lda, const uint16_t* an, const uint32_t* b,
                                 float* c, int64_t ldc, float alpha, float beta, int nr);

/* Small-m streaming path (gemm_gemv.c). */
int ISA_FN(gemm_gemv)(const gemm_prob* P); /* 0, or -1 when scratch memory ran out */
/* gemm_gemv's A copy and its B^T outputs [j0, j1) on the calling thread (no pool). */
void ISA_FN(gemm_gemv_prep_a)(const gemm_prob* P, float* ar, uint16_t* ah);
void ISA_FN(gemm_gemv_rows)(const gemm_prob* P, const float* ar, const uint16_t* ah, int64_t j0, int64_t j1);
/* m >= 2 rows against narrow float32 W rows, register-tiled, the one-row path's bits (gemm_rows_tile.c):
 * outputs [j0, j1) on the calling thread; 0 (nothing done) where it does not apply. */
int ISA_FN(gemm_rows_tile)(const gemm_prob* P, const float* ar, int64_t j0, int64_t j1);

/* Thread-local, 64-byte aligned scratch that only grows (gemm_scratch.c); slot 0..3. */
void* ISA_FN(gemm_scratch)(int slot, size_t bytes);
/* bf16 problems without VDPBF16PS (gemm_scratch.c): float32 A rounded to the bf16 grid once
 * into a float32 copy in scratch slot 4, which then stands in for A (P->a, P->lda,
 * P->around = 1). 0, or -1 when the copy could not be allocated. */
int ISA_FN(gemm_round_a_prepass)(gemm_prob* P);
#endif
