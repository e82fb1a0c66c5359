/* GEMM driver: special cases, the small-m path, the split of C among threads and the BLIS
 * loop nest (blocking parameters and their reasons: gemm_isa.h).
 *
 * Threads: C is cut into a gm x gn grid of tiles, one per pool thread, and each thread runs
 * the loop nest on its tile with its own packing buffers: no barriers, no shared packed data.
 * The price is that A rows are packed by each of the gn tile columns and B columns by each of
 * the gm tile rows; the grid is chosen to minimise the estimated time of the largest tile (its
 * flops plus that redundant packing), so a wide C (linear layers: m=256, n=2048) is split
 * along n and a tall one along m. The loop nest is cut into small work items, and a thread
 * that has finished its tile takes the unclaimed items of the others (work stealing, see
 * "work items" below): on this shared VM one vCPU is often descheduled for a while, and
 * fixed tiles then made each call wait for the stalled thread's whole tile. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "cpu.h"
#include "gemm_isa.h"
#include "threadpool.h"

#define MR GEMM_MR
#define NR GEMM_NR
#define MC GEMM_MC
#define KC GEMM_KC
#define NC GEMM_NC

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
  const int es = P->ah ? 2 : 4;
  const char* a = P->ah ? (const char*)P->ah : (const char*)P->a;
  if (P->ta) return (span){a + (p0 * P->lda + i) * es, P->lda * es, kc, mc * es, 0, 0, 0};
  return (span){a + (i * P->lda + p0) * es, P->lda * es, mc, kc * es, 0, 0, 0};
}

static void pack_b(const gemm_prob* P, int64_t p0, int kc, int64_t j, int nc, float* dst) {
  if (P->dp) ISA_FN(gemm_pack_b_pairs)(P, p0, kc, j, nc, (uint32_t*)dst);
  else ISA_FN(gemm_pack_b)(P, p0, kc, j, nc, dst);
}

/* 1 when the kernels should read A in place (gemm_kernel_rows) instead of packing it: fp32 A
 * stored [m,k], each A block meeting at most DIRECT_MAX_N columns of C (a thread's tile is
 * ncols wide), and A rows that do not pile up in a few L1 sets. Packing A costs about as much
 * as 40 flops per element (measured ~25% of the call at n = 128), paid back only over the
 * columns of C each packed A micro-panel meets; reading in place, each kernel call loads MR
 * row segments of ks floats, lda apart, and keeps them in L1 next to the 16 KB B panel. L1
 * (32 KB, 8 ways) has 64 sets of 64-byte lines, so rows 4 KB apart (lda = 1024) all land in the
 * same sets; allowed are strides putting at most 3 row segments in any set (plus the B
 * panel's 4 lines per set: within 8 ways). */
#define DIRECT_MAX_N 128
/* The same for bf16 bits A on the VDPBF16PS path (gemm_bf16ab, A stored [m,k]): the kernel
 * (gemm_kernel_dp_rows) broadcasts each pair word from where it lies. Packing the pairs of bits
 * is cheaper than packing float32 A (no rounding, half the bytes), so the break-even is wider. */
#define DIRECT_MAX_N_DP 256
static int use_direct_a(const gemm_prob* P, int64_t ncols) {
  if (P->ta) return 0;
  if (P->dp ? !P->ah || ncols > DIRECT_MAX_N_DP : P->ah || gemm_round_a(P) || ncols > DIRECT_MAX_N) return 0;
  /* the L1 lines of one micro-panel's row segments (every micro-panel and k block has the same
   * pattern up to a common shift) */
  const int es = P->ah ? 2 : 4;
  const char* a = P->ah ? (const char*)P->ah : (const char*)P->a;
  const int64_t bytes = min64(P->k, P->dp ? GEMM_KC_DP : KC) * es;
  int count[64] = {0};
  uintptr_t next = 0; /* first line not yet counted (a line two rows share counts once) */
  for (int i = 0; i < MR; i++) {
    const uintptr_t s0 = (uintptr_t)(a + i * P->lda * es), l1 = (s0 + bytes - 1) >> 6;
    for (uintptr_t l = (s0 >> 6) > next ? s0 >> 6 : next; l <= l1 && l < (s0 >> 6) + 64; l++)
      if (++count[l & 63] > 3) return 0;
    next = l1 + 1;
  }
  return 1;
}

