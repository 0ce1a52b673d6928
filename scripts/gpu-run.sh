#!/usr/bin/env bash
# The device work for a GPU machine lent briefly (minutes, in commands of at most 600 s), in
# one command of BUDGET_S seconds (default 540), most important first:
#   1. the CUDA device's methods against the CPU device; if they fail, the command ends at
#      once (exit code 3), leaving the machine's time for a fix and another command;
#   2. `lossc bench-train --device cuda` populations of 1 to 128 against PyTorch on the same
#      GPU, and the CUDA training tests (scripts/gpu-check.sh .gpu train), at most CHECK_S
#      seconds (default 300);
#   3. the proof run (scripts/gpu-proof.sh) with the time left: its search stops at a time
#      limit that leaves its evaluation against CE the time that evaluation would take at the
#      throughput measured in step 2 if its 5 populations of 2 (one per seed, side by side)
#      shared nothing: 5 x STEPS steps at 1.2 times the step time of population 1, plus 30 s
#      (at most half the time left).
#
#   bash scripts/gpu-run.sh .gpu
#   RESUME=bench/results/proof bash scripts/gpu-run.sh .gpu   # the proof goes on
#
# Output in $OUT: gpu-check.txt, gpu-proof.txt, the proof's stores and its best two losses.
# FAIL_FAST=0 runs on after failed checks (gpu-rehearse.sh, whose fake driver runs no kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.gpu}
out=${OUT:-/tmp}
start=$(date +%s)
left() { echo $(( start + ${BUDGET_S:-540} - $(date +%s) )); }

FAIL_FAST=${FAIL_FAST:-1} timeout "${CHECK_S:-300}" bash scripts/gpu-check.sh "$bin" train
rc=$?
if [ "$rc" = 3 ]; then
  echo "== the CUDA device failed its checks: no proof run (see $out/gpu-check.txt)"
  exit 3
fi
[ "$rc" = 124 ] && echo "== the checks stopped at CHECK_S = ${CHECK_S:-300} s" | tee -a "$out/gpu-check.txt"

steps=${STEPS:-8000}
rate=$(grep 'population 1, cuda' "$out/gpu-check.txt" | grep -o '[0-9.]* candidate-steps/s' | head -n 1 | cut -d' ' -f1)
if [ -n "$rate" ]; then
  eval_s=$(awk -v r="$rate" -v s="$steps" 'BEGIN { printf "%d", 1.2 * 5 * s / r + 30 }')
else
  eval_s=180
fi
budget=$(left)
# At most half of what is left: a search that has no time finds nothing to evaluate.
[ "$eval_s" -le $(( budget / 2 )) ] || eval_s=$(( budget / 2 ))
echo "== $(date -u +%T) the proof run: $budget s left, $eval_s s kept for its evaluation (rate at K = 1: ${rate:-not measured})"
[ "$budget" -gt "$eval_s" ] || { echo "== no time left for the proof run"; exit 0; }
BUDGET_S=$budget EVAL_S=$eval_s bash scripts/gpu-proof.sh "$bin"
