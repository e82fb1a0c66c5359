#!/usr/bin/env bash
# Interleaved A/B of `dsv3 bench decode --batch B --profile --profile-clock cpu` between built
# checkouts (issue 11's batch bar, by phase): per round, for each ROOT, one run; prints the load
# average, cpu_ms_per_step, tokens/s and the CPU ms per step of every phase.
#   B=8 R=5 DSV3_THREADS=1 bash scripts/bench-decode-batch-phases.sh /work/main /work/wt-batch6
set -euo pipefail
B=${B:-8}
R=${R:-3}
for r in $(seq 1 "$R"); do
  for root in "$@"; do
    out=$(cd "$root" && node dist/src/cli/main.js bench decode --batch "$B" --reps 3 --profile --profile-clock cpu --json)
    echo "$(cut -d' ' -f1 /proc/loadavg) r$r $(basename "$root") B=$B $(node -e 'const j=JSON.parse(process.argv[1]);const p=j.phases_ms;console.log("cpu",j.cpu_ms_per_step,"tok/s",j.tokens_per_s,Object.entries(p).map(([k,v])=>k+"="+v).join(" "))' "$out")"
  done
done
