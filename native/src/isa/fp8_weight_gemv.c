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

#if defined(DSV3_ISA_AVX512)
#define FV __m512
#define FVL 16
#define FZERO _mm512_setzero_ps()
#define FLOADU(p) _mm512_loadu_ps(p)
#define FSET1(x) _mm512_set1_ps(x)
#define FFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define FADD(a, b) _mm512_add_ps((a), (b))
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
#define FADD(a, b) _mm256_add_ps((a), (b))
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

#if defined(DSV3_ISA_AVX512)
/* GFNI present (cached; a benign race: every thread computes the same value) */
static int fp8_gfni_ok(void) {
  static volatile int g = -1;
  if (g < 0) g = dsv3_has_gfni();
  return g;
}
#endif

#ifdef FV
#define GROUP (4 * FVL)
/* out[i*SUB] += sum over p in [k0,k1) of xs[i][p] * raw(W[j][p]), for i < M. One row of W at a
 * time: a single sequential stream per thread is what the hardware prefetchers serve best
 * (measured ~1.5x the DRAM throughput of 4 interleaved rows). U accumulator sets (vector q of
 * a 4-vector step goes to set q % U) keep the FMA dependency chains shorter than the step. */
/* row_acc: the accumulation of one row; *sum[i] = its vectors summed (set 0 + 1 + .. + U-1), tail[i]
 * the scalar tail, *nan_maybe = whether a NaN code may be present (a confirming scan follows). */
static inline __attribute__((always_inline)) void row_acc(const fp8_prob* P, const tab_t* T, const float* xs,
                                                          int64_t j, int64_t k0, int64_t k1, FV* sum, float* tail,
                                                          nacc_t* nacc_out, uint64_t* swar_out, const int M,
                                                          const int U, const int vbmi) {
  (void)T;
  const int64_t k = P->k;
  FV acc[4][FP8_GEMV_MAX];
  for (int i = 0; i < M; i++) {
    for (int u = 0; u < U; u++) acc[u][i] = FZERO;
    tail[i] = 0.0f;
  }
  nacc_t nacc = NACC_ZERO;
  uint64_t swar = 0;
  const uint8_t* w = P->w + j * k;
  int64_t p = k0;
  for (; p + GROUP <= k1; p += GROUP) {
    const uint8_t* c = w + p;
    /* software prefetch PF bytes ahead in this thread's stream (the next row's slice once past
     * k1), non-temporal so the codes do not push xs out of L1 */
    const int64_t t = p + PF;
    _mm_prefetch((const char*)(t < k1 ? w + t : w + k + k0 + (t - k1)), PFHINT);
#if defined(DSV3_ISA_AVX512)
    if (vbmi == 2) { /* GFNI: two affine byte transforms + 4 byte spreads per 64 codes */
      const __m512i cv = _mm512_loadu_si512((const void*)c);
      nacc = _mm512_max_epu8(nacc, _mm512_add_epi8(cv, cv));
      __m512i lo, hi;
      fp8_gfni_bytes(cv, &lo, &hi);
      for (int q = 0; q < 4; q++) {
        const FV wq = fp8_vbmi_spread(T, lo, hi, q);
        for (int i = 0; i < M; i++) acc[q % U][i] = FFMA(FLOADU(xs + i * k + p + q * FVL), wq, acc[q % U][i]);
      }
      continue;
    }
    if (vbmi) {
      __m512i lo, hi;
      fp8_vbmi_bytes(T, _mm512_loadu_si512((const void*)c), &lo, &hi);
      for (int q = 0; q < 4; q++) {
        const FV wq = fp8_vbmi_spread(T, lo, hi, q);
        for (int i = 0; i < M; i++) acc[q % U][i] = FFMA(FLOADU(xs + i * k + p + q * FVL), wq, acc[q % U][i]);
      }
      continue;
    }
#endif
    nacc = nacc_add(nacc, c);
    for (int q = 0; q < 4; q++) {
      const FV wq = FRAW(c + q * FVL);
      for (int i = 0; i < M; i++) acc[q % U][i] = FFMA(FLOADU(xs + i * k + p + q * FVL), wq, acc[q % U][i]);
    }
  }
  for (; p + FVL <= k1; p += FVL) { /* single vectors: arithmetic decode in every build */
    for (int h = 0; h < FVL; h += 8) swar |= fp8_nan_swar(w + p + h);
    const FV wq = FRAW(w + p);
    for (int i = 0; i < M; i++) acc[0][i] = FFMA(FLOADU(xs + i * k + p), wq, acc[0][i]);
  }
  for (; p < k1; p++) { /* scalar tail: exact raw table (NaN included) */
    const float wv = fp8_raw_table[w[p]];
    for (int i = 0; i < M; i++) tail[i] += xs[i * k + p] * wv;
  }
  for (int i = 0; i < M; i++) {
    FV a = acc[0][i];
    for (int u = 1; u < U; u++) a = FADD(a, acc[u][i]);
    sum[i] = a;
  }
  *nacc_out = nacc;
  *swar_out = swar;
}

