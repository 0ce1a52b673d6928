#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU: run the CUDA tests against the interpreter, the
# WGSL tests on the GPU's Vulkan driver, and benchmark the fused kernels (both row layouts)
# against the device's copy bandwidth and against PyTorch eager and torch.compile in the same
# run.
#
#   bash scripts/gpu-check.sh                # builds with cargo (a machine with Rust and crates.io)
#   bash scripts/gpu-check.sh .gpu           # prebuilt binaries from scripts/gpu-prepare.sh
#   bash scripts/gpu-check.sh .gpu train     # only the training part (CUDA device)
#   bash scripts/gpu-check.sh .gpu diagnose  # only CUDA graphs, pinned uploads, a base build
#   bash scripts/gpu-check.sh .gpu kernels   # only the loss kernels, PyTorch modules, wgpu
#
# The training part runs first (each step has its own timeout; the device tool's calls end at
# 600 s, and gpu-run.sh gives the part CHECK_S): the CUDA device's methods against the CPU device (with
# FAIL_FAST=1 the script ends there, exit code 3, if they fail), `lossc bench-train --device
# cuda` populations against PyTorch eager, torch.compile and a torch.func ensemble
# (bench/torch_gpu_train_baseline.py) and their table with the goals checked
# (bench/gpu_train_table.py), then trainings on CUDA against the CPU and wgpu.
# scripts/gpu-run.sh runs it before the proof run, in one call.
#
# Output goes to stdout and, when $OUT is set (the device tool), to $OUT/gpu-check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu-check.txt"
exec > >(tee "$log") 2>&1
bin=${1:-}
part=${2:-all}
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }
echo "== $(date -u) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"

# NVRTC: cudarc opens libnvrtc.so (or .so.12); give it whichever version is installed.
nvrtc=$(ldconfig -p | awk '/libnvrtc\.so/ {print $NF; exit}')
[ -n "$nvrtc" ] || nvrtc=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | sort | head -n 1)
if [ -n "$nvrtc" ]; then
  mkdir -p /tmp/lossc-nvrtc && ln -sf "$nvrtc" /tmp/lossc-nvrtc/libnvrtc.so
  export LD_LIBRARY_PATH="/tmp/lossc-nvrtc:$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
  echo "NVRTC: $nvrtc"
else
  python3 -m venv .venv-nvrtc 2>/dev/null && .venv-nvrtc/bin/pip install -q nvidia-cuda-nvrtc-cu12
  export LD_LIBRARY_PATH="$(ls -d "$PWD"/.venv-nvrtc/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib | head -n 1):${LD_LIBRARY_PATH:-}"
fi

if [ -n "$bin" ]; then
  bash scripts/gpu-unpack.sh "$bin"
  lossc="$bin/lossc" emitters="$bin/emitters" gpu_train="$bin/gpu_train" runtime_gpu="$bin/runtime_gpu"
  python_targets="$bin/python_targets"
else
  cargo build --release 2>&1 | tail -n 2
  lossc=target/release/lossc
  emitters=$(cargo test --release --test emitters --no-run 2>&1 | grep -o 'target/release/deps/emitters-[0-9a-f]*' | head -n 1)
  gpu_train=$(cargo test --release --test gpu_train --no-run 2>&1 | grep -o 'target/release/deps/gpu_train-[0-9a-f]*' | head -n 1)
  runtime_gpu=$(cargo test --release --workspace --test gpu --no-run 2>&1 | grep -o 'target/release/deps/gpu-[0-9a-f]*' | head -n 1)
  python_targets=$(cargo test --release --test python_targets --no-run 2>&1 | grep -o 'target/release/deps/python_targets-[0-9a-f]*' | head -n 1)
fi

if [ -n "$bin" ]; then
  # The Vulkan loader for wgpu, unpacked where the dynamic linker looks.
  for f in "$bin"/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
  icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json 2>/dev/null)
  [ -n "$icd" ] && export VK_DRIVER_FILES="$icd"
fi

