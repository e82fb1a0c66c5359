/* The block-scaled FP8 training GEMM (fp8_train.h): E4M3 codes multiplied on the bf16
 * dot-product kernel (AVX-512 + avx512_bf16) or the float32 micro-kernel (other ISAs), with
 * each 128-wide k block's partial sum promoted into a float32 accumulator with its two scales
 * (DeepSeek-V3 §3.3.2, N_C = 128).
 *
 * VDPBF16PS path (AVX-512 build on a CPU with avx512_bf16), BLIS order per thread tile of C
 * (a gm x gn grid, gemm_pick_grid):
 *   for each NC-wide column block: for each KC-deep slice (KC = 256, two 128-blocks):
 *     pack B's codes into bf16 pair panels (pack_codes), then for each MC-tall row block: pack
 *     A's codes likewise, then per MR x NR tile (kernel_dp_promote):
 *       for each 128-block of the slice: P = the block's code products summed in 2 x MR zmm
 *         registers (64 VDPBF16PS steps), then  acc = acc + P * (sA(i) * sB(j))  in registers
 *         <- the promotion, float32, no FMA; acc is the C tile itself (a local tile for edge
 *         tiles and for beta 1, whose finished sum is added to C).
 *   Every E4M3 value is exact in bf16 (3 mantissa bits) and every product of two exact in
 *   float32; the panels are made from the codes directly (integer decode, no decoded copy of
 *   either operand, nothing to synchronise before the multiply). NaN codes decode to NaN.
 * Float32 path (AVX-512 without bf16, AVX2, scalar):
 *   1. decode (fp8_train_decode.c): A's codes to float32 [m][k] (COLS layouts transposed, 8x8 blocks in
 *      registers), B's to float32 in their stored layout; the fp32 GEMM's packers
 *      (gemm_pack_a / _b) then reproduce the codes exactly in their micro-panels;
 *   2. multiply as above with the float32 micro-kernel (gemm_kernel) per 128-block into an L1
 *      tile, promoted by promote() (one extra tile store and reload per block). */
#include <stdlib.h>
#include "fp8_train.h"
#include "fp8_train_gemm_f32.h"
#include "fp8_train_decode.h"
#include "fp8_weight_isa.h" /* gemm_isa.h (packers, kernels, blocking), E4M3 decoders, fp8_csr_* */
#include "threadpool.h"
#include "fp8_train_grid.h" /* the thread grid, shared with fp8_train_gemm_f32.c */

#define MR GEMM_MR
#define NR GEMM_NR
#define MC GEMM_MC
#define F8T_NC 2048
/* k slice per packing: a multiple of 128; the VDPBF16PS panels hold bf16 (2 bytes per value),
 * so 256 k keeps the B micro-panel at 16 KB (AVX-512 float32 panels: 128 k, 16 KB) */
#if defined(DSV3_ISA_AVX512)
#define F8T_KC(dp) ((dp) ? 256 : 128)
#else
#define F8T_KC(dp) 256
#endif

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* thread-local grow-only scratch: slots 0 (A panels), 1 (B panels), 4, 5 (their scales); the
 * decoded operands (used by all threads) are slots 2, 3 of the calling thread */
static _Thread_local void* tl_buf[6];
static _Thread_local size_t tl_cap[6];
static void* scratch(int slot, size_t bytes) {
  if (bytes < 64) bytes = 64;
  if (tl_cap[slot] >= bytes) return tl_buf[slot];
  free(tl_buf[slot]);
  tl_buf[slot] = NULL;
  tl_cap[slot] = 0;
  const size_t sz = (bytes + 4095) & ~(size_t)4095;
  void* p = NULL;
  if (posix_memalign(&p, 64, sz) != 0) return NULL;
  tl_buf[slot] = p;
  tl_cap[slot] = sz;
  return p;
}

/* ---- 2. the blocked multiply ------------------------------------------------------------- */

