/* Node-API binding of read-only file mappings (checkpoint weights mapped, not copied):
 *   mapFile(fd, bytes, advice[, huge])
 *                               -> ArrayBuffer: an external ArrayBuffer over
 *                                  mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0), i.e. the
 *                                  file's first `bytes` bytes from offset 0 (a page boundary),
 *                                  so a tensor at file offset o is the view at byteOffset o and
 *                                  its address has the alignment of o. Opening costs O(1) in
 *                                  the file size: no page is read until a kernel touches it,
 *                                  and only touched pages count in the resident set (RssFile).
 *                                  huge (default 0) = 1: huge-page mapping, below.
 *   adviseMapped(ab, offset, length, advice) -> madvise on the pages covering
 *                                  [offset, offset + length) of a mapFile buffer.
 *   isMapped(ab)                -> whether `ab` is a live mapFile buffer (tests, accounting).
 *   mappingInfo(ab)             -> {aligned, huge}: whether the mapping starts on a 2 MiB
 *                                  boundary and was advised MADV_HUGEPAGE successfully.
 *   dropFileCache(fd)           -> posix_fadvise(POSIX_FADV_DONTNEED) on the whole file: its clean
 *                                  pages leave the page cache (pages other processes map stay),
 *                                  so the next open reads from disk (cold-start measurements).
 * advice: 0 normal, 1 random (no read-ahead), 2 sequential, 3 willneed (start reading now,
 * asynchronously), 4 dontneed (drop this process's pages; clean file pages, nothing lost),
 * 5 (adviseMapped only) willneed from a background thread, ranges in the order given
 * (read_ahead.c).
 *
 * Huge-page mapping (huge = 1; issue 12, measurements and the kernel's behaviour per read path in
 * BENCHMARKS.md and scripts/mapped-stream/folio-probe.c): Linux >= 6.16 maps a file with 2 MiB
 * entries where its page cache holds PMD-order folios and the address is 2 MiB-aligned; faults in
 * a MADV_HUGEPAGE mapping and MADV_POPULATE_READ read such folios, MADV_WILLNEED reads order-0
 * ones, and nothing collapses them later. So the file is mapped inside a reservation of
 * bytes + 2 MiB at an aligned address, advised MADV_HUGEPAGE; advice 5 populates then drops this
 * process's entries (pages stay cached, RSS not inflated); advice 3 populates from a short-lived
 * thread per range (read_ahead.c); advice 1 also sets MADV_NOHUGEPAGE (a random row faults one page).
 * All advisory: where any step is unavailable the mapping and read-ahead are as with huge = 0.
 * Small folios already cached stay small; dropping them (bench --cold) is the caller's choice.
 *
 * Lifetime: the finalizer unmaps when V8 collects the ArrayBuffer (every view over it gone);
 * the descriptor can be closed right after mapFile (the mapping keeps the file open). The
 * mapped bytes are NOT reported to V8 as external memory: they are page cache, not heap, and
 * reporting gigabytes would make V8 collect in a panic. Mapping is PROT_READ: kernels only
 * read weights; a write through a view is a bug and faults. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "mapped_file.h"
#include "napi_util.h"

static dsv3_mapping* maps; /* live mappings (for isMapped / adviseMapped lookups) */
pthread_mutex_t dsv3_maps_mu = PTHREAD_MUTEX_INITIALIZER;

void dsv3_mapping_unref_locked(dsv3_mapping* m) {
  if (--m->refs > 0) return;
  munmap(m->base, m->bytes);
  free(m);
}

static int advice_of(int64_t a) {
  switch (a) {
    case 0: return MADV_NORMAL;
    case 1: return MADV_RANDOM;
    case 2: return MADV_SEQUENTIAL;
    case 3: return MADV_WILLNEED;
    case 4: return MADV_DONTNEED;
    default: return -1;
  }
}

static void finalize_map(napi_env env, void* data, void* hint) {
  (void)env;
  (void)data;
  dsv3_mapping* m = (dsv3_mapping*)hint;
  pthread_mutex_lock(&dsv3_maps_mu);
  if (m->prev) m->prev->next = m->next;
  else maps = m->next;
  if (m->next) m->next->prev = m->prev;
  dsv3_mapping_unref_locked(m);
  pthread_mutex_unlock(&dsv3_maps_mu);
}

