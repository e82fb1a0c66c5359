/* FP8-weight linear, large m (prefill): W is decoded into the packed-B layout of the fp32 GEMM
 * (gemm_isa.h: NR-wide micro-panels [kc][NR], zero padded) and multiplied with that GEMM's own
 * A packing (gemm_pack_a) and micro-kernel (gemm_kernel), so prefill runs at the fp32 GEMM's
 * compute rate while W stays one byte per weight in memory.
 *
 * Blocking (BLIS order, per thread tile of y):
 *   for each NCF-wide block of W rows (output columns):
 *     for each KC-deep slice of k:
 *       decode W[jc:jc+NCF, pc:pc+KC] into packed B: KC*NCF*4 bytes (AVX2: 256 x 512 -> 512 KB,
 *       an L2-sized chunk, rather than the fp32 GEMM's L3-resident 2 MB NC block: decoding is
 *       cheap, so the chunk can stay near the core);
 *       for each MC-tall block of x: pack it (gemm_pack_a, L2), then MR x NR micro-kernel
 *       calls, the B micro-panel (16 KB) in L1.
 * The decode works on 8 rows x 8 k at a time: 8 arithmetic decodes (fp8_weight_isa.h) along k of
 * 8 W rows, an 8x8 in-register transpose, 8 aligned stores into the panel. Here each weight
 * takes two multiplies (by 2^120, then by the scale), valid for any scale, plus a per-lane NaN
 * blend (NaN codes -> NaN), the cost being shared by all m rows of x. An NR panel never
 * straddles a 128-row scale block (NR divides 128) and an 8-wide k group never straddles a
 * 128-column one, so one scale serves each 8x8 group.
 * Threads: y is cut into a gm x gn grid of tiles, one per pool thread, each with its own
 * buffers; the grid minimises the largest tile's estimated time (flops + x packing per NCF
 * block + W decoding), so a wide y (m = 256, n = 2048) is split along n. */
#include <stdlib.h>
#include "fp8_weight_isa.h"
#include "threadpool.h"

#define MR GEMM_MR
#define NR GEMM_NR
#define KC GEMM_KC
#define MC GEMM_MC
#define NCF 512

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static _Thread_local void* tl_buf[3];
static _Thread_local size_t tl_cap[3];