typedef struct {
  const f8t_prob* P;
  gemm_prob G; /* the decoded operands as the fp32 GEMM's A and B (packers' view) */
  int64_t nb;  /* k blocks */
} mul_ctx;

/* acc[MR][NR] = acc + p * (sa[i] * sb[j]): the N_C promotion, one rounding per operation */
__attribute__((optimize("fp-contract=off"))) static void promote(float* restrict acc, const float* restrict p,
                                                                 const float* sa, const float* sb) {
  for (int i = 0; i < MR; i++) {
    const float si = sa[i];
    float* a = acc + i * NR;
    const float* q = p + i * NR;
    for (int j = 0; j < NR; j++) {
      const float s = si * sb[j];
      const float t = q[j] * s;
      a[j] = a[j] + t;
    }
  }
}

#if defined(DSV3_ISA_AVX512)
static inline __m512bh f8t_bh(__m512i x) {
  __m512bh r;
  memcpy(&r, &x, sizeof r);
  return r;
}

/* The bf16 bits of e4m3(c), one code (the tails of pack_codes), from the float32 bits, integer
 * arithmetic only (no denormal made or read): magnitude m >= 8: (m << 20) + (120 << 23); m < 8:
 * m * 2^-9; the sign ORed back; NaN (m = 0x7F): all ones, as fp8_dec8_exact gives. The low 16
 * bits of the value are zero: its bf16 bits are the high half, exactly. */
static inline uint32_t f8t_bf16(uint8_t c) {
  const uint32_t m = c & 0x7fu;
  if (m == 0x7fu) return 0xffffu;
  uint32_t v;
  if (m >= 8) v = (m << 20) + (120u << 23);
  else {
    const float d = (float)m * 0x1p-9f;
    memcpy(&v, &d, 4);
  }
  return (v | (uint32_t)(c & 0x80u) << 24) >> 16;
}

/* The bf16 bits of 16 codes as 16 words (of consecutive k: 8 pair words, k even in the low half),
 * as f8t_bf16 gives them, decoded in 16-bit lanes: magnitude
 * m >= 8: the high half of (m << 20) + (120 << 23), i.e. (m << 4) + 0x3C00; m < 8: the bf16 bits
 * of m * 2^-9 (exact: at most 3 significant bits) from a table; the sign bit ORed back; NaN
 * (m = 0x7F): all ones. */
static inline __m256i f8t_pairs16(__m128i c8) {
  const __m256i c = _mm256_cvtepu8_epi16(c8), x7f = _mm256_set1_epi16(0x7f);
  const __m256i m = _mm256_and_si256(c, x7f);
  const __m256i sub = _mm256_permutexvar_epi16(m, _mm256_setr_epi16(0, 0x3b00, 0x3b80, 0x3bc0, 0x3c00, 0x3c20, 0x3c40, 0x3c60,
                                                                   0, 0, 0, 0, 0, 0, 0, 0));
  __m256i v = _mm256_add_epi16(_mm256_slli_epi16(m, 4), _mm256_set1_epi16(0x3c00));
  v = _mm256_blendv_epi8(v, sub, _mm256_cmpgt_epi16(_mm256_set1_epi16(8), m));
  v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)), 8));
  return _mm256_or_si256(v, _mm256_cmpeq_epi16(m, x7f));
}

/* VDPBF16PS panels straight from E4M3 codes (what gemm_pack_a_pairs / gemm_pack_b_pairs make of
 * decoded operands, without a decoded copy): the panels of R (MR for A, NR for B) consecutive
 * operand rows [r0, r0 + rn) of an operand with `rows` rows, k [p0, p0 + kc); per panel
 * [ceil(kc/2)][R] words of two bf16 values (k even in the low half), zero padded to R rows and
 * an even k. ROWS layouts (codes [rows][k]): 8 rows x 16 codes decoded, transposed as 8x8
 * words; COLS layouts (codes [k][rows]): a panel's values of k and of k + 1 are contiguous. */
