/* FP8-weight linear y = x W^T (fp8.h): entry point and the small-m path (decode: m = 1..8).
 *
 * GEMV. Memory bound: the codes are streamed exactly once, one byte per weight, straight from
 * the caller's buffer, and decoded in registers (fp8_isa.h); each decoded vector of 8 (AVX2) or
 * 16 (AVX-512) weights feeds one FMA per x row, x[i] entering as a memory operand.
 * Blocking:
 *   - threads: the n output rows of W are cut into chunks (multiples of 16 rows, about 4 per
 *     thread, claimed dynamically), so each thread reads whole contiguous rows;
 *   - a chunk is processed SUB = 256 rows at a time, its partial sums held in an 8 KB y buffer;
 *   - k is walked in slices of KS elements with m*KS*4 <= 16 KB, so the x rows of the slice stay
 *     in L1 while all rows of the sub-chunk stream past (m = 1: KS = 4096, one slice for
 *     k <= 4096; m = 8: KS = 512);
 *   - R rows of W are decoded together (R = 4 for m <= 2, 2 for m <= 4, else 1), each x load then
 *     serves R FMAs; M*R accumulators stay in registers (<= 8 ymm on AVX2);
 *   - inside a slice, per 128-wide scale block: one scale per row, folded into the decode
 *     multiplier (scale * 2^120, or scale itself for the VBMI table); 4 vectors per step, then
 *     single vectors, then a scalar tail using the exact table.
 * Every weight is float32(e4m3(code) * scale) exactly (decode-then-use); only the order of the
 * float32 sums differs from the reference. */
#include "cpu.h"
#include "fp8_isa.h"
#include "threadpool.h"

#define SUB 256
#define XBYTES 16384

#if defined(DSV3_ISA_AVX512)
#define FV __m512
#define FVL 16
#define FZERO _mm512_setzero_ps()
#define FLOADU(p) _mm512_loadu_ps(p)
#define FSET1(x) _mm512_set1_ps(x)
#define FFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define FMUL(a, b) _mm512_mul_ps((a), (b))
#define FHSUM(v) _mm512_reduce_add_ps(v)
#define FRAW(p) fp8_raw16(p)
typedef __m512i nacc_t;
#define NACC_ZERO _mm512_setzero_si512()
/* running byte max of code+code (= magnitude << 1); >= 0xFE means a NaN code was seen */
static inline nacc_t nacc_add(nacc_t a, const uint8_t* p) {
  const __m512i c = _mm512_loadu_si512((const void*)p);
  return _mm512_max_epu8(a, _mm512_add_epi8(c, c));
}
static inline int nacc_hit(nacc_t a) { return _mm512_cmpge_epu8_mask(a, _mm512_set1_epi8((char)0xFE)) != 0; }
#elif defined(DSV3_ISA_AVX2)
#define FV __m256
#define FVL 8
#define FZERO _mm256_setzero_ps()
#define FLOADU(p) _mm256_loadu_ps(p)
#define FSET1(x) _mm256_set1_ps(x)
#define FFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define FMUL(a, b) _mm256_mul_ps((a), (b))
#define FRAW(p) fp8_raw8(p)
static inline float FHSUM(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
typedef __m256i nacc_t;
#define NACC_ZERO _mm256_setzero_si256()
static inline nacc_t nacc_add(nacc_t a, const uint8_t* p) {
  const __m256i c = _mm256_loadu_si256((const __m256i*)p);
  return _mm256_max_epu8(a, _mm256_add_epi8(c, c));
}
static inline int nacc_hit(nacc_t a) {
  return _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(a, _mm256_set1_epi8((char)0xFE)), a)) != 0;
}
#endif

#if defined(DSV3_ISA_AVX512)
typedef fp8_vbmi_tab tab_t;
#else
typedef int tab_t; /* no table outside the AVX-512 build */
#endif

