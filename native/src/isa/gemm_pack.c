/* GEMM packing: copies a block of op(A) / op(B) into the micro-panel layouts of the
 * micro-kernels, doing every transpose, bf16 widening (B) and bf16 rounding (A) here.
 *   A: MR-row panels, [kc][MR] floats;   B: NR-column panels, [kc][NR] floats.
 *   Pair layouts (VDPBF16PS): A [kc/2][MR] and B [kc/2][NR] 32-bit words, each word two bf16
 *   values (even k in the low half), an odd kc padded with a zero.
 * Full panels use SIMD (8x8 in-register transposes for the strided cases); partial panels and
 * k tails use the scalar loops, which are the reference for the vector ones. */
#include "gemm_isa.h"

#define MR GEMM_MR
#define NR GEMM_NR

static inline float a_at(const gemm_prob* P, int64_t i, int64_t p) {
  const int64_t off = P->ta ? p * P->lda + i : i * P->lda + p;
  if (P->ah) return gemm_bf16_to_f32(P->ah[off]);
  float x = P->a[off];
  return gemm_round_a(P) ? gemm_round_bf16(x) : x;
}
static inline float b_at(const gemm_prob* P, int64_t p, int64_t j) {
  int64_t off = P->tb ? j * P->ldb + p : p * P->ldb + j;
  return P->bf16 ? gemm_bf16_to_f32(P->bh[off]) : P->bf[off];
}
static inline uint16_t bh_at(const gemm_prob* P, int64_t p, int64_t j) {
  return P->bh[P->tb ? j * P->ldb + p : p * P->ldb + j];
}

/* Scalar packing of one A panel, k range [pa, kc). */
static void pack_a_panel_scalar(const gemm_prob* P, int64_t i, int mr, int64_t p0, int pa, int kc, float* d) {
  for (int p = pa; p < kc; p++) {
    for (int r = 0; r < mr; r++) d[p * MR + r] = a_at(P, i + r, p0 + p);
    for (int r = mr; r < MR; r++) d[p * MR + r] = 0.0f;
  }
}

#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
/* Store 'n' (6, 8 or 4) lanes of v at d. */
static inline void store_lanes(float* d, __m256 v, int n) {
  if (n == 8) {
    _mm256_storeu_ps(d, v);
  } else if (n == 4) {
    _mm_storeu_ps(d, _mm256_castps256_ps128(v));
  } else { /* 6 */
    _mm_storeu_ps(d, _mm256_castps256_ps128(v));
    _mm_storel_pi((__m64*)(d + 4), _mm256_extractf128_ps(v, 1));
  }
}
/* A stored [m,k] (no transpose), full panel: 8 k values of each row, transposed in registers
 * so that column p of the block lands at d[p*MR ...]. Rows are processed 8 at a time. */
static int pack_a_rows_simd(const gemm_prob* P, const float* src, int kc, float* d) {
  const int64_t lda = P->lda;
  int p = 0;
  for (; p + 8 <= kc; p += 8) {
    for (int r0 = 0; r0 < MR; r0 += 8) {
      const int nrow = MR - r0 < 8 ? MR - r0 : 8;
      __m256 v[8];
      for (int r = 0; r < 8; r++) {
        v[r] = r < nrow ? _mm256_loadu_ps(src + (int64_t)(r0 + r) * lda + p) : _mm256_setzero_ps();
        if (gemm_round_a(P)) v[r] = gemm_round_bf16_v8(v[r]);
      }
      gemm_transpose8(v);
      for (int q = 0; q < 8; q++) store_lanes(d + (p + q) * MR + r0, v[q], nrow);
    }
  }
  return p;
}
#endif

/* A given as bf16 bits (gemm_bf16ab without VDPBF16PS), stored [m,k], full panel: 8 k values
 * of each row widened and transposed in registers, as pack_a_rows_simd does for float32. */
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
static int pack_a_rows_bits_simd(const gemm_prob* P, const uint16_t* src, int kc, float* d) {
  const int64_t lda = P->lda;
  int p = 0;
  for (; p + 8 <= kc; p += 8) {
    for (int r0 = 0; r0 < MR; r0 += 8) {
      const int nrow = MR - r0 < 8 ? MR - r0 : 8;
      __m256 v[8];
      for (int r = 0; r < 8; r++) v[r] = r < nrow ? gemm_widen_bf16_v8(src + (int64_t)(r0 + r) * lda + p) : _mm256_setzero_ps();
      gemm_transpose8(v);
      for (int q = 0; q < 8; q++) store_lanes(d + (p + q) * MR + r0, v[q], nrow);
    }
  }
  return p;
}
#endif

