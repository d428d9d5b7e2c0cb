#!/usr/bin/env python3
"""Reference run of an ONNX model with onnxruntime; every output is saved as .npy.

Usage:
    python scripts/ort_run.py MODEL.onnx --input NAME=FILE.npy [--input ...] \
        --output-dir DIR [--threads N] [--optimize]

Output file naming rule (crates on the Rust side apply the same rule -- keep them in sync):
    DIR/<sanitized output name>.npy, where sanitizing replaces every character
    (Unicode code point) that is not an ASCII letter, digit, '.', '_' or '-'
    with a single '_'.   e.g. "/layer1/Conv_output_0" -> "_layer1_Conv_output_0.npy"
If two outputs map to the same file name the script fails instead of overwriting.

Graph optimizations are disabled by default: a reference should be the plain
kernels, not ORT's fused ones, whose rounding can differ. --optimize enables them.
Runs on CPUExecutionProvider only, so results do not depend on the machine.
Exit status: 0 on success, 2 on a usage/input error, 1 if onnxruntime fails.
"""
import argparse
import os
import re
import sys

import numpy as np
import onnxruntime as ort

UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def sanitize(name: str) -> str:
    return UNSAFE.sub("_", name)


def fail(msg: str, code: int = 2) -> "None":
    print(f"ort_run: error: {msg}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = ORT default)")
    p.add_argument("--optimize", action="store_true", help="enable ORT graph optimizations")
    args = p.parse_args()

    feeds = {}
    for spec in args.input:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            fail(f"--input expects NAME=FILE.npy, got {spec!r}")
        if name in feeds:
            fail(f"input {name!r} given twice")
        try:
            # allow_pickle=False: inputs are plain numeric tensors, never objects.
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            fail(f"cannot load input {name!r} from {path}: {e}")

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if args.optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1  # sequential execution; parallelism only inside kernels
    opts.log_severity_level = 3  # errors only: keep ORT's warnings out of test output
    try:
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types; report them uniformly
        fail(f"onnxruntime cannot load {args.model}: {e}", 1)

    # get_inputs() lists only the inputs that must be fed (not initializers).
    required = [i.name for i in sess.get_inputs()]
    missing = [n for n in required if n not in feeds]
    unknown = [n for n in feeds if n not in required]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        expected = ", ".join(f"{i.name} {i.type} {i.shape}" for i in sess.get_inputs())
        fail(f"{'; '.join(parts)}; the model expects: {expected}")

    out_names = [o.name for o in sess.get_outputs()]
    files = {}
    for n in out_names:
        f = sanitize(n) + ".npy"
        if f in files:
            fail(f"outputs {files[f]!r} and {n!r} both map to file {f}")
        files[f] = n

    try:
        results = sess.run(out_names, feeds)
    except Exception as e:
        fail(f"onnxruntime run failed: {e}", 1)

    os.makedirs(args.output_dir, exist_ok=True)
    for f, value in zip(files, results):
        if not isinstance(value, np.ndarray):
            # Sequence/map outputs have no single-array .npy form.
            fail(f"output {files[f]!r} is a {type(value).__name__}, not a tensor", 1)
        np.save(os.path.join(args.output_dir, f), value)


if __name__ == "__main__":
    main()