#ifdef FV
#define GROUP (4 * FVL)
/* out[i*SUB + r] += sum over k in [k0,k1) of x[i][k] * W[j+r][k], for i < M, r < R. */
static inline __attribute__((always_inline)) void gemv_rows(const fp8_prob* P, const tab_t* T, int64_t j, int64_t k0,
                                                            int64_t k1, float* out, const int M, const int R,
                                                            const int vbmi) {
  (void)T;
  const int64_t k = P->k;
  FV acc[FP8_GEMV_MAX][4];
  float tail[FP8_GEMV_MAX][4];
  for (int i = 0; i < M; i++)
    for (int r = 0; r < R; r++) {
      acc[i][r] = FZERO;
      tail[i][r] = 0.0f;
    }
  nacc_t nacc = NACC_ZERO;
  uint64_t swar = 0;
  for (int64_t p0 = k0; p0 < k1; p0 += FP8_BLOCK) {
    const int len = (int)(k1 - p0 < FP8_BLOCK ? k1 - p0 : FP8_BLOCK);
    float sc[4];
    FV sv[4];
    for (int r = 0; r < R; r++) {
      sc[r] = fp8_scale(P, j + r, p0);
      sv[r] = FSET1(vbmi ? sc[r] : sc[r] * 0x1p120f);
    }
    const float* xp = P->x + p0;
    int p = 0;
    for (; p + GROUP <= len; p += GROUP) {
      for (int r = 0; r < R; r++) {
        const uint8_t* c = P->w + (j + r) * k + p0 + p;
#if defined(DSV3_ISA_AVX512)
        if (vbmi) {
          __m512i lo, hi;
          fp8_vbmi_bytes(T, _mm512_loadu_si512((const void*)c), &lo, &hi);
          for (int q = 0; q < 4; q++) {
            const FV wq = FMUL(fp8_vbmi_spread(T, lo, hi, q), sv[r]);
            for (int i = 0; i < M; i++) acc[i][r] = FFMA(FLOADU(xp + i * k + p + q * FVL), wq, acc[i][r]);
          }
          continue;
        }
#endif
        nacc = nacc_add(nacc, c);
        for (int q = 0; q < 4; q++) {
          const FV wq = FMUL(FRAW(c + q * FVL), sv[r]);
          for (int i = 0; i < M; i++) acc[i][r] = FFMA(FLOADU(xp + i * k + p + q * FVL), wq, acc[i][r]);
        }
      }
    }
    for (; p + FVL <= len; p += FVL) /* single vectors: arithmetic decode in every build */
      for (int r = 0; r < R; r++) {
        const uint8_t* c = P->w + (j + r) * k + p0 + p;
        for (int h = 0; h < FVL; h += 8) swar |= fp8_nan_swar(c + h);
        const FV wq = FMUL(FRAW(c), FSET1(sc[r] * 0x1p120f));
        for (int i = 0; i < M; i++) acc[i][r] = FFMA(FLOADU(xp + i * k + p), wq, acc[i][r]);
      }
    for (; p < len; p++) /* scalar tail: exact table (NaN included) */
      for (int r = 0; r < R; r++) {
        const float wv = fp8_weight(P->w[(j + r) * k + p0 + p], sc[r]);
        for (int i = 0; i < M; i++) tail[i][r] += xp[i * k + p] * wv;
      }
  }
  for (int i = 0; i < M; i++)
    for (int r = 0; r < R; r++) out[i * SUB + r] += FHSUM(acc[i][r]) + tail[i][r];
  if (swar || (!vbmi && nacc_hit(nacc))) /* rare: find the rows whose codes hold a NaN */
    for (int r = 0; r < R; r++)
      if (fp8_row_has_nan(P->w + (j + r) * k + k0, k1 - k0))
        for (int i = 0; i < M; i++) out[i * SUB + r] = __builtin_nanf("");
}

/* Rows [jb, jb+rows) over the slice [k0,k1) into ybuf. */
static void gemv_range(const fp8_prob* P, const tab_t* T, int64_t jb, int rows, int64_t k0, int64_t k1, float* ybuf) {
#define ROWS(M, R, VB)                                                                          \
  do {                                                                                          \
    int r0 = 0;                                                                                 \
    for (; r0 + (R) <= rows; r0 += (R)) gemv_rows(P, T, jb + r0, k0, k1, ybuf + r0, M, R, VB); \
    for (; r0 < rows; r0++) gemv_rows(P, T, jb + r0, k0, k1, ybuf + r0, M, 1, VB);             \
  } while (0)
#if defined(DSV3_ISA_AVX512)
#define CASE(M, R)                 \
  case M:                          \
    if (P->vbmi) ROWS(M, R, 1);    \
    else ROWS(M, R, 0);            \
    break;
#else
#define CASE(M, R) \
  case M:          \
    ROWS(M, R, 0); \
    break;
#endif
  switch (P->m) {
    CASE(1, 4)
    CASE(2, 4)
    CASE(3, 2)
    CASE(4, 2)
    CASE(5, 1)
    CASE(6, 1)
    CASE(7, 1)
    default: CASE(8, 1)
  }
#undef CASE
#undef ROWS
}
#else
/* Portable C: decode one 128-block of a row into a small buffer with the exact table, then
 * plain dot products the compiler vectorises. */
