#!/usr/bin/env bash
# Training throughput of the surrogate on 1 and 2 threads: lossc and PyTorch CPU, interleaved
# over ROUNDS rounds (default 3) in the same run, then the medians and their ratios. The VM's
# speed moves 10-30 % from minute to minute; interleaving and medians keep that from favouring
# either side. PyTorch runs from .venv-torch, which this script creates on first use (torch
# from PyPI is a ~2.8 GB install: kept out of CI), or from TORCH_PYTHON (for example
# /usr/bin/python3 with Debian's python3-torch); NO_TORCH=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
torch_python=${TORCH_PYTHON:-.venv-torch/bin/python}
if [ -z "${NO_TORCH:-}" ] && [ -z "${TORCH_PYTHON:-}" ] && [ ! -x .venv-torch/bin/python ]; then
    python3 -m venv .venv-torch >&2
    .venv-torch/bin/pip install -q torch numpy >&2
fi
rounds=${ROUNDS:-3}
log=$(mktemp)
for r in $(seq "$rounds"); do
    for t in 1 2; do target/release/lossc bench-train --threads "$t" --steps 40 | tee -a "$log"; done
    if [ -z "${NO_TORCH:-}" ]; then
        "$torch_python" bench/torch_train_baseline.py 2>/dev/null | tee -a "$log"
    fi
done
[ -z "${NO_TORCH:-}" ] || echo "(NO_TORCH set: PyTorch baseline not run)"
python3 - "$log" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(surrogate|pytorch).*?(\d+) thread\(s\): (\d+) images/s", line)
    if m:
        runs.setdefault((m[1], int(m[2])), []).append(int(m[3]))
for t in (1, 2):
    ours = statistics.median(runs[("surrogate", t)])
    line = f"median, {t} thread(s): lossc {ours:.0f} images/s"
    if ("pytorch", t) in runs:
        theirs = statistics.median(runs[("pytorch", t)])
        line += f", pytorch {theirs:.0f} images/s, lossc/pytorch {ours / theirs:.2f}x"
    print(line)
PY
rm -f "$log"
