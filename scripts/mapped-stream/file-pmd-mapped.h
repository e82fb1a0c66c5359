/* FilePmdMapped of /proc/self/smaps_rollup in kB (file pages this process maps with 2 MiB
 * entries), -1 where it is missing. Shared by the mapped-stream development tools. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long pmd_mapped_kb(void) {
  FILE* f = fopen("/proc/self/smaps_rollup", "r");
  char l[256];
  long kb = -1;
  while (f && fgets(l, sizeof l, f))
    if (!strncmp(l, "FilePmdMapped:", 14)) kb = atol(l + 14);
  if (f) fclose(f);
  return kb;
}
