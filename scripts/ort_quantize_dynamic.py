#!/usr/bin/env python3
"""Quantizes a model the way onnxruntime users do it dynamically, for qcc's tests.

Usage:
    python scripts/ort_quantize_dynamic.py MODEL.onnx OUT.onnx [--weight-type u8|s8]
        [--per-channel] [--preprocess] [--op-types Conv,MatMul]

  --preprocess    run onnxruntime's quant_pre_process first (its recommended flow: the
                  ORT optimizer folds BatchNormalization into the convolutions, so each
                  ConvInteger is followed by Cast, Mul and the bias Add)
  --weight-type   u8 (QUInt8, asymmetric: what onnxruntime's CPU provider can run for
                  convolutions) or s8 (QInt8, symmetric; ConvInteger with s8 weights does not
                  load in onnxruntime, MatMulInteger does)
  --per-channel   per-channel weights (onnxruntime applies it to MatMulInteger only)

Writes OUT.onnx (DynamicQuantizeLinear -> ConvInteger/MatMulInteger -> Cast -> Mul ...).
Exit status: 0 on success, 2 on a usage error, 1 if onnxruntime fails.
"""
import argparse
import logging
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--weight-type", choices=["u8", "s8"], default="u8")
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--preprocess", action="store_true")
    p.add_argument("--op-types", default="", help="comma-separated, default: onnxruntime's")
    args = p.parse_args()
    # onnxruntime's quantizer logs a pre-processing hint on every call.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        print(f"ort_quantize_dynamic: error: {e} (run scripts/setup-venv.sh)", file=sys.stderr)
        return 2
    weight_type = QuantType.QUInt8 if args.weight_type == "u8" else QuantType.QInt8
    op_types = [t for t in args.op_types.split(",") if t] or None
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model
        try:
            if args.preprocess:
                source = str(Path(tmp) / "preprocessed.onnx")
                quant_pre_process(args.model, source, skip_symbolic_shape=True)
            quantize_dynamic(
                source,
                args.out,
                weight_type=weight_type,
                per_channel=args.per_channel,
                op_types_to_quantize=op_types,
            )
        except Exception as e:  # noqa: BLE001 - report whatever onnxruntime raised
            print(f"ort_quantize_dynamic: error: {e!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
