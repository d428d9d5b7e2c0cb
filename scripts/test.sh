#!/usr/bin/env bash
# The project's test command: installs what the tests need (a Python venv with pinned numpy,
# onnx and onnxruntime; the ONNX backend test data) and runs every Rust test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-venv.sh
bash scripts/setup-cross.sh
# nextest runs test binaries in parallel and prints a closing summary; fall back to cargo test.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
