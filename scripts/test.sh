#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it. Installs what the tests need:
# Mesa's software Vulkan (lavapipe) for the WGSL kernels, Fashion-MNIST for the training tests
# (Debian's dataset-fashion-mnist), g++ for the CUDA kernels' CPU emulator and the fake CUDA
# driver that runs the CUDA device's tests without a GPU, NVRTC from PyPI for the CUDA compile
# tests (no CUDA toolkit or GPU needed), JAX (CPU) from PyPI and PyTorch (CPU, Debian's
# python3-torch) for the generated Python modules, and a throwaway PostgreSQL server for the
# store tests (scripts/pg-test-server.sh; stopped when this exits).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.json ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q mesa-vulkan-drivers libvulkan1
fi
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q dataset-fashion-mnist
fi
# g++ (C++20) for the CUDA kernels' CPU emulator (tests/cuda_emu).
if ! command -v g++ >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q g++
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

if [ ! -d .venv-nvrtc ]; then
  python3 -m venv .venv-nvrtc
  .venv-nvrtc/bin/pip install -q nvidia-cuda-nvrtc-cu12
fi
nvrtc_lib="$(ls -d "$PWD"/.venv-nvrtc/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib | head -n 1)"
export LD_LIBRARY_PATH="$nvrtc_lib:${LD_LIBRARY_PATH:-}"

# JAX (CPU) for the test of `lossc compile --target jax`, in the venv the JAX baseline uses.
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c "import jax" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q "jax[cpu]" numpy
fi

# PyTorch (CPU) for the test of `lossc compile --target torch`: Debian's python3-torch, for the
# system's Python (PyPI's torch wheels bring gigabytes of CUDA libraries).
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-torch
fi

# The store tests' PostgreSQL server, unless LOSSC_TEST_PG already names one.
if [ -z "${LOSSC_TEST_PG:-}" ]; then
  source scripts/pg-test-server.sh
fi

# In CI nothing may be skipped for want of these. A one-off build gains nothing from
# incremental state (gigabytes of it).
if [ -n "${CI:-}" ]; then
  export LOSSC_REQUIRE_NVRTC=1 LOSSC_REQUIRE_GXX=1 LOSSC_REQUIRE_VULKAN=1 LOSSC_REQUIRE_JAX=1 LOSSC_REQUIRE_TORCH=1 LOSSC_REQUIRE_POSTGRES=1 CARGO_INCREMENTAL=0
fi
# The test build needs a few GB; a full disk shows up as a linker crash (SIGBUS), so say so first.
free_kb="$(df -Pk . | awk 'NR == 2 { print $4 }')"
if [ "${free_kb:-0}" -lt 4000000 ]; then
  echo "warning: $((free_kb / 1000000)) GB free here; the test build needs about 2 GB" >&2
fi

cargo test --workspace --all-targets
cargo test --workspace --doc

# The CUDA device without a GPU: its tests again, on the fake CUDA driver and NVRTC of
# tests/cuda_emu (the kernels run on the CPU emulator; copies, waits, graphs and pinned memory
# keep the driver's rules), except the 300-step Fashion-MNIST training (hours on the emulator)
# and the comparison with wgpu, which means something only on one GPU. The device methods run
# on a fake built with AddressSanitizer, which allocates device memory at the size asked for,
# so a kernel that reads or writes past a buffer fails its test (on a GPU it would read another
# buffer's values, or end the process with an illegal address); its runtime is preloaded into
# the test program (cargo's runner), not into cargo. The trainings, which only compose those
# kernels, run on the plain fake (twice as fast).
fake="$PWD/target/fake-cuda" fake_asan="$PWD/target/fake-cuda-asan"
bash tests/cuda_emu/build-fake.sh "$fake" >/dev/null
FAKE_ASAN=1 bash tests/cuda_emu/build-fake.sh "$fake_asan" >/dev/null
asan="$(g++ -print-file-name=libasan.so)"
[ -f "$asan" ] || { echo "g++ has no AddressSanitizer runtime (libasan.so)" >&2; exit 1; }
host="$(rustc -vV | sed -n 's/^host: //p')"
asan_runner="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUNNER=env LD_PRELOAD=$asan ASAN_OPTIONS=detect_leaks=0"
# `on_fake DIR [VAR=VALUE...] COMMAND...`: COMMAND with the fake of DIR as the CUDA driver.
on_fake() {
  local dir=$1
  shift
  env LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH" LOSSC_CACHE_DIR="$dir/cache" LOSSC_REQUIRE_CUDA=1 "$@"
}
# --workspace, not -p lossc-runtime: one package alone unifies its dependencies' features
# differently, and cargo would build them all again.
on_fake "$fake_asan" "$asan_runner" cargo test --workspace --test gpu cuda_device
on_fake "$fake" cargo test --test gpu_train cuda -- --skip fashion_mnist --skip cuda_and_wgpu
on_fake "$fake" cargo test --test cli -- device_auto on_cuda