void* ISA_FN(fp8_scratch)(int slot, size_t bytes) {
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

/* Decodes W rows [j0, j0+nc) x k [p0, p0+kc) into NR-wide packed panels at dst ([kc][NR] each,
 * panel jr at dst + jr*kc); j0 is a multiple of NR, p0 of 8. */
static void decode_panels(const fp8_prob* P, int64_t p0, int kc, int64_t j0, int nc, float* dst) {
  const int64_t k = P->k;
  for (int jr = 0; jr < nc; jr += NR) {
    const int nr = nc - jr < NR ? nc - jr : NR;
    float* d = dst + (int64_t)jr * kc;
    const int64_t j = j0 + jr;
    int pa = 0;
#if defined(DSV3_ISA_AVX512) || defined(DSV3_ISA_AVX2)
    if (nr == NR)
      for (; pa + 8 <= kc; pa += 8) {
        const int64_t p = p0 + pa;
        const __m256 sc = _mm256_set1_ps(fp8_scale(P, j, p));
        for (int g = 0; g < NR; g += 8) {
          __m256 v[8];
          const uint8_t* c = P->w + (j + g) * k + p;
          for (int r = 0; r < 8; r++) v[r] = fp8_dec8_exact(c + r * k, sc);
          gemm_transpose8(v);
          for (int q = 0; q < 8; q++) _mm256_store_ps(d + (pa + q) * NR + g, v[q]);
        }
      }
#endif
    for (int pp = pa; pp < kc; pp++) {
      const int64_t p = p0 + pp;
      for (int q = 0; q < nr; q++) d[pp * NR + q] = fp8_weight(P->w[(j + q) * k + p], fp8_scale(P, j + q, p));
      for (int q = nr; q < NR; q++) d[pp * NR + q] = 0.0f;
    }
  }
}

/* The loop nest on the y tile [i0,i1) x [j0,j1). */
static int tile(const fp8_prob* P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t ncmax = min64(NCF, (j1 - j0 + NR - 1) / NR * NR);
  float* abuf = (float*)ISA_FN(fp8_scratch)(0, (size_t)MC * KC * sizeof(float));
  float* bbuf = (float*)ISA_FN(fp8_scratch)(1, (size_t)KC * ncmax * sizeof(float));
  if (!abuf || !bbuf) return -1;
  /* x as op(A) of the fp32 GEMM: [m,k] row-major, not transposed, fp32 */
  gemm_prob A;
  memset(&A, 0, sizeof A);
  A.m = P->m;
  A.n = P->n;
  A.k = P->k;
  A.alpha = 1.0f;
  A.a = P->x;
  A.lda = P->k;
  const int64_t ldc = P->n;
  for (int64_t jc = j0; jc < j1; jc += NCF) {
    const int nc = (int)min64(NCF, j1 - jc);
    for (int64_t pc = 0; pc < P->k; pc += KC) {
      const int kc = (int)min64(KC, P->k - pc);
      const float beta = pc == 0 ? P->beta : 1.0f; /* later k slices accumulate */
      decode_panels(P, pc, kc, jc, nc, bbuf);
      for (int64_t ic = i0; ic < i1; ic += MC) {
        const int mc = (int)min64(MC, i1 - ic);
        ISA_FN(gemm_pack_a)(&A, ic, mc, pc, kc, abuf);
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = nc - jr < NR ? nc - jr : NR;
          const float* bp = bbuf + (int64_t)jr * kc;
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR;
            ISA_FN(gemm_kernel)(kc, abuf + (int64_t)ir * kc, bp, P->y + (ic + ir) * ldc + jc + jr, ldc, 1.0f, beta,
                                mr, nr);
          }
        }
      }
    }
  }
  return 0;
}

typedef struct {
  const fp8_prob* P;
  int gm, gn;
  int64_t pm, pn; /* MR-row and NR-column panels of y */
  volatile int fail;
} grid_ctx;

static void grid_task(void* ctx, int t, int thread) {
  (void)thread;
  grid_ctx* G = (grid_ctx*)ctx;
  int64_t i0, i1, j0, j1;
  gemm_grid_tile(t, G->gm, G->gn, G->pm, G->pn, G->P->m, G->P->n, &i0, &i1, &j0, &j1);
  if (i0 >= i1 || j0 >= j1) return;
  const unsigned csr = fp8_csr_enter();
  if (tile(G->P, i0, i1, j0, j1)) G->fail = 1;
  fp8_csr_leave(csr);
}

/* Estimated ns of the largest tile of a gm x gn grid: flops at a nominal per-core rate, x
 * packing once per NCF block, W decoding once. */
static double grid_cost(const void* prob, int64_t pm, int64_t pn, int gm, int gn) {
  const fp8_prob* P = (const fp8_prob*)prob;
  const double rows = (double)((pm + gm - 1) / gm * MR), cols = (double)((pn + gn - 1) / gn * NR);
  const double k = (double)P->k, flops_per_ns = 6.0 * (GEMM_VEC > 1 ? GEMM_VEC : 2);
  const double nblocks = (double)(((int64_t)cols + NCF - 1) / NCF);
  return 2.0 * rows * cols * k / flops_per_ns + 0.5 * rows * k * nblocks + 0.3 * cols * k;
}

int ISA_FN(fp8_weight_gemm)(const fp8_prob* P) {
  grid_ctx G = {P, 1, 1, (P->m + MR - 1) / MR, (P->n + NR - 1) / NR, 0};
  const int T = 2.0 * (double)P->m * (double)P->n * (double)P->k < 1e6 ? 1 : dsv3_threads();
  gemm_pick_grid(T, G.pm, G.pn, grid_cost, P, &G.gm, &G.gn);
  dsv3_parallel_for(G.gm * G.gn, grid_task, &G);
  return G.fail ? -1 : 0;
}