_Static_assert(NR % 8 == 0 && (MR % 8 == 0 || MR % 8 == 4), "pack_codes stores rows in groups of 8 (or a last 4)");
static void pack_codes(const uint8_t* codes, int cols, int64_t rows, int64_t k, int64_t r0, int rn, int64_t p0,
                       int kc, int R, uint32_t* dst) {
  const int kc2 = (kc + 1) / 2;
  for (int ir = 0; ir < rn; ir += R) {
    const int rr = rn - ir < R ? rn - ir : R;
    uint32_t* d = dst + (int64_t)ir * kc2;
    const int64_t i = r0 + ir;
    int q0 = 0;
    if (cols) {
      for (int l0 = 0; l0 < R; l0 += 16) {
        const int nl = rr - l0 <= 0 ? 0 : rr - l0 < 16 ? rr - l0 : 16, w = R - l0 < 16 ? R - l0 : 16;
        const __mmask16 out = (__mmask16)((1u << w) - 1u);
        for (int q = 0; q < kc2; q++) {
          const uint8_t* s = codes + (p0 + 2 * q) * rows + i + l0;
          const int odd = 2 * q + 1 < kc;
          __m128i ce, co;
          if (nl == w && i + l0 + 16 <= rows) { /* whole lanes, a 16-byte load stays inside the row */
            ce = _mm_loadu_si128((const __m128i*)s);
            co = odd ? _mm_loadu_si128((const __m128i*)(s + rows)) : _mm_setzero_si128();
          } else { /* lanes past rr: code 0 -> 0 */
            uint8_t t[2][16] = {{0}};
            memcpy(t[0], s, (size_t)nl);
            if (odd) memcpy(t[1], s + rows, (size_t)nl);
            ce = _mm_loadu_si128((const __m128i*)t[0]);
            co = _mm_loadu_si128((const __m128i*)t[1]);
          }
          /* the 16 lanes' bf16 bits at k (e) and k + 1 (o), interleaved into pair words */
          const __m256i e = f8t_pairs16(ce), o = f8t_pairs16(co);
          const __m256i lo = _mm256_unpacklo_epi16(e, o), hi = _mm256_unpackhi_epi16(e, o); /* lanes 0-3 | 8-11, 4-7 | 12-15 */
          const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                                               _mm256_permute2x128_si256(lo, hi, 0x31), 1);
          if (w == 16) _mm512_storeu_si512((void*)(d + q * R + l0), v);
          else _mm512_mask_storeu_ps((float*)(d + q * R + l0), out, _mm512_castsi512_ps(v));
        }
      }
      continue;
    }
    if (rr == R) {
      for (; 2 * q0 + 16 <= kc; q0 += 8) {
        for (int g = 0; g < R; g += 8) {
          const int nrow = R - g < 8 ? R - g : 8;
          __m256 v[8];
          for (int r = 0; r < 8; r++)
            v[r] = r < nrow ? _mm256_castsi256_ps(f8t_pairs16(_mm_loadu_si128((const __m128i*)(codes + (i + g + r) * k + p0 + 2 * q0))))
                            : _mm256_setzero_ps();
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) { /* nrow: 8, or 4 (the last group of MR = 12) */
            if (nrow == 8) _mm256_storeu_ps((float*)(d + (q0 + q) * R + g), v[q]);
            else _mm_storeu_ps((float*)(d + (q0 + q) * R + g), _mm256_castps256_ps128(v[q]));
          }
        }
      }
    }
    for (int q = q0; q < kc2; q++) {
      const int64_t p = p0 + 2 * q;
      for (int r = 0; r < rr; r++) {
        const uint8_t* row = codes + (i + r) * k;
        d[q * R + r] = f8t_bf16(row[p]) | (2 * q + 1 < kc ? f8t_bf16(row[p + 1]) << 16 : 0u);
      }
      for (int r = rr; r < R; r++) d[q * R + r] = 0;
    }
  }
}

