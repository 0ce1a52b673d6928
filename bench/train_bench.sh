#!/usr/bin/env bash
# Training throughput of the surrogate on 1 and 2 threads, lossc and (if installed in
# .venv-torch) PyTorch, in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
for t in 1 2; do target/release/lossc bench-train --threads "$t"; done
if [ -x .venv-torch/bin/python ]; then .venv-torch/bin/python bench/torch_train_baseline.py; else echo "(no .venv-torch: PyTorch baseline not run)"; fi