/* Packs the A block [ic, ic+mc) x [pc, pc+kc) into abuf, or with direct A only its last,
 * partial micro-panel (full ones are read in place). */
static void pack_a_block(const gemm_prob* P, int direct, int64_t ic, int mc, int64_t pc, int kc, int ks, float* abuf) {
  const int full = direct ? mc / MR * MR : 0; /* rows read in place */
  if (full == mc) return;
  if (P->dp) ISA_FN(gemm_pack_a_pairs)(P, ic + full, mc - full, pc, kc, (uint32_t*)(abuf + (int64_t)full * ks));
  else ISA_FN(gemm_pack_a)(P, ic + full, mc - full, pc, kc, abuf + (int64_t)full * ks);
}

/* One micro-kernel call: rows [ic+ir, ic+ir+mr) of the A block (mc rows) against the B
 * panel bp. With A read in place the kernel prefetches the rows of the next call: the next
 * micro-panel down, or after the last one the block's first (the next B panel's calls). */
static inline void kernel_call(const gemm_prob* P, int direct, const float* abuf, int64_t ic, int ir, int mr, int mc,
                               int64_t pc, int kc, int ks, const float* bp, float* c, float beta, int nr) {
  if (P->dp && direct && mr == MR) {
    const uint16_t* a = P->ah + (ic + ir) * P->lda + pc;
    const uint16_t* an = ir + 2 * MR <= mc ? a + MR * P->lda : P->ah + ic * P->lda + pc;
    ISA_FN(gemm_kernel_dp_rows)(kc, a, P->lda, an, (const uint32_t*)bp, c, P->ldc, P->alpha, beta, nr);
  } else if (P->dp)
    ISA_FN(gemm_kernel_dp)(ks, (const uint32_t*)(abuf + (int64_t)ir * ks), (const uint32_t*)bp, c, P->ldc, P->alpha,
                           beta, mr, nr);
  else if (direct && mr == MR) {
    const float* a = P->a + (ic + ir) * P->lda + pc;
    const float* an = ir + 2 * MR <= mc ? a + MR * P->lda : P->a + ic * P->lda + pc;
    ISA_FN(gemm_kernel_rows)(ks, a, P->lda, an, bp, c, P->ldc, P->alpha, beta, nr);
  } else
    ISA_FN(gemm_kernel)(ks, abuf + (int64_t)ir * ks, bp, c, P->ldc, P->alpha, beta, mr, nr);
}

/* ---- work items and their schedule ----------------------------------------------------------
 *
 * The loop nest is cut into work items. The k loop and the NC column loop form blocks
 * b = (jc, pc), jc major; inside a block, C is cut into row blocks r (mcb rows, about MC, a
 * multiple of MR) and column chunks c (cpan NR-wide panels), and item (b, r, c) computes that
 * C region's contribution of the block's k slice: pack A block (b, r) unless this thread's
 * previous item packed it, pack B chunk (b, c) unless this thread already did in this block
 * (one panel at a time, just before its first use), then the micro-kernels.
 *
 * Threads: C is split into a gm x gn grid of tiles of whole row blocks and chunks, one per pool
 * task (grid_cost; a single thread has one tile and claims nothing). Each task walks the blocks in order, taking the items of
 * its own tile front to back (the same loop order and packing as one thread on that tile:
 * A packed once per row block, B once per k block) and then, before moving to the next block,
 * takes items from the back of the other tiles that are still unclaimed. A thread that the
 * host deschedules (this VM has two vCPUs and noisy neighbours) thus holds back the call by
 * at most the item it is running, where fixed tiles made the call wait for all of its tile.
 * A stolen item costs packing its A block and B chunk once more (into the thief's buffers).
 *
 * One dependency: item (b, r, c) with pc > 0 adds into the C region of item (b-1, r, c), so
 * it waits (spinning) until that one is done. A thread moves to block b only once every item
 * of b-1 is claimed, and claimed items are being run, so the wait always ends. */