/* One MR x NR tile over a kc-deep slice of VDPBF16PS panels (a: [kc/2][MR], b: [kc/2][NR]
 * pairs), the promotion in registers: per 128-wide block, P = the block's sum of code products
 * (2 x MR zmm accumulators, never stored), then per element
 *   acc = acc + P * (sa[i] * sb[j])      (float32, one rounding per operation, no FMA)
 * with sa / sb the block's scales (next block: + lsa / + lsb). acc is [MR][lda]; `init`: it
 * starts at +0 (not read; +0 + t keeps the oracle's sign of zero). Same values as
 * gemm_kernel_dp per block + promote(), without the tile's store and reload per block. */
__attribute__((optimize("fp-contract=off"))) static void kernel_dp_promote(int kc, const uint32_t* restrict a,
                                                                           const uint32_t* restrict b, const float* sa,
                                                                           int lsa, const float* sb, int lsb,
                                                                           float* acc, int64_t lda, int init) {
  for (int i = 0; i < MR; i++) {
    __builtin_prefetch(acc + i * lda, 1, 3);
    __builtin_prefetch(acc + i * lda + NR - 1, 1, 3);
  }
  for (int q0 = 0; q0 < kc; q0 += 128, sa += lsa, sb += lsb) {
    const int steps = ((kc - q0 < 128 ? kc - q0 : 128) + 1) / 2;
    __m512 p[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) p[i][0] = p[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int q = 0; q < steps; q++) {
      const __m512bh b0 = f8t_bh(_mm512_load_si512((const void*)b));
      const __m512bh b1 = f8t_bh(_mm512_load_si512((const void*)(b + 16)));
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++) {
        const __m512bh ai = f8t_bh(_mm512_set1_epi32((int)a[i]));
        p[i][0] = _mm512_dpbf16_ps(p[i][0], ai, b0);
        p[i][1] = _mm512_dpbf16_ps(p[i][1], ai, b1);
      }
      a += MR;
      b += NR;
    }
    const __m512 sb0 = _mm512_loadu_ps(sb), sb1 = _mm512_loadu_ps(sb + 16);
    const int first = init && q0 == 0;
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m512 si = _mm512_set1_ps(sa[i]);
      float* r = acc + i * lda;
      const __m512 t0 = _mm512_mul_ps(p[i][0], _mm512_mul_ps(si, sb0));
      const __m512 t1 = _mm512_mul_ps(p[i][1], _mm512_mul_ps(si, sb1));
      const __m512 c0 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(r);
      const __m512 c1 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(r + 16);
      _mm512_storeu_ps(r, _mm512_add_ps(c0, t0));
      _mm512_storeu_ps(r + 16, _mm512_add_ps(c1, t1));
    }
  }
}
#endif

