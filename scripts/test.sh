#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
