#!/usr/bin/env bash
# Builds the fake CUDA driver and NVRTC (libcuda.cpp, libnvrtc.cpp) into the folder OUT. With OUT
# first on LD_LIBRARY_PATH, a process's CUDA device runs on the CPU:
#   bash tests/cuda_emu/build-fake.sh target/fake-cuda
#   LD_LIBRARY_PATH=$PWD/target/fake-cuda LOSSC_REQUIRE_CUDA=1 cargo test -p lossc-runtime --test gpu cuda_device
set -euo pipefail
[ $# = 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
flags=(-std=c++20 -O1 -shared -fPIC -pthread -Wall -I"$here")
g++ "${flags[@]}" "$here/libcuda.cpp" -o "$out/libcuda.so" -ldl
g++ "${flags[@]}" -DFAKE_SOURCE_DIR="\"$here\"" -DFAKE_CACHE_DIR="\"$out/modules\"" "$here/libnvrtc.cpp" -o "$out/libnvrtc.so"
echo "$out"
