#!/usr/bin/env bash
# A search's throughput with a round generated ahead (`--lag 1`) against one round at a time
# (`--lag 0`), on this machine's CPU: the same small search (Fashion-MNIST, 8 initial losses,
# 16 children in rounds of 2, 800 steps with the gate at step 80 as in the paper's budget of
# 8,000 and 800, WORKERS workers), the two alternating over ROUNDS rounds (default 2), each
# into a new store. Prints, per run, the wall time, the trainings, how many stopped at the
# gate, the steps trained and steps/s; then the median steps/s of each and their ratio. The
# two lags breed different children, so their steps differ: steps trained a second of wall
# time is what compares them.
#
#   bash bench/search_lag.sh        # also ROUNDS=3 WORKERS=2 LOSSC=target/release/lossc
set -euo pipefail
cd "$(dirname "$0")/.."
lossc=${LOSSC:-target/release/lossc}
[ -x "$lossc" ] || { echo "no $lossc: build it first (cargo build --release)" >&2; exit 2; }
rounds=${ROUNDS:-2} workers=${WORKERS:-2}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
settings=(--population 8 --initial 8 --tournament 3 --iterations 16 --round 2 --steps 800 --batch 64
  --lr 0.003 --warmup 10 --val 1000 --eval-every 200 --gate-step 80 --gate-accuracy 0.25 --seed 1)
cpu() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | xargs; }
echo "# $(cpu 'model name') (family $(cpu 'cpu family'), model $(cpu 'model\s')), $(nproc) CPUs"
echo "# $lossc search ${settings[*]} --workers $workers --lag L"
for r in $(seq "$rounds"); do
  for lag in 0 1; do
    db="$dir/lag$lag-$r.db"
    start=$(date +%s.%N)
    "$lossc" search --db "$db" "${settings[@]}" --workers "$workers" --lag "$lag" --out "$dir/out-$lag-$r" >"$dir/log" 2>&1 ||
      { cat "$dir/log" >&2; exit 1; }
    end=$(date +%s.%N)
    python3 - "$db" "$lag" "$start" "$end" <<'PY'
import json, sqlite3, sys
db, lag, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [json.loads(m) for (m,) in sqlite3.connect(db).execute("SELECT metrics FROM results")]
steps = sum(m["steps"] for m in rows)
gated = sum(1 for m in rows if (m.get("stopped") or "").startswith("training accuracy"))
wall = end - start
print(f"lag {lag}: {wall:.1f} s, {len(rows)} trainings, {gated} stopped at the gate, {steps} steps, {steps / wall:.1f} steps/s")
PY
  done
done | tee "$dir/all"
python3 - "$dir/all" <<'PY'
import re, statistics, sys
rate = {"0": [], "1": []}
for line in open(sys.argv[1]):
    m = re.match(r"lag (\d): .* ([\d.]+) steps/s", line)
    if m:
        rate[m.group(1)].append(float(m.group(2)))
a, b = statistics.median(rate["0"]), statistics.median(rate["1"])
print(f"median steps/s: lag 0 {a:.1f}, lag 1 {b:.1f}: lag 1 / lag 0 = {b / a:.2f}x")
PY