static void gemv_range(const fp8_prob* P, const tab_t* T, int64_t jb, int rows, int64_t k0, int64_t k1, float* ybuf) {
  (void)T;
  const int64_t k = P->k;
  float wb[FP8_BLOCK];
  for (int r = 0; r < rows; r++) {
    const int64_t j = jb + r;
    for (int64_t p0 = k0; p0 < k1; p0 += FP8_BLOCK) {
      const int len = (int)(k1 - p0 < FP8_BLOCK ? k1 - p0 : FP8_BLOCK);
      const float sc = fp8_scale(P, j, p0);
      const uint8_t* c = P->w + j * k + p0;
      for (int p = 0; p < len; p++) wb[p] = fp8_weight(c[p], sc);
      for (int64_t i = 0; i < P->m; i++) {
        const float* xp = P->x + i * k + p0;
        float s = 0.0f;
        for (int p = 0; p < len; p++) s += xp[p] * wb[p];
        ybuf[i * SUB + r] += s;
      }
    }
  }
}
#endif

typedef struct {
  const fp8_prob* P;
  int64_t chunk;
} gemv_ctx;

static void gemv_task(void* ctx, int t, int thread) {
  (void)thread;
  const gemv_ctx* X = (const gemv_ctx*)ctx;
  const fp8_prob* P = X->P;
  const int64_t j0 = (int64_t)t * X->chunk, j1 = j0 + X->chunk < P->n ? j0 + X->chunk : P->n;
  const int m = (int)P->m;
  const unsigned csr = fp8_csr_enter();
  tab_t T;
#if defined(DSV3_ISA_AVX512)
  if (P->vbmi) fp8_vbmi_init(&T);
#else
  T = 0;
#endif
  float ybuf[FP8_GEMV_MAX * SUB] __attribute__((aligned(64)));
  int64_t ks = XBYTES / (4 * m) / FP8_BLOCK * FP8_BLOCK;
  if (ks < FP8_BLOCK) ks = FP8_BLOCK;
  for (int64_t jb = j0; jb < j1; jb += SUB) {
    const int rows = (int)(j1 - jb < SUB ? j1 - jb : SUB);
    for (int i = 0; i < m; i++) memset(ybuf + i * SUB, 0, (size_t)rows * sizeof(float));
    for (int64_t k0 = 0; k0 < P->k; k0 += ks) gemv_range(P, &T, jb, rows, k0, k0 + ks < P->k ? k0 + ks : P->k, ybuf);
    for (int i = 0; i < m; i++)
      for (int r = 0; r < rows; r++) fp8_put(P, i, jb + r, ybuf[i * SUB + r]);
  }
  fp8_csr_leave(csr);
}

static int gemv(const fp8_prob* P) {
  const int64_t n = P->n;
  const int T = dsv3_threads();
  int64_t tasks = 1;
  if (T > 1 && n * P->k * P->m >= 65536) {
    tasks = 4 * (int64_t)T;
    if (tasks > (n + 15) / 16) tasks = (n + 15) / 16;
  }
  gemv_ctx X = {P, ((n + tasks - 1) / tasks + 15) / 16 * 16};
  tasks = (n + X.chunk - 1) / X.chunk;
  dsv3_parallel_for((int)tasks, gemv_task, &X);
  return 0;
}

int ISA_FN(dsv3_linear_fp8)(int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes,
                            const float* scale_inv, float beta, float* y) {
  if (m <= 0 || n <= 0) return 0;
  if (k <= 0) { /* x W^T is zero: y = beta * y (beta 0: zeros) */
    for (int64_t q = 0; q < m * n; q++) y[q] = beta == 0.0f ? 0.0f : beta * y[q] + 0.0f;
    return 0;
  }
  fp8_prob P = {m, n, k, (k + FP8_BLOCK - 1) / FP8_BLOCK, x, codes, scale_inv, beta, y, 1, 0};
  const int64_t ns = (n + FP8_BLOCK - 1) / FP8_BLOCK * P.kb;
  for (int64_t q = 0; q < ns; q++) { /* scale*2^120 overflows for finite |scale| >= 2^8 */
    const float a = fabsf(scale_inv[q]);
    if (a >= 256.0f && a <= 3.4028235e38f) P.fold = 0;
  }
#if defined(DSV3_ISA_AVX512)
  P.vbmi = dsv3_fp8_allow_vbmi && dsv3_has_avx512_vbmi();
#endif
  const int gmax = dsv3_fp8_gemv_max_m < FP8_GEMV_MAX ? dsv3_fp8_gemv_max_m : FP8_GEMV_MAX;
  if (m <= gmax && P.fold) return gemv(&P);
  return ISA_FN(fp8_gemm)(&P);
}
