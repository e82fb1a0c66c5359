/* FP8-weight linear y = x W^T (fp8_weight.h): entry point and the small-m path (decode: m = 1..8).
 *
 * GEMV. Memory bound: the codes are streamed exactly once, one byte per weight, straight from
 * the caller's buffer, and decoded in registers to raw values e4m3*2^-120 (fp8_weight_isa.h); each
 * decoded vector of 8 (AVX2) or 16 (AVX-512) weights feeds one FMA per x row. Per 8 weights
 * that is 3 decode instructions + M FMAs (+ 2 per 32 for the NaN check): no multiply by the
 * scale in the inner loop. Instead, for each 128-row block of W (one scale per 128-wide k
 * block), x is first copied into a thread-local buffer with the block scales and 2^120 folded
 * in:  xs[i][p] = x[i][p] * scale[p/128] * 2^(A_i+B)  (one rounding; A_i = -exponent of
 * max|x_i|, B = 126 - exponent of the largest scale, so |xs| < 2^126 and the products with raw
 * values stay well inside the float32 range), and the dot products are multiplied by
 * 2^(120-A_i-B) at the end (exact). So the scale multiplies x (m*k multiplies per 128 rows)
 * rather than every weight; each product x*scale*e4m3 is formed once, as in the reference, but
 * with x*scale rounded instead of e4m3*scale (a difference of one float32 rounding per term).
 * Blocking:
 *   - threads: the n output rows of W are cut into chunks (multiples of 16 rows, about 4 per
 *     thread, claimed dynamically), so each thread reads whole contiguous rows;
 *   - a chunk is processed one 128-row scale block (or part) at a time: build xs, partial
 *     sums in a 4 KB (m = 8) y buffer;
 *   - for m >= 3, k is walked in slices of KS elements with m*KS*4 <= 32 KB, so the xs rows of
 *     the slice stay in L1 while all rows of the block stream past (m = 4: KS = 2048, m = 8:
 *     KS = 1024); with m <= 2 (one or two xs loads per 8 weights, L2 serves them) rows are
 *     never cut, keeping each row one sequential stream;
 *   - one row of W at a time (one sequential stream), 4 vectors of codes per step, then single
 *     vectors, then a scalar tail (the exact raw table); M*U accumulators in registers;
 *   - a software prefetch (prefetcht1, into L2) 8 KiB ahead of the stream: on Zen 4 a decode
 *     loop over DRAM-resident codes ran at 17 GB/s with 4 KiB vs 12.5 GB/s with the former
 *     prefetchnta 2 KB ahead (issue 12; on Zen 3, 2 KB NTA had measured up to 1.5x faster than
 *     the hardware prefetchers alone); 8 KiB: +4-9% over 4 KiB on 4 KiB pages (BENCHMARKS.md);
 *   - the decode: on CPUs with AVX-512 VBMI and GFNI (Zen 4, Ice Lake and later), the two
 *     bytes of each raw float32 come from two VGF2P8AFFINEQB bit selections of 64 codes and
 *     4 two-source byte permutes spread them (fp8_gfni_bytes + fp8_vbmi_spread): 6 shuffle-class
 *     instructions per 64 codes instead of 12 (DRAM-resident codes, 4 KiB pages, one row
 *     stream: 18.7 vs 16.5 GB/s of codes). Elsewhere the arithmetic decode (fp8_raw16 /
 *     fp8_raw8), which on Zen 4 outruns the VBMI table lookup (7 permutes per 64: L2-resident
 *     26 vs 22 GB/s). All three give the same raw values in the same lanes, so the results are
 *     identical; -DFP8_GEMV_VBMI selects the table in the GEMV (the GEMM keeps it). */
#include <limits.h>
#include "cpu.h"
#include "fp8_weight_isa.h"
#include "threadpool.h"

#define SUB FP8_BLOCK /* y buffer rows: one scale block */
#define PF 8192 /* prefetch distance in bytes (issue 12, Zen 4: see the top) */
#define PFHINT _MM_HINT_T1
#define XBYTES 32768

#include "fp8_gemv_row.h"

/* Binary exponent e of the largest finite |v| (max < 2^e), INT_MIN if none is nonzero. */
static int max_exponent(const float* v, int64_t len) {
  float mx = 0.0f;
  for (int64_t q = 0; q < len; q++) {
    const float a = fabsf(v[q]);
    if (a > mx && a <= 3.4028235e38f) mx = a;
  }
  int e = INT_MIN;
  if (mx > 0.0f) frexpf(mx, &e);
  return e;
}
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* xs = x with the scales of W row block rb and the powers of two folded in (see the top);
 * post[i] = the factor that undoes the powers of two for x row i. */
static void build_xs(const fp8_prob* P, const int* ex, int64_t rb, float* xs, double* post) {
  const int64_t k = P->k, kb = P->kb;
  const float* s = P->s + rb * kb;
  const int es = max_exponent(s, kb);
  const int b = es == INT_MIN ? 0 : clampi(126 - es, -126, 127);
  for (int64_t i = 0; i < P->m; i++) {
    const int a = ex[i] == INT_MIN ? 0 : clampi(-ex[i], -126, 127);
    const float fa = ldexpf(1.0f, a);
    post[i] = ldexp(1.0, 120 - a - b);
    for (int64_t q = 0; q < kb; q++) {
      const float c = ldexpf(s[q], b);
      const float* xr = P->x + i * k + q * FP8_BLOCK;
      float* o = xs + i * k + q * FP8_BLOCK;
      const int len = (int)(k - q * FP8_BLOCK < FP8_BLOCK ? k - q * FP8_BLOCK : FP8_BLOCK);
      for (int p = 0; p < len; p++) o[p] = (xr[p] * fa) * c;
    }
  }
}

