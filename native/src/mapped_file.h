/* The live read-only file mappings of mapped_file_napi.c, shared with their background
 * read-ahead (read_ahead.c). A mapping is reference-counted under dsv3_maps_mu: one reference for
 * its ArrayBuffer while it lives, one per queued or running read-ahead, so a finalizer never
 * unmaps pages a read-ahead thread is still reading. */
#ifndef DSV3_MAPPED_FILE_H
#define DSV3_MAPPED_FILE_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define DSV3_HUGE_SZ ((uintptr_t)2 << 20) /* a PMD entry: 2 MiB */

typedef struct dsv3_mapping {
  void* base;
  size_t bytes;
  int refs; /* 1 for the ArrayBuffer while it lives, + 1 per queued background read-ahead */
  int aligned; /* base is 2 MiB-aligned */
  int huge;    /* MADV_HUGEPAGE accepted: read-ahead populates instead of MADV_WILLNEED */
  struct dsv3_mapping *prev, *next;
} dsv3_mapping;

extern pthread_mutex_t dsv3_maps_mu;
/* Drops one reference (dsv3_maps_mu held); the last one unmaps. */
void dsv3_mapping_unref_locked(dsv3_mapping* m);

/* Advice 5: queues [lo, hi) (page-aligned lo) of m for the one background read-ahead thread,
 * which reads queued ranges in order, 8 MiB at a time (read_ahead.c). */
void dsv3_read_ahead_queue(dsv3_mapping* m, uintptr_t lo, uintptr_t hi);
/* Advice 3 on a huge mapping: a short-lived thread populates [lo, hi) (at most 16 at once). */
void dsv3_read_ahead_urgent(dsv3_mapping* m, uintptr_t lo, uintptr_t hi);
#endif
