/* Streaming-read rate of a file's page-cache mapping against anonymous memory (issue 12: is
 * the roofline's denominator the stream a decode of a mapped checkpoint can get?). Development
 * tool built and run by scripts/mapped-stream/run.sh; not part of the addon.
 * For each source it reads the bytes `reps` times with 4 independent 512-bit (or 256-bit)
 * add chains, like native/src/isa/stream_read.c, and prints GB per CPU-second of the reading
 * thread (CLOCK_THREAD_CPUTIME_ID: other processes' time on the core does not count) plus,
 * for the file, how much of it the kernel maps with 2 MiB entries (FilePmdMapped). The file
 * is mapped read-only and never written; its page cache is not dropped. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "file-pmd-mapped.h"

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static long stream(const char* c, size_t n) {
#ifdef __AVX512F__
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t p = 0; p + 256 <= n; p += 256) {
    a0 = _mm512_add_epi32(a0, _mm512_loadu_si512(c + p));
    a1 = _mm512_add_epi32(a1, _mm512_loadu_si512(c + p + 64));
    a2 = _mm512_add_epi32(a2, _mm512_loadu_si512(c + p + 128));
    a3 = _mm512_add_epi32(a3, _mm512_loadu_si512(c + p + 192));
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
#else
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t p = 0; p + 128 <= n; p += 128) {
    a0 = _mm256_add_epi32(a0, _mm256_loadu_si256((const __m256i*)(c + p)));
    a1 = _mm256_add_epi32(a1, _mm256_loadu_si256((const __m256i*)(c + p + 32)));
    a2 = _mm256_add_epi32(a2, _mm256_loadu_si256((const __m256i*)(c + p + 64)));
    a3 = _mm256_add_epi32(a3, _mm256_loadu_si256((const __m256i*)(c + p + 96)));
  }
  int t[8];
  _mm256_storeu_si256((__m256i*)t, _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
  return (long)t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
#endif
}


static void report(const char* what, const char* p, size_t n, int reps) {
  volatile long sink = stream(p, n); /* first pass: faults, TLB */
  double best = 0, sum = 0;
  for (int r = 0; r < reps; r++) {
    const double t0 = cpu_now();
    sink += stream(p, n);
    const double g = (double)n / (cpu_now() - t0) / 1e9;
    sum += g;
    if (g > best) best = g;
  }
  printf("{\"source\":\"%s\",\"mib\":%zu,\"gb_per_cpu_s_mean\":%.2f,\"gb_per_cpu_s_best\":%.2f}\n", what, n >> 20, sum / reps, best);
}

static char* anon(size_t n, int huge) {
  char* p = mmap(NULL, n + (2u << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  p = (char*)(((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
  madvise(p, n, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  for (size_t q = 0; q < n; q += 4096) p[q] = (char)q; /* real pages, not the zero page */
  return p;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: mapped-stream FILE [MiB=1024] [reps=5]\n");
    return 2;
  }
  size_t n = (size_t)(argc > 2 ? atol(argv[2]) : 1024) << 20;
  const int reps = argc > 3 ? atoi(argv[3]) : 5;
  const int fd = open(argv[1], O_RDONLY);
  if (fd < 0) {
    perror(argv[1]);
    return 2;
  }
  const off_t size = lseek(fd, 0, SEEK_END);
  if ((off_t)n > size) n = (size_t)size & ~(size_t)4095;
  const char* f = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0); /* as mapFile does: normal advice */
  if (f == MAP_FAILED) {
    perror("mmap");
    return 2;
  }
  report("file mapping (page cache as it is)", f, n, reps);
  printf("{\"file\":\"%s\",\"file_pmd_mapped_mib\":%ld}\n", argv[1], pmd_mapped_kb() >> 10);
  char* a4 = anon(n, 0);
  if (a4) report("anonymous, 4 KiB pages", a4, n, reps);
  char* ah = anon(n, 1);
  if (ah) report("anonymous, huge pages (what bench memory-bandwidth reads)", ah, n, reps);
  return 0;
}
