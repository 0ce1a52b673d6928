#!/usr/bin/env bash
# Runs what the GPU machine runs, here on the CPU, before device time is spent on it: a copy
# of the tree and .gpu/ (scripts/gpu-prepare.sh) in a scratch folder, PATH without cargo, the
# dataset folder hidden (so the packed Fashion-MNIST subset is installed, as there), the
# folder holding this tree hidden too (the test binaries find their files through the link
# gpu-unpack.sh makes), and the fake CUDA driver and NVRTC (tests/cuda_emu) where the scripts
# look for the real ones.
#
#   bash scripts/gpu-rehearse.sh check    # scripts/gpu-check.sh .gpu train
#   bash scripts/gpu-rehearse.sh proof    # scripts/gpu-proof.sh .gpu at a rehearsal's size
#   bash scripts/gpu-rehearse.sh all      # scripts/gpu-run.sh .gpu, its proof at that size
#   INITIAL=40 ITERATIONS=40 BUDGET_S=3 bash scripts/gpu-rehearse.sh proof   # a search cut short;
#   RESUME=/tmp/DIR bash scripts/gpu-rehearse.sh proof   # resumed from the stores left in DIR
#                                                        # (an absolute path)
#
# The fake runs in its dry mode (launches checked, not run), so tests fail on their values and
# the throughputs are the host's work alone: what it checks is that every step starts, finds
# its files and libraries, and ends within its timeout. PyTorch runs on the CPU
# (TORCH_DEVICE=cpu, 3 timed steps); gpu-run.sh goes on past the failed checks (FAIL_FAST=0;
# FAIL_FAST=1 shows its early end, exit code 3).
# Output: gpu-check.txt and/or gpu-proof.txt (and the proof's stores) in $OUT, by default a new
# folder /tmp/lossc-rehearsal.*, whose name it prints.
# Needs root (a mount namespace hides the dataset, and the fake NVRTC goes in /opt).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-check}
[ -d .gpu ] || { echo "error: no .gpu/: run scripts/gpu-prepare.sh first" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: the rehearsal needs root (unshare -m, /opt)" >&2; exit 2; }
case "$what" in check | proof | all) ;; *) echo "usage: $0 check|proof|all" >&2; exit 2 ;; esac
out=${OUT:-$(mktemp -d /tmp/lossc-rehearsal.XXXX)}
fake=/opt/lossc-fake-cuda
bash tests/cuda_emu/build-fake.sh "$fake" >/dev/null
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
git ls-files -z | tar -c --null -T - | tar -x -C "$tree"
cp -r .gpu "$tree/.gpu"
mkdir -p "$out"
export OUT="$out" LD_LIBRARY_PATH="$fake" LOSSC_CACHE_DIR="$fake/cache"
export LOSSC_FAKE_CUDA_DRY=1 LOSSC_FAKE_CUDA_GIB=${LOSSC_FAKE_CUDA_GIB:-64}
export TORCH_DEVICE=cpu TORCH_STEPS=3 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
small=(INITIAL="${INITIAL:-6}" ITERATIONS="${ITERATIONS:-4}" POPULATION=4 TOURNAMENT=2 MODELS=4 STEPS=40 GATE=20
  EVALUATE_ANY=1)
case "$what" in
  check) run=(bash scripts/gpu-check.sh .gpu train) ;;
  proof) run=(env "${small[@]}" bash scripts/gpu-proof.sh .gpu) ;;
  all) run=(env FAIL_FAST="${FAIL_FAST:-0}" "${small[@]}" bash scripts/gpu-run.sh .gpu) ;;
esac
echo "output: $out"
# shellcheck disable=SC2016
hide="mount -t tmpfs none /usr/share/datasets && mount -t tmpfs none '$(dirname "$PWD")'"
unshare -m bash -c "mkdir -p /usr/share/datasets && $hide"' && cd "$0" && time "$@"' "$tree" "${run[@]}"
