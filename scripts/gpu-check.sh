#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU: build lossc, run the CUDA tests against the
# interpreter, and benchmark fused CE and A2 against the device's copy bandwidth and against
# PyTorch eager and torch.compile (if torch is installed there) in the same run.
# Output goes to stdout and, when $OUT is set (the device tool), to $OUT/gpu-check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu-check.txt"
exec > >(tee "$log") 2>&1
echo "== $(date -u) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
# NVRTC: the system toolkit's if present, else the PyPI wheel.
if ! ldconfig -p | grep -q libnvrtc.so; then
  python3 -m venv .venv-nvrtc 2>/dev/null && .venv-nvrtc/bin/pip install -q nvidia-cuda-nvrtc-cu12
  export LD_LIBRARY_PATH="$(ls -d "$PWD"/.venv-nvrtc/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib | head -n 1):${LD_LIBRARY_PATH:-}"
fi
cargo build --release 2>&1 | tail -n 2
echo "== CUDA kernels against the interpreter"
cargo test --release --test emitters cuda_kernels_match_the_interpreter_on_a_gpu -- --nocapture 2>&1 | grep -E "CUDA device|SKIPPED|test result|panicked|cuda "
echo "== fused kernels (labels, no smoothing)"
target/release/lossc gpu-bench examples/ce.loss examples/a2.loss --shapes 8192x100,65536x1000
echo "== PyTorch baseline"
python3 bench/torch_baseline.py 8192x100,65536x1000 || echo "(torch not available)"