void ISA_FN(gemm_pack_a)(const gemm_prob* P, int64_t i0, int mc, int64_t p0, int kc, float* dst) {
  const int full = mc / MR * MR; /* rows in full panels */
  if (P->ah && !P->ta) {
    for (int ir = 0; ir < full; ir += MR) {
      float* d = dst + (int64_t)ir * kc;
      int pa = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
      pa = pack_a_rows_bits_simd(P, P->ah + (i0 + ir) * P->lda + p0, kc, d);
#endif
      pack_a_panel_scalar(P, i0 + ir, MR, p0, pa, kc, d);
    }
  } else if (P->ta && P->ah) {
    /* A given as bf16 bits, stored [k,m] (Wgrad's dY^T without VDPBF16PS): as the float32 path
     * below (blocks of 8 k rows, panels inside: 8 sequential read streams, 8*MR contiguous floats
     * written), each MR-value segment widened on the way (exact: same values as before, when
     * every k row was widened across all panels first, which wrote each panel MR floats at a
     * time kc*MR apart). Vector loads read 8 bits values, so a short segment (MR 6 or 12's last
     * 4) uses them only where those 8 lie inside the row's m values. */
    for (int pb = 0; pb < kc; pb += 8) {
      const int pe = pb + 8 < kc ? pb + 8 : kc;
      for (int ir = 0; ir < full; ir += MR)
        for (int p = pb; p < pe; p++) {
          const uint16_t* s = P->ah + (p0 + p) * P->lda + i0 + ir;
          float* o = dst + (int64_t)ir * kc + p * MR;
          int r = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
          for (; r < MR; r += 8) {
            const int n = MR - r < 8 ? MR - r : 8;
            if (n < 8 && i0 + ir + r + 8 > P->m) break;
            store_lanes(o + r, gemm_widen_bf16_v8(s + r), n);
          }
#endif
          for (; r < MR; r++) o[r] = gemm_bf16_to_f32(s[r]);
        }
    }
  } else if (P->ta && gemm_round_a(P)) {
    /* A stored [k,m], rounded to bf16 (or widened from bf16 bits): each row's segment of the
     * full panels is rounded 8 lanes at a time into t (chunks of whole panels), then dealt out
     * MR values per panel. */
    float t[(256 / MR + 1) * MR];
    const int chunk = 256 / MR * MR;
    for (int p = 0; p < kc; p++)
      for (int c0 = 0; c0 < full; c0 += chunk) {
        const int cn = full - c0 < chunk ? full - c0 : chunk;
        int e = 0;
        if (P->ah) { /* bf16 bits: widened */
          const uint16_t* s = P->ah + (p0 + p) * P->lda + i0 + c0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
          for (; e + 8 <= cn; e += 8) _mm256_storeu_ps(t + e, gemm_widen_bf16_v8(s + e));
#endif
          for (; e < cn; e++) t[e] = gemm_bf16_to_f32(s[e]);
        } else {
          const float* s = P->a + (p0 + p) * P->lda + i0 + c0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
          for (; e + 8 <= cn; e += 8) _mm256_storeu_ps(t + e, gemm_round_bf16_v8(_mm256_loadu_ps(s + e)));
#endif
          for (; e < cn; e++) t[e] = gemm_round_bf16(s[e]);
        }
        for (int ir = 0; ir < cn; ir += MR) memcpy(dst + (int64_t)(c0 + ir) * kc + p * MR, t + ir, MR * sizeof(float));
      }
  } else if (P->ta) {
    /* A stored [k,m]: row p holds the MR values of every panel contiguously. Blocks of 8
     * rows, panels inside: 8 sequential read streams, 8*MR contiguous floats written. */
    for (int pb = 0; pb < kc; pb += 8) {
      const int pe = pb + 8 < kc ? pb + 8 : kc;
      for (int ir = 0; ir < full; ir += MR)
        for (int p = pb; p < pe; p++) {
          const float* s = P->a + (p0 + p) * P->lda + i0 + ir;
          float* o = dst + (int64_t)ir * kc + p * MR;
          memcpy(o, s, MR * sizeof(float)); /* fixed size: a couple of vector moves */
        }
    }
  } else {
    for (int ir = 0; ir < full; ir += MR) {
      float* d = dst + (int64_t)ir * kc;
      int pa = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
      pa = pack_a_rows_simd(P, P->a + (i0 + ir) * P->lda + p0, kc, d);
#endif
      pack_a_panel_scalar(P, i0 + ir, MR, p0, pa, kc, d);
    }
  }
  if (full < mc) pack_a_panel_scalar(P, i0 + full, mc - full, p0, 0, kc, dst + (int64_t)full * kc);
}

