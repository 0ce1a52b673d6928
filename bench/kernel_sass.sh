#!/usr/bin/env bash
# The runtime's CUDA kernels as an H100/H200 would run them, read statically on a machine
# without a GPU: NVRTC (as the CUDA device calls it), ptxas and cuobjdump (from NVIDIA's PyPI
# wheels, into .venv-sass on first use) compile kernels::cuda() for sm_90, and
# bench/sass_loops.py prints each kernel's
# registers, spills and the instruction mix of its innermost loops. With a git revision, the
# same for that revision's kernels first (built in a temporary worktree), to compare.
#   bash bench/kernel_sass.sh [REV] [KERNEL ...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$PWD/.venv-sass
if [ ! -e "$venv/.installed" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "nvidia-cuda-nvrtc-cu12==12.9.*" "nvidia-cuda-nvcc-cu12==12.9.*" \
        nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    touch "$venv/.installed"
fi
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$site/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ptxas=$(ls "$site"/nvidia/cuda_nvcc/bin/ptxas)
cuobjdump=$(ls "$site"/nvidia/cu*/bin/cuobjdump | head -1)
export PATH="$(dirname "$(ls "$site"/nvidia/cu*/bin/nvdisasm | head -1)"):$PATH"

rev=""
if [ $# -gt 0 ] && git rev-parse --verify -q "$1^{commit}" >/dev/null; then rev=$1; shift; fi
report() { # the PTX in $1, for the tree named $2
    echo "== $2"
    "$venv/bin/python" bench/sass_loops.py "$ptxas" "$cuobjdump" "$1" "${kernels[@]}"
}
kernels=("$@")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -n "$rev" ]; then
    base=$out/base
    git worktree add --detach "$base" "$rev" >/dev/null
    trap 'git worktree remove --force "$base" >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
    # Older revisions lack the example: it only calls kernels::cuda() and cuda::compile_ptx.
    mkdir -p "$base/runtime/examples" && cp runtime/examples/cuda_ptx.rs "$base/runtime/examples/"
    (cd "$base" && CARGO_TARGET_DIR="$root/target/sass-base" cargo run -q --release -p lossc-runtime --example cuda_ptx) > "$out/base.ptx"
    report "$out/base.ptx" "$rev ($(git rev-parse --short "$rev"))"
fi
cargo run -q --release -p lossc-runtime --example cuda_ptx > "$out/tree.ptx"
report "$out/tree.ptx" "this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- kernels runtime || echo ', changed'))"
