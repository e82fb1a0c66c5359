/* Small-m GEMM (m <= GEMV_MAX_M: decode, x[1..16,k] times a weight; above 4 rows in groups of 4): memory bound, so B is
 * streamed exactly once straight from the caller's buffer, never packed; n is split into
 * column chunks claimed by the pool threads. op(A) (tiny) is first copied to a contiguous
 * [m][k] buffer, rounded to bf16 for gemmBf16 (and as bf16 bits for the VDPBF16PS path).
 *   B^T (linear layer, B = W stored [n,k]): each output is a dot product of an A row with a
 *     contiguous W row; R rows of W at a time share the A loads, U vectors of k per step give
 *     M*R*U independent FMA chains.
 *   B (stored [k,n]): y[0:cw] += a[p] * B[p, 0:cw] over groups of RB rows, y held in a
 *     cache-resident buffer; each B row is read as one long sequential segment.
 * bf16 weights are read as 2-byte values and widened in registers (or fed to VDPBF16PS),
 * which halves the memory traffic compared with fp32. */
#include "gemm_isa.h"
#include "threadpool.h"

/* NN column block: B rows are read in segments of CW values (16 KB fp32), whole pages, so
 * the hardware prefetcher and the TLB see long sequential runs; y (M x CW floats, 16-64 KB,
 * L1/L2) is updated once per RB rows. */
#define CW 4096
/* One decode row against narrow fp32 rows (<= NARROW values, 4 KiB; e.g. a head's absorbed
 * W^UK [128][512] or W^UV [128][512] of MLA): the rows are read one at a time, in memory order,
 * instead of 4 rows interleaved, which streamed such 2 KiB rows at ~0.5 of one sequential run
 * (BENCHMARKS.md, issue 12). Each output sums exactly as before (NN: over rows p = 0, 1, ... in
 * order; NT: one row's own accumulators), so the results are identical. */
#define NARROW 1024

typedef struct {
  const gemm_prob* P;
  const float* ar;    /* [m][k] */
  const uint16_t* ah; /* [m][k] bf16 bits (dp path) */
  int64_t chunk;
  volatile int fail;
} gemv_ctx;

static inline void put(const gemm_prob* P, int64_t i, int64_t j, float s) {
  float* c = P->c + i * P->ldc + j;
  *c = P->beta == 0.0f ? P->alpha * s : P->alpha * s + P->beta * *c;
}
static inline float bval(const gemm_prob* P, int64_t off) {
  return P->bf16 ? gemm_bf16_to_f32(P->bh[off]) : P->bf[off];
}

#if defined(DSV3_ISA_AVX512)
#define V __m512
#define VZERO _mm512_setzero_ps()
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VHSUM(v) _mm512_reduce_add_ps(v)
static inline V widen(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
#elif defined(DSV3_ISA_AVX2)
#define V __m256
#define VZERO _mm256_setzero_ps()
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
static inline float VHSUM(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline V widen(const uint16_t* p) { return gemm_widen_bf16_v8(p); }
#endif

#define W GEMM_VEC

#include "gemm_gemv_nt.h"
#include "gemm_gemv_nn.h"

static void gemv_task(void* ctx, int t, int thread) {
  (void)thread;
  const gemv_ctx* X = (const gemv_ctx*)ctx;
  const int64_t j0 = (int64_t)t * X->chunk;
  const int64_t j1 = j0 + X->chunk < X->P->n ? j0 + X->chunk : X->P->n;
  if (X->P->tb) nt_range(X, j0, j1);
  else nn_range(X, j0, j1);
}

/* The pieces of gemm_gemv for callers that schedule the rows themselves (moe_row.c): op(A)
 * copied as gemm_gemv does (ar [m][k], rounded to bf16 for bf16 problems; ah the bf16 bits when
 * P->dp), and outputs [j0, j1) of a B^T problem computed on the calling thread. Each output's
 * value does not depend on how [0, n) is cut, so any split gives gemm_gemv's result. */
void ISA_FN(gemm_gemv_prep_a)(const gemm_prob* P, float* ar, uint16_t* ah) {
  for (int64_t i = 0; i < P->m; i++)
    for (int64_t p = 0; p < P->k; p++) {
      float x = P->ta ? P->a[p * P->lda + i] : P->a[i * P->lda + p];
      ar[i * P->k + p] = P->bf16 ? gemm_round_bf16(x) : x;
      if (ah) ah[i * P->k + p] = gemm_bf16_bits(x);
    }
}
void ISA_FN(gemm_gemv_rows)(const gemm_prob* P, const float* ar, const uint16_t* ah, int64_t j0, int64_t j1) {
  gemv_ctx X = {P, ar, ah, P->n, 0};
  nt_range(&X, j0, j1);
}

int ISA_FN(gemm_gemv)(const gemm_prob* P) {
  const int64_t m = P->m, n = P->n, k = P->k;
  float* ar = (float*)ISA_FN(gemm_scratch)(2, (size_t)(m * k) * sizeof(float));
  uint16_t* ah = P->dp ? (uint16_t*)ISA_FN(gemm_scratch)(3, (size_t)(m * k) * sizeof(uint16_t)) : NULL;
  if (!ar || (P->dp && !ah)) return -1;
  for (int64_t i = 0; i < m; i++)
    for (int64_t p = 0; p < k; p++) {
      const int64_t off = P->ta ? p * P->lda + i : i * P->lda + p;
      float x = P->ah ? gemm_bf16_to_f32(P->ah[off]) : P->a[off]; /* gemm_bf16ab: exact, rounding keeps it */
      ar[i * k + p] = P->bf16 ? gemm_round_bf16(x) : x;
      if (ah) ah[i * k + p] = gemm_bf16_bits(x);
    }
  gemv_ctx X = {P, ar, ah, n, 0};
  /* Split n into chunks (multiples of 16 columns), about 4 per thread so that a thread slowed
   * by the OS does not hold up the call; small problems run on the calling thread. For B
   * stored [k,n] a chunk is a column stripe, read as one segment per row: keep segments at
   * >= 1024 columns (a 4 KB page of fp32) unless that would leave threads idle. */
  const int T = dsv3_threads();
  int64_t tasks = 1;
  if (T > 1 && n * k >= 65536) {
    tasks = 4 * (int64_t)T;
    if (!P->tb && tasks > n / 1024) tasks = n / 1024 > T ? n / 1024 : T;
    if (tasks > (n + 15) / 16) tasks = (n + 15) / 16;
    if (tasks < 1) tasks = 1;
  }
  X.chunk = ((n + tasks - 1) / tasks + 15) / 16 * 16;
  tasks = (n + X.chunk - 1) / X.chunk;
  dsv3_parallel_for((int)tasks, gemv_task, &X);
  return X.fail ? -1 : 0;
}
