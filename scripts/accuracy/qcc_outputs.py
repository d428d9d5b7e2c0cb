#!/usr/bin/env python3
"""Scores qcc's int8 outputs from `qcc run`: the fallback for the qcc column when `qcc
compare` is not available, and the label accuracy of `--mode dynamic` (which `qcc compare`
does not report). Runs `qcc run MODEL --target T (--stats S | --mode dynamic) --input
NAME=FILE.npy --output-dir DIR`, then scores its outputs against onnxruntime's fp32
outputs (eval_fp32_ort.npy) with the same metrics as the ORT baseline (metrics.py).
Writes artifacts/accuracy/<key>/qcc_run.json (static) or qcc_dynamic_run.json (dynamic).

Static: first tries the whole eval set as one batch (--batch N binds the symbolic batch
dimension); if qcc refuses, runs the samples one at a time with --batch 1. Dynamic: one
sample per run always, since a run-time range spans the whole input tensor (a batch would
share one activation scale), and `qcc compare` and ort_dynamic.py run each sample alone.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qcc", required=True)
    ap.add_argument("--target", default="x86_64-int8")
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("--mode", choices=["static", "dynamic"], default="static",
                    help="static: --stats <key>/stats.json; dynamic: --mode dynamic")  # fmt: skip
    ap.add_argument("key")
    args = ap.parse_args()
    d = args.root / args.key
    meta = json.loads((d / "meta.json").read_text())
    model, input_name = Path(meta["model"]), meta["input"]["name"]
    output_name = meta["output"]["name"]
    eval_path = d / "eval.npy"
    if args.mode == "dynamic":
        quant, result_file = ["--mode", "dynamic"], "qcc_dynamic_run.json"
    else:
        quant, result_file = ["--stats", str(d / "stats.json")], "qcc_run.json"
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
    result = {
        "model": args.key,
        "source": f"qcc run --target {args.target} {' '.join(quant[:2])} ({mode}) "
        "vs onnxruntime fp32",
        **agreement(fp32, int8.reshape(fp32.shape), labels),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (d / result_file).write_text(json.dumps(result, indent=1) + "\n")
    print(f"qcc_outputs: {args.key} ({args.mode}): top-1 agreement {result['top1_agreement']:.4f}, "
          f"cosine {result['cosine']:.6f} ({mode}) [{result['seconds']} s]")  # fmt: skip


if __name__ == "__main__":
    main()
