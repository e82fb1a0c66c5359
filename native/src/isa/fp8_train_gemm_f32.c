/* The block-scaled FP8 training GEMM (fp8_train.h) on the AVX2 float32 micro-kernel, for CPUs
 * without avx512_bf16 (only the AVX2 copy of this file has code; isa/fp8_train_gemm.c calls it
 * from its AVX2 copy). DeepSeek-V3 §3.3.2: per 128-wide k block b,
 *   P_b[i, j] = sum over k in b of e4m3(A[i, k]) * e4m3(B[j, k])     (float32 FMAs, k ascending)
 *   acc = float32(acc + float32(P_b * float32(sA(i, b) * sB(j, b))))  (the N_C = 128 promotion)
 * the same arithmetic, in the same order, as fp8_train_gemm.c's float32 path (so the same bits),
 * without its two extra costs:
 *   - no decoded float32 copy of A and B: the E4M3 codes are decoded while packing the
 *     micro-panels (integer decode, exact, no float32 denormal is made or read);
 *   - the promotion in registers: the 6 x 16 tile's block sum P_b stays in its 12 ymm
 *     accumulators and is scaled and added to the C tile (C itself for full tiles) at the end of
 *     each block, instead of a store of P_b, a scalar promote loop and scalar copies of the tile
 *     in and out of a local buffer per k slice;
 *   - for narrow C (a thread's tile <= 128 columns) with A stored [m][k], A is not packed at all:
 *     the micro-kernel reads its codes in place (kernel_promote_codes), as the fp32 GEMM reads a
 *     narrow float32 A in place.
 * Blocking as the fp32 GEMM's AVX2 copy (gemm_isa.h: MR 6, NR 16, MC 288) with KC = 256 (two
 * 128-blocks per packing: B micro-panel 16 KB) and NC = 2048; threads split C into a gm x gn
 * grid of tiles (gemm_pick_grid). */
#include "fp8_train_gemm_f32.h"

#if defined(DSV3_ISA_AVX2)
#include "fp8_codec.h" /* fp8_e4m3_table: the scalar tails */
#include "gemm_isa.h"
#include "threadpool.h"
#include "fp8_train_grid.h"

#define MR GEMM_MR /* 6 */
#define NR GEMM_NR /* 16 */
#define MC GEMM_MC
#define F8F_KC 256
#define F8F_NC 2048
_Static_assert(MR == 6 && NR == 16, "the AVX2 tile is 6 x 16");

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* 8 codes -> their E4M3 values as float32, exactly, integer arithmetic only: magnitude m >= 8
 * (a normal): (m << 20) + (120 << 23); m < 8 (zero or subnormal): m * 2^-9 (exact); the sign
 * ORed back; NaN (m = 0x7F) all ones, as fp8_dec8_exact gives. */
static inline __m256 dec8(const uint8_t* p) {
  const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
  const __m256i x7f = _mm256_set1_epi32(0x7f);
  const __m256i m = _mm256_and_si256(c, x7f);
  const __m256i v = _mm256_add_epi32(_mm256_slli_epi32(m, 20), _mm256_set1_epi32(120 << 23));
  const __m256i d = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(0x1p-9f)));
  __m256i r = _mm256_blendv_epi8(v, d, _mm256_cmpgt_epi32(_mm256_set1_epi32(8), m));
  r = _mm256_or_si256(r, _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(r, _mm256_set1_epi32(-1), _mm256_cmpeq_epi32(m, x7f)));
}

/* The value of code c of an operand: (row r, k index p) of codes stored [rows][k] (ROWS
 * layouts) or [k][rows] (COLS layouts). */
static inline float code_at(const uint8_t* codes, int cols, int64_t rows, int64_t k, int64_t r, int64_t p) {
  return fp8_e4m3_table[cols ? codes[p * rows + r] : codes[r * k + p]];
}

/* Micro-panels of R (MR for A, NR for B) consecutive operand rows [r0, r0 + rn), k [p0, p0 + kc):
 * per panel [kc][R] floats, zero padded to R rows; what gemm_pack_a / gemm_pack_b make of the
 * decoded operand (A: op(A) = A [m][k]; B: op(B) = B^T of B [n][k]).
 *   ROWS layouts (codes [rows][k]): 8 codes of each of R rows decoded, 8 x 8 transposed in
 *     registers (the last rows of a 6-row panel zero);
 *   COLS layouts (codes [k][rows]): row p of the codes holds the panels' values of k = p
 *     contiguously: decoded 8 at a time into a row buffer, dealt out R per panel. */