static int tile(void* ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  mul_ctx* X = (mul_ctx*)ctx;
  const f8t_prob* P = X->P;
  const gemm_prob* G = &X->G;
  const int dp = P->dp;
  const int KCF = F8T_KC(dp);
  const int64_t ncmax = min64(F8T_NC, (j1 - j0 + NR - 1) / NR * NR);
  /* panels: float32 [kc][MR|NR], or pairs [kc/2][MR|NR] of uint32 (same bytes or fewer) */
  const int nbk = KCF / 128; /* k blocks per slice */
  const int mcp = (MC + MR - 1) / MR * MR;
  float* abuf = (float*)scratch(0, (size_t)MC * KCF * sizeof(float));
  float* bbuf = (float*)scratch(1, (size_t)KCF * ncmax * sizeof(float));
  /* the slice's scales: A [nbk][mcp] of the row block, B [nbk][ncmax] of the column block;
   * zero past the last row / column (their padded products are zero anyway) */
  float* sap = (float*)scratch(4, (size_t)nbk * mcp * sizeof(float));
  float* sbp = (float*)scratch(5, (size_t)nbk * ncmax * sizeof(float));
  if (!abuf || !bbuf || !sap || !sbp) return -1;
  float acc[MR * NR] __attribute__((aligned(64)));
  float pt[MR * NR] __attribute__((aligned(64)));
  const int64_t ldc = P->ldc;
  for (int64_t jc = j0; jc < j1; jc += F8T_NC) {
    const int nc = (int)min64(F8T_NC, j1 - jc);
    for (int64_t pc = 0; pc < P->k; pc += KCF) {
      const int kc = (int)min64(KCF, P->k - pc);
      const int ks = dp ? (kc + 1) / 2 : kc; /* panel depth in kernel steps */
#if defined(DSV3_ISA_AVX512)
      if (dp) pack_codes(P->b.codes, P->b.layout & 1, P->n, P->k, jc, nc, pc, kc, NR, (uint32_t*)bbuf);
      else
#endif
        ISA_FN(gemm_pack_b)(G, pc, kc, jc, nc, bbuf);
      for (int q = 0; q * 128 < kc; q++)
        for (int j = 0; j < ncmax; j++) sbp[q * ncmax + j] = j < nc ? f8t_scale(&P->b, P->n, X->nb, jc + j, (pc >> 7) + q) : 0.0f;
      for (int64_t ic = i0; ic < i1; ic += MC) {
        const int mc = (int)min64(MC, i1 - ic);
#if defined(DSV3_ISA_AVX512)
        if (dp) pack_codes(P->a.codes, P->a.layout & 1, P->m, P->k, ic, mc, pc, kc, MR, (uint32_t*)abuf);
        else
#endif
          ISA_FN(gemm_pack_a)(G, ic, mc, pc, kc, abuf);
        for (int q = 0; q * 128 < kc; q++)
          for (int i = 0; i < mcp; i++) sap[q * mcp + i] = i < mc ? f8t_scale(&P->a, P->m, X->nb, ic + i, (pc >> 7) + q) : 0.0f;
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = nc - jr < NR ? nc - jr : NR;
          const float* bp = bbuf + (int64_t)jr * ks;
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR;
            const float* ap = abuf + (int64_t)ir * ks;
            float* c = P->c + (ic + ir) * ldc + jc + jr;
#if defined(DSV3_ISA_AVX512)
            if (dp) {
              /* full tiles accumulate in C itself unless the finished sum is added to C */
              const int add = pc == 0 && P->beta != 0.0f, direct = mr == MR && nr == NR && !add;
              float* dst = direct ? c : acc;
              if (!direct && pc > 0)
                for (int i = 0; i < MR; i++)
                  for (int j = 0; j < NR; j++) acc[i * NR + j] = i < mr && j < nr ? c[i * ldc + j] : 0.0f;
              kernel_dp_promote(kc, (const uint32_t*)ap, (const uint32_t*)bp, sap + ir, mcp, sbp + jr, ncmax, dst,
                                direct ? ldc : NR, pc == 0);
              if (!direct)
                for (int i = 0; i < mr; i++)
                  for (int j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i * NR + j] : acc[i * NR + j];
              continue;
            }
#endif
            if (pc == 0) memset(acc, 0, sizeof acc);
            else
              for (int i = 0; i < MR; i++)
                for (int j = 0; j < NR; j++) acc[i * NR + j] = i < mr && j < nr ? c[i * ldc + j] : 0.0f;
            for (int q0 = 0; q0 < kc; q0 += 128) {
              const int blen = kc - q0 < 128 ? kc - q0 : 128;
              const float* sa = sap + (q0 >> 7) * mcp + ir;
              const float* sb = sbp + (q0 >> 7) * ncmax + jr;
              if (dp)
                ISA_FN(gemm_kernel_dp)((blen + 1) / 2, (const uint32_t*)ap + (q0 / 2) * MR, (const uint32_t*)bp + (q0 / 2) * NR,
                                       pt, NR, 1.0f, 0.0f, MR, NR);
              else
                ISA_FN(gemm_kernel)(blen, ap + q0 * MR, bp + q0 * NR, pt, NR, 1.0f, 0.0f, MR, NR);
              promote(acc, pt, sa, sb);
            }
            const int add = pc == 0 && P->beta != 0.0f;
            for (int i = 0; i < mr; i++)
              for (int j = 0; j < nr; j++) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i * NR + j] : acc[i * NR + j];
          }
        }
      }
    }
  }
  return 0;
}

