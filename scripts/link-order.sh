#!/usr/bin/env bash
# Writes scripts/link-order.txt: the functions of the release `lossc` that a process runs from
# its start through its kernel compiles, over every paper loss, sorted by name (callgrind's
# order changes from run to run; sorted, a rerun's diff shows what changed). build.rs hands
# the file to the linker (lld's --symbol-ordering-file) for release builds, so that this code
# sits together in the binary: the first compile then maps fewer pages of code (each a minor
# fault, several microseconds in a VM; docs/benchmarks.md).
#
# The names are mangled and carry hashes that change with rustc, with each dependency's
# version, and with lossc's own list of dependencies (adding libc renamed most of lossc's own
# functions); names the binary no longer has are skipped silently, so a stale file costs
# speed, not correctness. Rerun after such a change (needs valgrind; ~1 minute):
#
#   scripts/link-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "error: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release
bin=target/release/lossc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in examples/[abcmr][0-9].loss examples/ce.loss; do
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$tmp/$(basename "$f").cg" \
    "$bin" bench "$f" --compile-only >/dev/null 2>&1
done
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | LC_ALL=C sort -u >"$tmp/have"
# "fn=(id) name" introduces a function in callgrind's output; "'2" marks a recursion level.
cat "$tmp"/*.cg | sed -n 's/^c\?fn=([0-9]*) //p' | sed "s/'[0-9]*$//" | LC_ALL=C sort -u \
  | LC_ALL=C comm -12 - "$tmp/have" >scripts/link-order.txt
echo "scripts/link-order.txt: $(wc -l <scripts/link-order.txt) functions"