if [ -n "$bin" ] && [ -d "$bin/fashion-mnist" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets && cp -r "$bin/fashion-mnist" /usr/share/datasets/fashion-mnist
  echo "Fashion-MNIST: the subset from $bin (20,000 training images)"
fi

if want train; then
echo "== $(date -u +%T) the CUDA device: each method against the CPU device (K = 3)"
LOSSC_REQUIRE_CUDA=1 timeout 60 "$runtime_gpu" cuda_device --nocapture 2>&1 | tee /tmp/lossc-cuda-device.txt |
  grep -E "CUDA device|SKIPPED|test |panicked|result"
if ! grep -q "^test result: ok" /tmp/lossc-cuda-device.txt; then
  # Where a kernel went wrong on the device: the same tests under the CUDA toolkit's memcheck,
  # its first reports (the kernel, the thread, the address).
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
  if [ -n "$sanitizer" ]; then
    echo "== $(date -u +%T) the CUDA device's checks again under $sanitizer (memcheck)"
    LOSSC_REQUIRE_CUDA=1 timeout 120 "$sanitizer" --tool memcheck --print-limit 5 "$runtime_gpu" cuda_device \
      --test-threads=1 2>&1 | grep -E "=========|test |panicked|result" | head -n 60
  fi
  if [ "${FAIL_FAST:-0}" = 1 ]; then
    echo "the CUDA device failed its checks (or did not run): stopping here"
    exit 3
  fi
fi
echo "== $(date -u +%T) training throughput (surrogate, batch 128, 1x32x32, CE): lossc on CUDA, then PyTorch on the same GPU"
# K = 1 and 128 also train again with each kernel timed (--profile).
bench=/tmp/lossc-train-bench.txt
: > "$bench"
for k in 1 8 32 64 128; do
  profile=""; [ "$k" = 1 ] || [ "$k" = 128 ] && profile="--profile"
  timeout 60 "$lossc" bench-train --device cuda --population "$k" --steps 30 $profile 2>&1 | tee -a "$bench" ||
    echo "(population $k: timed out or failed)"
done
PYTHONUNBUFFERED=1 timeout 150 python3 bench/torch_gpu_train_baseline.py 1,8,32,64,128 2>&1 | tee -a "$bench" ||
  echo "(torch baseline failed or torch not available)"
echo "== $(date -u +%T) the table of docs/gpu.md and its goals"
python3 bench/gpu_train_table.py "$bench"
echo "== $(date -u +%T) training on CUDA: the CPU's curve, the population invariant, CUDA against wgpu, 300 steps of Fashion-MNIST"
LOSSC_REQUIRE_CUDA=1 timeout 180 "$gpu_train" cuda --nocapture --test-threads=1 2>&1 | grep -E "CUDA device|adapter|SKIPPED|test |panicked|cpu |cuda |result"
echo "== $(date -u +%T) the training part ended"
fi
if want diagnose; then
# Steps replayed as CUDA graphs (the default) against the same build launching kernel by kernel
# (LOSSC_CUDA_GRAPHS=0), at K = 1 against uploads from pageable memory (LOSSC_CUDA_PINNED=0),
# and against a base build where one was packed (gpu-prepare.sh BASE=...).
sides="graphs nographs"
if [ -n "$bin" ] && [ -x "$bin/lossc-base" ]; then
  sides="base graphs nographs"
  echo "== base: the build of $(cat "$bin/lossc-base.rev")"
fi
echo "== CUDA graphs on and off, pinned uploads on and off ($sides, pageable at K = 1): alternating, 2 rounds"
for round in 1 2; do
  for k in 1 128; do
    ksides="$sides"; [ "$k" = 1 ] && ksides="$sides pageable"
    for side in $ksides; do
      exe="$lossc"; [ "$side" = base ] && exe="$bin/lossc-base"
      graphs=1; [ "$side" = nographs ] && graphs=0
      pinned=1; [ "$side" = pageable ] && pinned=0
      printf '%s, round %s: ' "$side" "$round"
      LOSSC_CUDA_GRAPHS=$graphs LOSSC_CUDA_PINNED=$pinned timeout 60 "$exe" bench-train --device cuda --population "$k" --steps 40 | grep -E '^surrogate|CUDA graphs' || echo "(population $k: timed out or failed)"
    done
  done
done
if [ -x "${bin:-}/lossc-base" ]; then
  echo "== base: each kernel timed at K = 128, against this build's profile above"
  timeout 60 "$bin/lossc-base" bench-train --device cuda --population 128 --steps 30 --profile || echo "(base profile: timed out or failed)"
fi
fi
want kernels || exit 0

echo "== CUDA kernels against the interpreter (16 examples x 2 layouts x C up to 100,000; 200 random losses)"
timeout 200 "$emitters" cuda --skip cpu_emulator --nocapture --test-threads=1 2>&1 | tee "${OUT:-/tmp}/cuda-tests.txt" | grep -E "CUDA device|SKIPPED|test |random|panicked|cuda |compiled"
echo "== fused kernels (labels, no smoothing)"
timeout 300 "$lossc" gpu-bench examples/ce.loss examples/a2.loss examples/m1.loss examples/c2.loss \
  --shapes 256x10,8192x10,8192x100,65536x1000
echo "== PyTorch baseline"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_baseline.py 256x10,8192x10,8192x100,65536x1000 || echo "(torch not available)"
echo "== lossc compile --target torch: the fused kernel inside PyTorch against the module's float64 path, and timed against the loss in eager PyTorch"
for l in ce a2 m1 c2; do "$lossc" compile "examples/$l.loss" --target torch -o /tmp/lossc-torch >/dev/null; done
LOSSC_TORCH_PYTHON=python3 timeout 120 "$python_targets" the_torch_module --nocapture 2>&1 | grep -E "PyTorch|SKIPPED|rows compared|test |panicked|fused"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_module_check.py /tmp/lossc-torch/{ce,a2,m1,c2}.py || echo "(torch module check failed or torch not available)"
echo "== WGSL kernels through wgpu on this machine's Vulkan driver"
timeout 120 "$emitters" wgsl_kernels_run --nocapture 2>&1 | grep -E "adapter|SKIPPED|test |random|panicked|wgsl "
echo "== the training runtime on wgpu: each device method against the CPU device, a training against the CPU's curve, the population invariant"
timeout 120 "$runtime_gpu" --nocapture 2>&1 | grep -E "skipped|test |panicked"
timeout 240 "$gpu_train" --nocapture 2>&1 | grep -E "adapter|SKIPPED|test |panicked"
echo "== training throughput (surrogate, batch 128, 32x32, CE): the CPU device, then wgpu populations"
timeout 120 "$lossc" bench-train --threads "$(nproc)" --steps 20
for k in 1 8 32 64; do
  timeout 150 "$lossc" bench-train --device wgpu --population "$k" --steps 20 || echo "(population $k: timed out or failed)"
done
