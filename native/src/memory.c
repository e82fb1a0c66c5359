/* Large buffers on transparent huge pages (memory.h). */
#include "memory.h"
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

static size_t page_round(size_t bytes) { return (bytes + 4095) & ~(size_t)4095; }

int dsv3_huge_enabled(void) {
  static int on = -1;
  if (on < 0) {
    const char* e = getenv("DSV3_HUGEPAGES");
    on = !(e && e[0] == '0' && e[1] == 0);
  }
  return on;
}

void* dsv3_huge_alloc(size_t bytes) {
  const size_t len = page_round(bytes ? bytes : 1);
  if (len < DSV3_HUGE_PAGE) {
    void* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
  }
  /* over-map by one huge page and trim both ends to a 2 MB aligned start */
  const size_t span = len + DSV3_HUGE_PAGE;
  char* raw = (char*)mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char* p = (char*)(((uintptr_t)raw + DSV3_HUGE_PAGE - 1) & ~(uintptr_t)(DSV3_HUGE_PAGE - 1));
  if (p > raw) munmap(raw, (size_t)(p - raw));
  if (raw + span > p + len) munmap(p + len, (size_t)(raw + span - (p + len)));
#ifdef MADV_HUGEPAGE
  if (dsv3_huge_enabled()) madvise(p, len & ~(DSV3_HUGE_PAGE - 1), MADV_HUGEPAGE); /* advisory: errors ignored */
#endif
  return p;
}

void dsv3_huge_free(void* p, size_t bytes) {
  if (p) munmap(p, page_round(bytes ? bytes : 1));
}
