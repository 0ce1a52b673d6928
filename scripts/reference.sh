#!/usr/bin/env bash
# Regenerates tests/data/reference.json with JAX in float64, in a local venv.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-ref/bin/python ] || python3 -m venv .venv-ref
.venv-ref/bin/pip install -q "jax[cpu]" numpy
.venv-ref/bin/python scripts/reference.py
