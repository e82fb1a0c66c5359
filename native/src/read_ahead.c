/* Background read-ahead of mapped checkpoint files (mapped_file.h; moved out of
 * mapped_file_napi.c, behaviour unchanged). Two kinds:
 *   advice 5 (dsv3_read_ahead_queue): one long-lived thread reads queued ranges in order;
 *   advice 3 on a huge mapping (dsv3_read_ahead_urgent): a short-lived thread per range, so the
 *     ranges advised together (a layer's chosen experts) are read in parallel.
 * On a huge (MADV_HUGEPAGE) mapping both read by MADV_POPULATE_READ, which brings PMD-order
 * folios into the page cache (MADV_WILLNEED reads order-0 ones; BENCHMARKS.md, issue 12). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "mapped_file.h"

/* ---- background read-ahead (advice 5) -------------------------------------------------------
 * madvise(MADV_WILLNEED) starts reading a range, but the call itself blocks while it submits
 * the reads (once the device queue is full, until earlier reads complete): advising a gigabyte
 * at open would hold the caller for a good part of the read. Advice 5 queues the range instead;
 * one background thread advises the queued ranges in order, 8 MiB at a time, so the caller goes
 * on computing (planning, the first layers) while the disk reads what comes next. A queued range
 * holds a reference on its mapping, so the ArrayBuffer's finalizer never unmaps under it. */
typedef struct ra_item {
  dsv3_mapping* m;
  uintptr_t lo, hi;
  int populate; /* MADV_POPULATE_READ + MADV_DONTNEED instead of MADV_WILLNEED */
  struct ra_item* next;
} ra_item;
static ra_item *ra_head, *ra_tail;
static pthread_cond_t ra_cv = PTHREAD_COND_INITIALIZER;
static int ra_started;
#define RA_STEP ((uintptr_t)8 << 20)

#ifdef MADV_POPULATE_READ
static int populate_ok = 1; /* cleared when the kernel rejects MADV_POPULATE_READ (< 5.14) */
#endif

/* Reads [a, b) (page-aligned a) into the page cache: on a huge mapping by page faults (PMD-order
 * folios), then drops this process's entries again; else (or where that is unsupported) by
 * MADV_WILLNEED. */
static void read_ahead_step(uintptr_t a, uintptr_t b, int populate) {
#ifdef MADV_POPULATE_READ
  if (populate && populate_ok) {
    if (madvise((void*)a, (size_t)(b - a), MADV_POPULATE_READ) == 0) {
      madvise((void*)a, (size_t)(b - a), MADV_DONTNEED); /* clean shared file pages: nothing lost */
      return;
    }
    if (errno == EINVAL) populate_ok = 0;
  }
#else
  (void)populate;
#endif
  madvise((void*)a, (size_t)(b - a), MADV_WILLNEED);
}

static void* ra_main(void* arg) {
  (void)arg;
  const long pg = sysconf(_SC_PAGESIZE);
  pthread_mutex_lock(&dsv3_maps_mu);
  for (;;) {
    while (!ra_head) pthread_cond_wait(&ra_cv, &dsv3_maps_mu);
    ra_item* it = ra_head;
    ra_head = it->next;
    if (!ra_head) ra_tail = NULL;
    pthread_mutex_unlock(&dsv3_maps_mu);
    for (uintptr_t a = it->lo; a < it->hi; a += RA_STEP) {
      const uintptr_t b = it->hi - a < RA_STEP ? it->hi : a + RA_STEP;
      read_ahead_step(a & ~(uintptr_t)(pg - 1), b, it->populate);
    }
    pthread_mutex_lock(&dsv3_maps_mu);
    dsv3_mapping_unref_locked(it->m);
    free(it);
  }
  return NULL;
}

/* Queues [lo, hi) of m for the background thread (starting it once). */
void dsv3_read_ahead_queue(dsv3_mapping* m, uintptr_t lo, uintptr_t hi) {
  ra_item* it = (ra_item*)calloc(1, sizeof *it);
  if (!it) return; /* advisory */
  it->m = m;
  it->lo = lo;
  it->hi = hi;
  it->populate = m->huge;
  pthread_mutex_lock(&dsv3_maps_mu);
  if (!ra_started) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ra_started = pthread_create(&t, &attr, ra_main, NULL) == 0 ? 1 : -1;
    pthread_attr_destroy(&attr);
  }
  if (ra_started < 0) { /* no thread: advise here */
    pthread_mutex_unlock(&dsv3_maps_mu);
    madvise((void*)lo, (size_t)(hi - lo), MADV_WILLNEED);
    free(it);
    return;
  }
  m->refs++;
  if (ra_tail) ra_tail->next = it;
  else ra_head = it;
  ra_tail = it;
  pthread_cond_signal(&ra_cv);
  pthread_mutex_unlock(&dsv3_maps_mu);
}

/* Advice 3 on a huge mapping: a detached thread per range populates it, so ranges advised together
 * (a layer's chosen experts) are read in parallel like MADV_WILLNEED's asynchronous reads; the
 * entries stay (the caller reads them next). At most URGENT_MAX at once; beyond that, nothing. */
#define URGENT_MAX 16
static int urgent_running;
typedef struct { dsv3_mapping* m; uintptr_t lo, hi; } urgent_job;
static void* urgent_main(void* arg) {
  urgent_job* j = (urgent_job*)arg;
#ifdef MADV_POPULATE_READ
  if (populate_ok) madvise((void*)j->lo, (size_t)(j->hi - j->lo), MADV_POPULATE_READ);
#endif
  pthread_mutex_lock(&dsv3_maps_mu);
  urgent_running--;
  dsv3_mapping_unref_locked(j->m);
  pthread_mutex_unlock(&dsv3_maps_mu);
  free(j);
  return NULL;
}
void dsv3_read_ahead_urgent(dsv3_mapping* m, uintptr_t lo, uintptr_t hi) {
  urgent_job* j = (urgent_job*)calloc(1, sizeof *j);
  if (!j) return; /* advisory */
  j->m = m;
  j->lo = lo;
  j->hi = hi;
  pthread_mutex_lock(&dsv3_maps_mu);
  if (urgent_running >= URGENT_MAX) {
    pthread_mutex_unlock(&dsv3_maps_mu);
    free(j);
    return;
  }
  m->refs++;
  urgent_running++;
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, urgent_main, j) != 0) {
    urgent_running--;
    dsv3_mapping_unref_locked(m);
    free(j);
  }
  pthread_attr_destroy(&attr);
  pthread_mutex_unlock(&dsv3_maps_mu);
}