typedef struct {
  int64_t jc, pc;   /* first column and first k of the block */
  int nc, kc, ks;   /* columns, k values, kernel k steps (k pairs on the dp path) */
  int np, ncc;      /* NR panels, column chunks */
} blk_t;

typedef struct {
  _Alignas(64) _Atomic uint64_t q; /* unclaimed items of a tile in a block: [lo, hi) as hi << 32 | lo */
} queue_t;

typedef struct {
  const gemm_prob* P;
  int gm, gn, kcmax, direct;
  int64_t npc, nblocks; /* k blocks per NC block, blocks */
  int64_t mcb;          /* rows per row block (multiple of MR) */
  int rb;               /* row blocks */
  int cpan, ccmax;      /* panels per column chunk, chunks of a full NC block */
  queue_t* queue;       /* [nblocks][gm * gn], NULL with one tile */
  int rot;              /* test hook: task t starts on tile t + rot (as a thief) */
  _Atomic int* kdone;   /* [NC blocks][rb][ccmax] k blocks done per C region, NULL with one k block */
  volatile int fail;
} sched_t;

/* Per-thread packing state: which A block is in abuf, which B chunks of which block in bbuf. */
typedef struct {
  float *abuf, *bbuf;
  int64_t akey;          /* b * rb + r of the A block in abuf, -1: none */
  int64_t btag[NC / NR]; /* btag[c] == b + 1: chunk c of block b is packed in bbuf */
} pstate_t;

static blk_t block_at(const sched_t* S, int64_t b) {
  blk_t B;
  B.jc = b / S->npc * NC;
  B.pc = b % S->npc * S->kcmax;
  B.nc = (int)min64(NC, S->P->n - B.jc);
  B.kc = (int)min64(S->kcmax, S->P->k - B.pc);
  B.ks = S->P->dp ? (B.kc + 1) / 2 : B.kc;
  B.np = (B.nc + NR - 1) / NR;
  B.ncc = (B.np + S->cpan - 1) / S->cpan;
  return B;
}

/* Tile t's row blocks [r0, r1) and chunks [c0, c1) in block B. */
static void tile_range(const sched_t* S, const blk_t* B, int t, int* r0, int* r1, int* c0, int* c1) {
  const int ti = t / S->gn, tj = t % S->gn;
  *r0 = S->rb * ti / S->gm;
  *r1 = S->rb * (ti + 1) / S->gm;
  *c0 = B->ncc * tj / S->gn;
  *c1 = B->ncc * (tj + 1) / S->gn;
}

/* Spins until *v >= want; after a while it yields the CPU too, for when other processes keep a
 * vCPU busy and the thread being waited for is queued behind this one. */
static void wait_ge(_Atomic int* v, int want) {
  for (int spins = 0; atomic_load_explicit(v, memory_order_acquire) < want; spins++) {
    if (spins < 2048) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      sched_yield();
    }
  }
}

/* Item (b, r, c) of tile t (whose row blocks and chunks are [r0,r1) x [c0,c1)).
 * Memory latency is hidden behind the micro-kernels: a B chunk not yet packed by this thread
 * is packed one micro-panel at a time, just before use, while the kernel calls of the previous
 * panel prefetch its source; otherwise the next packed panel is prefetched (the packed B block
 * can be larger than L2). Over the tile's items of one row block, the source of the tile's next
 * A block is prefetched a little at a time (each item its share of the rows). */
