#!/usr/bin/env bash
# The proof run on a machine with an NVIDIA GPU: a real search with the paper's per-candidate
# budget (8,000 steps at batch 128, the gate at step 800) and a smaller count (by default 64
# random and 64 evolved candidates, which fit one run of gpu-run.sh at the throughput the
# search aims for), on CUDA with populations of K models per worker, then its best loss against CE over 5
# seeds.
#
#   bash scripts/gpu-proof.sh .gpu            # prebuilt binaries from scripts/gpu-prepare.sh
#   INITIAL=200 ITERATIONS=200 POPULATION=64 TOURNAMENT=10 bash scripts/gpu-proof.sh .gpu
#   RESUME=bench/results/proof bash scripts/gpu-proof.sh .gpu   # goes on where a run stopped
#   INITIAL=6 ITERATIONS=4 POPULATION=4 TOURNAMENT=2 MODELS=4 STEPS=40 GATE=20 \
#     bash scripts/gpu-proof.sh .gpu              # the whole flow in seconds (gpu-rehearse.sh)
#
# Prints the search's and the evaluation's output with their wall times; writes everything to
# $OUT/gpu-proof.txt when $OUT is set (the device tool) and keeps the stores and the best two
# losses in $OUT. A device call ends at 600 s, so everything ends BUDGET_S seconds (default
# 540) after the start: the search stops at `--time-limit` EVAL_S seconds (default 120) before
# that, with the best loss so far, so that the evaluation has its time. The stores come back
# in $OUT, closed by `lossc status`; carried back with the tree and named by RESUME (a folder
# holding proof-search.db and perhaps proof-evaluate.db), they go on where they stopped: a
# search or an evaluation resumes from its store, training only what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
exec > >(tee "$out/gpu-proof.txt") 2>&1
bin=${1:-.gpu}
lossc="$bin/lossc"
bash scripts/gpu-unpack.sh "$bin"
initial=${INITIAL:-64} iterations=${ITERATIONS:-64} models=${MODELS:-64} steps=${STEPS:-8000}
aug=${AUG:-base} population=${POPULATION:-64} tournament=${TOURNAMENT:-8}
# A round fills a population of models, but holds at most the evolution's population.
round=${ROUND:-$(( models < population ? models : population ))}
gate=${GATE:-800}
echo "== $(date -u) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"

# NVRTC and Fashion-MNIST as scripts/gpu-check.sh finds them.
nvrtc=$(ldconfig -p | awk '/libnvrtc\.so/ {print $NF; exit}')
[ -n "$nvrtc" ] || nvrtc=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | sort | head -n 1)
mkdir -p /tmp/lossc-nvrtc && ln -sf "$nvrtc" /tmp/lossc-nvrtc/libnvrtc.so
export LD_LIBRARY_PATH="/tmp/lossc-nvrtc:$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
if [ -d "$bin/fashion-mnist" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets && cp -r "$bin/fashion-mnist" /usr/share/datasets/fashion-mnist
fi

if [ -n "${RESUME:-}" ]; then
  for db in proof-search.db proof-evaluate.db; do
    [ -e "$RESUME/$db" ] && cp "$RESUME/$db" "$out/$db" && echo "resuming $RESUME/$db"
  done
fi

deadline=$(( $(date +%s) + ${BUDGET_S:-540} )) eval_s=${EVAL_S:-120}
left() { echo $(( deadline - $(date +%s) )); }
# Runs a stage within what is left of the budget, then closes its store with `lossc status`;
# says so and ends the script if the stage stopped at the deadline or failed.
stage() {
  local db=$1 rc budget
  shift
  start=$(date +%s) budget=$(left)
  [ "$budget" -ge 1 ] || budget=1  # `timeout 0` would mean no limit
  timeout "$budget" "$@"
  rc=$?
  echo "wall: $(( $(date +%s) - start )) s"
  "$lossc" status --db "$db"
  if [ "$rc" = 124 ]; then
    echo "stopped at the budget of ${BUDGET_S:-540} s: carry $out/proof-*.db back and run again with RESUME"
    exit 0
  fi
  [ "$rc" = 0 ] || exit "$rc"
}

limit=$(( $(left) - eval_s ))
[ "$limit" -ge 1 ] || limit=1
echo "== search: $initial random + $iterations evolved candidates, $steps steps, gate at $gate, aug $aug, populations of $models, for at most $limit s"
stage "$out/proof-search.db" "$lossc" search --device cuda --models "$models" --workers 1 --round "$round" \
  --initial "$initial" --iterations "$iterations" --population "$population" --tournament "$tournament" \
  --steps "$steps" --gate-step "$gate" --aug "$aug" --db "$out/proof-search.db" --out "$out/proof-best" \
  --best 2 --time-limit "$limit"

# A best loss that scored 0 stopped early, as every loss stored so far did: nothing to evaluate
# yet. (EVALUATE_ANY=1 evaluates it all the same: gpu-rehearse.sh, whose fake driver in its
# dry mode scores every loss 0.)
fitness=$(sed -n 's/^# fitness (best validation accuracy): //p' "$out/proof-best/best-1.loss" 2>/dev/null)
if [ -z "$fitness" ]; then
  echo "no training has finished yet: no evaluation; carry $out/proof-*.db back and run again with RESUME"
  exit 0
fi
if [ "$(awk -v f="$fitness" 'BEGIN { print (f > 0) }')" != 1 ] && [ "${EVALUATE_ANY:-0}" != 1 ]; then
  echo "every loss trained so far stopped early (best fitness $fitness): no evaluation; carry $out/proof-*.db back and run again with RESUME"
  exit 0
fi

echo "== the best loss against CE, 5 seeds, $steps steps, aug $aug"
# A seed is a population of two (the seeds' data orders differ), one worker each, side by side.
stage "$out/proof-evaluate.db" "$lossc" evaluate --device cuda --models 2 --workers 5 --seeds 5 --steps "$steps" \
  --aug "$aug" --loss "$out/proof-best/best-1.loss" --loss examples/ce.loss --db "$out/proof-evaluate.db"
