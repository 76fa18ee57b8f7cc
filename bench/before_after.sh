#!/usr/bin/env bash
# Before/after of a change that should not cost speed, side by side in one run: a warm
# `features` run (fresh process, caches filled) three times, alternating the two checkouts, then
# bench/pipeline.py of each. Run from a venv with smallvision's dependencies installed:
#
#   bench/before_after.sh PATH/TO/BEFORE-CHECKOUT PATH/TO/AFTER-CHECKOUT [DATA]
#
# (git worktree add ../before <commit> gives the first). SMALLVISION_CACHE defaults to a folder
# of its own beside the after checkout, so the caches are the same for both.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd)
data=${3:-$after/../shared/data/cats_vs_dogs_small}
export SMALLVISION_CACHE=${SMALLVISION_CACHE:-$after/.bench-cache} TF_CPP_MIN_LOG_LEVEL=3
out=$(mktemp -d)
lscpu | grep "Model name" || true
PYTHONPATH=$after/src python -m smallvision train "$data" --strategy features --out "$out/fill" --quiet >/dev/null 2>&1
for i in 1 2 3; do
  for v in "$before" "$after"; do
    t0=$(date +%s.%N)
    PYTHONPATH=$v/src python -m smallvision train "$data" --strategy features --out "$out/runs" --quiet > "$out/log" 2>&1
    t1=$(date +%s.%N)
    echo "warm features $(basename "$v") run $i: $(echo "$t1 - $t0" | bc) s; $(tail -1 "$out/log" | grep -o 'test accuracy [0-9.]*')"
  done
done
for v in "$before" "$after"; do
  echo "pipeline $(basename "$v"):"
  (cd "$v" && PYTHONPATH=$v/src python bench/pipeline.py --repeats 3 | tail -3)
done
rm -rf "$out"
