#!/usr/bin/env bash
# Interleaved A/B of `dsv3 bench decode --batch 1|8` (bench-small, f32; issue 11's batch bar) between
# built checkouts: per round, for each ROOT, batch 1 then batch 8 (`--reps 3 --json`), printing the
# load average, tokens/s, cpu_ms_per_step and ms_per_step_median of each run.
#   DSV3_THREADS=1 R=3 bash scripts/bench-decode-batch-ab.sh /work/main /work/wt-multirow
set -euo pipefail
R=${R:-3}
for r in $(seq 1 "$R"); do
  for root in "$@"; do
    for n in 1 8; do
      out=$(cd "$root" && node dist/src/cli/main.js bench decode --batch "$n" --reps 3 --json)
      echo "$(cut -d' ' -f1 /proc/loadavg) round $r $root B=$n $(node -e 'const j=JSON.parse(process.argv[1]);console.log("tok/s",j.tokens_per_s,"cpu_ms_per_step",j.cpu_ms_per_step,"ms_per_step_median",j.ms_per_step_median)' "$out")"
    done
  done
done