static void pack_codes_f32(const uint8_t* codes, int cols, int64_t rows, int64_t k, int64_t r0, int rn, int64_t p0,
                           int kc, int R, float* dst) {
  const int full = rn / R * R;
  if (cols) {
    float t[F8F_NC + 8] __attribute__((aligned(32)));
    for (int p = 0; p < kc; p++) {
      const uint8_t* s = codes + (p0 + p) * rows + r0;
      int e = 0;
      for (; e + 8 <= full; e += 8) _mm256_store_ps(t + e, dec8(s + e));
      for (; e < full; e++) t[e] = fp8_e4m3_table[s[e]];
      if (R == NR)
        for (int ir = 0; ir < full; ir += NR) {
          _mm256_storeu_ps(dst + (int64_t)ir * kc + p * NR, _mm256_load_ps(t + ir));
          _mm256_storeu_ps(dst + (int64_t)ir * kc + p * NR + 8, _mm256_load_ps(t + ir + 8));
        }
      else
        for (int ir = 0; ir < full; ir += MR) memcpy(dst + (int64_t)ir * kc + p * MR, t + ir, MR * sizeof(float));
    }
  } else {
    for (int ir = 0; ir < full; ir += R) {
      float* d = dst + (int64_t)ir * kc;
      const uint8_t* s = codes + (r0 + ir) * k + p0;
      int p = 0;
      for (; p + 8 <= kc; p += 8) {
        for (int g = 0; g < R; g += 8) {
          const int nrow = R - g < 8 ? R - g : 8; /* 8, or 6 (A) */
          __m256 v[8];
          for (int r = 0; r < 8; r++) v[r] = r < nrow ? dec8(s + (g + r) * k + p) : _mm256_setzero_ps();
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) {
            float* o = d + (p + q) * R + g;
            if (nrow == 8) _mm256_storeu_ps(o, v[q]);
            else { /* 6 lanes */
              _mm_storeu_ps(o, _mm256_castps256_ps128(v[q]));
              _mm_storel_pi((__m64*)(o + 4), _mm256_extractf128_ps(v[q], 1));
            }
          }
        }
      }
      for (; p < kc; p++)
        for (int r = 0; r < R; r++) d[p * R + r] = code_at(codes, 0, rows, k, r0 + ir + r, p0 + p);
    }
  }
  if (full < rn) { /* the last, partial panel */
    float* d = dst + (int64_t)full * kc;
    for (int p = 0; p < kc; p++)
      for (int r = 0; r < R; r++) d[p * R + r] = full + r < rn ? code_at(codes, cols, rows, k, r0 + full + r, p0 + p) : 0.0f;
  }
}


/* One 128-block's partial sums p (MR x NR, float32 over decoded codes) promoted into acc: the
 * block's product scaled by its two scales, then added (first block: stored), multiply then add,
 * never fused (fp-contract off, as its callers): the N_C = 128 promotion of §3.3.2. */
__attribute__((optimize("fp-contract=off"))) static inline void promote_block(__m256 p[MR][2], const float* sa, const float* sb, float* acc, int64_t ld, int first) {
  const __m256 sb0 = _mm256_loadu_ps(sb), sb1 = _mm256_loadu_ps(sb + 8);
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    const __m256 si = _mm256_set1_ps(sa[i]);
    float* r = acc + i * ld;
    const __m256 t0 = _mm256_mul_ps(p[i][0], _mm256_mul_ps(si, sb0));
    const __m256 t1 = _mm256_mul_ps(p[i][1], _mm256_mul_ps(si, sb1));
    const __m256 c0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(r);
    const __m256 c1 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(r + 8);
    _mm256_storeu_ps(r, _mm256_add_ps(c0, t0));
    _mm256_storeu_ps(r + 8, _mm256_add_ps(c1, t1));
  }
}

/* One MR x NR tile over a kc-deep slice of float32 panels (a: [kc][MR], b: [kc][NR]): per
 * 128-wide block, P = the block's FMA sum of code products (12 ymm accumulators from +0, k
 * ascending: gemm_kernel's arithmetic), then per element
 *   acc = acc + P * (sa[i] * sb[j])      (float32, one rounding per operation, no FMA)
 * with sa / sb the block's scales (next block: + lsa / + lsb). acc is [MR][ld]; `init`: it
 * starts at +0 (not read; +0 + t keeps the oracle's sign of zero). */
