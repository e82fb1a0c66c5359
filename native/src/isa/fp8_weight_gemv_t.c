/* FP8-weight product with the weight used untransposed: y[m,n] = x[m,k] W, W [k,n] stored as
 * E4M3 codes (row-major [k][n], one byte each) with float32 block scales scale_inv
 * [ceil(k/128), ceil(n/128)] (fp8_weight.h). MLA's absorbed query (paper section 2.1.2,
 * q^C_h = q_h W^UK_h, W^UK_h the [dn, r] row block of kv_b_proj) is this product: the decode
 * reads an FP8 kv_b_proj in place, one byte per weight, instead of a float32 copy (issue 12).
 *
 * Each weight is decoded exactly as the reference does, float32(e4m3(c) * scale) (raw value
 * e4m3 * 2^-120 from the arithmetic decode of fp8_weight_isa.h, times 2^120 exactly, times the
 * scale: one rounding; NaN codes give NaN), and every y[i][c] is summed over p = 0, 1, .., k-1
 * in order, one FMA per term: the dequantised-weight product up to float32 summation order.
 * Blocking: a 128-column block of W at a time (its rows are 128-byte segments, the block's
 * 16 KiB stays in L1 while up to 2 x rows are applied), 2 x rows x 8 vectors of accumulators;
 * the column blocks are split over the pool threads when the product is large enough. */
#include "cpu.h"
#include "fp8_weight_isa.h"
#include "threadpool.h"

#define CB FP8_BLOCK /* columns per block: one scale block */

typedef struct {
  int64_t m, n, k, nb;
  const float* x;
  const uint8_t* w;
  const float* s;
  float* y;
} gemvt_prob;

#if defined(DSV3_ISA_AVX512)
#define TV __m512
#define TVL 16
/* 16 codes -> float32(e4m3(c) * sc), NaN codes -> NaN */
static inline __m512 dec16_exact(const uint8_t* p, __m512 sc) {
  const __m512i u = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p));
  const __m512i t = _mm512_and_si512(_mm512_slli_epi32(u, 20), _mm512_set1_epi32((int)0x87F00000u));
  const __m512 w = _mm512_mul_ps(_mm512_mul_ps(_mm512_castsi512_ps(t), _mm512_set1_ps(0x1p120f)), sc);
  const __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7F)), _mm512_set1_epi32(0x7F));
  return _mm512_mask_mov_ps(w, nan, _mm512_set1_ps(__builtin_nanf("")));
}
#define TDEC(p, sc) dec16_exact((p), (sc))
#define TZERO _mm512_setzero_ps()
#define TSET1(v) _mm512_set1_ps(v)
#define TFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define TSTOREU(p, v) _mm512_storeu_ps((p), (v))
#elif defined(DSV3_ISA_AVX2)
#define TV __m256
#define TVL 8
#define TDEC(p, sc) fp8_dec8_exact((p), (sc))
#define TZERO _mm256_setzero_ps()
#define TSET1(v) _mm256_set1_ps(v)
#define TFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define TSTOREU(p, v) _mm256_storeu_ps((p), (v))
#endif

#ifdef TV
#define NV (CB / TVL) /* vectors per full column block */
/* y rows [i0, i0+M) x columns [c0, c0 + NV*TVL): one full column block, vector path */
static inline __attribute__((always_inline)) void block_vec(const gemvt_prob* P, int64_t i0, int64_t cb, const int M) {
  const int64_t n = P->n, c0 = cb * CB;
  TV acc[2][NV];
  for (int i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = TZERO;
  for (int64_t p = 0; p < P->k; p++) {
    const TV sc = TSET1(P->s[(p / FP8_BLOCK) * P->nb + cb]);
    const uint8_t* wr = P->w + p * n + c0;
    TV xv[2];
    for (int i = 0; i < M; i++) xv[i] = TSET1(P->x[(i0 + i) * P->k + p]);
    for (int v = 0; v < NV; v++) {
      const TV w = TDEC(wr + v * TVL, sc);
      for (int i = 0; i < M; i++) acc[i][v] = TFMA(xv[i], w, acc[i][v]);
    }
  }
  for (int i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) TSTOREU(P->y + (i0 + i) * n + c0 + v * TVL, acc[i][v]);
}
#endif

/* y rows [i0, i0+1) x columns [c0, c1), portable: the exact table times the scale */
static void block_scalar(const gemvt_prob* P, int64_t i0, int64_t c0, int64_t c1) {
  const int64_t n = P->n;
  for (int64_t c = c0; c < c1; c++) {
    float t = 0.0f;
    const float* s = P->s + c / FP8_BLOCK;
    for (int64_t p = 0; p < P->k; p++)
      t = fmaf(P->x[i0 * P->k + p], fp8_weight(P->w[p * n + c], s[(p / FP8_BLOCK) * P->nb]), t);
    P->y[i0 * n + c] = t;
  }
}

/* Column block cb for every x row. */
static void column_block(const gemvt_prob* P, int64_t cb) {
  const int64_t c0 = cb * CB, c1 = c0 + CB < P->n ? c0 + CB : P->n;
  int64_t i = 0;
#ifdef TV
  if (c1 - c0 == CB) {
    for (; i + 2 <= P->m; i += 2) block_vec(P, i, cb, 2);
    if (i < P->m) block_vec(P, i, cb, 1);
    return;
  }
#endif
  for (; i < P->m; i++) block_scalar(P, i, c0, c1);
}

static void task(void* ctx, int t, int thread) {
  (void)thread;
  const unsigned csr = fp8_csr_enter();
  column_block((const gemvt_prob*)ctx, t);
  fp8_csr_leave(csr);
}

int ISA_FN(dsv3_linear_fp8_t)(int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes,
                              const float* scale_inv, float* y) {
  if (m <= 0 || n <= 0) return 0;
  gemvt_prob P = {m, n, k, (n + CB - 1) / CB, x, codes, scale_inv, y};
  const unsigned csr = fp8_csr_enter(); /* raw values may be float32 denormals */
  const int64_t blocks = P.nb;
  if (dsv3_threads() > 1 && blocks > 1 && m * n * k >= 65536) dsv3_parallel_for((int)blocks, task, &P);
  else
    for (int64_t cb = 0; cb < blocks; cb++) column_block(&P, cb);
  fp8_csr_leave(csr);
  return 0;
}