void ISA_FN(gemm_pack_b)(const gemm_prob* P, int64_t p0, int kc, int64_t j0, int nc, float* dst) {
  const int64_t ldb = P->ldb;
  const int full = nc / NR * NR; /* columns in full panels */
  if (!P->tb) {
    /* B stored [k,n]: row p holds NR contiguous values of every panel. Blocks of 8 rows,
     * panels inside: 8 sequential read streams, 8*NR contiguous floats written per panel. */
    for (int pb = 0; pb < kc; pb += 8) {
      const int pe = pb + 8 < kc ? pb + 8 : kc;
      for (int jr = 0; jr < full; jr += NR)
        for (int p = pb; p < pe; p++) {
          const int64_t row = (p0 + p) * ldb + j0;
          float* o = dst + (int64_t)jr * kc + p * NR;
          if (P->bf16) {
            const uint16_t* s = P->bh + row + jr;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
            for (int q = 0; q < NR; q += 8) _mm256_store_ps(o + q, gemm_widen_bf16_v8(s + q));
#else
            for (int q = 0; q < NR; q++) o[q] = gemm_bf16_to_f32(s[q]);
#endif
          } else {
            memcpy(o, P->bf + row + jr, NR * sizeof(float));
          }
        }
      }
  } else {
    for (int jr = 0; jr < full; jr += NR) {
      float* d = dst + (int64_t)jr * kc;
      const int64_t j = j0 + jr;
      int pa = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
      /* B stored [n,k] (the linear-layer weight): column j of op(B) is row j of B. Load 8 k
       * values of 8 rows, transpose, store 8 packed rows of 8 columns. */
      for (; pa + 8 <= kc; pa += 8) {
        for (int g = 0; g < NR; g += 8) {
          __m256 v[8];
          for (int r = 0; r < 8; r++) {
            const int64_t off = (j + g + r) * ldb + p0 + pa;
            v[r] = P->bf16 ? gemm_widen_bf16_v8(P->bh + off) : _mm256_loadu_ps(P->bf + off);
          }
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) _mm256_store_ps(d + (pa + q) * NR + g, v[q]);
        }
      }
#endif
      for (int p = pa; p < kc; p++)
        for (int q = 0; q < NR; q++) d[p * NR + q] = b_at(P, p0 + p, j + q);
    }
  }
  if (full < nc) { /* last, partial panel: zero padded */
    const int nr = nc - full;
    float* d = dst + (int64_t)full * kc;
    for (int p = 0; p < kc; p++) {
      for (int q = 0; q < nr; q++) d[p * NR + q] = b_at(P, p0 + p, j0 + full + q);
      for (int q = nr; q < NR; q++) d[p * NR + q] = 0.0f;
    }
  }
}

/* ---- pair layouts for VDPBF16PS ---------------------------------------------------------- */

static inline uint32_t pair16(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }

#if defined(DSV3_ISA_AVX512)
/* 16 floats -> 8 words of two RNE-rounded bf16 each (even element in the low half): after
 * rounding, the bf16 values are the high 16-bit halves of the floats (odd 16-bit words). */
static inline __m256 pairs_from_f32x16(const float* s) {
  __m256 lo = gemm_round_bf16_v8(_mm256_loadu_ps(s)), hi = gemm_round_bf16_v8(_mm256_loadu_ps(s + 8));
  __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_castps_si256(lo)), _mm256_castps_si256(hi), 1);
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                       31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  return _mm256_castsi256_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(odd, v)));
}
#endif

#if defined(DSV3_ISA_AVX512)
/* 16 floats rounded to bf16 (gemm_round_bf16): the bf16 value is the high half of each lane. */
static inline __m512i pairs_round16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
}
#endif