static inline __attribute__((always_inline)) void gemv_row(const fp8_prob* P, const tab_t* T, const float* xs,
                                                           int64_t j, int64_t k0, int64_t k1, float* out,
                                                           const int M, const int U, const int vbmi) {
  FV sum[FP8_GEMV_MAX];
  float tail[FP8_GEMV_MAX];
  nacc_t nacc;
  uint64_t swar;
  row_acc(P, T, xs, j, k0, k1, sum, tail, &nacc, &swar, M, U, vbmi);
  for (int i = 0; i < M; i++) out[i * SUB] += FHSUM(sum[i]) + tail[i];
  if ((swar || (vbmi != 1 && nacc_hit(nacc))) && fp8_row_has_nan(P->w + j * P->k + k0, k1 - k0)) /* rare */
    for (int i = 0; i < M; i++) out[i * SUB] = __builtin_nanf("");
}

#if defined(DSV3_ISA_AVX512)
/* m = 1, two rows per pass (issue 12): rows j and j+1 are accumulated one after the other (still
 * one sequential stream: they are adjacent in W), then both horizontal sums are formed by one
 * set of shuffles, and one NaN test covers both rows. Each row's sum keeps FHSUM's order exactly
 * (_mm512_reduce_add_ps: upper 256 + lower, upper 128 + lower, [2 3] + [0 1], 1 + 0), so the results are bit-identical to one row at a time. */
static inline __attribute__((always_inline)) void gemv_row2(const fp8_prob* P, const tab_t* T, const float* xs,
                                                            int64_t j, int64_t k0, int64_t k1, float* out,
                                                            const int U, const int vbmi) {
  FV a, b;
  float ta, tb;
  nacc_t na, nb;
  uint64_t sa, sb;
  row_acc(P, T, xs, j, k0, k1, &a, &ta, &na, &sa, 1, U, vbmi);
  row_acc(P, T, xs, j + 1, k0, k1, &b, &tb, &nb, &sb, 1, U, vbmi);
  /* [a0 a1 b0 b1] + [a2 a3 b2 b3] (128-bit lanes): the upper 256 bits added to the lower */
  const __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)),
                                 _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)));
  /* lanes 0 / 2: the upper 128 of each half added to the lower */
  const __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)), s);
  /* within the lane: [2 3] added to [0 1], then element 1 to element 0 */
  const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t, t, _MM_SHUFFLE(1, 0, 3, 2)), t);
  const __m512 v = _mm512_add_ps(u, _mm512_shuffle_ps(u, u, _MM_SHUFFLE(3, 3, 1, 1)));
  out[0] += _mm_cvtss_f32(_mm512_castps512_ps128(v)) + ta;
  out[1] += _mm_cvtss_f32(_mm512_extractf32x4_ps(v, 2)) + tb;
  if (__builtin_expect((sa | sb) != 0 || (vbmi != 1 && nacc_hit(_mm512_max_epu8(na, nb))), 0)) { /* rare */
    const uint8_t* w = P->w + j * P->k + k0;
    if (fp8_row_has_nan(w, k1 - k0)) out[0] = __builtin_nanf("");
    if (fp8_row_has_nan(w + P->k, k1 - k0)) out[1] = __builtin_nanf("");
  }
}
#endif

