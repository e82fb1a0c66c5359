/* Side-by-side fp32 GEMM: dsv3's native GEMM against OpenBLAS's cblas_sgemm, on the same
 * operands (2 MB-aligned, on huge pages, as dsv3's tensors are), in alternating ~0.1 s
 * blocks with a pause between blocks (both libraries' idle workers spin for a while after a
 * call and must not steal the other's cores). Prints one JSON line per case with each
 * library's median GFLOPS and the median of the per-round ratio dsv3 / OpenBLAS.
 * Build and run with openblas-gemm.sh (needs libopenblas-dev; a development tool only,
 * nothing in dsv3 uses OpenBLAS). Usage: openblas-gemm THREADS op:MxKxN[,...] [ROUNDS] */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cpu.h"
#include "isa.h"
#include "memory.h"
#include "threadpool.h"

DECLARE_ISA(int, dsv3_gemm_f32, (int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc))
int dsv3_gemm_allow_dpbf16 = 1;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmp(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s THREADS op:MxKxN[,op:MxKxN...] [ROUNDS]  (op: nt, nn, tn)\n", argv[0]);
    return 2;
  }
  const int threads = atoi(argv[1]), rounds = argc > 3 ? atoi(argv[3]) : 15;
  if (threads < 1 || rounds < 1 || rounds > 1000) {
    fprintf(stderr, "THREADS and ROUNDS must be positive (ROUNDS <= 1000)\n");
    return 2;
  }
  dsv3_set_threads(threads);
  openblas_set_num_threads(threads);
  int (*gemm)(int, int, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
              int64_t) = SELECT_ISA(dsv3_gemm_f32);
  double* g[2] = {malloc(sizeof(double) * rounds), malloc(sizeof(double) * rounds)};
  double* r = malloc(sizeof(double) * rounds);
  for (char* tok = strtok(argv[2], ","); tok; tok = strtok(NULL, ",")) {
    char op[3] = {0};
    int m, k, n;
    if (sscanf(tok, "%2[nt]:%dx%dx%d", op, &m, &k, &n) != 4 || m < 1 || k < 1 || n < 1) {
      fprintf(stderr, "bad case '%s' (expected op:MxKxN, op one of nt nn tn)\n", tok);
      return 2;
    }
    const int ta = op[0] == 't', tb = op[1] == 't';
    float* a = dsv3_huge_alloc(sizeof(float) * m * k);
    float* b = dsv3_huge_alloc(sizeof(float) * k * n);
    float* c = dsv3_huge_alloc(sizeof(float) * m * n);
    if (!a || !b || !c) return 1;
    uint32_t s = 12345;
    for (int64_t i = 0; i < (int64_t)m * k; i++) a[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < (int64_t)k * n; i++) b[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
    const int64_t lda = ta ? m : k, ldb = tb ? k : n;
    const double flops = 2.0 * m * n * k;
    for (int q = 0; q < rounds; q++) {
      for (int lib = 0; lib < 2; lib++) {
        int calls = 0;
        const double t0 = now();
        double t;
        do {
          if (lib == 0) gemm(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, c, n);
          else
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1, a,
                        lda, b, ldb, 0, c, n);
          calls++;
          t = now();
        } while (t - t0 < 0.1);
        g[lib][q] = flops * calls / (t - t0) / 1e9;
        usleep(30000);
      }
      r[q] = g[0][q] / g[1][q];
    }
    qsort(g[0], rounds, sizeof(double), cmp);
    qsort(g[1], rounds, sizeof(double), cmp);
    qsort(r, rounds, sizeof(double), cmp);
    printf("{\"op\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,\"threads\":%d,\"isa\":\"%s\",\"dsv3_gflops\":%.1f,"
           "\"openblas_gflops\":%.1f,\"ratio_median\":%.3f,\"ratio_p25\":%.3f,\"ratio_p75\":%.3f}\n",
           op, m, k, n, threads, dsv3_isa_name(dsv3_isa()), g[0][rounds / 2], g[1][rounds / 2], r[rounds / 2],
           r[rounds / 4], r[3 * rounds / 4]);
    fflush(stdout);
    dsv3_huge_free(a, sizeof(float) * m * k);
    dsv3_huge_free(b, sizeof(float) * k * n);
    dsv3_huge_free(c, sizeof(float) * m * n);
  }
  return 0;
}
