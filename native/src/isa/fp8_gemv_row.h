/* The per-row accumulation kernels of the FP8-weight GEMV (fp8_weight_gemv.c, which includes this
 * file once, after its SUB / PF / PFHINT / XBYTES definitions): the vector macros of the ISA, the
 * NaN-code accumulator, the decode choice (GFNI / VBMI table / arithmetic, see fp8_weight_gemv.c's
 * top comment), one row (row_acc, gemv_row), two rows per pass at m = 1 (gemv_row2), and the rows
 * of one scale block over a k slice (gemv_range; portable C without vectors). */
#ifndef DSV3_ISA_FP8_GEMV_ROW_H
#define DSV3_ISA_FP8_GEMV_ROW_H

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

#endif
