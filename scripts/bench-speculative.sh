#!/bin/bash
# Usage: scripts/bench-speculative.sh RUN_OR_CHECKPOINT [TOKENS=200] [ROUNDS=5]   (after npm run build)
# One JSON line per run (mode, tokens/s, acceptance, acceptance_by_depth, md5 of the ids).
# interleaved: greedy plain / speculative depth 1 / depth 2, and sampling (T 0.8) plain / speculative depth 2; R rounds x 2 prompts
RUN=$1; N=${2:-200}; R=${3:-5}
cd "$(dirname "$0")/.."
for round in $(seq 1 $R); do
  for prompt in "Call me Ishmael." "The whale"; do
    for mode in plain d1 d2 splain sd2; do
      case $mode in plain) a="--temperature 0 --no-speculative";; d1) a="--temperature 0 --draft-depth 1";; d2) a="--temperature 0 --draft-depth 2";;
        splain) a="--temperature 0.8 --seed $round --no-speculative";; sd2) a="--temperature 0.8 --seed $round --speculative --draft-depth 2";; esac
      out=$(node dist/src/cli/main.js generate --model $RUN --prompt "$prompt" --max-tokens $N --json $a)
      echo "$round|$prompt|$mode|$out" | python3 -c "
import sys,json,hashlib
l=sys.stdin.read().strip(); r,p,m,j=l.split('|',3); o=json.loads(j)
print(json.dumps({'round':int(r),'prompt':p,'mode':m,'n':len(o['tokens']),'tps':o['tokens_per_s'],'acc':o.get('acceptance_rate'),'by':o.get('acceptance_by_depth'),'tok':hashlib.md5(str(o['tokens']).encode()).hexdigest()[:8]}))"
    done
  done
done
