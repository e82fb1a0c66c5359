/* GEMM driver: special cases, the small-m path, the split of C among threads and the BLIS
 * loop nest (blocking parameters and their reasons: gemm_isa.h).
 *
 * Threads: C is cut into a gm x gn grid of tiles, one per pool thread, and each thread runs
 * the whole loop nest on its tile with its own packing buffers: no barriers, no shared
 * packed data. The price is that A rows are packed by each of the gn tile columns and B
 * columns by each of the gm tile rows; the grid is chosen to minimise the estimated time of
 * the largest tile (its flops plus that redundant packing), so a wide C (linear layers:
 * m=256, n=2048) is split along n and a tall one along m. */
#include <stdlib.h>
#include "cpu.h"
#include "gemm_isa.h"
#include "threadpool.h"

#define MR GEMM_MR
#define NR GEMM_NR
#define MC GEMM_MC
#define KC GEMM_KC
#define NC GEMM_NC

/* Scratch memory per OS thread (pool workers are persistent, so this is allocated once per
 * thread and size, never in steady state). Thread-local rather than indexed by pool slot, so
 * concurrent callers (nested calls run inline, JS worker threads) never share a buffer. */
static _Thread_local void* tl_buf[4];
static _Thread_local size_t tl_cap[4];

void* ISA_FN(gemm_scratch)(int slot, size_t bytes) {
  if (bytes < 64) bytes = 64;
  if (tl_cap[slot] >= bytes) return tl_buf[slot];
  free(tl_buf[slot]);
  tl_buf[slot] = NULL;
  tl_cap[slot] = 0;
  size_t sz = (bytes + 4095) & ~(size_t)4095;
  void* p = NULL;
  if (posix_memalign(&p, 64, sz) != 0) return NULL;
  tl_buf[slot] = p;
  tl_cap[slot] = sz;
  return p;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Memory to prefetch: `rows` runs of `bytes` bytes, `stride` bytes apart, walked by a cursor
 * (row, off) that advances `per` cache lines per call of prefetch_step. */
typedef struct {
  const char* base;
  int64_t stride;
  int rows, bytes;
  int row, off, per;
} span;

/* Sets the pace: all lines of S over `calls` calls of prefetch_step. */
static inline void span_pace(span* S, int64_t calls) {
  const int64_t lines = (int64_t)S->rows * ((S->bytes + 63) / 64 + 1);
  S->row = S->off = 0;
  S->per = (int)((lines + calls - 1) / calls);
}

/* Prefetches the next `per` lines of S (each run's last byte too: runs need not start on a
 * line boundary). Spreads a panel's worth of prefetches over the kernel calls before its use. */
static inline void prefetch_step(span* S) {
  for (int n = S->per; n > 0 && S->row < S->rows; n--) {
    const char* r = S->base + S->row * S->stride;
    if (S->off < S->bytes) {
      __builtin_prefetch(r + S->off, 0, 3);
      S->off += 64;
    } else {
      __builtin_prefetch(r + S->bytes - 1, 0, 3);
      S->row++;
      S->off = 0;
    }
  }
}

/* Source of op(B)[p0:p0+kc, j:j+nr] and of op(A)[i:i+mc, p0:p0+kc] as spans. */
static span b_source(const gemm_prob* P, int64_t p0, int kc, int64_t j, int nr) {
  const int es = P->bf16 ? 2 : 4;
  const char* b = P->bf16 ? (const char*)P->bh : (const char*)P->bf;
  if (P->tb) return (span){b + (j * P->ldb + p0) * es, P->ldb * es, nr, kc * es, 0, 0, 0};
  return (span){b + (p0 * P->ldb + j) * es, P->ldb * es, kc, nr * es, 0, 0, 0};
}
static span a_source(const gemm_prob* P, int64_t i, int mc, int64_t p0, int kc) {
  if (P->ta) return (span){(const char*)(P->a + p0 * P->lda + i), P->lda * 4, kc, mc * 4, 0, 0, 0};
  return (span){(const char*)(P->a + i * P->lda + p0), P->lda * 4, mc, kc * 4, 0, 0, 0};
}

static void pack_b(const gemm_prob* P, int64_t p0, int kc, int64_t j, int nc, float* dst) {
  if (P->dp) ISA_FN(gemm_pack_b_pairs)(P, p0, kc, j, nc, (uint32_t*)dst);
  else ISA_FN(gemm_pack_b)(P, p0, kc, j, nc, dst);
}

/* The BLIS loop nest on the C tile [i0,i1) x [j0,j1).
 * Memory latency is hidden behind the micro-kernels: in the first row block of each k block,
 * B is packed one micro-panel at a time, just before use, while the kernel calls of the
 * previous panel prefetch its source; later row blocks prefetch the next packed panel (the
 * packed B block is larger than L2). The source of the next A block is prefetched a little
 * at a time over all kernel calls of the current one. */
static int tile(const gemm_prob* P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int dp = P->dp;
  const int kcmax = dp ? GEMM_KC_DP : KC;
  const int64_t ncmax = min64(NC, (j1 - j0 + NR - 1) / NR * NR);
  /* row blocks of equal size (multiples of MR, about MC): no small last block whose few
   * kernel calls per B micro-panel would not repay loading it */
  const int64_t nblk = (i1 - i0 + MC - 1) / MC, mcb = ((i1 - i0 + nblk - 1) / nblk + MR - 1) / MR * MR;
  /* the pair layouts take the same bytes: kc/2 words per row of a panel */
  float* abuf = (float*)ISA_FN(gemm_scratch)(0, (size_t)mcb * KC * sizeof(float));
  float* bbuf = (float*)ISA_FN(gemm_scratch)(1, (size_t)KC * ncmax * sizeof(float));
  if (!abuf || !bbuf) return -1;
  const int64_t ldc = P->ldc;
  for (int64_t jc = j0; jc < j1; jc += NC) {
    const int nc = (int)min64(NC, j1 - jc);
    const int64_t panels = (nc + NR - 1) / NR;
    for (int64_t pc = 0; pc < P->k; pc += kcmax) {
      const int kc = (int)min64(kcmax, P->k - pc);
      const int ks = dp ? (kc + 1) / 2 : kc; /* k steps of the kernel */
      const float beta = pc == 0 ? P->beta : 1.0f; /* later k blocks accumulate */
      for (int64_t ic = i0; ic < i1; ic += mcb) {
        const int mc = (int)min64(mcb, i1 - ic), first = ic == i0;
        const int calls = (mc + MR - 1) / MR;
        if (dp) ISA_FN(gemm_pack_a_pairs)(P, ic, mc, pc, kc, (uint32_t*)abuf);
        else ISA_FN(gemm_pack_a)(P, ic, mc, pc, kc, abuf);
        span an = {0};
        if (ic + mcb < i1) an = a_source(P, ic + mcb, (int)min64(mcb, i1 - ic - mcb), pc, kc);
        else if (pc + kcmax < P->k) an = a_source(P, i0, (int)min64(mcb, i1 - i0), pc + kcmax, (int)min64(kcmax, P->k - pc - kcmax));
        span_pace(&an, panels * calls);
        if (first) pack_b(P, pc, kc, jc, nc < NR ? nc : NR, bbuf);
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = nc - jr < NR ? nc - jr : NR, nnr = nc - jr - NR < NR ? nc - jr - NR : NR;
          const float* bp = bbuf + (int64_t)jr * ks;
          span bn = {0};
          if (nnr > 0)
            bn = first ? b_source(P, pc, kc, jc + jr + NR, nnr) : (span){(const char*)(bp + (int64_t)NR * ks), 0, 1, NR * ks * 4, 0, 0, 0};
          span_pace(&bn, calls);
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR;
            float* c = P->c + (ic + ir) * ldc + jc + jr;
            prefetch_step(&bn);
            prefetch_step(&an);
            if (dp)
              ISA_FN(gemm_kernel_dp)(ks, (const uint32_t*)(abuf + (int64_t)ir * ks), (const uint32_t*)bp, c, ldc,
                                     P->alpha, beta, mr, nr);
            else
              ISA_FN(gemm_kernel)(ks, abuf + (int64_t)ir * ks, bp, c, ldc, P->alpha, beta, mr, nr);
          }
          if (first && nnr > 0) pack_b(P, pc, kc, jc + jr + NR, nnr, bbuf + (int64_t)(jr + NR) * ks);
        }
      }
    }
  }
  return 0;
}