/* Pair layout of A given as bf16 bits (gemm_bf16ab): no rounding, half the bytes to read.
 *   A stored [m,k]: the pair (2q, 2q+1) of row i is the 32-bit word at ah + i*lda + 2q (p0 is
 *     even: k blocks start at multiples of GEMM_KC_DP), so a full panel is an 8x8 transpose of
 *     words, as for B stored [n,k] in gemm_pack_b_pairs;
 *   A stored [k,m] (Wgrad's dY^T): rows p and p+1 hold the panel's mr values contiguously; their
 *     16-bit values are interleaved into words (row p in the low half). */
static void pack_a_pairs_bits(const gemm_prob* P, int64_t i0, int mc, int64_t p0, int kc, uint32_t* dst) {
  const int kc2 = (kc + 1) / 2;
  const uint16_t* A = P->ah;
  const int64_t lda = P->lda;
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = mc - ir < MR ? mc - ir : MR;
    uint32_t* d = dst + (int64_t)ir * kc2;
    const int64_t i = i0 + ir;
    int q0 = 0;
#if defined(DSV3_ISA_AVX512)
    if (P->ta && mr == MR) {
      /* the 12 values of a row: 8 + 4 (no read past them), widened to 32-bit lanes 0..11 */
      for (; 2 * q0 + 2 <= kc; q0++) {
        const uint16_t* s0 = A + (p0 + 2 * q0) * lda + i;
        const __m512i lo = _mm512_cvtepu16_epi32(_mm256_set_m128i(_mm_loadl_epi64((const __m128i*)(s0 + 8)), _mm_loadu_si128((const __m128i*)s0)));
        const __m512i hi = _mm512_cvtepu16_epi32(_mm256_set_m128i(_mm_loadl_epi64((const __m128i*)(s0 + lda + 8)), _mm_loadu_si128((const __m128i*)(s0 + lda))));
        _mm512_mask_storeu_ps((float*)(d + q0 * MR), (__mmask16)((1u << MR) - 1u), _mm512_castsi512_ps(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 16))));
      }
    } else if (mr == MR) {
      for (; 2 * q0 + 16 <= kc; q0 += 8) {
        for (int r0 = 0; r0 < MR; r0 += 8) {
          const int nrow = MR - r0 < 8 ? MR - r0 : 8;
          __m256 v[8];
          for (int r = 0; r < 8; r++)
            v[r] = r < nrow ? _mm256_loadu_ps((const float*)(A + (i + r0 + r) * lda + p0 + 2 * q0)) : _mm256_setzero_ps();
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) store_lanes((float*)(d + (q0 + q) * MR + r0), v[q], nrow);
        }
      }
    }
#endif
    for (int q = q0; q < kc2; q++) {
      const int64_t p = p0 + 2 * q;
      for (int r = 0; r < mr; r++) {
        const uint16_t lo = P->ta ? A[p * lda + i + r] : A[(i + r) * lda + p];
        const uint16_t hi = 2 * q + 1 < kc ? (P->ta ? A[(p + 1) * lda + i + r] : A[(i + r) * lda + p + 1]) : 0;
        d[q * MR + r] = pair16(lo, hi);
      }
      for (int r = mr; r < MR; r++) d[q * MR + r] = 0;
    }
  }
}

