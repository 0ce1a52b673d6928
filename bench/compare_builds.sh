#!/usr/bin/env bash
# The CPU kernels of this working tree against those of a git revision (default HEAD), on
# this host, in one run: the revision is built in a temporary worktree, then ROUNDS rounds
# (default 5) alternate the two builds, each timing every loss of examples/ at SHAPES (default
# 8192x100) with labels and dense targets; then per loss and target form the medians and
# their ratio (revision / this tree: above 1 means this tree is faster). With TRAIN=1 each
# round times training instead (`lossc bench-train`, 60 steps at batch 128, on 1 and 2
# threads), as ms per step.
#   bash bench/compare_builds.sh [REV]
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
rounds=${ROUNDS:-5}
shapes=${SHAPES:-8192x100}
base_dir=$(mktemp -d)
# The revision's own target directory, kept between runs so that a rerun rebuilds only lossc.
target="$PWD/target/compare-base"
log=$(mktemp)
trap 'git worktree remove --force "$base_dir" >/dev/null 2>&1 || true; rm -rf "$base_dir" "$log"' EXIT
git worktree add --detach "$base_dir" "$rev" >/dev/null
echo "building $rev ($(git rev-parse --short "$rev")) and this tree" >&2
(cd "$base_dir" && CARGO_TARGET_DIR="$target" cargo build --release -q --bin lossc)
base_bin="$target/release/lossc"
cargo build --release -q --bin lossc
target/release/lossc bench examples/ce.loss --shapes 256x10 --targets labels | sed -n 1p
for r in $(seq "$rounds"); do
    for side in base tree; do
        bin=target/release/lossc; [ "$side" = base ] && bin=$base_bin
        if [ -n "${TRAIN:-}" ]; then
            for t in 1 2; do
                "$bin" bench-train --threads "$t" --steps 60 \
                    | awk -v side="$side" -v t="$t" '$(NF-2) == "images/s," { print side, "train", t "-threads", 128000 / $(NF-3) }' >> "$log"
            done
        else
            "$bin" bench examples/*.loss --shapes "$shapes" --targets labels,dense \
                | awk -v side="$side" -v shape="$shapes" '$2 == shape { print side, $1, $3, $4 }' >> "$log"
        fi
    done
    echo "round $r/$rounds done" >&2
done
python3 bench/ratio_table.py "$log" "base:$rev" "tree:this tree"
