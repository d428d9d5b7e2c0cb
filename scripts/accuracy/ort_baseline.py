#!/usr/bin/env python3
"""The onnxruntime side of the int8 accuracy suite.

For each prepared model (artifacts/accuracy/<key>/, written by prepare.py):
  - fp32 outputs on eval.npy           -> eval_fp32_ort.npy (the reference for qcc too)
  - onnxruntime.quantization.quantize_static, QDQ format, per-channel QInt8 weights,
    QUInt8 activations, MinMax calibration over calib.npy (after ORT's recommended
    quant_pre_process)                 -> ort_int8.onnx
  - its outputs on eval.npy            -> eval_int8_ort.npy
  - agreement metrics (metrics.py)     -> ort.json, and a line on stdout
Run inside .venv-accuracy (scripts/accuracy/run.sh does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import agreement  # noqa: E402

BATCH = 16


class NpyReader(CalibrationDataReader):
    """Feeds calib.npy to the calibrator in batches (MinMax takes min/max over all)."""

    def __init__(self, input_name: str, samples: np.ndarray):
        self.input_name = input_name
        self.batches = [samples[i : i + BATCH] for i in range(0, len(samples), BATCH)]
        self.next = 0

    def get_next(self):
        if self.next >= len(self.batches):
            return None
        self.next += 1
        return {self.input_name: self.batches[self.next - 1]}

    def rewind(self):
        self.next = 0


def run_model(path: Path, input_name: str, samples: np.ndarray, batch: int = BATCH) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {input_name: samples[i : i + batch]})[0]
            for i in range(0, len(samples), batch)]  # fmt: skip
    return np.concatenate(outs)


def baseline(root: Path, key: str) -> dict:
    d = root / key
    meta = json.loads((d / "meta.json").read_text())
    model = Path(meta["model"])
    input_name = meta["input"]["name"]
    calib = np.load(d / "calib.npy")
    evals = np.load(d / "eval.npy")
    labels = np.load(d / "eval_labels.npy") if (d / "eval_labels.npy").exists() else None

    t0 = time.perf_counter()
    fp32 = run_model(model, input_name, evals)
    np.save(d / "eval_fp32_ort.npy", fp32)

    # ORT's documented first step: shape inference + graph optimization (which also
    # turns Constant-node weights into initializers that the quantizer can see).
    source = model
    opset = next(o.version for o in onnx.load(str(model)).opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        # Per-channel QDQ needs DequantizeLinear's axis (opset 13); quantize_static
        # would write it into an opset-9 model (open-nsfw) that ORT then rejects.
        source = d / "ort_opset13.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(model)), 13), str(source))
    pre = d / "ort_preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
        pre_process = "quant_pre_process"
    except Exception as e:  # noqa: BLE001 - ORT's symbolic shape inference asserts
        # The symbolic shape pass is for transformer-style graphs; ONNX shape inference
        # and the ORT optimizer (which the quantizer needs) still run without it.
        print(f"ort_baseline: {key}: symbolic shape inference failed ({e!r}); "
              "pre-processing without it")  # fmt: skip
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        pre_process = "quant_pre_process(skip_symbolic_shape=True)"
    int8_path = d / "ort_int8.onnx"
    quantize_static(
        str(pre),
        str(int8_path),
        NpyReader(input_name, calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    int8 = run_model(int8_path, input_name, evals)
    np.save(d / "eval_int8_ort.npy", int8)

    result = {
        "model": key,
        "quantizer": f"onnxruntime {ort.__version__} quantize_static",
        "source_opset": opset,
        "settings": f"{pre_process}; QDQ, per_channel=True, activations QUInt8, "
        "weights QInt8, MinMax calibration",
        "calibration_samples": int(len(calib)),
        **agreement(fp32, int8, labels),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (d / "ort.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("models", nargs="*", help="model keys (default: every prepared one)")
    args = ap.parse_args()
    keys = args.models or sorted(p.parent.name for p in args.root.glob("*/meta.json"))
    if not keys:
        raise SystemExit(f"ort_baseline: nothing prepared under {args.root}")
    for key in keys:
        r = baseline(args.root, key)
        labelled = (
            f", labels fp32 {r['label_accuracy_fp32']:.4f} int8 {r['label_accuracy_int8']:.4f}"
            if "label_accuracy_fp32" in r
            else ""
        )
        print(
            f"ort_baseline: {key}: {r['samples']} samples, top-1 agreement "
            f"{r['top1_agreement']:.4f}, cosine {r['cosine']:.6f} (min {r['min_cosine']:.6f})"
            f"{labelled} [{r['seconds']} s]"
        )


if __name__ == "__main__":
    main()