typedef struct {
  const fp8_prob* P;
  int64_t chunk;
  int ex[FP8_GEMV_MAX]; /* max_exponent of each x row */
  volatile int fail;
} gemv_ctx;

/* Output rows [j0, j1) of the GEMV on the calling thread; ex[i] = max_exponent of x row i.
 * Each row's value does not depend on how the rows are cut (the scale block of a row fixes
 * its xs), so any split gives the whole call's result. 0, or -1 when scratch ran out. */
static int gemv_rows(const fp8_prob* P, const int* ex, int64_t j0, int64_t j1) {
  const int m = (int)P->m;
  float* xs = (float*)ISA_FN(fp8_scratch)(2, (size_t)(m * P->k) * sizeof(float));
  if (!xs) return -1;
  const unsigned csr = fp8_csr_enter();
  tab_t T;
#if defined(DSV3_ISA_AVX512)
  if (P->vbmi) fp8_vbmi_init(&T);
#else
  T = 0;
#endif
  float ybuf[FP8_GEMV_MAX * SUB] __attribute__((aligned(64)));
  double post[FP8_GEMV_MAX];
  int64_t ks = m <= 2 ? P->k : XBYTES / (4 * m) / FP8_BLOCK * FP8_BLOCK;
  if (ks < FP8_BLOCK) ks = FP8_BLOCK;
  for (int64_t jb = j0, je; jb < j1; jb = je) { /* one 128-row scale block (or part) at a time */
    je = (jb / FP8_BLOCK + 1) * FP8_BLOCK < j1 ? (jb / FP8_BLOCK + 1) * FP8_BLOCK : j1;
    const int rows = (int)(je - jb);
    build_xs(P, ex, jb / FP8_BLOCK, xs, post);
    for (int i = 0; i < m; i++) memset(ybuf + i * SUB, 0, (size_t)rows * sizeof(float));
    for (int64_t k0 = 0; k0 < P->k; k0 += ks) gemv_range(P, &T, xs, jb, rows, k0, k0 + ks < P->k ? k0 + ks : P->k, ybuf);
    for (int i = 0; i < m; i++)
      for (int r = 0; r < rows; r++) fp8_put(P, i, jb + r, (float)(ybuf[i * SUB + r] * post[i]));
  }
  fp8_csr_leave(csr);
  return 0;
}

static void gemv_task(void* ctx, int t, int thread) {
  (void)thread;
  gemv_ctx* X = (gemv_ctx*)ctx;
  const fp8_prob* P = X->P;
  const int64_t j0 = (int64_t)t * X->chunk, j1 = j0 + X->chunk < P->n ? j0 + X->chunk : P->n;
  if (gemv_rows(P, X->ex, j0, j1)) X->fail = 1;
}

/* For callers that schedule the rows themselves (moe_row.c): the exponent gemv computes per x
 * row, and rows [j0, j1) of the m <= FP8_GEMV_MAX GEMV on the calling thread. */
int ISA_FN(fp8_gemv_exponent)(const float* x, int64_t k) { return max_exponent(x, k); }
int ISA_FN(fp8_gemv_rows)(const fp8_prob* P, const int* ex, int64_t j0, int64_t j1) { return gemv_rows(P, ex, j0, j1); }

static int gemv(const fp8_prob* P) {
  const int64_t n = P->n;
  gemv_ctx X;
  memset(&X, 0, sizeof X);
  X.P = P;
  for (int64_t i = 0; i < P->m; i++) X.ex[i] = max_exponent(P->x + i * P->k, P->k);
  /* about 4 chunks per thread (a thread slowed by the OS then does not hold up the call);
   * chunks of whole 128-row blocks where n allows, else multiples of 16 rows */
  const int T = dsv3_threads();
  int64_t tasks = 1;
  if (T > 1 && n * P->k * P->m >= 65536) {
    tasks = 4 * (int64_t)T;
    if (tasks > (n + 15) / 16) tasks = (n + 15) / 16;
  }
  const int64_t per = (n + tasks - 1) / tasks;
  X.chunk = per >= FP8_BLOCK ? (per + FP8_BLOCK - 1) / FP8_BLOCK * FP8_BLOCK : (per + 15) / 16 * 16;
  tasks = (n + X.chunk - 1) / X.chunk;
  dsv3_parallel_for((int)tasks, gemv_task, &X);
  return X.fail ? -1 : 0;
}

int ISA_FN(dsv3_linear_fp8)(int64_t m, int64_t n, int64_t k, const float* x, const uint8_t* codes,
                            const float* scale_inv, float beta, float* y) {
  if (m <= 0 || n <= 0) return 0;
  if (k <= 0) { /* x W^T is zero: y = beta * y (beta 0: zeros) */
    for (int64_t q = 0; q < m * n; q++) y[q] = beta == 0.0f ? 0.0f : beta * y[q] + 0.0f;
    return 0;
  }
  fp8_prob P = {m, n, k, (k + FP8_BLOCK - 1) / FP8_BLOCK, x, codes, scale_inv, beta, y, 0};
#if defined(DSV3_ISA_AVX512)
  P.vbmi = dsv3_fp8_allow_vbmi && dsv3_has_avx512_vbmi();
#endif
  const int gmax = dsv3_fp8_gemv_max_m < FP8_GEMV_MAX ? dsv3_fp8_gemv_max_m : FP8_GEMV_MAX;
  if (m <= gmax) return gemv(&P);
  return ISA_FN(fp8_weight_gemm)(&P);
}
