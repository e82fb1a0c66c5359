/* Large buffers on transparent huge pages.
 *
 * A 4 KB page covers 1024 floats, so one GEMM operand of a few MB spans a thousand pages and
 * its row-strided reads (packing, attention K/V, C tiles) walk more pages than the L1 TLB
 * holds; under virtualisation every TLB miss is a two-level page walk. Linux backs anonymous
 * memory with 2 MB pages where the program asks for it (madvise(MADV_HUGEPAGE); most
 * distributions ship transparent_hugepage=madvise). Measured on a 2-vCPU Zen 3 VM: a
 * 1024^3 / 256x512x2048 fp32 GEMM 2.7-4.4% faster with A, B and C on huge pages (paired
 * runs), see BENCHMARKS.md.
 *
 * dsv3_huge_alloc returns zero-filled memory from its own mapping, 2 MB aligned; the whole
 * 2 MB chunks inside [p, p + bytes) are marked for huge pages (a partial last chunk stays on
 * 4 KB pages, so rounding never costs a whole huge page of RSS). DSV3_HUGEPAGES=0 in the
 * environment turns the marking off (for comparisons). */
#ifndef DSV3_MEMORY_H
#define DSV3_MEMORY_H
#include <stddef.h>

#define DSV3_HUGE_PAGE ((size_t)2 << 20)

/* NULL when the mapping fails. */
void* dsv3_huge_alloc(size_t bytes);
/* Unmaps memory from dsv3_huge_alloc(bytes) (same bytes). */
void dsv3_huge_free(void* p, size_t bytes);
/* 1 when huge pages are requested (DSV3_HUGEPAGES is not 0). */
int dsv3_huge_enabled(void);
#endif
