#!/usr/bin/env bash
# int8 against fp32, qcc against onnxruntime (issue #5): sets up the venv if missing
# (scripts/setup-venv.sh), builds qcc in release mode and runs scripts/bench_int8.py with this
# script's arguments, e.g.
#   scripts/bench-int8.sh --rounds 3 --markdown out/bench-int8.md
#   scripts/bench-int8.sh --models mobilenetv2 --configs 1x1 --no-layers
# See `scripts/bench-int8.sh --help`. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! .venv/bin/python -c 'import numpy, onnx, onnxruntime.quantization' 2>/dev/null; then
    scripts/setup-venv.sh
fi
cargo build --release --bin qcc
# The report quotes the command as it was typed.
command="scripts/bench-int8.sh"
for arg in "$@"; do command+=" $(printf '%q' "$arg")"; done
export QCC_BENCH_COMMAND="$command"
exec .venv/bin/python scripts/bench_int8.py "$@"
