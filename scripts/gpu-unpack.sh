#!/usr/bin/env bash
# Makes the binaries that scripts/gpu-prepare.sh packed into DIR ready to run in this tree:
# unpacks them (the device tool carries at most 64 MiB, so they travel compressed with xz;
# the GPU machine may lack xz, so Python's lzma does the work), and, where this tree is not
# at the path it was built in, links that path here: the test binaries read files by it
# (examples/, target/release/lossc, their scratch folder under target/).
#   bash scripts/gpu-unpack.sh DIR      (from the tree's root)
set -euo pipefail
for f in "$1"/*.xz; do
  [ -e "$f" ] || continue
  [ "${f%.xz}" -nt "$f" ] && continue  # unpacked by an earlier call
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"
  chmod +x "${f%.xz}"
done
if [ ! -e target/release/lossc ]; then  # a tree with its own build keeps it
  mkdir -p target/release && ln -s "$(cd "$1" && pwd)/lossc" target/release/lossc
fi
root=$(cat "$1/build-root" 2>/dev/null || true)
if [ -n "$root" ] && [ ! -e "$root" ]; then
  mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"
  echo "linked $root (where the binaries were built) to this tree"
fi
