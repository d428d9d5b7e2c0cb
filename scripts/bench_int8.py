#!/usr/bin/env python3
"""int8 against fp32, qcc against onnxruntime, on zoo models (issue #5).

Usage:
    python scripts/bench_int8.py [--models resnet50,mobilenetv2,resnet18] [--configs 1x1,8x2]
        [--rounds 3] [--runs 10] [--batch-runs 3] [--warmup 2] [--calibration-samples 4]
        [--layer-repeats 20] [--no-layers] [--ort-dynamic] [--markdown FILE]
    (scripts/bench-int8.sh sets up the venv, builds qcc and runs this with its arguments.)

Five engines per model and configuration: qcc fp32 (`--target native-fp32`), qcc int8
(`--target x86_64-int8 --stats`), onnxruntime fp32, onnxruntime int8 and qcc int8 dynamic
(`--target x86_64-int8 --mode dynamic`: no statistics, activations quantized at run time).
A configuration BxK is batch B with K threads; every model is written by
`qcc zoo NAME --dynamic-batch`, so both engines bind the same symbolic batch.

Quantization. qcc: `qcc calibrate MODEL --synthetic N` (N seeded random inputs), then its
default profile for the target. onnxruntime: `quant_pre_process` (ONNX shape inference and
onnxruntime's basic graph optimizations, which fold BatchNormalization into Conv), then
`quantize_static` in QDQ format, per-channel, QUInt8 activations, QInt8 weights, MinMax
calibration over the same N inputs (qcc's SplitMix64 + Box-Muller stream, seed 0,
regenerated here bit for bit).

--ort-dynamic adds two engines on onnxruntime's own dynamic model (`quant_pre_process`, then
`quantize_dynamic` with its defaults for convolutional networks: QUInt8 weights, per tensor,
ConvInteger/MatMulInteger): onnxruntime running it ("ort dyn") and qcc compiling the same
file for x86_64-int8 ("qcc ort dyn", no statistics), in a table of their own.

Threads. qcc `bench --threads K` runs K copies of the model concurrently (one run per thread
at a time, each on its own workspace): its latency is that of one run on one core, its
throughput counts every thread's samples. onnxruntime runs one session with
intra_op_num_threads=K (one run spread over K cores). Latencies are therefore comparable only
at K = 1; at K > 1 compare throughputs (samples/s).

Method. The machine is shared and noisy: each round runs, per configuration and model, the
engines back to back, the order rotated by one every round. qcc runs are separate
processes (`qcc bench ... --iterations I --warmup W --json`: the round's p50 and throughput);
onnxruntime sessions are kept across rounds (W warm-up runs, then I timed runs: p50 by
nearest rank and samples over the wall time of the timed runs). A figure is the median over
rounds; a ratio is the median over rounds of the round's ratio of samples/s (paired: the
two engines ran back to back). K = 1 runs pinned to one core (--cpu), K > 1 on cores cpu..cpu+K-1.

Layers: `qcc bench resnet50 --layers --json` for int8 and fp32 (batch 1, pinned), alternating
per round; the 10 int8 layers with the largest median time, with GOP/s (2 ops per MAC) and
the fp32 time of the same node; plus the int8 time by op. Fallbacks: the `[FALLBACK: ...]`
notes of `qcc compile MODEL --target x86_64-int8 --report`, counted by reason.

Exit status: 0 when the report was written (failures are reported in it), 2 on a usage or
setup error.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_ort import (  # noqa: E402  (after the path fix)
    cpu_flags,
    cpu_model,
    nearest_rank_p50,
    qcc_error_text,
    qcc_random_inputs,
)

try:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
except ImportError as e:  # the venv is missing or incomplete
    sys.exit(f"bench_int8: error: {e}; run scripts/setup-venv.sh and use .venv/bin/python")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = "resnet50,mobilenetv2,resnet18"
DEFAULT_CONFIGS = "1x1,8x2"
FP32_TARGET = "native-fp32"
INT8_TARGET = "x86_64-int8"
ENGINES = ["qcc fp32", "qcc int8", "ort fp32", "ort int8", "qcc int8 dyn"]
# With --ort-dynamic: onnxruntime's quantize_dynamic model, in onnxruntime and in qcc.
DYNAMIC_ENGINES = ["ort dyn", "qcc ort dyn"]
LAYERS_MODEL = "resnet50"
LAYERS_COUNT = 10


def fail(msg: str) -> "None":
    print(f"bench_int8: error: {msg}", file=sys.stderr)
    sys.exit(2)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_checked(cmd: list, what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{what} failed ({shlex.join(cmd)}):\n{proc.stderr.strip()}")
    return proc


def last_json(stdout: str):
    """The last line of `stdout` that parses as a JSON object, or None."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def pin(cpus: set) -> None:
    """Pins the calling thread (and the processes and threads it starts from now on)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


# --- the engines ----------------------------------------------------------------------------


class QccBench:
    """`qcc bench` of one model, target and configuration, a fresh process per round."""

    def __init__(self, qcc: str, model: str, target: str, stats, batch: int, threads: int,
                 runs: int, warmup: int, extra: tuple = ()):
        self.cmd = [qcc, "bench", model, "--target", target]
        self.cmd += ["--stats", stats] if stats else []
        self.cmd += list(extra)
        self.cmd += ["--batch", str(batch), "--threads", str(threads), "--iterations",
                     str(runs), "--warmup", str(warmup), "--json"]
        self.error = None

    def round(self):
        """(p50 ms, samples/s) of this round, or None after a failure (kept in self.error)."""
        if self.error is not None:
            return None
        proc = subprocess.run(self.cmd, capture_output=True, text=True)
        result = last_json(proc.stdout)
        if proc.returncode != 0 or result is None or "p50_ms" not in result:
            why = qcc_error_text(proc.stderr) if proc.returncode != 0 else "no JSON result"
            self.error = f"exit {proc.returncode}: {why} (command: {shlex.join(self.cmd)})"
            return None
        return float(result["p50_ms"]), float(result["throughput_per_s"])


class OrtBench:
    """One onnxruntime session of one model and configuration, kept across rounds."""

    def __init__(self, model: str, batch: int, threads: int, runs: int, warmup: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.error = None
        self.batch, self.runs, self.warmup = batch, runs, warmup
        try:
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            self.error = f"cannot load {model}: {e}"
            return
        shapes = []
        for i in self.session.get_inputs():
            if i.type != "tensor(float)" or not i.shape:
                self.error = f"input {i.name} is {i.type} {i.shape}, not an f32 tensor"
                return
            dims = [batch if k == 0 and not isinstance(d, int) else d
                    for k, d in enumerate(i.shape)]
            if not all(isinstance(d, int) for d in dims):
                self.error = f"input {i.name} has symbolic dimensions besides the batch: {dims}"
                return
            shapes.append(dims)
        # qcc bench's own input (seed 0), so that both engines see the same data.
        values = qcc_random_inputs(shapes)
        self.feeds = {i.name: v for i, v in zip(self.session.get_inputs(), values)}

    def round(self):
        if self.error is not None:
            return None
        try:
            for _ in range(self.warmup):
                self.session.run(None, self.feeds)
            times = []
            begin_all = time.perf_counter_ns()
            for _ in range(self.runs):
                begin = time.perf_counter_ns()
                self.session.run(None, self.feeds)
                times.append((time.perf_counter_ns() - begin) / 1e6)
            wall_s = (time.perf_counter_ns() - begin_all) / 1e9
        except Exception as e:
            self.error = f"run failed: {e}"
            return None
        return nearest_rank_p50(times), self.batch * self.runs / wall_s


# --- model preparation ----------------------------------------------------------------------


class SamplesReader(CalibrationDataReader):
    def __init__(self, name: str, samples: list):
        self.feeds = iter([{name: s} for s in samples])

    def get_next(self):
        return next(self.feeds, None)


def ort_int8_model(fp32_path: str, out_path: str, samples: int, workdir: str) -> str:
    """onnxruntime's static QDQ quantization of `fp32_path`; returns a note on what it did."""
    pre = os.path.join(workdir, os.path.basename(out_path) + ".pre.onnx")
    quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    model = onnx.load(pre, load_external_data=False)
    inputs = [i for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        fail(f"{fp32_path}: onnxruntime calibration here feeds single-input models only")
    dims = [d.dim_value if d.HasField("dim_value") else 1
            for d in inputs[0].type.tensor_type.shape.dim]
    # qcc calibrate --synthetic N draws the N samples one after the other from one stream.
    data = qcc_random_inputs([dims] * samples)
    quantize_static(pre, out_path, SamplesReader(inputs[0].name, data),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.remove(pre)
    return f"{len(model.graph.node)} nodes after quant_pre_process"


def ort_dynamic_model(fp32_path: str, out_path: str, workdir: str) -> None:
    """onnxruntime's dynamic quantization of `fp32_path` (after quant_pre_process, which folds
    BatchNormalization), with quantize_dynamic's defaults but QUInt8 weights: its CPU
    provider has no ConvInteger for s8 weights."""
    pre = os.path.join(workdir, os.path.basename(out_path) + ".pre.onnx")
    quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    quantize_dynamic(pre, out_path, weight_type=QuantType.QUInt8)
    os.remove(pre)


def dynamic_table(configs: list, models: list, results: dict, benches: dict) -> list:
    """onnxruntime's dynamic model in both engines: latency, throughput, qcc's speed-up."""
    rows = ["| model | batch × threads | ort dyn ms | qcc ort dyn ms | ort dyn /s | "
            "qcc ort dyn /s | qcc speed-up over onnxruntime |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    failures = []
    for batch, threads in configs:
        for name in models:
            key = (batch, threads, name)
            cells, per_engine = [], {}
            for engine in DYNAMIC_ENGINES:
                bench = benches[key][engine]
                if bench.error is not None:
                    failures.append(f"- {name} {batch}×{threads} {engine}: {bench.error}")
                per_engine[engine] = [v for v in results[key][engine]
                                      if v is not None and bench.error is None]
            lat = [fmt(med([v[0] for v in per_engine[e]])) for e in DYNAMIC_ENGINES]
            thr = [fmt(med([v[1] for v in per_engine[e]]), 1) for e in DYNAMIC_ENGINES]
            pairs = [q[1] / o[1] for o, q in zip(results[key]["ort dyn"],
                                                 results[key]["qcc ort dyn"])
                     if o is not None and q is not None and o[1] > 0]
            speedup = f"{statistics.median(pairs):.2f}×" if pairs else "—"
            cells = lat + thr + [speedup]
            rows.append(f"| {name} | {batch} × {threads} | " + " | ".join(cells) + " |")
    return rows + ([""] + failures if failures else [])


def fallbacks(qcc: str, model: str, stats: str, workdir: str) -> dict:
    """reason → node names, from the `[FALLBACK: ...]` notes of `qcc compile --report`."""
    out_dir = os.path.join(workdir, "compile-report")
    cmd = [qcc, "compile", model, "--target", INT8_TARGET, "--stats", stats, "-o", out_dir,
           "--report"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    if proc.returncode != 0:
        return {f"qcc compile failed: {qcc_error_text(proc.stderr)}": []}
    found = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+(\S+)\s.*\[FALLBACK: (.*)\]\s*$", line)
        if m:
            found.setdefault(f"{m.group(2)}: {m.group(3)}", []).append(m.group(1))
    return found


# --- layers ---------------------------------------------------------------------------------


def layer_profile(qcc: str, model: str, target: str, stats, repeats: int):
    """node → layer record of `qcc bench --layers --json`, or an error string."""
    cmd = [qcc, "bench", model, "--target", target] + (["--stats", stats] if stats else [])
    cmd += ["--iterations", "1", "--warmup", "1", "--layers", "--layer-repeats", str(repeats),
            "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = last_json(proc.stdout)
    if proc.returncode != 0 or result is None or not isinstance(result.get("layers"), list):
        return f"exit {proc.returncode}: {qcc_error_text(proc.stderr)} ({shlex.join(cmd)})"
    return {layer["node"]: layer for layer in result["layers"]}


def layers_report(args, qcc: str, model: str, stats: str) -> list:
    pin({args.cpu})
    runs = {"int8": [], "fp32": []}
    errors = []
    for r in range(args.rounds):
        order = [("int8", INT8_TARGET, stats), ("fp32", FP32_TARGET, None)]
        for kind, target, st in (order if r % 2 == 0 else order[::-1]):
            result = layer_profile(qcc, model, target, st, args.layer_repeats)
            if isinstance(result, str):
                errors.append(f"- qcc {kind} --layers: {result}")
            else:
                runs[kind].append(result)
        note(f"round {r + 1}/{args.rounds} layers done")
    if not runs["int8"]:
        return ["qcc int8 `bench --layers` failed:", ""] + errors

    def median_ms(kind: str, node: str):
        values = [run[node]["median_ms"] for run in runs[kind] if node in run]
        return statistics.median(values) if values else None

    int8_layers = runs["int8"][0]
    med = {node: median_ms("int8", node) for node in int8_layers}
    total = sum(med.values())
    top = sorted(int8_layers.values(), key=lambda l: (-med[l["node"]], l["index"]))
    rows = [
        f"{args.rounds} rounds, int8 and fp32 alternating: `qcc bench {model_name(model)} "
        f"--target T --layers --layer-repeats {args.layer_repeats} --json` (batch 1, pinned "
        f"to core {args.cpu}); each layer is the median of {args.layer_repeats} back-to-back "
        "runs of its step on the data a full run left (warm caches), and a figure the median "
        f"over rounds. The {LAYERS_COUNT} int8 layers with the largest time; GOP/s = 2·MACs "
        "per second; fp32 is the same node compiled for `native-fp32`.",
        "",
        "| int8 layer | op | MMAC | int8 kernel | int8 µs | int8 GOP/s | fp32 µs | fp32 GFLOP/s "
        "| int8 speed-up | % of int8 layer time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for layer in top[:LAYERS_COUNT]:
        node, macs = layer["node"], layer["macs"]
        q = med[node]
        f = median_ms("fp32", node)
        rate = lambda ms: f"{2 * macs / (ms * 1e-3) / 1e9:.1f}" if ms and macs else "—"
        rows.append(
            f"| {node} | {layer['op']} | {macs / 1e6:.1f} | {layer['kernel']} | {q * 1e3:.0f} "
            f"| {rate(q)} | {f'{f * 1e3:.0f}' if f else '—'} | {rate(f)} "
            f"| {f'{f / q:.2f}×' if f and q else '—'} | {100 * q / total:.1f}% |")
    share = sum(med[l["node"]] for l in top[:LAYERS_COUNT]) / total
    rows += ["", f"Sum of all {len(med)} int8 layers timed alone: {total:.2f} ms; these "
             f"{LAYERS_COUNT} take {100 * share:.0f}% of it.", ""]
    # Where the int8 time goes, by op and convolution shape.
    groups = {}
    for node, layer in int8_layers.items():
        key = layer["op"]
        m = re.search(r"k(\d+)x(\d+)_s(\d+)x(\d+)_\S*_g(\d+)", layer["kernel"])
        if m:
            key += f" {m.group(1)}×{m.group(2)}/{m.group(3)}" + (
                f" g{m.group(5)}" if m.group(5) != "1" else "")
        g = groups.setdefault(key, [0, 0.0, 0])
        g[0] += 1
        g[1] += med[node]
        g[2] += layer["macs"]
    rows += ["| int8 op (kernel shape) | layers | µs | % of int8 layer time | GOP/s |",
             "| --- | --- | --- | --- | --- |"]
    for key, (count, ms, macs) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        rate = f"{2 * macs / (ms * 1e-3) / 1e9:.1f}" if macs else "—"
        rows.append(f"| {key} | {count} | {ms * 1e3:.0f} | {100 * ms / total:.1f}% | {rate} |")
    return rows + ([""] + errors if errors else [])


# --- report ---------------------------------------------------------------------------------


def model_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def med(values: list):
    return statistics.median(values) if values else None


def fmt(value, digits: int = 2) -> str:
    return "failed" if value is None else f"{value:.{digits}f}"


def results_table(configs: list, models: list, results: dict, benches: dict) -> list:
    rows = [
        "| model | batch × threads | "
        + " | ".join(f"{e} ms" for e in ENGINES) + " | "
        + " | ".join(f"{e} /s" for e in ENGINES)
        + " | qcc int8 speed-up over qcc fp32 | qcc int8 / ort int8 time "
        "| ort int8 speed-up over ort fp32 | qcc int8 dyn speed-up over qcc fp32 |",
        "| --- | --- | " + "--- | " * (2 * len(ENGINES) + 4),
    ]
    failures = []
    for batch, threads in configs:
        for name in models:
            key = (batch, threads, name)
            lat, thr = {}, {}
            for engine in ENGINES:
                bench = benches[key][engine]
                values = [v for v in results[key][engine] if v is not None]
                if bench.error is not None:
                    values = []
                    failures.append(f"- {name} {batch}×{threads} {engine}: {bench.error}")
                lat[engine] = med([v[0] for v in values])
                thr[engine] = med([v[1] for v in values])

            def ratio(num: str, den: str) -> str:
                """The median over rounds of the round's throughput ratio num/den: the two
                engines of one round ran back to back, under much the same load."""
                if benches[key][num].error is not None or benches[key][den].error is not None:
                    return "—"
                pairs = [a[1] / b[1] for a, b in zip(results[key][num], results[key][den])
                         if a is not None and b is not None and b[1] > 0]
                return f"{statistics.median(pairs):.2f}" if pairs else "—"
            # Ratios from throughput: at K > 1 the latencies are not comparable (see above),
            # and at K = 1 throughput is 1/latency up to the gaps between runs.
            rows.append(
                f"| {name} | {batch} × {threads} | "
                + " | ".join(fmt(lat[e]) for e in ENGINES) + " | "
                + " | ".join(fmt(thr[e], 1) for e in ENGINES)
                + f" | {ratio('qcc int8', 'qcc fp32')}×"
                f" | {ratio('ort int8', 'qcc int8')}"
                f" | {ratio('ort int8', 'ort fp32')}×"
                f" | {ratio('qcc int8 dyn', 'qcc fp32')}× |")
    return rows + ([""] + failures if failures else [])


def range_table(configs: list, models: list, results: dict) -> list:
    rows = ["| model | batch × threads | " + " | ".join(f"{e} rounds ms" for e in ENGINES) + " |",
            "| --- | --- | " + "--- | " * len(ENGINES)]
    for batch, threads in configs:
        for name in models:
            cells = []
            for engine in ENGINES:
                v = [x[0] for x in results[(batch, threads, name)][engine] if x is not None]
                cells.append(f"{min(v):.2f}–{max(v):.2f}" if v else "—")
            rows.append(f"| {name} | {batch} × {threads} | " + " | ".join(cells) + " |")
    return rows


def parse_configs(text: str) -> list:
    configs = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            fail(f"--configs: {part!r} is not BATCHxTHREADS")
        configs.append((int(m.group(1)), int(m.group(2))))
    return configs


def default_qcc() -> str:
    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target_dir, "release", "qcc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated zoo models (default {DEFAULT_MODELS})")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"BATCHxTHREADS list (default {DEFAULT_CONFIGS})")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--runs", type=int, default=10,
                   help="timed runs per round and engine at batch 1 (default 10)")
    p.add_argument("--batch-runs", type=int, default=3,
                   help="timed runs per round and engine (per qcc thread) at batch > 1 "
                   "(default 3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up runs per round (default 2)")
    p.add_argument("--calibration-samples", type=int, default=4,
                   help="seeded random calibration inputs for both engines (default 4)")
    p.add_argument("--layer-repeats", type=int, default=20,
                   help="qcc bench --layer-repeats for the layer table (default 20)")
    p.add_argument("--no-layers", action="store_true", help="skip the resnet50 layer table")
    p.add_argument("--ort-dynamic", action="store_true",
                   help="also run onnxruntime's quantize_dynamic model in both engines")
    p.add_argument("--qcc", default=default_qcc(),
                   help="the qcc binary (default $CARGO_TARGET_DIR or target/, release/qcc)")
    p.add_argument("--workdir", default=os.path.join(REPO, "out", "bench-int8"),
                   help="where models and statistics are written (default out/bench-int8)")
    p.add_argument("--cpu", type=int, default=0, help="first core to pin to (default 0)")
    p.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    args = p.parse_args()
    if min(args.rounds, args.runs, args.batch_runs, args.calibration_samples,
           args.layer_repeats) < 1 or args.warmup < 0:
        fail("counts must be at least 1 (--warmup at least 0)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    configs = parse_configs(args.configs)
    if not models:
        fail("--models names no model")
    if not os.access(args.qcc, os.X_OK):
        fail(f"no qcc binary at {args.qcc}: build it with `cargo build --release` "
             "(or give --qcc PATH)")
    ncpu = os.cpu_count() or 1
    if any(args.cpu + k > ncpu for _, k in configs):
        fail(f"a configuration needs more cores than cores {args.cpu}..{ncpu - 1}")
    os.makedirs(args.workdir, exist_ok=True)
    # A private copy, so that every round runs the same compiler even if target/ is rebuilt
    # meanwhile.
    qcc_copy = os.path.join(args.workdir, "qcc")
    if os.path.abspath(args.qcc) != os.path.abspath(qcc_copy):
        shutil.copy2(args.qcc, qcc_copy)
        args.qcc = qcc_copy
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    began = time.monotonic()

    version = run_checked([args.qcc, "--version"], "qcc --version").stdout.strip()
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if commit:
        version += f" (commit {commit}{' + uncommitted changes' if dirty else ''})"

    paths, stats, notes, fallback = {}, {}, {}, {}
    for name in models:
        path = os.path.join(args.workdir, f"{name}.onnx")
        run_checked([args.qcc, "zoo", name, "-o", path, "--dynamic-batch"], f"qcc zoo {name}")
        stat = os.path.join(args.workdir, f"{name}.stats.json")
        run_checked([args.qcc, "calibrate", path, "--synthetic", str(args.calibration_samples),
                     "-o", stat], f"qcc calibrate {name}")
        int8_path = os.path.join(args.workdir, f"{name}.ort-int8.onnx")
        note(f"{name}: onnxruntime quantize_static")
        notes[name] = ort_int8_model(path, int8_path, args.calibration_samples, args.workdir)
        paths[name], stats[name] = (path, int8_path), stat
        fallback[name] = fallbacks(args.qcc, path, stat, args.workdir)
        if args.ort_dynamic:
            note(f"{name}: onnxruntime quantize_dynamic")
            ort_dynamic_model(path, os.path.join(args.workdir, f"{name}.ort-dyn.onnx"),
                              args.workdir)
    engines = ENGINES + (DYNAMIC_ENGINES if args.ort_dynamic else [])

    benches, results = {}, {}
    for batch, threads in configs:
        runs = args.runs if batch == 1 else args.batch_runs
        # onnxruntime's pool threads take the affinity of the thread creating the session.
        pin(set(range(args.cpu, args.cpu + threads)))
        for name in models:
            fp32, int8 = paths[name]
            benches[(batch, threads, name)] = {
                "qcc fp32": QccBench(args.qcc, fp32, FP32_TARGET, None, batch, threads, runs,
                                     args.warmup),
                "qcc int8": QccBench(args.qcc, fp32, INT8_TARGET, stats[name], batch, threads,
                                     runs, args.warmup),
                "ort fp32": OrtBench(fp32, batch, threads, runs, args.warmup),
                "ort int8": OrtBench(int8, batch, threads, runs, args.warmup),
                # --mode dynamic: no statistics, activations quantized at run time.
                "qcc int8 dyn": QccBench(args.qcc, fp32, INT8_TARGET, None, batch, threads,
                                         runs, args.warmup, ("--mode", "dynamic")),
            }
            if args.ort_dynamic:
                dyn = os.path.join(args.workdir, f"{name}.ort-dyn.onnx")
                benches[(batch, threads, name)].update({
                    "ort dyn": OrtBench(dyn, batch, threads, runs, args.warmup),
                    "qcc ort dyn": QccBench(args.qcc, dyn, INT8_TARGET, None, batch, threads,
                                            runs, args.warmup),
                })
            results[(batch, threads, name)] = {e: [] for e in engines}

    for r in range(args.rounds):
        for batch, threads in configs:
            pin(set(range(args.cpu, args.cpu + threads)))
            for name in models:
                key = (batch, threads, name)
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for engine in order:
                    results[key][engine].append(benches[key][engine].round())
                note(f"round {r + 1}/{args.rounds} {name} {batch}x{threads}: " + ", ".join(
                    f"{e} {results[key][e][-1][0]:.2f} ms" if results[key][e][-1] is not None
                    else f"{e} failed" for e in engines))

    raw = os.path.join(args.workdir, "rounds.json")
    with open(raw, "w", encoding="utf-8") as f:
        json.dump([{"batch": b, "threads": k, "model": m, "engine": e, "rounds": v}
                   for (b, k, m), engines in results.items() for e, v in engines.items()], f)
    note(f"wrote the per-round (p50 ms, samples/s) of every engine to {raw}")
    layers = []
    if not args.no_layers and LAYERS_MODEL in models:
        layers = layers_report(args, args.qcc, paths[LAYERS_MODEL][0], stats[LAYERS_MODEL])
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()

    command = os.environ.get("QCC_BENCH_COMMAND") or shlex.join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(__file__, REPO)] + sys.argv[1:])
    flags = cpu_flags()
    pins = ", ".join(f"{b}×{k} on core{'s' if k > 1 else ''} "
                     f"{args.cpu if k == 1 else f'{args.cpu}–{args.cpu + k - 1}'}"
                     for b, k in configs)
    out = [
        "## int8 (issue #5)", "",
        f"- Command: `{command}`",
        f"- Date: {started.strftime('%a %b %d %H:%M:%S UTC %Y')} (took {elapsed / 60:.1f} min)",
        f"- Machine: {cpu_model()} ({ncpu} cores{', ' + flags if flags else ''}); {pins}; "
        f"load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at "
        "the end",
        f"- qcc: {version}, targets `{FP32_TARGET}` and `{INT8_TARGET}` (default profile, "
        f"`qcc calibrate --synthetic {args.calibration_samples}`)",
        f"- onnxruntime {ort.__version__}: CPUExecutionProvider, ORT_ENABLE_ALL, sequential, "
        "intra_op_num_threads = threads; int8 = `quant_pre_process` + `quantize_static` (QDQ, "
        f"per-channel, QUInt8 activations, QInt8 weights, MinMax over the same "
        f"{args.calibration_samples} inputs)",
        f"- Method: {args.rounds} rounds; per round, configuration and model the "
        f"{len(engines)} engines run back to back in a rotating order, {args.runs} timed "
        f"runs at batch 1 and {args.batch_runs} at batch > 1 (per qcc thread), "
        f"{args.warmup} warm-up; figures are medians over rounds. ms = p50 latency of one "
        "run, /s = samples per second. With K threads qcc runs K models concurrently "
        "(each run on one core) while onnxruntime spreads one run over K cores, so at "
        "K > 1 compare the /s columns. A ratio is the "
        "median over rounds of that round's ratio of /s (the two engines ran back to back, "
        "under much the same load).",
        "",
    ]
    out += results_table(configs, models, results, benches)
    out += ["", "Per-round p50 ranges:", ""] + range_table(configs, models, results)
    if args.ort_dynamic:
        out += ["", "### onnxruntime's dynamic model (`quantize_dynamic`) in both engines", "",
                "The same file (`quant_pre_process` + `quantize_dynamic`, QUInt8 weights per "
                "tensor): onnxruntime runs its ConvInteger/MatMulInteger graph, qcc compiles it "
                "for x86_64-int8 (`realize-integer-products`: each integer product with its "
                "Cast/Mul/Add becomes one dynamic int8 layer). Speed-up: median over rounds of "
                "the round's ratio of /s.", ""]
        out += dynamic_table(configs, models, results, benches)
    out += ["", "### qcc int8 fallbacks (`qcc compile MODEL --target x86_64-int8 --report`)", ""]
    for name in models:
        if not fallback[name]:
            out.append(f"- {name}: none")
        for reason, nodes in fallback[name].items():
            shown = ", ".join(nodes[:4]) + (", …" if len(nodes) > 4 else "")
            out.append(f"- {name}: {len(nodes)} × {reason} ({shown})")
    if layers:
        out += ["", f"### The {LAYERS_COUNT} most expensive int8 layers of {LAYERS_MODEL}", ""]
        out += layers
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
        note(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
