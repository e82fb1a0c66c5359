/* Which ways of reading a file leave page-cache folios this kernel maps with 2 MiB entries
 * (issue 12: the weight stream of a mapped checkpoint runs at the huge-page rate only when the
 * kernel maps it with PMDs). Development tool run by scripts/mapped-stream/folio-probe.sh; not
 * part of the addon. It writes its own scratch file (4 MiB writes), and for each method drops
 * that file's pages (posix_fadvise DONTNEED: only this scratch file), reads it by the method,
 * then maps it at a 2 MiB-aligned address with MADV_HUGEPAGE, touches every page and prints how
 * much smaps FilePmdMapped grew. Last, MADV_COLLAPSE on a mapping of small folios. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "file-pmd-mapped.h"

#define HUGE_SZ ((size_t)2 << 20)
static char* map_huge(int fd, size_t n, int advise) {
  char* r = mmap(NULL, n + HUGE_SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* a = (char*)(((uintptr_t)r + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1));
  a = mmap(a, n, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
  if (advise) madvise(a, n, MADV_HUGEPAGE);
  return a;
}
static long touch(const char* p, size_t n) {
  long s = 0;
  for (size_t i = 0; i < n; i += 4096) s += ((volatile const char*)p)[i];
  return s;
}
static const char* names[] = {"page faults, plain mapping", "page faults, MADV_HUGEPAGE mapping",
  "MADV_WILLNEED (8 MiB calls)", "POSIX_FADV_WILLNEED (8 MiB calls)", "readahead(2) (8 MiB calls)",
  "read() 4 MiB calls", "MADV_POPULATE_READ, MADV_HUGEPAGE mapping"};

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/tmp/dsv3-folio-probe.bin";
  const size_t n = (size_t)(argc > 2 ? atol(argv[2]) : 256) << 20;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) { perror(path); return 2; }
  char* buf = malloc(4u << 20);
  memset(buf, 0x5a, 4u << 20);
  for (size_t o = 0; o < n; o += 4u << 20) if (write(fd, buf, 4u << 20) != 4 << 20) { perror("write"); return 2; }
  fsync(fd);
  { /* the pages as write() left them */
    char* p = map_huge(fd, n, 1);
    const long k0 = pmd_mapped_kb();
    touch(p, n);
    printf("{\"read_by\":\"none: as written by write() 4 MiB calls\",\"mib\":%zu,\"file_pmd_mapped_mib\":%ld}\n", n >> 20, (pmd_mapped_kb() - k0) >> 10);
    munmap(p, n);
  }
  for (int m = 0; m < 7; m++) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    char* p = map_huge(fd, n, m != 0);
    for (size_t o = 0; o < n; o += 8u << 20) {
      if (m == 2) madvise(p + o, 8u << 20, MADV_WILLNEED);
      if (m == 3) posix_fadvise(fd, (off_t)o, 8u << 20, POSIX_FADV_WILLNEED);
      if (m == 4) readahead(fd, (off_t)o, 8u << 20);
      if (m == 5) { pread(fd, buf, 4u << 20, (off_t)o); pread(fd, buf, 4u << 20, (off_t)o + (4u << 20)); }
#ifdef MADV_POPULATE_READ
      if (m == 6) madvise(p + o, 8u << 20, MADV_POPULATE_READ);
#endif
    }
    if (m >= 2 && m <= 5) usleep(200000); /* let asynchronous reads finish */
    if (m >= 2) { munmap(p, n); p = map_huge(fd, n, 1); } /* map afresh: entries from reading only */
    const long k0 = pmd_mapped_kb();
    touch(p, n);
    printf("{\"read_by\":\"%s\",\"mib\":%zu,\"file_pmd_mapped_mib\":%ld}\n", names[m], n >> 20, (pmd_mapped_kb() - k0) >> 10);
    munmap(p, n);
  }
  /* small folios (order 0 via WILLNEED), then MADV_COLLAPSE */
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  for (size_t o = 0; o < n; o += 8u << 20) posix_fadvise(fd, (off_t)o, 8u << 20, POSIX_FADV_WILLNEED);
  usleep(200000);
  char* p = map_huge(fd, n, 1);
  touch(p, n);
  const int rc = madvise(p, n, 25 /* MADV_COLLAPSE */);
  const int err = errno;
  munmap(p, n);
  p = map_huge(fd, n, 1);
  touch(p, n);
  printf("{\"madv_collapse_of_small_folios\":\"%s\",\"file_pmd_mapped_mib_after\":%ld}\n", rc == 0 ? "ok" : strerror(err), pmd_mapped_kb() >> 10);
  close(fd);
  unlink(path);
  return 0;
}
