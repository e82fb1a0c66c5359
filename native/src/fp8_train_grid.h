/* The thread grid of the block-scaled FP8 training GEMM (fp8_train.h), shared by its two
 * drivers, isa/fp8_train_gemm.c and isa/fp8_train_gemm_f32.c (AVX2): C is split into a gm x gn
 * grid of tiles along whole GEMM_MR-row / GEMM_NR-column micro-panels, the grid chosen by
 * gemm_pick_grid with the cost model below, one dsv3_parallel_for task per tile. Every C element
 * belongs to exactly one tile and is computed there in full, so the grid never changes a bit of
 * the result, only how the work is spread. Include after gemm_isa.h (GEMM_MR, GEMM_NR). */
#ifndef DSV3_FP8_TRAIN_GRID_H
#define DSV3_FP8_TRAIN_GRID_H

#include <stdint.h>
#include <string.h>
#include "fp8_train.h"
#include "threadpool.h"

/* C rows [i0, i1), columns [j0, j1) of the driver's GEMM; nonzero on failure (out of memory) */
typedef int (*f8t_tile_fn)(void* ctx, int64_t i0, int64_t i1, int64_t j0, int64_t j1);

typedef struct {
  const f8t_prob* P;
  f8t_tile_fn tile;
  void* ctx;
  double flops_per_ns; /* the driver's micro-kernel speed (cost model) */
  int64_t nc;          /* its NC blocking (cost model) */
  int gm, gn;
  int64_t pm, pn; /* micro-panels of C: rows / GEMM_MR, columns / GEMM_NR, rounded up */
  volatile int fail;
} f8t_grid;

static void f8t_grid_task(void* ctx, int t, int thread) {
  (void)thread;
  f8t_grid* X = (f8t_grid*)ctx;
  int64_t i0, i1, j0, j1;
  gemm_grid_tile(t, X->gm, X->gn, X->pm, X->pn, X->P->m, X->P->n, &i0, &i1, &j0, &j1);
  if (i0 >= i1 || j0 >= j1) return;
  if (X->tile(X->ctx, i0, i1, j0, j1)) X->fail = 1;
}

/* Estimated time of the largest tile of a gm x gn grid: multiply-adds, plus A packing once per
 * NC block and B packing once per row of the grid. */
static double f8t_grid_cost(const void* grid, int64_t pm, int64_t pn, int gm, int gn) {
  const f8t_grid* X = (const f8t_grid*)grid;
  const double rows = (double)((pm + gm - 1) / gm * GEMM_MR), cols = (double)((pn + gn - 1) / gn * GEMM_NR);
  const double k = (double)X->P->k;
  const double nblocks = (double)(((int64_t)cols + X->nc - 1) / X->nc);
  return 2.0 * rows * cols * k / X->flops_per_ns + 0.5 * rows * k * nblocks + 0.5 * cols * k;
}

/* Runs tile(ctx, ...) over the grid chosen for P->threads threads (one thread below 1e6
 * flops); 0, or -1 when a tile failed. P->m, P->n > 0. */
static inline int f8t_grid_run(const f8t_prob* P, double flops_per_ns, int64_t nc, f8t_tile_fn tile, void* ctx) {
  f8t_grid X;
  memset(&X, 0, sizeof X);
  X.P = P;
  X.tile = tile;
  X.ctx = ctx;
  X.flops_per_ns = flops_per_ns;
  X.nc = nc;
  X.pm = (P->m + GEMM_MR - 1) / GEMM_MR;
  X.pn = (P->n + GEMM_NR - 1) / GEMM_NR;
  const int T = P->threads < 1 ? 1 : P->threads;
  const int Tm = 2.0 * (double)P->m * (double)P->n * (double)P->k < 1e6 ? 1 : T;
  gemm_pick_grid(Tm, X.pm, X.pn, f8t_grid_cost, &X, &X.gm, &X.gn);
  if (X.gm * X.gn > 1) dsv3_parallel_for(X.gm * X.gn, f8t_grid_task, &X);
  else f8t_grid_task(&X, 0, 0);
  return X.fail ? -1 : 0;
}

#endif