static dsv3_mapping* find_map(void* base, size_t bytes) {
  pthread_mutex_lock(&dsv3_maps_mu);
  dsv3_mapping* m = maps;
  while (m && !(m->base == base && m->bytes == bytes)) m = m->next;
  pthread_mutex_unlock(&dsv3_maps_mu);
  return m;
}

/* mmap of the file's first `bytes` bytes; with `huge`, at a 2 MiB-aligned address when one can be
 * reserved (then *aligned is set), else wherever the kernel puts it. */
static void* map_aligned(int fd, size_t bytes, int huge, int* aligned) {
  const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  const size_t len = (bytes + pg - 1) & ~(pg - 1);
  *aligned = 0;
  if (huge && len >= DSV3_HUGE_SZ) {
    char* r = (char*)mmap(NULL, len + DSV3_HUGE_SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r != MAP_FAILED) {
      char* a = (char*)(((uintptr_t)r + DSV3_HUGE_SZ - 1) & ~(DSV3_HUGE_SZ - 1));
      void* p = mmap(a, bytes, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
      if (p == a) {
        if (a > r) munmap(r, (size_t)(a - r));
        if (r + len + DSV3_HUGE_SZ > a + len) munmap(a + len, (size_t)(r + len + DSV3_HUGE_SZ - (a + len)));
        *aligned = 1;
        return a;
      }
      munmap(r, len + DSV3_HUGE_SZ); /* also removes a failed MAP_FIXED's leftovers */
    }
  }
  void* p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (p != MAP_FAILED) *aligned = ((uintptr_t)p & (DSV3_HUGE_SZ - 1)) == 0;
  return p;
}

static napi_value js_map_file(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  int64_t fd, bytes, adv, huge = 0;
  if (dsv3_int(env, argv[0], &fd, "fd") || dsv3_int(env, argv[1], &bytes, "bytes") || dsv3_int(env, argv[2], &adv, "advice")) return NULL;
  if (argc_ > 3 && dsv3_int(env, argv[3], &huge, "huge")) return NULL;
  if (huge != 0 && huge != 1) {
    napi_throw_range_error(env, NULL, "dsv3 native: mapFile: 'huge' must be 0 or 1");
    return NULL;
  }
  if (fd < 0 || fd > INT32_MAX) {
    napi_throw_range_error(env, NULL, "dsv3 native: mapFile: 'fd' must be a file descriptor");
    return NULL;
  }
  if (bytes < 1 || bytes > ((int64_t)1 << 46)) {
    napi_throw_range_error(env, NULL, "dsv3 native: mapFile expects 1 <= bytes <= 2^46");
    return NULL;
  }
  const int a = advice_of(adv);
  if (a < 0 || a == MADV_DONTNEED) {
    napi_throw_range_error(env, NULL, "dsv3 native: mapFile: 'advice' must be 0 (normal), 1 (random), 2 (sequential) or 3 (willneed)");
    return NULL;
  }
  int aligned = 0;
  void* p = map_aligned((int)fd, (size_t)bytes, (int)huge, &aligned);
  if (p == MAP_FAILED) {
    char msg[160];
    snprintf(msg, sizeof msg, "dsv3 native: mapFile: mmap of %lld bytes failed (%s)", (long long)bytes, strerror(errno));
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  int advised_huge = 0;
#ifdef MADV_HUGEPAGE
  if (huge && aligned) advised_huge = madvise(p, (size_t)bytes, MADV_HUGEPAGE) == 0;
#endif
  if (a != MADV_NORMAL) madvise(p, (size_t)bytes, a); /* advisory: errors ignored */
  dsv3_mapping* m = (dsv3_mapping*)calloc(1, sizeof *m);
  if (!m) {
    munmap(p, (size_t)bytes);
    napi_throw_error(env, NULL, "dsv3 native: mapFile: out of memory");
    return NULL;
  }
  m->base = p;
  m->bytes = (size_t)bytes;
  m->refs = 1;
  m->aligned = aligned;
  m->huge = advised_huge;
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)bytes, finalize_map, m, &ab) != napi_ok) {
    munmap(p, (size_t)bytes);
    free(m);
    napi_throw_error(env, NULL, "dsv3 native: mapFile: napi_create_external_arraybuffer failed");
    return NULL;
  }
  pthread_mutex_lock(&dsv3_maps_mu);
  m->next = maps;
  if (maps) maps->prev = m;
  maps = m;
  pthread_mutex_unlock(&dsv3_maps_mu);
  return ab;
}