typedef struct {
  const gemm_prob* P;
  int gm, gn;
  int64_t pm, pn; /* MR-row and NR-column panels of C */
  volatile int fail;
} grid_ctx;

static void grid_task(void* ctx, int t, int thread) {
  (void)thread;
  grid_ctx* G = (grid_ctx*)ctx;
  const int ti = t / G->gn, tj = t % G->gn;
  const int64_t i0 = G->pm * ti / G->gm * MR, i1 = min64(G->P->m, G->pm * (ti + 1) / G->gm * MR);
  const int64_t j0 = G->pn * tj / G->gn * NR, j1 = min64(G->P->n, G->pn * (tj + 1) / G->gn * NR);
  if (i0 < i1 && j0 < j1 && tile(G->P, i0, i1, j0, j1)) G->fail = 1;
}

/* Estimated time (ns) of the largest tile for a gm x gn grid: padded flops at a nominal
 * per-core rate plus the packing of its A rows (once per NC block) and B columns. */
static double grid_cost(const gemm_prob* P, int64_t pm, int64_t pn, int gm, int gn) {
  const double rows = (double)((pm + gm - 1) / gm * MR), cols = (double)((pn + gn - 1) / gn * NR);
  const double k = (double)P->k, flops_per_ns = 6.0 * GEMM_VEC * (P->dp ? 2 : 1), pack_ns = 0.5;
  const double nblocks = (double)(((int64_t)cols + NC - 1) / NC);
  return 2.0 * rows * cols * k / flops_per_ns + pack_ns * (rows * k * nblocks + cols * k);
}

