#!/usr/bin/env bash
# Builds qcc and runs the bundled default on ResNet-18 (or the zoo model named as $1):
# writes the model, compiles it into out/MODEL/ (object file + C header, layer report),
# links the C example against it and runs it, and benchmarks the same model in process;
# then quantizes it to int8 (calibration on seeded random inputs, as the zoo weights are
# random too), compiles the int8 object into out/MODEL-int8/ and benchmarks int8.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model=${1:-resnet18}
name=${model//-/_}
cargo build --release
mkdir -p "out/$model"
qcc=target/release/qcc
$qcc zoo "$model" -o "out/$model.onnx"
$qcc compile "out/$model.onnx" --target native-fp32 -o "out/$model" --name "$name" --report \
    > "out/$model/report.txt"
head -n 6 "out/$model/report.txt"
echo "(full report: out/$model/report.txt)"
# The C example: link the object, run it on a seeded random input written by qcc run.
gcc -O2 -DMODEL="$name" -include "out/$model/$name.h" examples/c/main.c "out/$model/$name.o" \
    -o "out/$model/app"
$qcc run "out/$model.onnx" --target native-fp32 --output-dir "out/$model/jit" --seed 1 \
    --save-inputs "out/$model/inputs" 2>&1 | tail -n 2
"out/$model/app" "out/$model/inputs/"*.npy "out/$model/c_output.npy"
echo "C example wrote out/$model/c_output.npy"
$qcc bench "out/$model.onnx" --target native-fp32 --seconds 3
# int8: calibrate (statistics, not scales), compile for this machine's int8 kernels, bench.
$qcc calibrate "out/$model.onnx" --synthetic 4 -o "out/$model.stats.json" 2>&1 | tail -n 1
mkdir -p "out/$model-int8"
$qcc compile "out/$model.onnx" --target native-int8 --stats "out/$model.stats.json" \
    -o "out/$model-int8" --name "${name}_int8" --report > "out/$model-int8/report.txt"
head -n 6 "out/$model-int8/report.txt"
echo "(full report: out/$model-int8/report.txt)"
$qcc bench "out/$model.onnx" --target native-int8 --stats "out/$model.stats.json" --seconds 3
