#!/usr/bin/env python3
"""onnxruntime's dynamic quantization as the baseline for `qcc --mode dynamic`.

For each prepared model (artifacts/accuracy/<key>/, after ort_baseline.py, whose
ort_preprocessed.onnx and eval_fp32_ort.npy this reuses), quantizes with
onnxruntime.quantization.quantize_dynamic (per_channel=True; activations are always
QUInt8, quantized per tensor at run time by DynamicQuantizeLinear), runs the result on
eval.npy with onnxruntime, one sample per run, and scores it against onnxruntime fp32
(metrics.py). Several
settings, because the one that matches qcc's x86-vnni profile (s8 weights) does not run,
and because per_channel=True does not reach convolutions: onnxruntime 1.20.1's ConvInteger
quantizer (quantization/operators/conv.py) asks for per-tensor weights whatever per_channel
says; only MatMulInteger weights are per channel (and 7-bit: reduce_range is forced there).

  s8           weight_type QInt8, default op types (Conv -> ConvInteger, MatMul and Gemm ->
               MatMulInteger): onnxruntime's CPU provider has no ConvInteger for u8
               activations x s8 weights, so the session fails to load; recorded as such
  s8_matmul    QInt8, op_types_to_quantize=["MatMul"]: what runs with s8 weights (only the
               classifier's matrix product; every convolution stays fp32)
  u8           weight_type QUInt8 (onnxruntime's default for u8: asymmetric), default op
               types: every convolution and the matrix product
  u8sym_no_dw  QUInt8 with WeightSymmetric=True (zero point 127, a grid symmetric around
               zero like s8's) and depthwise convolutions excluded, as qcc keeps them fp32:
               the setting closest to qcc --mode dynamic that onnxruntime can run
  qcc_sim      not quantize_dynamic: qcc's scheme simulated in fp32 by onnxruntime, as an
               independent check of qcc's numbers: s8 symmetric per-channel weights
               (round half to even, [-127, 127]) dequantized back into the fp32 model, and
               DynamicQuantizeLinear -> DequantizeLinear on the input of every Conv (but
               depthwise ones) and MatMul/Gemm with constant weights

Writes ort_dynamic.json (one entry per setting), ort_dyn_<setting>.onnx and, for each
setting that runs, onnxruntime's int8 outputs on eval.npy as eval_dyn_<setting>_ort.npy
(qcc_outputs.py --ort-dynamic compiles the same model files and compares with them).
Run inside .venv-accuracy (scripts/accuracy/run.sh does).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import agreement  # noqa: E402
from ort_baseline import run_model  # noqa: E402

DEPTHWISE = "depthwise"  # placeholder in SETTINGS for "this model's depthwise convolutions"

# name -> (description for the report, quantize_dynamic keyword arguments)
SETTINGS = {
    "s8": (
        "QInt8 weights, default op types",
        {"weight_type": QuantType.QInt8},
    ),
    "s8_matmul": (
        'QInt8 weights, op_types_to_quantize=["MatMul"]',
        {"weight_type": QuantType.QInt8, "op_types_to_quantize": ["MatMul"]},
    ),
    "u8": (
        "QUInt8 weights (asymmetric), default op types",
        {"weight_type": QuantType.QUInt8},
    ),
    "u8sym_no_dw": (
        "QUInt8 weights, WeightSymmetric=True, depthwise Conv excluded",
        {
            "weight_type": QuantType.QUInt8,
            "extra_options": {"WeightSymmetric": True},
            "nodes_to_exclude": DEPTHWISE,
        },
    ),
}


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes with one input channel per group (qcc's depthwise case)."""
    weights = {i.name: i.dims for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if group > 1 and dims is not None and len(dims) > 1 and dims[1] == 1:
            names.append(node.name)
    return names


def simulate_qcc_dynamic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, int]:
    """`model` with qcc's dynamic quantization simulated in fp32 (see qcc_sim above); also
    returns how many Conv and MatMul/Gemm nodes were fake-quantized."""
    weights = {i.name: i for i in model.graph.initializer}
    depthwise = set(depthwise_convs(model))
    nodes, convs, matmuls = [], 0, 0
    for node in model.graph.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type not in ("Conv", "MatMul", "Gemm") or w is None or node.name in depthwise:
            nodes.append(node)
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        # The output-channel axis: Conv [C_out, ...], Gemm B^T [N, K], MatMul/Gemm B [K, N].
        axis = 0 if node.op_type == "Conv" or trans_b else len(w.dims) - 1
        values = numpy_helper.to_array(w).astype(np.float32)
        others = tuple(i for i in range(values.ndim) if i != axis)
        scale = np.abs(values).max(axis=others, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        fake = np.clip(np.round(values / scale), -127, 127) * scale
        # A weight shared by several nodes is rewritten once; the rounding is idempotent.
        w.CopyFrom(numpy_helper.from_array(fake.astype(np.float32), w.name))
        x = node.input[0]
        q = [f"{x}.dq.{node.name}", f"{x}.dq_scale.{node.name}", f"{x}.dq_zp.{node.name}"]
        nodes.append(onnx.helper.make_node("DynamicQuantizeLinear", [x], q))
        nodes.append(onnx.helper.make_node("DequantizeLinear", q, [f"{x}.fq.{node.name}"]))
        node.input[0] = f"{x}.fq.{node.name}"
        nodes.append(node)
        convs += node.op_type == "Conv"
        matmuls += node.op_type != "Conv"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, convs, matmuls


def evaluate_simulation(root: Path, key: str) -> dict:
    d = root / key
    meta = json.loads((d / "meta.json").read_text())
    evals = np.load(d / "eval.npy")
    fp32 = np.load(d / "eval_fp32_ort.npy")
    labels = np.load(d / "eval_labels.npy") if (d / "eval_labels.npy").exists() else None
    t0 = time.perf_counter()
    model, convs, matmuls = simulate_qcc_dynamic(onnx.load(str(d / "ort_preprocessed.onnx")))
    out = d / "ort_dyn_qcc_sim.onnx"
    onnx.save(model, str(out))
    result = {
        "model": key,
        "setting": "qcc_sim",
        "settings": "fp32 simulation: s8 symmetric per-channel weights, dynamic u8 inputs, "
        "depthwise fp32",
        "excluded": 0,
        "ops": {"ConvInteger": convs, "MatMulInteger": matmuls},
        **agreement(fp32, run_model(out, meta["input"]["name"], evals, batch=1), labels),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def integer_ops(path: Path) -> dict:
    counts = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return {op: counts[op] for op in ("ConvInteger", "MatMulInteger", "Conv", "MatMul", "Gemm")}


def evaluate(root: Path, key: str, setting: str) -> dict:
    d = root / key
    meta = json.loads((d / "meta.json").read_text())
    input_name = meta["input"]["name"]
    pre = d / "ort_preprocessed.onnx"
    if not pre.is_file():
        raise SystemExit(f"ort_dynamic: {pre} missing: run ort_baseline.py first")
    evals = np.load(d / "eval.npy")
    fp32 = np.load(d / "eval_fp32_ort.npy")
    labels = np.load(d / "eval_labels.npy") if (d / "eval_labels.npy").exists() else None

    description, kwargs = SETTINGS[setting]
    kwargs = dict(kwargs)
    if kwargs.get("nodes_to_exclude") == DEPTHWISE:
        kwargs["nodes_to_exclude"] = depthwise_convs(onnx.load(str(pre)))
    out = d / f"ort_dyn_{setting}.onnx"
    outputs = d / f"eval_dyn_{setting}_ort.npy"
    t0 = time.perf_counter()
    quantize_dynamic(str(pre), str(out), per_channel=True, **kwargs)
    result = {
        "model": key,
        "setting": setting,
        "settings": f"per_channel=True, {description}",
        "excluded": len(kwargs.get("nodes_to_exclude") or []),
        "ops": integer_ops(out),
    }
    try:
        # One sample per run: a dynamic range is taken over the whole input tensor, so a
        # batch would share one activation scale across its samples; qcc compare runs
        # each sample alone too.
        int8 = run_model(out, input_name, evals, batch=1)
    except Exception as e:  # noqa: BLE001 - onnxruntime reports a missing kernel this way
        result["error"] = str(e).strip().splitlines()[0]
        outputs.unlink(missing_ok=True)
    else:
        result.update(agreement(fp32, int8, labels))
        # Kept for qcc_outputs.py --ort-dynamic: qcc compiles this same model file, and
        # its outputs are compared with these element for element.
        np.save(outputs, int8)
        result["outputs"] = outputs.name
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("models", nargs="*", help="model keys (default: every prepared one)")
    args = ap.parse_args()
    # quantize_dynamic warns on every call that quant_pre_process was not run: the input
    # IS ort_baseline.py's quant_pre_process output, it just carries no marker.
    logging.getLogger().setLevel(logging.ERROR)
    keys = args.models or sorted(p.parent.name for p in args.root.glob("*/meta.json"))
    if not keys:
        raise SystemExit(f"ort_dynamic: nothing prepared under {args.root}")
    for key in keys:
        results = []
        for setting in [*SETTINGS, "qcc_sim"]:
            if setting == "qcc_sim":
                r = evaluate_simulation(args.root, key)
            else:
                r = evaluate(args.root, key, setting)
            results.append(r)
            ops = ", ".join(f"{op} {n}" for op, n in r["ops"].items() if n)
            if "error" in r:
                print(f"ort_dynamic: {key}: {setting}: onnxruntime fails: {r['error']} ({ops})")
                continue
            labelled = (f", labels {r['label_accuracy_int8']:.4f}"
                        if "label_accuracy_int8" in r else "")  # fmt: skip
            print(f"ort_dynamic: {key}: {setting}: top-1 agreement {r['top1_agreement']:.4f}, "
                  f"cosine {r['cosine']:.6f}{labelled} ({ops}) [{r['seconds']} s]")  # fmt: skip
        doc = {
            "model": key,
            "quantizer": f"onnxruntime {ort.__version__} quantize_dynamic",
            "source": "ort_preprocessed.onnx (ort_baseline.py's quant_pre_process output)",
            "results": results,
        }
        (args.root / key / "ort_dynamic.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
