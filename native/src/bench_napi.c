/* Benchmark helpers for `dsv3 bench`:
 *   fmaPeak(threads, seconds) -> GFLOPS
 * runs the FMA-peak kernel (isa/peak.c, active ISA) on `threads` pool threads for about
 * `seconds` in total, as several short repetitions, and returns the best repetition's rate
 * (the least disturbed by other processes). The pool size is restored afterwards. */
#include <time.h>
#include "cpu.h"
#include "isa.h"
#include "napi_util.h"
#include "threadpool.h"

DECLARE_ISA(double, dsv3_fma_peak_kernel, (int64_t iters, float* sink))

#define MAX_PEAK_THREADS 256

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  double (*kernel)(int64_t, float*);
  double deadline;
  double flops[MAX_PEAK_THREADS];
  float sink[MAX_PEAK_THREADS];
} peak_ctx;

/* Each task runs the kernel in ~0.5 ms chunks until the shared deadline, so every thread
 * works for the same wall-clock window. */
static void peak_task(void* ctx, int t, int thread) {
  (void)thread;
  peak_ctx* X = (peak_ctx*)ctx;
  double f = 0;
  do {
    f += X->kernel(20000, &X->sink[t]);
  } while (now_s() < X->deadline);
  X->flops[t] = f;
}

static napi_value js_fma_peak(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int64_t threads;
  double seconds;
  if (dsv3_int(env, argv[0], &threads, "threads") || dsv3_double(env, argv[1], &seconds, "seconds")) return NULL;
  if (threads < 1 || threads > MAX_PEAK_THREADS) {
    napi_throw_range_error(env, NULL, "dsv3 native: fmaPeak: 'threads' must be in [1, 256]");
    return NULL;
  }
  if (!(seconds > 0 && seconds <= 600)) {
    napi_throw_range_error(env, NULL, "dsv3 native: fmaPeak: 'seconds' must be in (0, 600]");
    return NULL;
  }
  const int saved = dsv3_threads();
  dsv3_set_threads((int)threads);
  static peak_ctx X;
  X.kernel = SELECT_ISA(dsv3_fma_peak_kernel);
  const int reps = 5;
  double best = 0;
  X.deadline = now_s() + 0.02; /* warm-up: clocks up, workers awake */
  dsv3_parallel_for((int)threads, peak_task, &X);
  for (int r = 0; r < reps; r++) {
    for (int t = 0; t < threads; t++) X.flops[t] = 0;
    const double t0 = now_s();
    X.deadline = t0 + seconds / reps;
    dsv3_parallel_for((int)threads, peak_task, &X);
    const double dt = now_s() - t0;
    double f = 0;
    for (int t = 0; t < threads; t++) f += X.flops[t];
    if (f / dt > best) best = f / dt;
  }
  dsv3_set_threads(saved);
  napi_value out;
  napi_create_double(env, best * 1e-9, &out);
  return out;
}

void dsv3_register_bench(napi_env env, napi_value exports) { dsv3_export(env, exports, "fmaPeak", js_fma_peak); }