static void run_item(const sched_t* S, pstate_t* st, int64_t b, const blk_t* B, int r, int c, int r0, int r1, int c0,
                     int c1) {
  const gemm_prob* P = S->P;
  const int64_t ic = r * S->mcb;
  const int mc = (int)min64(S->mcb, P->m - ic), ks = B->ks, calls = (mc + MR - 1) / MR;
  const int64_t pcb = b % S->npc;
  _Atomic int* kd = S->kdone ? &S->kdone[((b / S->npc) * S->rb + r) * S->ccmax + c] : NULL;
  if (kd && pcb > 0) wait_ge(kd, (int)pcb);
  if (st->akey != b * S->rb + r) {
    pack_a_block(P, S->direct, ic, mc, B->pc, B->kc, ks, st->abuf);
    st->akey = b * S->rb + r;
  }
  const int q0 = c * S->cpan, q1 = q0 + S->cpan < B->np ? q0 + S->cpan : B->np;
  const int pack = st->btag[c] != b + 1;
  /* the tile's next A block: the next row block, or after the last the first of the next k block */
  span an = {0};
  if (r + 1 < r1)
    an = a_source(P, ic + S->mcb, (int)min64(S->mcb, P->m - ic - S->mcb), B->pc, B->kc);
  else if (pcb + 1 < S->npc)
    an = a_source(P, r0 * S->mcb, (int)min64(S->mcb, P->m - r0 * S->mcb), B->pc + B->kc,
                  (int)min64(S->kcmax, P->k - B->pc - B->kc));
  if (an.rows > 0 && c >= c0 && c < c1) { /* this item's share of its rows */
    const int a0 = an.rows * (c - c0) / (c1 - c0), a1 = an.rows * (c - c0 + 1) / (c1 - c0);
    an.base += (int64_t)a0 * an.stride;
    an.rows = a1 - a0;
  }
  span_pace(&an, (int64_t)(q1 - q0) * calls);
  const float beta = pcb == 0 ? P->beta : 1.0f; /* later k blocks accumulate */
  float* bbuf = st->bbuf;
  if (pack) pack_b(P, B->pc, B->kc, B->jc + q0 * NR, (int)min64(NR, B->nc - q0 * NR), bbuf + (int64_t)q0 * NR * ks);
  for (int q = q0; q < q1; q++) {
    const int jr = q * NR, nr = B->nc - jr < NR ? B->nc - jr : NR;
    const int nnr = q + 1 < q1 ? (B->nc - jr - NR < NR ? B->nc - jr - NR : NR) : 0;
    const float* bp = bbuf + (int64_t)jr * ks;
    span bn = {0};
    if (nnr > 0)
      bn = pack ? b_source(P, B->pc, B->kc, B->jc + jr + NR, nnr)
                : (span){(const char*)(bp + (int64_t)NR * ks), 0, 1, NR * ks * 4, 0, 0, 0};
    span_pace(&bn, calls);
    for (int ir = 0; ir < mc; ir += MR) {
      const int mr = mc - ir < MR ? mc - ir : MR;
      prefetch_step(&bn);
      prefetch_step(&an);
      kernel_call(P, S->direct, st->abuf, ic, ir, mr, mc, B->pc, B->kc, ks, bp, P->c + (ic + ir) * P->ldc + B->jc + jr, beta, nr);
    }
    if (pack && nnr > 0) pack_b(P, B->pc, B->kc, B->jc + jr + NR, nnr, bbuf + (int64_t)(jr + NR) * ks);
  }
  if (pack) st->btag[c] = b + 1;
  if (kd) atomic_store_explicit(kd, (int)pcb + 1, memory_order_release);
}

/* Claims the front (owner) or back (thief) item of a queue; 0 when it is empty. */
static int claim(queue_t* Q, int back, int* item) {
  uint64_t v = atomic_load_explicit(&Q->q, memory_order_relaxed);
  for (;;) {
    const uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
    if (lo >= hi) return 0;
    const uint64_t w = back ? v - ((uint64_t)1 << 32) : v + 1;
    if (atomic_compare_exchange_weak_explicit(&Q->q, &v, w, memory_order_acq_rel, memory_order_relaxed)) {
      *item = (int)(back ? hi - 1 : lo);
      return 1;
    }
  }
}

