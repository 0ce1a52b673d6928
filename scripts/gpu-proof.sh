#!/usr/bin/env bash
# The proof run on a machine with an NVIDIA GPU: a real search with the paper's per-candidate
# budget (8,000 steps at batch 128, the gate at step 800) and a smaller count, on CUDA with
# populations of K models per worker, then the best loss against CE over 5 seeds.
#
#   bash scripts/gpu-proof.sh .gpu            # prebuilt binaries from scripts/gpu-prepare.sh
#   INITIAL=200 ITERATIONS=200 MODELS=64 bash scripts/gpu-proof.sh .gpu
#   RESUME=bench/results/proof bash scripts/gpu-proof.sh .gpu   # goes on with a cut search
#   INITIAL=6 ITERATIONS=4 POPULATION=4 TOURNAMENT=2 MODELS=4 STEPS=40 GATE=20 \
#     bash scripts/gpu-proof.sh .gpu              # the whole flow in seconds (gpu-rehearse.sh)
#
# Prints the search's and the evaluation's output with their wall times; writes everything to
# $OUT/gpu-proof.txt when $OUT is set (the device tool) and keeps the stores in $OUT.
# A device call ends at 600 s, so the search stops at SEARCH_S seconds (default 480) and the
# evaluation waits for a finished search. The stores come back in $OUT; carried back with the
# tree and named by RESUME (a folder holding proof-search.db and perhaps proof-evaluate.db),
# they go on where they stopped: a search resumes from its store, training only what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
exec > >(tee "$out/gpu-proof.txt") 2>&1
bin=${1:-.gpu}
lossc="$bin/lossc"
bash scripts/gpu-unpack.sh "$bin"
initial=${INITIAL:-200} iterations=${ITERATIONS:-200} models=${MODELS:-64} steps=${STEPS:-8000}
round=${ROUND:-$((2 * models))} aug=${AUG:-base} population=${POPULATION:-100} tournament=${TOURNAMENT:-20}
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

echo "== search: $initial random + $iterations evolved candidates, $steps steps, gate at $gate, aug $aug, populations of $models"
start=$(date +%s)
timeout "${SEARCH_S:-480}" "$lossc" search --device cuda --models "$models" --workers 1 --round "$round" \
  --initial "$initial" --iterations "$iterations" --population "$population" --tournament "$tournament" \
  --steps "$steps" --gate-step "$gate" --aug "$aug" --db "$out/proof-search.db" --out "$out/proof-best"
searched=$?
echo "search wall: $(( $(date +%s) - start )) s"
"$lossc" status --db "$out/proof-search.db"
if [ "$searched" = 124 ]; then
  echo "the search stopped at ${SEARCH_S:-480} s: carry $out/proof-search.db back and run again with RESUME"
  exit 0
fi
[ "$searched" = 0 ] || exit "$searched"

echo "== the best loss against CE, 5 seeds, $steps steps, aug $aug"
start=$(date +%s)
"$lossc" evaluate --device cuda --models 10 --workers 1 --seeds 5 --steps "$steps" --aug "$aug" \
  --loss "$out/proof-best/best-1.loss" --loss examples/ce.loss --db "$out/proof-evaluate.db"
echo "evaluate wall: $(( $(date +%s) - start )) s"
