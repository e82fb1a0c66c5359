#!/usr/bin/env bash
# Which read paths leave page-cache folios this kernel maps with 2 MiB entries (issue 12; see
# folio-probe.c). Writes, drops and removes its own scratch file only.
# Usage: scripts/mapped-stream/folio-probe.sh [SCRATCH_FILE=/tmp/dsv3-folio-probe.bin] [MiB=256]   (needs gcc)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/dsv3-folio-probe
gcc -O2 -o "$out" "$here/folio-probe.c"
uname -r
echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo none)"
"$out" "$@"
