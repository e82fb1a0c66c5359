#include "threadpool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256
/* An idle worker spins (PAUSE) this many times before sleeping on the condition variable, so
 * the next kernel call of a training step finds it awake. Measured on a 2-vCPU Zen 3 VM,
 * 2026-11-29 (dsv3 bench train, 3 interleaved rounds): 200000 (~9 ms) was as fast as or faster
 * than 20000 and 4000, also with other processes competing. -DSPIN_ITERS=... for tuning. */
#ifndef SPIN_ITERS
#define SPIN_ITERS 200000
#endif
/* DSV3_POOL_SPIN=N in the environment overrides it at start-up (0: sleep at once). Batch-1
 * decode has many short gaps between kernel calls (routing, norms in JS) where a spinning worker
 * only takes CPU time from the process's own main thread or from other processes. */
static _Atomic int g_spin_iters = SPIN_ITERS;

typedef struct {
  dsv3_task_fn fn;
  void* ctx;
  int n;
} job_t;

static pthread_t g_threads[MAX_THREADS];
static int g_started = 0;          /* worker threads created (excluding caller) */
static int g_nthreads = 0;         /* threads in use including the caller */
static _Atomic uint32_t g_gen = 0; /* job generation */
static _Atomic uint64_t g_claim;   /* (gen << 32) | next task index */
static _Atomic int g_done;
static job_t g_job;
static _Atomic int g_sleepers = 0;
static _Atomic int g_in_job = 0;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* 1 while this thread runs a pool task (or the tasks of a nested call, inline) */
static _Thread_local int tl_in_task;
int dsv3_in_task(void) { return tl_in_task; }

/* Claim and run tasks of generation `gen` until none is left. */
static void run_tasks(uint32_t gen, int thread) {
  for (;;) {
    uint64_t v = atomic_load_explicit(&g_claim, memory_order_acquire);
    for (;;) {
      if ((uint32_t)(v >> 32) != gen) return;
      if ((int)(uint32_t)v >= g_job.n) return;
      if (atomic_compare_exchange_weak_explicit(&g_claim, &v, v + 1, memory_order_acq_rel, memory_order_acquire)) break;
    }
    int t = (int)(uint32_t)v;
    tl_in_task = 1;
    g_job.fn(g_job.ctx, t, thread);
    tl_in_task = 0;
    atomic_fetch_add_explicit(&g_done, 1, memory_order_acq_rel);
  }
}

static void* worker_main(void* arg) {
  int id = (int)(intptr_t)arg; /* 1-based */
  uint32_t seen = atomic_load(&g_gen);
  for (;;) {
    int spins = 0;
    uint32_t gen;
    while ((gen = atomic_load_explicit(&g_gen, memory_order_acquire)) == seen) {
      if (++spins < atomic_load_explicit(&g_spin_iters, memory_order_relaxed)) {
        cpu_relax();
      } else {
        pthread_mutex_lock(&g_mu);
        atomic_fetch_add(&g_sleepers, 1);
        while (atomic_load(&g_gen) == seen) pthread_cond_wait(&g_cv, &g_mu);
        atomic_fetch_sub(&g_sleepers, 1);
        pthread_mutex_unlock(&g_mu);
        spins = 0;
      }
    }
    seen = gen;
    if (id >= g_nthreads) continue; /* this worker is not in use at the current size */
    run_tasks(gen, id);
  }
  return NULL;
}

static int default_threads(void) {
  const char* env = getenv("DSV3_THREADS");
  if (env && *env) {
    int n = atoi(env);
    if (n >= 1) return n > MAX_THREADS ? MAX_THREADS : n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

static void ensure_workers(int n) {
  while (g_started < n - 1) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&g_threads[g_started], &attr, worker_main, (void*)(intptr_t)(g_started + 1)) != 0) {
      pthread_attr_destroy(&attr);
      break;
    }
    pthread_attr_destroy(&attr);
    g_started++;
  }
  if (n > g_started + 1) n = g_started + 1;
  g_nthreads = n;
}

static void init_once(void) {
  const char* sp = getenv("DSV3_POOL_SPIN");
  if (sp && *sp) {
    const long v = atol(sp);
    g_spin_iters = v < 0 ? 0 : v > 100000000L ? 100000000 : (int)v;
  }
  ensure_workers(default_threads());
}

int dsv3_threads(void) {
  pthread_once(&g_once, init_once);
  return g_nthreads;
}

int dsv3_set_pool_spin(int iters) {
  pthread_once(&g_once, init_once);
  return atomic_exchange(&g_spin_iters, iters < 0 ? 0 : iters);
}

void dsv3_set_threads(int n) {
  pthread_once(&g_once, init_once);
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  ensure_workers(n);
}

void dsv3_parallel_for(int n_tasks, dsv3_task_fn fn, void* ctx) {
  pthread_once(&g_once, init_once);
  if (n_tasks <= 0) return;
  if (n_tasks == 1 || g_nthreads <= 1) { /* single task or single thread: run inline */
    for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    return;
  }
  if (atomic_exchange(&g_in_job, 1)) { /* a nested call (or the pool is busy): run inline */
    const int was = tl_in_task;
    tl_in_task = 1;
    for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    tl_in_task = was;
    return;
  }
  uint32_t gen = atomic_load(&g_gen) + 1;
  g_job.fn = fn;
  g_job.ctx = ctx;
  g_job.n = n_tasks;
  atomic_store_explicit(&g_done, 0, memory_order_relaxed);
  atomic_store_explicit(&g_claim, (uint64_t)gen << 32, memory_order_release);
  atomic_store(&g_gen, gen); /* seq_cst: pairs with the sleepers check below */
  if (atomic_load(&g_sleepers) > 0) {
    pthread_mutex_lock(&g_mu);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
  }
  run_tasks(gen, 0);
  while (atomic_load_explicit(&g_done, memory_order_acquire) < n_tasks) cpu_relax();
  atomic_store(&g_in_job, 0);
}
