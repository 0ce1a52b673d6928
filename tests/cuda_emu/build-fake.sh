#!/usr/bin/env bash
# Builds the fake CUDA driver and NVRTC (libcuda.cpp, libnvrtc.cpp) into the folder OUT. With OUT
# first on LD_LIBRARY_PATH, a process's CUDA device runs on the CPU:
#   bash tests/cuda_emu/build-fake.sh target/fake-cuda
#   LD_LIBRARY_PATH=$PWD/target/fake-cuda LOSSC_REQUIRE_CUDA=1 cargo test -p lossc-runtime --test gpu cuda_device
# With FAKE_ASAN=1 the driver and the kernels it builds are built with AddressSanitizer, and
# device memory is allocated at the size asked for: a kernel's access past a buffer, or past
# its shared memory, is reported. The process then needs ASan's runtime preloaded
# (LD_PRELOAD="$(g++ -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0; scripts/test.sh).
set -euo pipefail
[ $# = 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
extra=""
[ "${FAKE_ASAN:-0}" = 1 ] && extra="-fsanitize=address --param=asan-stack=0"
flags=(-std=c++20 -O1 -shared -fPIC -pthread -Wall -I"$here")
g++ "${flags[@]}" $extra "$here/libcuda.cpp" -o "$out/libcuda.so" -ldl
g++ "${flags[@]}" -DFAKE_SOURCE_DIR="\"$here\"" -DFAKE_CACHE_DIR="\"$out/modules\"" \
    -DFAKE_EXTRA_FLAGS="\" $extra\"" "$here/libnvrtc.cpp" -o "$out/libnvrtc.so"
echo "$out"