__attribute__((optimize("fp-contract=off"))) static void kernel_promote(int kc, const float* restrict a,
                                                                        const float* restrict b, const float* sa,
                                                                        int lsa, const float* sb, int lsb, float* acc,
                                                                        int64_t ld, int init) {
  for (int i = 0; i < MR; i++) {
    __builtin_prefetch(acc + i * ld, 1, 3);
    __builtin_prefetch(acc + i * ld + NR - 1, 1, 3);
  }
  for (int q0 = 0; q0 < kc; q0 += 128, sa += lsa, sb += lsb) {
    const int steps = kc - q0 < 128 ? kc - q0 : 128;
    __m256 p[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) p[i][0] = p[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int q = 0; q < steps; q++) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
      for (int i = 0; i < MR; i++) {
        const __m256 ai = _mm256_broadcast_ss(a + i);
        p[i][0] = _mm256_fmadd_ps(ai, b0, p[i][0]);
        p[i][1] = _mm256_fmadd_ps(ai, b1, p[i][1]);
      }
      a += MR;
      b += NR;
    }
    promote_block(p, sa, sb, acc, ld, init && q0 == 0);
  }
}

/* kernel_promote with A read in place from its codes (ROWS layouts, codes [m][k]): row i of the
 * micro-panel is a + i*lda, each k step broadcasts the float32 value of its code from the E4M3
 * table (a byte load and a broadcast load per row; the same values the packing decodes to, so
 * the same bits). For narrow C, where each A micro-panel meets only a few B panels and decoding
 * it into a packed panel would cost a large part of the multiply (as the fp32 GEMM's
 * use_direct_a). All MR rows valid. */
__attribute__((optimize("fp-contract=off"))) static void kernel_promote_codes(int kc, const uint8_t* restrict a, int64_t lda,
                                                                              const float* restrict b, const float* sa,
                                                                              int lsa, const float* sb, int lsb, float* acc,
                                                                              int64_t ld, int init) {
  const float* T = fp8_e4m3_table;
  const uint8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
  for (int i = 0; i < MR; i++) {
    __builtin_prefetch(acc + i * ld, 1, 3);
    __builtin_prefetch(acc + i * ld + NR - 1, 1, 3);
  }
  for (int q0 = 0; q0 < kc; q0 += 128, sa += lsa, sb += lsb) {
    const int steps = kc - q0 < 128 ? kc - q0 : 128;
    __m256 p[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) p[i][0] = p[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int q = q0; q < q0 + steps; q++) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      __m256 ai;
#define F8F_ROW(i, ap)                                \
  ai = _mm256_broadcast_ss(T + ap[q]);                \
  p[i][0] = _mm256_fmadd_ps(ai, b0, p[i][0]);         \
  p[i][1] = _mm256_fmadd_ps(ai, b1, p[i][1]);
      F8F_ROW(0, a0) F8F_ROW(1, a1) F8F_ROW(2, a2) F8F_ROW(3, a3) F8F_ROW(4, a4) F8F_ROW(5, a5)
#undef F8F_ROW
      b += NR;
    }
    promote_block(p, sa, sb, acc, ld, init && q0 == 0);
  }
}

/* C tiles at most this many columns wide read A in place from its codes (kernel_promote_codes) */
#define F8F_DIRECT_N 128

typedef struct {
  const f8t_prob* P;
  int64_t nb; /* k blocks */
} f8f_ctx;

/* C rows [i0, i1), columns [j0, j1): the BLIS loop nest of the fp32 GEMM, one k slice of both
 * operands' panels at a time, every tile promoted block by block (kernel_promote). */
