#!/usr/bin/env bash
# The JIT kernel's AVX-512 row helpers (softmax and general passes on 16 lanes) against its
# AVX2 helpers (8 lanes), on this host, in one run: ROUNDS rounds (default 5), each timing every paper loss at
# 8192x100 with labels and with dense targets once with the AVX-512 helpers and once with
# LOSSC_NO_AVX512=1 (the AVX2 helpers), alternating; then per loss and target form the medians
# and their ratio. Needs a processor with AVX-512F (else both sides are the AVX2 build).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
rounds=${ROUNDS:-5}
log=$(mktemp)
target/release/lossc bench examples/ce.loss --shapes 256x10 --targets labels | sed -n 1p
for r in $(seq "$rounds"); do
    for side in avx512 avx2; do
        narrow=""; [ "$side" = avx2 ] && narrow=1
        LOSSC_NO_AVX512=$narrow target/release/lossc bench examples/*.loss --shapes 8192x100 --targets labels,dense \
            | awk -v side="$side" '$2 == "8192x100" { print side, $1, $3, $4 }' >> "$log"
    done
done
python3 bench/ratio_table.py "$log" avx2:AVX2 avx512:AVX-512
rm -f "$log"