/* The live mapping behind an ArrayBuffer argument, or NULL (with a pending error if `need`). */
static dsv3_mapping* mapping_arg(napi_env env, napi_value v, int need) {
  bool is = false;
  napi_is_arraybuffer(env, v, &is);
  if (!is) {
    if (need) napi_throw_type_error(env, NULL, "dsv3 native: expected an ArrayBuffer");
    return NULL;
  }
  void* data = NULL;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, v, &data, &len) != napi_ok) return NULL;
  dsv3_mapping* m = data ? find_map(data, len) : NULL;
  if (!m && need) napi_throw_type_error(env, NULL, "dsv3 native: the ArrayBuffer was not made by mapFile");
  return m;
}

static napi_value js_advise_mapped(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  dsv3_mapping* m = mapping_arg(env, argv[0], 1);
  if (!m) return NULL;
  int64_t off, len, adv;
  if (dsv3_int(env, argv[1], &off, "offset") || dsv3_int(env, argv[2], &len, "length") || dsv3_int(env, argv[3], &adv, "advice")) return NULL;
  if (off < 0 || len < 0 || (uint64_t)off + (uint64_t)len > m->bytes) {
    napi_throw_range_error(env, NULL, "dsv3 native: adviseMapped: [offset, offset + length) is outside the mapping");
    return NULL;
  }
  const int a = adv == 5 ? MADV_WILLNEED : advice_of(adv);
  if (a < 0) {
    napi_throw_range_error(env, NULL, "dsv3 native: adviseMapped: 'advice' must be 0..5");
    return NULL;
  }
  if (len > 0) {
    const long pg = sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)m->base + (uintptr_t)off) & ~(uintptr_t)(pg - 1);
    const uintptr_t hi = (uintptr_t)m->base + (uintptr_t)off + (uintptr_t)len;
    if (adv == 5) dsv3_read_ahead_queue(m, lo, hi);
    else if (adv == 3 && m->huge) dsv3_read_ahead_urgent(m, lo, hi); /* WILLNEED reads order-0 folios */
    else {
      madvise((void*)lo, (size_t)(hi - lo), a); /* advisory: errors ignored */
#ifdef MADV_NOHUGEPAGE
      if (adv == 1 && m->huge) madvise((void*)lo, (size_t)(hi - lo), MADV_NOHUGEPAGE);
#endif
    }
  }
  return NULL;
}

static napi_value js_is_mapped(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  napi_value r;
  napi_get_boolean(env, mapping_arg(env, argv[0], 0) != NULL, &r);
  return r;
}

static napi_value js_mapping_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  dsv3_mapping* m = mapping_arg(env, argv[0], 1);
  if (!m) return NULL;
  napi_value r, al, hu;
  napi_create_object(env, &r);
  napi_get_boolean(env, m->aligned != 0, &al);
  napi_get_boolean(env, m->huge != 0, &hu);
  napi_set_named_property(env, r, "aligned", al);
  napi_set_named_property(env, r, "huge", hu);
  return r;
}

static napi_value js_drop_file_cache(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int64_t fd;
  if (dsv3_int(env, argv[0], &fd, "fd")) return NULL;
  if (fd < 0 || fd > INT32_MAX) {
    napi_throw_range_error(env, NULL, "dsv3 native: dropFileCache: 'fd' must be a file descriptor");
    return NULL;
  }
  napi_value r;
#ifdef POSIX_FADV_DONTNEED
  napi_get_boolean(env, posix_fadvise((int)fd, 0, 0, POSIX_FADV_DONTNEED) == 0, &r);
#else
  napi_get_boolean(env, false, &r); /* no posix_fadvise (macOS): the cache is left as is */
#endif
  return r;
}

void dsv3_register_mapped_file(napi_env env, napi_value exports) {
  dsv3_export(env, exports, "dropFileCache", js_drop_file_cache);
  dsv3_export(env, exports, "mapFile", js_map_file);
  dsv3_export(env, exports, "adviseMapped", js_advise_mapped);
  dsv3_export(env, exports, "isMapped", js_is_mapped);
  dsv3_export(env, exports, "mappingInfo", js_mapping_info);
}
