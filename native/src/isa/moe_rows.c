/* The routed experts of several token rows in one call (DeepSeekMoE, paper Eq. 12, at batched
 * decode and at the speculative verification forward): for each active expert e, with its rows
 * gathered contiguously (rows off[e] .. off[e+1]-1 of x),
 *   g = x W_gate^T,  u = x W_up^T,  act = silu(g) * u,  y = act W_down^T      (SwiGLU, Eq. 13)
 * Float32 or bfloat16 weights (bf16: as gemmBf16, x and act rounded to bf16 by the caller,
 * weights widened in registers, float32 accumulation), read straight from the caller's
 * buffers, each weight row streamed once for
 * all of the expert's rows (up to MG rows share one pass; more rows re-read the row from L1).
 * Work is cut into units of 4 weight rows (an output quad of every row of one expert); a task
 * takes a contiguous range of units, so consecutive units read consecutive memory, a unit's
 * weight rows are read one after another in memory order, and the next row is prefetched while
 * the current one computes: the experts of a small model are short streams (128 KB) that the
 * hardware prefetcher alone does not keep ahead of (measured: 7 GB/s on the batch-8 expert
 * phase against 29 GB/s sequential). */
#include "moe_rows.h"
#include "simd.h"

/* A weight vector at p (element offset): float32, or bf16 bits widened to float32. */
#if defined(DSV3_ISA_AVX512)
SIMD_INLINE vf wload(const void* w, int64_t p, const int bf) {
  if (!bf) return vload((const float*)w + p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)((const uint16_t*)w + p))), 16));
}
#elif defined(DSV3_ISA_AVX2)
SIMD_INLINE vf wload(const void* w, int64_t p, const int bf) {
  if (!bf) return vload((const float*)w + p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)((const uint16_t*)w + p))), 16));
}
#endif
/* one weight value (tails, scalar build) */
SIMD_INLINE float wval(const void* w, int64_t p, const int bf) {
  if (!bf) return ((const float*)w)[p];
  const uint32_t u = (uint32_t)((const uint16_t*)w)[p] << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
SIMD_INLINE const void* wrow(const void* w, int64_t row, int64_t k, const int bf) {
  return bf ? (const void*)((const uint16_t*)w + row * k) : (const void*)((const float*)w + row * k);
}

#if defined(DSV3_ISA_AVX512)
#define MG 4 /* rows per pass: MG x 2 accumulators */
#elif defined(DSV3_ISA_AVX2)
#define MG 4 /* 8 of 16 ymm */
#else
#define MG 1
#endif

/* out[i*ldo] = a[i, :] . w for i < M rows (stride k) against ONE weight row w of k values, with two
 * accumulators per row (even and odd vectors, added before the horizontal sum); while streaming
 * it, the same positions of the row at pf (the next one in memory, or NULL) are prefetched. The
 * weight rows of a unit are read one at a time in memory order: interleaving 4 short rows (1 KiB
 * at D = 256) ran at about half their streaming rate, as it did in the m = 1 GEMV (issue 12). */
SIMD_INLINE void row1(const float* a, int M, const void* w, int64_t k, const void* pf, float* out, int64_t ldo, const int bf) {
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
  vf acc[MG][2];
  for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = vzero();
  int64_t p = 0;
  for (; p + 2 * VL <= k; p += 2 * VL) {
    if (pf) {
      __builtin_prefetch(bf ? (const void*)((const uint16_t*)pf + p) : (const void*)((const float*)pf + p));
      if (!bf) __builtin_prefetch((const float*)pf + p + VL);
    }
    const vf w0 = wload(w, p, bf), w1 = wload(w, p + VL, bf);
    for (int i = 0; i < M; i++) {
      acc[i][0] = vfma(vload(a + i * k + p), w0, acc[i][0]);
      acc[i][1] = vfma(vload(a + i * k + p + VL), w1, acc[i][1]);
    }
  }
  for (; p + VL <= k; p += VL) {
    const vf w0 = wload(w, p, bf);
    for (int i = 0; i < M; i++) acc[i][0] = vfma(vload(a + i * k + p), w0, acc[i][0]);
  }
  for (int i = 0; i < M; i++) {
    float s = vhsum(vadd(acc[i][0], acc[i][1]));
    for (int64_t q = p; q < k; q++) s += a[i * k + q] * wval(w, q, bf);
    out[i * ldo] = s;
  }
#else
  (void)pf;
  for (int i = 0; i < M; i++) {
    float s = 0.0f;
    for (int64_t q = 0; q < k; q++) s += a[i * k + q] * wval(w, q, bf);
    out[i * ldo] = s;
  }
#endif
}

/* out[i*ldo] = a[i, :] . w for i < M: one weight row (the n % 4 tail). */
static void single(const float* a, int M, const void* w, int64_t k, float* out, int64_t ldo, const int bf) {
  for (int i = 0; i < M; i++) {
    int64_t p = 0;
    float s = 0.0f;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
    vf acc = vzero();
    for (; p + VL <= k; p += VL) acc = vfma(vload(a + i * k + p), wload(w, p, bf), acc);
    s = vhsum(acc);
#endif
    for (; p < k; p++) s += a[i * k + p] * wval(w, p, bf);
    out[i * ldo] = s;
  }
}

/* C[rows, n] = A[rows, k] W[n, k]^T for output columns [j, j + R) (R = 4, or 1..3 at the tail),
 * all rows, in passes of MG rows, the 4 weight rows one after another; pf: the next unit's first
 * weight rows (prefetched while the last row of this one streams) or NULL. */
SIMD_INLINE void unit_nt(const float* A, int64_t rows, const void* W, int64_t n, int64_t k, int64_t j, float* C,
                         const void* const* pf, const int bf) {
  if (j + 4 <= n) {
    for (int r = 0; r < 4; r++) {
      const void* wr = wrow(W, j + r, k, bf);
      const void* nx = r < 3 ? wrow(W, j + r + 1, k, bf) : (pf ? pf[0] : NULL);
      for (int64_t i0 = 0; i0 < rows; i0 += MG) {
        const int M = rows - i0 < MG ? (int)(rows - i0) : MG;
        const void* p = i0 == 0 ? nx : NULL;
        float* out = C + i0 * n + j + r;
        switch (M) {
#if MG >= 4
          case 4: row1(A + i0 * k, 4, wr, k, p, out, n, bf); break;
          case 3: row1(A + i0 * k, 3, wr, k, p, out, n, bf); break;
          case 2: row1(A + i0 * k, 2, wr, k, p, out, n, bf); break;
#endif
          default: row1(A + i0 * k, 1, wr, k, p, out, n, bf); break;
        }
      }
    }
    return;
  }
  for (int64_t jj = j; jj < n; jj++) single(A, (int)rows, wrow(W, jj, k, bf), k, C + jj, n, bf);
}

/* Phase 0: unit u = (expert e, gate/up rows 4q .. 4q+3); phase 1: (expert e, down rows 4q ..). */
static void locate(const moe_rows_prob* P, int phase, int64_t u, int64_t* e, int64_t* j) {
  const int64_t per = ((phase == 0 ? P->I : P->D) + 3) / 4;
  *e = u / per;
  *j = (u % per) * 4;
}

SIMD_INLINE void units(const moe_rows_prob* P, int phase, int64_t u0, int64_t u1, const int bf) {
  const int64_t D = P->D, I = P->I;
  for (int64_t u = u0; u < u1; u++) {
    int64_t e, j;
    locate(P, phase, u, &e, &j);
    const int64_t r0 = P->off[e], rows = P->off[e + 1] - r0;
    if (rows == 0) continue;
    /* prefetch order follows the stream: the gate pass fetches this unit's up rows, the up
     * pass (and the down pass) the next unit's first rows (same task range) */
    const void* pf[4] = {NULL, NULL, NULL, NULL};
    const void* const* pfp = NULL;
    if (u + 1 < u1) {
      int64_t e2, j2;
      locate(P, phase, u + 1, &e2, &j2);
      const int64_t n2 = phase == 0 ? I : D, k2 = phase == 0 ? D : I;
      const void* w2 = phase == 0 ? P->wg[e2] : P->wd[e2];
      if (P->off[e2 + 1] > P->off[e2] && j2 + 4 <= n2) {
        for (int r = 0; r < 4; r++) pf[r] = wrow(w2, j2 + r, k2, bf);
        pfp = pf;
      }
    }
    if (phase == 0) {
      const float* x = P->x + r0 * D;
      const void* pu[4] = {NULL, NULL, NULL, NULL};
      if (j + 4 <= I)
        for (int r = 0; r < 4; r++) pu[r] = wrow(P->wu[e], j + r, D, bf);
      unit_nt(x, rows, P->wg[e], I, D, j, P->g + r0 * I, j + 4 <= I ? pu : NULL, bf);
      unit_nt(x, rows, P->wu[e], I, D, j, P->u + r0 * I, pfp, bf);
    } else {
      unit_nt(P->ain + r0 * I, rows, P->wd[e], D, I, j, P->y + r0 * D, pfp, bf);
    }
  }
}

void ISA_FN(dsv3_moe_rows_units)(const moe_rows_prob* P, int phase, int64_t u0, int64_t u1) {
  if (P->bf16) units(P, phase, u0, u1, 1);
  else units(P, phase, u0, u1, 0);
}

/* act = silu(g) * u over n values (the formula and exp of the siluMul kernel, elementwise.c). */
void ISA_FN(dsv3_moe_rows_silu)(const float* g, const float* u, float* act, int64_t n) {
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    const vf z = vload(g + i);
    vstore(act + i, vmul(vdiv(z, vadd(vset1(1.0f), vexp(vsub(vzero(), z)))), vload(u + i)));
  }
  if (i < n) {
    const int t = (int)(n - i);
    const vf z = vloadt(g + i, t, 0);
    vstoret(act + i, vmul(vdiv(z, vadd(vset1(1.0f), vexp(vsub(vzero(), z)))), vloadt(u + i, t, 0)), t);
  }
}
