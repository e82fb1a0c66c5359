#!/bin/bash
# Peak RSS of `dsv3 bench train` (bench-small 8x256, defaults per precision) for fp32, bf16 and
# fp8, ROUNDS rounds with the precisions interleaved (issue 13's memory bars: bf16 <= 0.85x fp32,
# fp8 <= 0.8x). ROOT is a built checkout (default: this one); extra arguments go to bench train.
#   bash scripts/bench-train-rss.sh [ROOT] [ROUNDS] [-- bench train flags...]
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}; ROUNDS=${2:-3}
shift 2 2>/dev/null; [ "$1" = "--" ] && shift
for i in $(seq 1 "$ROUNDS"); do for p in fp32 bf16 fp8; do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  (cd "$ROOT" && node dist/src/cli/main.js bench train --precision "$p" --json "$@" 2>/dev/null) |
    node -e 'const o=JSON.parse(require("fs").readFileSync(0));console.log(JSON.stringify({round:+process.argv[1],precision:o.precision,moment_dtype:o.moment_dtype,peak_rss_mb:o.peak_rss_mb,cpu_ms_per_step_median:o.cpu_ms_per_step_median,loss_last:o.loss_last,load:process.argv[2]}))' "$i" "$load"
done; done
