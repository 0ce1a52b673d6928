#!/usr/bin/env bash
# The first compile of a process (text -> callable tier-1 kernel, labels, 100 classes) for each
# paper loss, each in a fresh process so that nothing is paged in or cached, over PASSES passes;
# then the compile again in the same process. Prints one line per process and a summary
# against the 1 ms goal.
#
#   bench/first_compile.sh [PASSES] [LOSSC]      # defaults: 3, target/release/lossc
set -euo pipefail
cd "$(dirname "$0")/.."
passes=${1:-3}
lossc=${2:-target/release/lossc}
[ -x "$lossc" ] || { echo "error: $lossc not found: run cargo build --release first" >&2; exit 2; }
losses=(examples/[abcmr][0-9].loss examples/ce.loss)
# How many functions of scripts/link-order.txt this binary has (few: a debug build, or a file
# gone stale), and the span of code they lie in (~2 MB when the link used the order).
command -v nm >/dev/null || echo "# link order: not checked (nm, from binutils, is not installed)"
found=$(nm "$lossc" 2>/dev/null | awk 'NR == FNR {want[$0] = 1; next} ($3 in want) {print $1, $3}' scripts/link-order.txt - | sort)
addrs=$(cut -d' ' -f1 <<<"$found")
if [ -n "$found" ]; then
  lo=$(head -n 1 <<<"$addrs") hi=$(tail -n 1 <<<"$addrs")
  echo "# link order: $(cut -d' ' -f2 <<<"$found" | sort -u | wc -l) of $(wc -l <scripts/link-order.txt) functions of scripts/link-order.txt," \
    "within $(((16#$hi - 16#$lo) / 1000)) kB of code"
elif command -v nm >/dev/null; then
  echo "# link order: none of scripts/link-order.txt is in $lossc"
fi
echo "# $lossc bench FILE --compile-only, one process per loss; ms: tier 1 first, again"
lines=$(for pass in $(seq "$passes"); do
  for f in "${losses[@]}"; do
    "$lossc" bench "$f" --compile-only | awk -v p="$pass" '/tier 1/ {print "pass " p, $1, $4, $7; exit}'
  done
done)
echo "$lines"
echo "$lines" | awk '
  { n++; first[n] = $4; again[n] = $5; if ($4 > 1) over++ }
  function median(a, n,   s, i, j, t) {
    for (i = 1; i <= n; i++) s[i] = a[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
    return s[int(n / 2) + 1]
  }
  function range(a, n,   lo, hi, i) {
    lo = a[1]; hi = a[1]
    for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
    return sprintf("%.3f-%.3f", lo, hi)
  }
  END {
    printf "first compile: %d processes, median %.3f ms, range %s ms, %d over 1 ms\n", n, median(first, n), range(first, n), over
    printf "compile again: median %.3f ms, range %s ms\n", median(again, n), range(again, n)
  }'