/* Pool task t: tile t's items, then the others' leftovers, block by block. */
static void sched_task(void* ctx, int t, int thread) {
  (void)thread;
  sched_t* S = (sched_t*)ctx;
  static _Thread_local pstate_t st;
  st.abuf = (float*)ISA_FN(gemm_scratch)(0, (size_t)S->mcb * KC * sizeof(float));
  st.bbuf = (float*)ISA_FN(gemm_scratch)(1, (size_t)KC * S->ccmax * S->cpan * NR * sizeof(float));
  if (!st.abuf || !st.bbuf) { /* claim nothing: the other tasks take this tile's items */
    S->fail = 1;
    return;
  }
  st.akey = -1;
  for (int c = 0; c < NC / NR; c++) st.btag[c] = 0;
  const int ntiles = S->gm * S->gn;
  for (int64_t b = 0; b < S->nblocks; b++) {
    const blk_t B = block_at(S, b);
    for (int v = 0; v < ntiles; v++) {
      const int u = (t + v + S->rot) % ntiles; /* own tile first */
      int r0, r1, c0, c1, i;
      tile_range(S, &B, u, &r0, &r1, &c0, &c1);
      const int w = c1 - c0;
      if (!S->queue) { /* one tile, one thread: no claims */
        for (i = 0; i < (r1 - r0) * w; i++) run_item(S, &st, b, &B, r0 + i / w, c0 + i % w, r0, r1, c0, c1);
        continue;
      }
      while (claim(&S->queue[b * ntiles + u], u != t, &i)) run_item(S, &st, b, &B, r0 + i / w, c0 + i % w, r0, r1, c0, c1);
    }
  }
}

/* Estimated time (ns) of the largest tile for a gm x gn grid: padded flops at a nominal
 * per-core rate plus the packing of its A rows (once per NC block) and B columns. */
