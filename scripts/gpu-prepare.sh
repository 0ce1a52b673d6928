#!/usr/bin/env bash
# Prepares .gpu/ for scripts/gpu-check.sh on a GPU machine that has no Rust toolchain and no
# network (the `device` tool's machines): the release `lossc`, the `emitters`, `gpu_train`,
# `python_targets` and runtime `gpu` test binaries (stripped, packed with xz) and the Debian packages of the Vulkan loader and
# the GL dispatch libraries that NVIDIA's Vulkan driver links against, for wgpu. Carry `.gpu` with the
# working tree and run `bash scripts/gpu-check.sh .gpu` there. Every kernel is first compiled with
# NVRTC 13, that machine's (PyPI; .venv-nvrtc13).
#
#   bash scripts/gpu-prepare.sh              # this tree
#   BASE=REV bash scripts/gpu-prepare.sh     # and `lossc` built at REV as .gpu/lossc-base, which
#                                            # gpu-check.sh times against this build, alternating
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu
cargo build --release
# A test binary by name, built as the workspace builds it (one set of dependency features, as
# scripts/test.sh tests them; `-p` alone would build the dependencies again for one package).
test_bin() {
  cargo test --release --workspace --test "$1" --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
strip -o .gpu/lossc target/release/lossc
pwd > .gpu/build-root  # the test binaries read files by this path (scripts/gpu-unpack.sh)
strip -o .gpu/emitters "$(test_bin emitters)"
strip -o .gpu/gpu_train "$(test_bin gpu_train)"
strip -o .gpu/runtime_gpu "$(test_bin gpu)"
strip -o .gpu/python_targets "$(test_bin python_targets)"
packed_bins=".gpu/lossc .gpu/emitters .gpu/gpu_train .gpu/runtime_gpu .gpu/python_targets"
# The GPU machine's NVRTC is CUDA 13's (CI compiles with 12): every kernel, the losses' and the
# runtime's, compiles with NVRTC 13 here first (PyPI's nvidia-cuda-nvrtc, in .venv-nvrtc13), so
# that a kernel it refuses costs no device time.
if [ ! -d .venv-nvrtc13 ]; then
  python3 -m venv .venv-nvrtc13 && .venv-nvrtc13/bin/pip install -q "nvidia-cuda-nvrtc==13.*"
fi
nvrtc13=$(find "$PWD/.venv-nvrtc13" -name 'libnvrtc.so.13' | head -n 1)
mkdir -p target/nvrtc13 && ln -sf "$nvrtc13" target/nvrtc13/libnvrtc.so
LD_LIBRARY_PATH="$PWD/target/nvrtc13:$(dirname "$nvrtc13")" LOSSC_REQUIRE_NVRTC=1 \
  "$(test_bin emitters)" with_nvrtc --nocapture | tee target/nvrtc13/log
[ "$(grep -c 'with NVRTC 13\.' target/nvrtc13/log)" = 2 ] || { echo "error: NVRTC 13 did not compile them" >&2; exit 1; }
if [ -n "${BASE:-}" ]; then
  base_dir=$(mktemp -d)
  git worktree add --detach "$base_dir/tree" "$BASE" >/dev/null
  (cd "$base_dir/tree" && CARGO_TARGET_DIR="$PWD/../../lossc-base-target" cargo build --release -q --bin lossc)
  strip -o .gpu/lossc-base "$(dirname "$base_dir")/lossc-base-target/release/lossc"
  git rev-parse --short "$BASE" > .gpu/lossc-base.rev
  git worktree remove --force "$base_dir/tree" && rmdir "$base_dir"
  packed_bins="$packed_bins .gpu/lossc-base"
fi
(cd .gpu && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 2>/dev/null)
# Fashion-MNIST for the training checks: the first 20,000 training images and the test set
# (the whole set would not fit in what the device tool carries). gpu-check.sh installs it
# where lossc looks when the machine has none.
python3 - /usr/share/datasets/fashion-mnist .gpu/fashion-mnist <<'PY'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name, keep in [("train-images-idx3-ubyte", 20000), ("train-labels-idx1-ubyte", 20000),
                   ("t10k-images-idx3-ubyte", None), ("t10k-labels-idx1-ubyte", None)]:
    data = gzip.open(f"{src}/{name}.gz").read()
    ndim = data[3]
    dims = list(struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim]))
    item = 1
    for d in dims[1:]:
        item *= d
    n = dims[0] if keep is None else min(keep, dims[0])
    body = data[4 + 4 * ndim:4 + 4 * ndim + n * item]
    header = data[:4] + struct.pack(f">{ndim}I", n, *dims[1:])
    with gzip.open(f"{dst}/{name}.gz", "wb") as f:
        f.write(header + body)
PY
# The binaries travel compressed (scripts/gpu-unpack.sh, which gpu-check.sh and gpu-proof.sh
# call, unpacks them), and all that travels must fit in the device tool's 64 MiB.
# shellcheck disable=SC2086
xz -T0 -6 $packed_bins
tracked=$(git ls-files -z | xargs -0 cat | wc -c)
packed=$(du -sb .gpu | cut -f1)
total=$(( (tracked + packed) / 1048576 ))
echo "carried: tracked files $(( tracked / 1048576 )) MiB + .gpu $(( packed / 1048576 )) MiB = $total MiB of 64"
[ "$total" -lt 64 ] || { echo "error: what the device tool carries would exceed 64 MiB" >&2; exit 1; }
