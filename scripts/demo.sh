#!/usr/bin/env bash
# Builds qcc and runs the bundled default: writes the ResNet-18 zoo model, inspects it and runs
# it on a seeded random input. Outputs go to out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model=${1:-resnet18}
cargo build --release
mkdir -p out
target/release/qcc zoo "$model" -o "out/$model.onnx"
target/release/qcc inspect "out/$model.onnx" | tail -n 3
target/release/qcc run "out/$model.onnx" --output-dir "out/$model-outputs"
