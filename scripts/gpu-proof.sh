#!/usr/bin/env bash
# The proof run on a machine with an NVIDIA GPU: a real search with the paper's per-candidate
# budget (8,000 steps at batch 128, the gate at step 800) and a smaller count, on CUDA with
# populations of K models per worker, then the best loss against CE over 5 seeds.
#
#   bash scripts/gpu-proof.sh .gpu            # prebuilt binaries from scripts/gpu-prepare.sh
#   INITIAL=200 ITERATIONS=200 MODELS=64 bash scripts/gpu-proof.sh .gpu
#
# Prints the search's and the evaluation's output with their wall times; writes everything to
# $OUT/gpu-proof.txt when $OUT is set (the device tool) and keeps the stores in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
exec > >(tee "$out/gpu-proof.txt") 2>&1
bin=${1:-.gpu}
lossc="$bin/lossc"
bash scripts/gpu-unpack.sh "$bin"
initial=${INITIAL:-200} iterations=${ITERATIONS:-200} models=${MODELS:-64} steps=${STEPS:-8000}
round=${ROUND:-$((2 * models))} aug=${AUG:-base}
echo "== $(date -u) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"

# NVRTC and Fashion-MNIST as scripts/gpu-check.sh finds them.
nvrtc=$(ldconfig -p | awk '/libnvrtc\.so/ {print $NF; exit}')
[ -n "$nvrtc" ] || nvrtc=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | sort | head -n 1)
mkdir -p /tmp/lossc-nvrtc && ln -sf "$nvrtc" /tmp/lossc-nvrtc/libnvrtc.so
export LD_LIBRARY_PATH="/tmp/lossc-nvrtc:$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
if [ -d "$bin/fashion-mnist" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets && cp -r "$bin/fashion-mnist" /usr/share/datasets/fashion-mnist
fi

echo "== search: $initial random + $iterations evolved candidates, $steps steps, gate at 800, aug $aug, populations of $models"
start=$(date +%s)
"$lossc" search --device cuda --models "$models" --workers 1 --round "$round" \
  --initial "$initial" --iterations "$iterations" --population 100 --tournament 20 \
  --steps "$steps" --gate-step 800 --aug "$aug" --db "$out/proof-search.db" --out "$out/proof-best"
echo "search wall: $(( $(date +%s) - start )) s"
"$lossc" status --db "$out/proof-search.db"

echo "== the best loss against CE, 5 seeds, $steps steps, aug $aug"
start=$(date +%s)
"$lossc" evaluate --device cuda --models 10 --workers 1 --seeds 5 --steps "$steps" --aug "$aug" \
  --loss "$out/proof-best/best-1.loss" --loss examples/ce.loss --db "$out/proof-evaluate.db"
echo "evaluate wall: $(( $(date +%s) - start )) s"