static double grid_cost(const void* prob, int64_t pm, int64_t pn, int gm, int gn) {
  const gemm_prob* P = (const gemm_prob*)prob;
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
  sched_t S;
  memset(&S, 0, sizeof S);
  S.P = P;
  S.gm = S.gn = 1;
  const int64_t pm = (m + MR - 1) / MR, pn = (n + NR - 1) / NR;
  /* below ~1 MFLOP a second thread costs more (wake-up, cache traffic) than it saves; inside
   * a pool task (gemmBatch) the call runs on this thread alone: one tile, A and B packed once */
  const int T = 2.0 * (double)m * (double)n * (double)P->k < 1e6 || dsv3_in_task() ? 1 : dsv3_threads();
  gemm_pick_grid(T, pm, pn, grid_cost, P, &S.gm, &S.gn);
  S.kcmax = P->dp ? GEMM_KC_DP : KC;
  S.npc = (P->k + S.kcmax - 1) / S.kcmax;
  const int64_t njc = (n + NC - 1) / NC;
  S.nblocks = njc * S.npc;
  /* row blocks of equal size (multiples of MR, about MC; a whole number per tile row): no
   * small last block whose few kernel calls per B micro-panel would not repay loading it */
  const int64_t rpt = ((m + S.gm - 1) / S.gm + MC - 1) / MC; /* row blocks per tile row */
  S.mcb = ((m + rpt * S.gm - 1) / (rpt * S.gm) + MR - 1) / MR * MR;
  S.rb = (int)((m + S.mcb - 1) / S.mcb);
  /* column chunks: four per tile column, of at least 4 panels (64 columns), so that another
   * thread can take over part of a row block; one per block when single-threaded (no claims)
   * so that the B prefetch runs uninterrupted across the whole block */
  const int npfull = (int)((min64(NC, n) + NR - 1) / NR);
  S.cpan = npfull;
  if (S.gm * S.gn > 1) {
    S.cpan = (npfull + 4 * S.gn - 1) / (4 * S.gn);
    if (S.cpan < 4) S.cpan = npfull < 4 ? npfull : 4;
  }
  S.ccmax = (npfull + S.cpan - 1) / S.cpan;
  const int64_t tcols = (int64_t)(npfull + S.gn - 1) / S.gn * NR; /* columns of C per tile */
  /* bf16 without VDPBF16PS (fp32 micro-kernel): rounding A while packing it costs extra work
   * per element, the more so for a transposed A (Wgrad's dY^T), and rules out reading A in
   * place. Where the fp32 GEMM would read A in place (narrow tiles), or A is transposed, A is
   * rounded once beforehand instead and the loop nest runs as for fp32 A; elsewhere packing
   * rounds it (vectorised, in registers: measured no slower than the pre-pass there). Same
   * numbers either way. Measured in BENCHMARKS.md, "BF16 on AVX2". */
  /* bf16 bits A without VDPBF16PS: always widened while packing (as cheap as the float32
   * copy; use_direct_a never reads it in place), narrow tiles too. A float32 copy made
   * beforehand for the kernels to read in place (as before 2026-12-08) cost more: it goes out
   * to memory when A is larger than L2 (2048 x 512: 2.10 -> 1.48 ms per call on AVX2, A 4 MB
   * as float32), where the packed block stays in L2. Same numbers either way. */
  if (gemm_round_a(P) && !P->dp && dsv3_gemm_round_prepass && (P->ta || tcols <= DIRECT_MAX_N) && ISA_FN(gemm_round_a_prepass)(P)) return -1;
  S.direct = use_direct_a(P, tcols);
  const int ntiles = S.gm * S.gn;
  void* mem = NULL;
  if (ntiles > 1) {
    const size_t qbytes = (size_t)S.nblocks * ntiles * sizeof(queue_t);
    const size_t kbytes = S.npc > 1 ? (size_t)njc * S.rb * S.ccmax * sizeof(_Atomic int) : 0;
    if (posix_memalign(&mem, 64, qbytes + kbytes + 64) != 0) return -1;
    S.queue = (queue_t*)mem;
    /* DSV3_GEMM_STEAL_TEST=1 (tests only): every task starts with another tile's items, taking
     * them from the back as a thief does, so that each run exercises stolen items and waits
     * on C regions another thread is accumulating into */
    const char* steal = getenv("DSV3_GEMM_STEAL_TEST");
    S.rot = steal && steal[0] == '1';
    for (int64_t b = 0; b < S.nblocks; b++) {
      const blk_t B = block_at(&S, b);
      for (int t = 0; t < ntiles; t++) {
        int r0, r1, c0, c1;
        tile_range(&S, &B, t, &r0, &r1, &c0, &c1);
        atomic_init(&S.queue[b * ntiles + t].q, (uint64_t)((r1 - r0) * (c1 - c0)) << 32);
      }
    }
    if (S.npc > 1) {
      S.kdone = (_Atomic int*)((char*)mem + qbytes);
      for (size_t i = 0; i < kbytes / sizeof(_Atomic int); i++) atomic_init(&S.kdone[i], 0);
    }
  }
  if (ntiles > 1) dsv3_parallel_for(ntiles, sched_task, &S);
  else sched_task(&S, 0, 0);
  free(mem);
  return S.fail ? -1 : 0;
}

int ISA_FN(dsv3_gemm_f32)(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_prob P = {transA != 0, transB != 0, 0, 0, m, n, k, alpha, beta, a, lda, b, NULL, ldb, c, ldc, 0, NULL};
  return run(&P);
}

int ISA_FN(dsv3_gemm_bf16)(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                           int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_prob P = {transA != 0, transB != 0, 1, 0, m, n, k, alpha, beta, a, lda, NULL, b, ldb, c, ldc, 0, NULL};
#if defined(DSV3_ISA_AVX512)
  P.dp = dsv3_gemm_allow_dpbf16 && dsv3_has_avx512_bf16();
#endif
  return run(&P);
}

int ISA_FN(dsv3_gemm_bf16ab)(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
                             int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_prob P = {transA != 0, transB != 0, 1, 0, m, n, k, alpha, beta, NULL, lda, NULL, b, ldb, c, ldc, 0, a};
#if defined(DSV3_ISA_AVX512)
  P.dp = dsv3_gemm_allow_dpbf16 && dsv3_has_avx512_bf16();
#endif
  return run(&P);
}