static int tile(void* ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const f8f_ctx* X = (const f8f_ctx*)ctx;
  const f8t_prob* P = X->P;
  const int64_t ncmax = min64(F8F_NC, (j1 - j0 + NR - 1) / NR * NR);
  const int nbk = F8F_KC / 128;
  const int mcp = (MC + MR - 1) / MR * MR;
  /* gemm_scratch: the fp32 GEMM's per-thread buffers (nothing here calls that GEMM) */
  float* abuf = (float*)ISA_FN(gemm_scratch)(0, (size_t)mcp * F8F_KC * sizeof(float));
  float* bbuf = (float*)ISA_FN(gemm_scratch)(1, (size_t)F8F_KC * ncmax * sizeof(float));
  /* the slice's scales: A [nbk][mcp] of the row block, B [nbk][ncmax] of the column block; zero
   * past the last row / column (their padded products are zero anyway) */
  float* sap = (float*)ISA_FN(gemm_scratch)(2, (size_t)nbk * mcp * sizeof(float));
  float* sbp = (float*)ISA_FN(gemm_scratch)(3, (size_t)nbk * ncmax * sizeof(float));
  if (!abuf || !bbuf || !sap || !sbp) return -1;
  float acc[MR * NR] __attribute__((aligned(64)));
  const int64_t ldc = P->ldc;
  const int direct_a = !(P->a.layout & 1) && j1 - j0 <= F8F_DIRECT_N; /* A's codes read in place */
  for (int64_t jc = j0; jc < j1; jc += F8F_NC) {
    const int nc = (int)min64(F8F_NC, j1 - jc);
    for (int64_t pc = 0; pc < P->k; pc += F8F_KC) {
      const int kc = (int)min64(F8F_KC, P->k - pc);
      pack_codes_f32(P->b.codes, P->b.layout & 1, P->n, P->k, jc, nc, pc, kc, NR, bbuf);
      for (int q = 0; q * 128 < kc; q++)
        for (int j = 0; j < ncmax; j++) sbp[q * ncmax + j] = j < nc ? f8t_scale(&P->b, P->n, X->nb, jc + j, (pc >> 7) + q) : 0.0f;
      for (int64_t ic = i0; ic < i1; ic += MC) {
        const int mc = (int)min64(MC, i1 - ic);
        if (!direct_a) pack_codes_f32(P->a.codes, P->a.layout & 1, P->m, P->k, ic, mc, pc, kc, MR, abuf);
        else if (mc % MR) /* the partial last micro-panel is packed (its rows past m are not read) */
          pack_codes_f32(P->a.codes, 0, P->m, P->k, ic + mc / MR * MR, mc % MR, pc, kc, MR, abuf + (int64_t)(mc / MR * MR) * kc);
        for (int q = 0; q * 128 < kc; q++)
          for (int i = 0; i < mcp; i++) sap[q * mcp + i] = i < mc ? f8t_scale(&P->a, P->m, X->nb, ic + i, (pc >> 7) + q) : 0.0f;
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = nc - jr < NR ? nc - jr : NR;
          const float* bp = bbuf + (int64_t)jr * kc;
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR;
            const float* ap = abuf + (int64_t)ir * kc;
            float* c = P->c + (ic + ir) * ldc + jc + jr;
            /* full tiles accumulate in C itself unless the finished sum is added to C */
            const int add = pc == 0 && P->beta != 0.0f, direct = mr == MR && nr == NR && !add;
            float* dst = direct ? c : acc;
            if (!direct && pc > 0)
              for (int i = 0; i < MR; i++)
                for (int j = 0; j < NR; j++) acc[i * NR + j] = i < mr && j < nr ? c[i * ldc + j] : 0.0f;
            if (direct_a && mr == MR)
              kernel_promote_codes(kc, P->a.codes + (ic + ir) * P->k + pc, P->k, bp, sap + ir, mcp, sbp + jr, (int)ncmax, dst,
                                   direct ? ldc : NR, pc == 0);
            else
              kernel_promote(kc, ap, bp, sap + ir, mcp, sbp + jr, (int)ncmax, dst, direct ? ldc : NR, pc == 0);
            if (!direct)
              for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i * NR + j] : acc[i * NR + j];
          }
        }
      }
    }
  }
  return 0;
}

int fp8_train_gemm_f32_avx2(const f8t_prob* P) {
  if (P->m <= 0 || P->n <= 0 || P->k <= 0) return 0; /* handled by the caller (fp8_train_gemm.c) */
  f8f_ctx X;
  memset(&X, 0, sizeof X);
  X.P = P;
  X.nb = (P->k + 127) / 128;
  return f8t_grid_run(P, 6.0 * GEMM_VEC, F8F_NC, tile, &X); /* the grid: fp8_train_grid.h */
}
#endif
