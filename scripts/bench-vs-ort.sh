#!/usr/bin/env bash
# Compares qcc's compiled code with onnxruntime on zoo models (batch 1, one thread, pinned to
# core 0 as `taskset -c 0` would; --cpu N or --no-pin to change that): sets up the venv if
# missing (scripts/setup-venv.sh), builds qcc in release mode and runs
# scripts/bench_vs_ort.py with this script's arguments, e.g.
#   scripts/bench-vs-ort.sh --rounds 5 --runs 20 --markdown out/bench-vs-ort.md
#   scripts/bench-vs-ort.sh --layers-only --ceiling 58
# See `scripts/bench-vs-ort.sh --help`. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! .venv/bin/python -c 'import numpy, onnx, onnxruntime' 2>/dev/null; then
    scripts/setup-venv.sh
fi
cargo build --release --bin qcc
# The report quotes the command as it was typed.
command="scripts/bench-vs-ort.sh"
for arg in "$@"; do command+=" $(printf '%q' "$arg")"; done
export QCC_BENCH_COMMAND="$command"
exec .venv/bin/python scripts/bench_vs_ort.py "$@"