void ISA_FN(gemm_pack_a_pairs)(const gemm_prob* P, int64_t i0, int mc, int64_t p0, int kc, uint32_t* dst) {
  if (P->ah) {
    pack_a_pairs_bits(P, i0, mc, p0, kc, dst);
    return;
  }
  const int kc2 = (kc + 1) / 2;
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = mc - ir < MR ? mc - ir : MR;
    uint32_t* d = dst + (int64_t)ir * kc2;
    const int64_t i = i0 + ir;
    int q0 = 0; /* pairs done */
#if defined(DSV3_ISA_AVX512)
    if (P->ta) {
      /* A stored [k,m] (the Wgrad operand dY^T): rows p and p+1 hold the panel's mr values
       * contiguously; round both and merge them into words (row p in the low half). */
      const __mmask16 lanes = (__mmask16)((1u << mr) - 1u);
      for (; 2 * q0 + 2 <= kc; q0++) {
        const float* s0 = P->a + (p0 + 2 * q0) * P->lda + i;
        const __m512i r0 = pairs_round16(_mm512_maskz_loadu_ps(lanes, s0));
        const __m512i r1 = pairs_round16(_mm512_maskz_loadu_ps(lanes, s0 + P->lda));
        const __m512i w = _mm512_or_si512(_mm512_srli_epi32(r0, 16), _mm512_and_si512(r1, _mm512_set1_epi32((int)0xffff0000u)));
        _mm512_mask_storeu_ps((float*)(d + q0 * MR), (__mmask16)((1u << MR) - 1u), _mm512_castsi512_ps(w)); /* zero padded rows */
      }
    } else if (mr == MR) {
      for (; 2 * q0 + 16 <= kc; q0 += 8) {
        for (int r0 = 0; r0 < MR; r0 += 8) {
          const int nrow = MR - r0 < 8 ? MR - r0 : 8;
          __m256 v[8];
          for (int r = 0; r < 8; r++)
            v[r] = r < nrow ? pairs_from_f32x16(P->a + (i + r0 + r) * P->lda + p0 + 2 * q0) : _mm256_setzero_ps();
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) store_lanes((float*)(d + (q0 + q) * MR + r0), v[q], nrow);
        }
      }
    }
#endif
    for (int q = q0; q < kc2; q++) {
      const int p = 2 * q;
      for (int r = 0; r < mr; r++) {
        uint16_t lo = gemm_bf16_bits(P->ta ? P->a[(p0 + p) * P->lda + i + r] : P->a[(i + r) * P->lda + p0 + p]);
        uint16_t hi = 0;
        if (p + 1 < kc) hi = gemm_bf16_bits(P->ta ? P->a[(p0 + p + 1) * P->lda + i + r] : P->a[(i + r) * P->lda + p0 + p + 1]);
        d[q * MR + r] = pair16(lo, hi);
      }
      for (int r = mr; r < MR; r++) d[q * MR + r] = 0;
    }
  }
}

void ISA_FN(gemm_pack_b_pairs)(const gemm_prob* P, int64_t p0, int kc, int64_t j0, int nc, uint32_t* dst) {
  const int kc2 = (kc + 1) / 2;
  const int64_t ldb = P->ldb;
  for (int jr = 0; jr < nc; jr += NR) {
    const int nr = nc - jr < NR ? nc - jr : NR;
    uint32_t* d = dst + (int64_t)jr * kc2;
    const int64_t j = j0 + jr;
    int q0 = 0;
#if defined(DSV3_ISA_AVX512)
    if (nr == NR && P->tb) {
      /* B stored [n,k]: a pair is one (unaligned) 32-bit word of row j; 8x8 word transpose */
      for (; 2 * q0 + 16 <= kc; q0 += 8) {
        for (int g = 0; g < NR; g += 8) {
          __m256 v[8];
          for (int r = 0; r < 8; r++) v[r] = _mm256_loadu_ps((const float*)(P->bh + (j + g + r) * ldb + p0 + 2 * q0));
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) _mm256_store_ps((float*)(d + (q0 + q) * NR + g), v[q]);
        }
      }
    } else if (nr == NR) {
      /* B stored [k,n]: interleave rows p and p+1, 16 columns at a time */
      for (; 2 * q0 + 2 <= kc; q0++) {
        const uint16_t* r0 = P->bh + (p0 + 2 * q0) * ldb + j;
        const uint16_t* r1 = r0 + ldb;
        for (int g = 0; g < NR; g += 16) {
          __m256i x = _mm256_loadu_si256((const __m256i*)(r0 + g)), y = _mm256_loadu_si256((const __m256i*)(r1 + g));
          __m256i lo = _mm256_unpacklo_epi16(x, y), hi = _mm256_unpackhi_epi16(x, y);
          _mm256_store_si256((__m256i*)(d + q0 * NR + g), _mm256_permute2x128_si256(lo, hi, 0x20));
          _mm256_store_si256((__m256i*)(d + q0 * NR + g + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
      }
    }
#endif
    for (int q = q0; q < kc2; q++) {
      const int p = 2 * q;
      for (int c = 0; c < nr; c++)
        d[q * NR + c] = pair16(bh_at(P, p0 + p, j + c), p + 1 < kc ? bh_at(P, p0 + p + 1, j + c) : 0);
      for (int c = nr; c < NR; c++) d[q * NR + c] = 0;
    }
  }
}
