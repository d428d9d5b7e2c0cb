#!/usr/bin/env python3
"""Scores qcc's int8 outputs from `qcc run`: the fallback for the qcc column when `qcc
compare` is not available, the label accuracy of `--mode dynamic` (which `qcc compare`
does not report), and qcc compiling onnxruntime's own quantize_dynamic models. Runs `qcc
run MODEL --target T [--stats S | --mode dynamic] --input NAME=FILE.npy --output-dir DIR`,
then scores its outputs against onnxruntime's fp32 outputs (eval_fp32_ort.npy) with the
same metrics as the ORT baseline (metrics.py). Writes artifacts/accuracy/<key>/:

  qcc_run.json              static: the fp32 model with --stats <key>/stats.json
  qcc_dynamic_run.json      --mode dynamic: the fp32 model, quantized by qcc at compile time
  qcc_ort_dyn_<S>.json      --ort-dynamic S: ort_dynamic.py's ort_dyn_<S>.onnx, already
                            quantized (DynamicQuantizeLinear -> ConvInteger/MatMulInteger
                            chains, which qcc turns into its dynamic int8 layers), with no
                            quantization flag; where onnxruntime ran that same file
                            (eval_dyn_<S>_ort.npy), also how many samples' outputs are
                            bit-identical to onnxruntime's

Static: first tries the whole eval set as one batch (--batch N binds the symbolic batch
dimension); if qcc refuses, runs the samples one at a time with --batch 1. Dynamic (both
kinds): one sample per run always, since a run-time range spans the whole input tensor (a
batch would share one activation scale), and `qcc compare` and ort_dynamic.py run each
sample alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import agreement  # noqa: E402


def qcc_run(qcc: str, model: Path, target: str, quant: list[str], input_name: str,
            data: Path, batch: int, out_dir: Path) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [qcc, "run", str(model), "--target", target, *quant,
           "--batch", str(batch), "--input", f"{input_name}={data}",
           "--output-dir", str(out_dir)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True)


def read_output(out_dir: Path, output_name: str) -> np.ndarray:
    """qcc writes DIR/<output name>.npy; names with '/' may land in a subdirectory or be
    sanitized, so fall back to the only .npy written."""
    direct = out_dir / f"{output_name}.npy"
    if direct.is_file():
        return np.load(direct)
    found = sorted(out_dir.rglob("*.npy"))
    if len(found) != 1:
        raise SystemExit(f"qcc_outputs: expected {direct} or one .npy in {out_dir}, got {found}")
    return np.load(found[0])


def same_model_comparison(ort_int8: np.ndarray, qcc_int8: np.ndarray) -> dict:
    """qcc vs onnxruntime running the same quantized model: how many samples' output
    vectors are equal bit for bit, how many share the arg-max, and the largest difference."""
    both_f32 = ort_int8.dtype == qcc_int8.dtype == np.float32
    if ort_int8.shape != qcc_int8.shape or not both_f32:
        raise SystemExit(f"qcc_outputs: onnxruntime int8 outputs {ort_int8.shape} "
                         f"{ort_int8.dtype} vs qcc {qcc_int8.shape} {qcc_int8.dtype}")  # fmt: skip
    r = ort_int8.reshape(len(ort_int8), -1)
    q = qcc_int8.reshape(len(qcc_int8), -1)
    return {
        "samples": int(len(r)),
        # Bit for bit: compares the float32 bit patterns (so -0.0 != 0.0, NaN == same NaN).
        "bit_identical": int((r.view(np.uint32) == q.view(np.uint32)).all(axis=1).sum()),
        "top1_same": int((r.argmax(axis=1) == q.argmax(axis=1)).sum()),
        "max_abs_diff": float(np.abs(r.astype(np.float64) - q).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qcc", required=True)
    ap.add_argument("--target", default="x86_64-int8")
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("--mode", choices=["static", "dynamic"], default="static",
                    help="static: --stats <key>/stats.json; dynamic: --mode dynamic")  # fmt: skip
    ap.add_argument("--ort-dynamic", metavar="SETTING",
                    help="run <key>/ort_dyn_SETTING.onnx (ort_dynamic.py) as it is, one "
                    "sample per run; overrides --mode")  # fmt: skip
    ap.add_argument("--result-file", metavar="NAME",
                    help="write <key>/NAME instead of the mode's default file")  # fmt: skip
    ap.add_argument("key")
    args = ap.parse_args()
    d = args.root / args.key
    meta = json.loads((d / "meta.json").read_text())
    model, input_name = Path(meta["model"]), meta["input"]["name"]
    output_name = meta["output"]["name"]
    eval_path = d / "eval.npy"
    ort_int8 = None
    if args.ort_dynamic:
        # quantize_dynamic keeps the graph's input and output names.
        model = d / f"ort_dyn_{args.ort_dynamic}.onnx"
        if not model.is_file():
            raise SystemExit(f"qcc_outputs: {model} missing: run ort_dynamic.py first")
        quant, result_file = [], f"qcc_ort_dyn_{args.ort_dynamic}.json"
        args.mode = f"ort-dynamic {args.ort_dynamic}"
        ort_int8 = d / f"eval_dyn_{args.ort_dynamic}_ort.npy"
    elif args.mode == "dynamic":
        quant, result_file = ["--mode", "dynamic"], "qcc_dynamic_run.json"
    else:
        quant, result_file = ["--stats", str(d / "stats.json")], "qcc_run.json"
    result_file = args.result_file or result_file
    evals = np.load(eval_path)
    t0 = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix=f"qcc-acc-{args.key}-") as tmp:
        tmp = Path(tmp)
        whole = None
        if args.mode == "static":
            whole = qcc_run(args.qcc, model, args.target, quant, input_name, eval_path,
                            len(evals), tmp / "all")  # fmt: skip
        if whole is not None and whole.returncode == 0:
            int8, mode = read_output(tmp / "all", output_name), f"one run, --batch {len(evals)}"
        else:
            if whole is not None:
                why = whole.stderr.strip()[-300:]
                print(f"qcc_outputs: {args.key}: batched run failed ({why}); "
                      "running samples one at a time")  # fmt: skip
            outs = []
            for i in range(len(evals)):
                sample = tmp / f"in{i}.npy"
                np.save(sample, evals[i : i + 1])
                r = qcc_run(args.qcc, model, args.target, quant, input_name, sample, 1,
                            tmp / f"out{i}")  # fmt: skip
                if r.returncode != 0:
                    raise SystemExit(f"qcc_outputs: {args.key}: sample {i}: {r.stderr.strip()}")
                outs.append(read_output(tmp / f"out{i}", output_name))
            int8, mode = np.concatenate(outs), "one run per sample, --batch 1"

    fp32 = np.load(d / "eval_fp32_ort.npy")
    labels = np.load(d / "eval_labels.npy") if (d / "eval_labels.npy").exists() else None
    int8 = int8.reshape(fp32.shape)
    flags = " ".join([model.name if args.ort_dynamic else "", *quant[:2]]).strip()
    result = {
        "model": args.key,
        "source": f"qcc run {flags} --target {args.target} ({mode}) vs onnxruntime fp32",
        **agreement(fp32, int8, labels),
    }
    if ort_int8 is not None and ort_int8.is_file():
        result["vs_ort_int8"] = same_model_comparison(np.load(ort_int8), int8)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (d / result_file).write_text(json.dumps(result, indent=1) + "\n")
    same = result.get("vs_ort_int8")
    identical = (f", {same['bit_identical']}/{same['samples']} bit-identical to onnxruntime"
                 if same else "")  # fmt: skip
    print(f"qcc_outputs: {args.key} ({args.mode}): top-1 agreement {result['top1_agreement']:.4f}, "
          f"cosine {result['cosine']:.6f}{identical} ({mode}) [{result['seconds']} s]")  # fmt: skip


if __name__ == "__main__":
    main()
