#!/usr/bin/env bash
# Unpacks the binaries that scripts/gpu-prepare.sh packed with xz into DIR (the device tool
# carries at most 64 MiB; the GPU machine may lack xz, so Python's lzma does the work).
#   bash scripts/gpu-unpack.sh DIR
set -euo pipefail
for f in "$1"/*.xz; do
  [ -e "$f" ] || continue
  [ "${f%.xz}" -nt "$f" ] && continue  # unpacked by an earlier call
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"
  chmod +x "${f%.xz}"
done