static int run(gemm_prob* P) {
  const int64_t m = P->m, n = P->n;
  if (m <= 0 || n <= 0) return 0;
  if (P->k <= 0 || P->alpha == 0.0f) { /* C = beta * C; A and B are not read */
    for (int64_t i = 0; i < m; i++) {
      float* c = P->c + i * P->ldc;
      if (P->beta == 0.0f) memset(c, 0, (size_t)n * sizeof(float));
      else if (P->beta != 1.0f)
        for (int64_t j = 0; j < n; j++) c[j] *= P->beta;
    }
    return 0;
  }
  if (m <= GEMV_MAX_M) return ISA_FN(gemm_gemv)(P);
  grid_ctx G = {P, 1, 1, (m + MR - 1) / MR, (n + NR - 1) / NR, 0};
  /* below ~1 MFLOP a second thread costs more (wake-up, cache traffic) than it saves; inside
   * a pool task (gemmBatch) the call runs on this thread alone: one tile, A and B packed once */
  int T = 2.0 * (double)m * (double)n * (double)P->k < 1e6 || dsv3_in_task() ? 1 : dsv3_threads();
  for (; T > 1; T--) {
    double best = 0;
    for (int gm = 1; gm <= T; gm++) {
      const int gn = T / gm;
      if (gm * gn != T || gm > G.pm || gn > G.pn) continue;
      const double cost = grid_cost(P, G.pm, G.pn, gm, gn);
      if (best == 0 || cost < best) {
        best = cost;
        G.gm = gm;
        G.gn = gn;
      }
    }
    if (best > 0) break;
  }
  dsv3_parallel_for(G.gm * G.gn, grid_task, &G);
  return G.fail ? -1 : 0;
}

int ISA_FN(dsv3_gemm_f32)(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_prob P = {transA != 0, transB != 0, 0, 0, m, n, k, alpha, beta, a, lda, b, NULL, ldb, c, ldc};
  return run(&P);
}

int ISA_FN(dsv3_gemm_bf16)(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                           int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_prob P = {transA != 0, transB != 0, 1, 0, m, n, k, alpha, beta, a, lda, NULL, b, ldb, c, ldc};
#if defined(DSV3_ISA_AVX512)
  P.dp = dsv3_gemm_allow_dpbf16 && dsv3_has_avx512_bf16();
#endif
  return run(&P);
}
