#!/usr/bin/env bash
# Runs bench/jax_baseline.py in its own venv (bench/.venv, created with jax[cpu] on first use).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv" >&2
  "$here/.venv/bin/pip" install -q "jax[cpu]" numpy >&2
fi
exec "$here/.venv/bin/python" "$here/jax_baseline.py" "$@"
