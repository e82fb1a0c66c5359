/* Node-API binding of the huge-page allocator (memory.h):
 *   allocLarge(bytes) -> ArrayBuffer: zero-filled, 2 MB aligned, its whole 2 MB chunks on huge
 *                        pages (an external ArrayBuffer over its own mapping).
 *   freeLarge(ab)      -> unmaps an allocLarge buffer now and detaches it (length 0), so that a
 *                        view still held by mistake reads nothing instead of freed memory.
 *   hugePages()        -> whether huge pages are requested (DSV3_HUGEPAGES is not 0).
 * The TypeScript side (src/engine/memory.ts) uses them for the step arena's and the parameters'
 * buffers of 2 MB and up.
 *
 * Lifetime: Node 20 runs the finalizer of an external ArrayBuffer from the event loop (a
 * setImmediate after the garbage collection), never inside a synchronous loop such as a
 * training run; so owners that drop buffers while running (the arena) free them with
 * freeLarge, and the finalizer only unmaps what was never freed. V8 does not count external
 * memory itself: each buffer is reported with napi_adjust_external_memory, or the collector
 * would not run for its sake (a loop of dropped 64 MB buffers grew to 24 GB). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include "memory.h"
#include "napi_util.h"

typedef struct block {
  void* data;
  size_t bytes;
  int freed;
  struct block *prev, *next;
} block;

static block* live; /* blocks not yet freed by freeLarge (for lookup by data pointer) */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;

static void unlink_block(block* b) {
  if (b->prev) b->prev->next = b->next;
  else live = b->next;
  if (b->next) b->next->prev = b->prev;
  b->prev = b->next = NULL;
}

static void finalize(napi_env env, void* data, void* hint) {
  (void)data;
  block* b = (block*)hint;
  pthread_mutex_lock(&live_mu);
  const int was_freed = b->freed;
  if (!was_freed) unlink_block(b);
  pthread_mutex_unlock(&live_mu);
  if (!was_freed) {
    dsv3_huge_free(b->data, b->bytes);
    int64_t total;
    napi_adjust_external_memory(env, -(int64_t)b->bytes, &total);
  }
  free(b);
}

static napi_value js_alloc_large(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int64_t bytes;
  if (dsv3_int(env, argv[0], &bytes, "bytes")) return NULL;
  if (bytes < 1 || bytes > ((int64_t)1 << 40)) {
    napi_throw_range_error(env, NULL, "dsv3 native: allocLarge expects 1 <= bytes <= 2^40");
    return NULL;
  }
  block* b = (block*)calloc(1, sizeof *b);
  void* p = b ? dsv3_huge_alloc((size_t)bytes) : NULL;
  if (!p) {
    free(b);
    napi_throw_error(env, NULL, "dsv3 native: allocLarge: out of memory");
    return NULL;
  }
  b->data = p;
  b->bytes = (size_t)bytes;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)bytes, finalize, b, &ab) != napi_ok) {
    dsv3_huge_free(p, (size_t)bytes);
    free(b);
    napi_throw_error(env, NULL, "dsv3 native: allocLarge: napi_create_external_arraybuffer failed");
    return NULL;
  }
  pthread_mutex_lock(&live_mu);
  b->next = live;
  if (live) live->prev = b;
  live = b;
  pthread_mutex_unlock(&live_mu);
  int64_t total;
  napi_adjust_external_memory(env, bytes, &total);
  return ab;
}

static napi_value js_free_large(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  bool is = false;
  napi_is_arraybuffer(env, argv[0], &is);
  if (!is) {
    napi_throw_type_error(env, NULL, "dsv3 native: freeLarge expects an ArrayBuffer");
    return NULL;
  }
  void* data = NULL;
  size_t len = 0;
  NAPI_CALL(env, napi_get_arraybuffer_info(env, argv[0], &data, &len));
  pthread_mutex_lock(&live_mu);
  block* b = live;
  while (b && !(b->data == data && b->bytes == len)) b = b->next;
  if (b) {
    unlink_block(b);
    b->freed = 1;
  }
  pthread_mutex_unlock(&live_mu);
  if (!b) {
    napi_throw_type_error(env, NULL, "dsv3 native: freeLarge: the ArrayBuffer was not made by allocLarge (or is already freed)");
    return NULL;
  }
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) {
    /* cannot happen for an allocLarge buffer; keep the memory mapped rather than risk a view */
    pthread_mutex_lock(&live_mu);
    b->freed = 0;
    b->next = live;
    if (live) live->prev = b;
    live = b;
    pthread_mutex_unlock(&live_mu);
    napi_throw_error(env, NULL, "dsv3 native: freeLarge: napi_detach_arraybuffer failed");
    return NULL;
  }
  dsv3_huge_free(b->data, b->bytes);
  int64_t total;
  napi_adjust_external_memory(env, -(int64_t)b->bytes, &total);
  return NULL;
}

static napi_value js_huge_pages(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_get_boolean(env, dsv3_huge_enabled(), &r);
  return r;
}

void dsv3_register_memory(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "allocLarge", js_alloc_large);
  dsv3_export(env, exports, "freeLarge", js_free_large);
  dsv3_export(env, exports, "hugePages", js_huge_pages);
}