static int run(const f8t_prob* P);

/* beta 1 adds the *finished* sum to C: with more than one k slice per packing, the slices
 * accumulate in a scratch C (beta 0) that is added at the end */
int ISA_FN(dsv3_fp8_train_gemm)(const f8t_prob* P) {
  if (P->beta == 0.0f || P->k <= F8T_KC(P->dp) || P->m <= 0 || P->n <= 0) return run(P);
  f8t_prob Q = *P;
  Q.beta = 0.0f;
  Q.ldc = P->n;
  Q.c = (float*)malloc((size_t)P->m * P->n * sizeof(float));
  if (!Q.c) return -1;
  const int r = run(&Q);
  if (r == 0)
    for (int64_t i = 0; i < P->m; i++)
      for (int64_t j = 0; j < P->n; j++) P->c[i * P->ldc + j] += Q.c[i * P->n + j];
  free(Q.c);
  return r;
}

static int run(const f8t_prob* P) {
  if (P->m <= 0 || P->n <= 0) return 0;
  if (P->k <= 0) { /* empty sum: +0 */
    for (int64_t i = 0; i < P->m; i++)
      for (int64_t j = 0; j < P->n; j++)
        if (P->beta == 0.0f) P->c[i * P->ldc + j] = 0.0f;
    return 0;
  }
#if defined(DSV3_ISA_AVX2)
  return fp8_train_gemm_f32_avx2(P); /* codes decoded in packing, promotion in registers */
#endif
  const int T = P->threads < 1 ? 1 : P->threads;
  int codes_packed = 0; /* VDPBF16PS: both operands packed straight from their codes, nothing decoded */
#if defined(DSV3_ISA_AVX512)
  codes_packed = P->dp;
#endif
  float* af = NULL;
  void* bd = NULL;
  if (!codes_packed) {
    af = (float*)scratch(2, (size_t)P->m * P->k * sizeof(float));
    bd = scratch(3, (size_t)P->n * P->k * sizeof(float));
    if (!af || !bd) return -1;
    ISA_FN(fp8_train_decode)(P, T, af, bd); /* fp8_train_decode.c */
  }
  mul_ctx X;
  memset(&X, 0, sizeof X);
  X.P = P;
  X.nb = (P->k + 127) / 128;
  X.G.ta = 0;
  X.G.a = af;
  X.G.lda = P->k;
  X.G.tb = !(P->b.layout & 1); /* ROWS: stored [n][k] */
  X.G.ldb = (P->b.layout & 1) ? P->n : P->k;
  X.G.bf = (const float*)bd; /* the packers' view of the decoded operands (float32 path only) */
  X.G.bh = NULL;
  X.G.bf16 = 0;
  X.G.dp = 0;
  X.G.m = P->m;
  X.G.n = P->n;
  X.G.k = P->k;
  X.G.alpha = 1.0f;
  X.G.c = P->c;
  X.G.ldc = P->ldc;
  /* the grid's cost model (fp8_train_grid.h): VDPBF16PS does two products per lane and step */
  return f8t_grid_run(P, (P->dp ? 12.0 : 6.0) * (GEMM_VEC > 1 ? GEMM_VEC : 2), F8T_NC, tile, &X);
}