/* Rows [jb, jb+rows) over the slice [k0,k1) into ybuf. */
static void gemv_range(const fp8_prob* P, const tab_t* T, const float* xs, int64_t jb, int rows, int64_t k0,
                       int64_t k1, float* ybuf) {
#define ROWS(M, U, VB) \
  for (int r = 0; r < rows; r++) gemv_row(P, T, xs, jb + r, k0, k1, ybuf + r, M, U, VB)
#if defined(DSV3_ISA_AVX512)
#ifdef FP8_GEMV_VBMI
#define CASE(M, U2, U5)                                   \
  case M:                                                 \
    if (P->vbmi) ROWS(M, U5, 1);                          \
    else ROWS(M, U5, 0);                                  \
    break;
#else /* GFNI decode where the CPU has it (and VBMI is allowed), else the arithmetic decode */
#define CASE(M, U2, U5)                                   \
  case M:                                                 \
    if (P->vbmi && gfni) ROWS(M, U5, 2);                  \
    else ROWS(M, U5, 0);                                  \
    break;
#endif
#define ROWS2(U, VB)                                                                   \
  {                                                                                    \
    int r = 0;                                                                         \
    for (; r + 2 <= rows; r += 2) gemv_row2(P, T, xs, jb + r, k0, k1, ybuf + r, U, VB); \
    if (r < rows) gemv_row(P, T, xs, jb + r, k0, k1, ybuf + r, 1, U, VB);              \
  }
#else
#define CASE(M, U2, U5) \
  case M:               \
    ROWS(M, U2, 0);     \
    break;
#endif
#if defined(DSV3_ISA_AVX512)
  const int gfni = fp8_gfni_ok();
#endif
  /* M*U accumulators: <= 8 of the 16 ymm registers (AVX2), <= 16 of the 32 zmm (AVX-512) */
  switch (P->m) {
#if defined(DSV3_ISA_AVX512) && !defined(FP8_GEMV_VBMI)
    case 1: /* two rows per pass */
      if (P->vbmi && gfni) ROWS2(4, 2)
      else ROWS2(4, 0)
      break;
#else
    CASE(1, 4, 4)
#endif
    CASE(2, 4, 4)
    CASE(3, 2, 4)
    CASE(4, 2, 4)
    CASE(5, 1, 2)
    CASE(6, 1, 2)
    CASE(7, 1, 2)
    default: CASE(8, 1, 2)
  }
#undef CASE
#undef ROWS
}
#else
/* Portable C: raw values of one row slice into a small buffer (exact table), then plain dot
 * products the compiler vectorises. */
static void gemv_range(const fp8_prob* P, const tab_t* T, const float* xs, int64_t jb, int rows, int64_t k0,
                       int64_t k1, float* ybuf) {
  (void)T;
  const int64_t k = P->k;
  float wb[FP8_BLOCK];
  for (int r = 0; r < rows; r++) {
    const uint8_t* c = P->w + (jb + r) * k;
    for (int64_t p0 = k0; p0 < k1; p0 += FP8_BLOCK) {
      const int len = (int)(k1 - p0 < FP8_BLOCK ? k1 - p0 : FP8_BLOCK);
      for (int p = 0; p < len; p++) wb[p] = fp8_raw_table[c[p0 + p]];
      for (int64_t i = 0; i < P->m; i++) {
        const float* xp = xs + i * k + p0;
        float s = 0.0f;
        for (int p = 0; p < len; p++) s += xp[p] * wb[p];
        ybuf[i * SUB + r] += s;
      }
    }
  }
}
#endif

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
