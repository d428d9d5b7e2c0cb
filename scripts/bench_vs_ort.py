#!/usr/bin/env python3
"""Latency of qcc's compiled code against onnxruntime on zoo models, batch 1, one thread.

Usage:
    python scripts/bench_vs_ort.py [--models mobilenetv2,resnet50,densenet121]
        [--rounds 5] [--runs 20] [--warmup 3] [--markdown FILE] [--layers]
    (scripts/bench-vs-ort.sh sets up the venv, builds qcc and runs this with its arguments.)

Method. The machine is shared and noisy, so the two engines take turns: each round runs
`qcc bench MODEL --target native-fp32 --iterations RUNS --warmup W --json` (a separate
process; its p50 is the round's median) and then RUNS timed onnxruntime runs after W warm-up
runs (their p50 by nearest rank, as qcc computes it); the next round starts with
onnxruntime. A model's figure is the median of its round medians; the range of the round
medians is printed beside it. Everything runs pinned to one core, as `taskset -c 0` would
(--cpu N, --no-pin; the affinity is the process's own, which the qcc subprocesses inherit).
onnxruntime: CPUExecutionProvider, intra_op_num_threads=1, inter_op_num_threads=1,
sequential execution, ORT_ENABLE_ALL graph optimizations. Its input is qcc bench's own
random input (SplitMix64 + Box-Muller, seed 0), regenerated here bit for bit in numpy.
GFLOP/s use the model's FLOPs from `qcc inspect MODEL --format json` (a MAC counts 2).

If `qcc bench` fails on a model, the model is reported as failed with qcc's error and the
others go on; onnxruntime is still measured for it.

--layers: the ten most expensive layers (by MACs) of resnet50 as qcc compiles it, each
timed alone by `qcc bench --layers` (the layer's step of the compiled model, run back to back
on the data a full run left), with the GFLOP/s reached against the measured f32x4 FMA ceiling
(`cargo bench --bench kernels -- f32x4_fma_ceiling`, or --ceiling GFLOPS). onnxruntime runs
each of those convolutions as a one-layer ONNX model (same geometry and fused epilogue: bias,
residual Add, Relu) for comparison; the rounds alternate as above.

Exit status: 0 when the report was written (failed models included), 2 on a usage or setup
error (qcc binary missing, venv packages missing).
"""
import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # the venv is missing or incomplete
    sys.exit(f"bench_vs_ort: error: {e}; run scripts/setup-venv.sh and use .venv/bin/python")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = "mobilenetv2,resnet50,densenet121"
TARGET = "native-fp32"
LAYERS_MODEL = "resnet50"
LAYERS_COUNT = 10
CEILING_BENCH = "f32x4_fma_ceiling"


def fail(msg: str) -> "None":
    print(f"bench_vs_ort: error: {msg}", file=sys.stderr)
    sys.exit(2)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- qcc's random input ---------------------------------------------------------------------
# The same generator as compiler/src/rng.rs (SplitMix64) and driver::random_tensor (one
# Box-Muller normal per element from two consecutive uniforms), seed 0, inputs in order.

MASK64 = (1 << 64) - 1
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SEED_XOR = 0x5DEECE66D1CE4E5B


def splitmix64(seed: int, start: int, count: int) -> np.ndarray:
    """Outputs start+1 .. start+count of qcc's SeededRng(seed) as uint64."""
    k = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    # uint64 array arithmetic wraps modulo 2^64, as Rust's wrapping_* does.
    z = np.uint64((seed ^ SEED_XOR) & MASK64) + k * np.uint64(SPLITMIX_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def qcc_random_inputs(shapes: list, seed: int = 0) -> list:
    """qcc's seeded random f32 inputs for inputs of `shapes`, in the graph's input order."""
    out, used = [], 0
    for shape in shapes:
        n = int(np.prod(shape, dtype=np.int64))
        raw = splitmix64(seed, used, 2 * n)
        used += 2 * n
        uniform = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / float(1 << 53))
        u1 = np.maximum(uniform[0::2], np.finfo(np.float64).tiny)
        u2 = uniform[1::2]
        normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        out.append(normal.astype(np.float32).reshape(shape))
    return out


# --- the two engines ------------------------------------------------------------------------


def run_checked(cmd: list, what: str) -> str:
    """Runs `cmd` and returns its stdout; exits with the command's stderr on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{what} failed ({shlex.join(cmd)}):\n{proc.stderr.strip()}")
    return proc.stdout


def qcc_error_text(stderr: str, limit: int = 400) -> str:
    """qcc's error for a table: from its `qcc: error:` line to the end (the details follow
    on indented lines), else the last line; one line, at most `limit` characters."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("qcc: error:")]
    picked = lines[starts[-1]:] if starts else lines[-1:]
    text = " ".join(picked).removeprefix("qcc: error:").strip() or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QccBench:
    """One model under `qcc bench`, a fresh process per round."""

    def __init__(self, qcc: str, model: str, runs: int, warmup: int):
        self.cmd = [qcc, "bench", model, "--target", TARGET, "--iterations", str(runs),
                    "--warmup", str(warmup), "--json"]
        self.error = None
        self.compile_ms = None

    def round(self):
        """The round's median latency in ms, or None after a failure (kept in self.error)."""
        if self.error is not None:
            return None
        proc = subprocess.run(self.cmd, capture_output=True, text=True)
        result = None
        for line in reversed(proc.stdout.strip().splitlines()):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
        if proc.returncode != 0 or not isinstance(result, dict) or "p50_ms" not in result:
            why = qcc_error_text(proc.stderr) if proc.returncode != 0 else "no JSON result"
            self.error = f"exit {proc.returncode}: {why}"
            return None
        self.compile_ms = result.get("compile_ms")
        return float(result["p50_ms"])


def nearest_rank_p50(values: list) -> float:
    """The 50th percentile by nearest rank, as `qcc bench` computes its p50."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.5 * len(ordered))) - 1]


class OrtBench:
    """One model in an onnxruntime session, kept across rounds."""

    def __init__(self, model: str, runs: int, warmup: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.error = None
        self.runs, self.warmup = runs, warmup
        try:
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            self.error = f"cannot load: {e}"
            return
        inputs = self.session.get_inputs()
        bad = [i for i in inputs if i.type != "tensor(float)"
               or not all(isinstance(d, int) for d in i.shape)]
        if bad:
            self.error = "inputs must be f32 with fixed shapes: " + ", ".join(
                f"{i.name} {i.type} {i.shape}" for i in bad)
            return
        values = qcc_random_inputs([i.shape for i in inputs])
        self.feeds = {i.name: v for i, v in zip(inputs, values)}

    def round(self):
        if self.error is not None:
            return None
        try:
            for _ in range(self.warmup):
                self.session.run(None, self.feeds)
            times = []
            for _ in range(self.runs):
                begin = time.perf_counter_ns()
                self.session.run(None, self.feeds)
                times.append((time.perf_counter_ns() - begin) / 1e6)
        except Exception as e:
            self.error = f"run failed: {e}"
            return None
        return nearest_rank_p50(times)


def alternate(pairs: list, rounds: int) -> dict:
    """Runs the (label, qcc, ort) benches in alternating rounds; returns per-label round
    medians as (qcc list, ort list)."""
    results = {label: ([], []) for label, _, _ in pairs}
    for r in range(rounds):
        for label, qcc, ort_bench in pairs:
            order = [(0, qcc), (1, ort_bench)] if r % 2 == 0 else [(1, ort_bench), (0, qcc)]
            for slot, bench in order:
                value = bench.round()
                if value is not None:
                    results[label][slot].append(value)
            q, o = results[label]
            note(f"round {r + 1}/{rounds} {label}: qcc "
                 f"{f'{q[-1]:.3f} ms' if q and qcc.error is None else 'failed'}, onnxruntime "
                 f"{f'{o[-1]:.3f} ms' if o and ort_bench.error is None else 'failed'}")
    return results


# --- report ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # only when /proc/cpuinfo has no model name
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The vector extensions that matter for f32 kernels, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "asimd", "asimddp"]
                    return " ".join(w for w in wanted if w in have)
    except OSError:
        pass
    return ""


def fmt_ms(values: list) -> str:
    return f"{statistics.median(values):.3f}" if values else "—"


def fmt_us(values: list) -> str:
    """The median of millisecond values, in microseconds."""
    return f"{statistics.median(values) * 1e3:.0f}" if values else "failed"


def fmt_range(values: list) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "—"


def gflops(flops: int, values: list) -> str:
    if not values or not flops:
        return "—"
    return f"{flops / (statistics.median(values) * 1e-3) / 1e9:.1f}"


def header_lines(args, qcc_version: str, pinned: str) -> list:
    command = os.environ.get("QCC_BENCH_COMMAND") or shlex.join(
        [os.path.relpath(sys.executable, REPO), os.path.relpath(__file__, REPO)] + sys.argv[1:])
    flags = cpu_flags()
    return [
        f"- Command: `{command}`",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_model()} ({os.cpu_count()} cores{', ' + flags if flags else ''}), "
        f"{pinned}",
        f"- qcc: {qcc_version}, target `{TARGET}`; onnxruntime {ort.__version__} "
        "(CPUExecutionProvider, ORT_ENABLE_ALL, sequential, 1 intra-op and 1 inter-op thread)",
        "- Method: the engines alternate in rounds (see below), batch 1; a median is the "
        "median of the round medians, a range that of the round medians",
    ]


def method_line(rounds: int, runs: int, warmup: int, what: str) -> str:
    return (f"{rounds} alternating rounds per {what} of {runs} timed runs ({warmup} warm-up) "
            "per engine.")


def model_table(names: list, flops: dict, results: dict, benches: dict) -> list:
    rows = [
        "| model | GFLOP | qcc median ms | onnxruntime median ms | ratio qcc/ort "
        "| qcc GFLOP/s | ort GFLOP/s | qcc rounds ms | ort rounds ms | qcc compile ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for name in names:
        q, o = results[name]
        qcc, ort_bench = benches[name]
        if qcc.error is not None:
            q = []
            failures.append(f"- {name}: qcc failed: {qcc.error}")
        if ort_bench.error is not None:
            o = []
            failures.append(f"- {name}: onnxruntime failed: {ort_bench.error}")
        ratio = (f"{statistics.median(q) / statistics.median(o):.2f}" if q and o else "—")
        rows.append(
            f"| {name} | {flops[name] / 1e9:.2f} | {fmt_ms(q) if q else 'failed'} "
            f"| {fmt_ms(o) if o else 'failed'} | {ratio} | {gflops(flops[name], q)} "
            f"| {gflops(flops[name], o)} | {fmt_range(q)} | {fmt_range(o)} "
            f"| {f'{qcc.compile_ms:.0f}' if q and qcc.compile_ms is not None else '—'} |")
    return rows + ([""] + failures if failures else [])


# --- --layers: resnet50's most expensive convolutions ---------------------------------------


def attribute_values(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def conv_layers(model_path: str) -> list:
    """Every Conv of the model with its geometry, MACs and the epilogue qcc fuses into it
    (folded BatchNormalization → bias, a residual Add, Relu)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(model_path))
    g = model.graph
    dims = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            dims[v.name] = [d.dim_value for d in t.shape.dim]
    constants = {i.name for i in g.initializer}
    for i in g.initializer:
        dims[i.name] = list(i.dims)
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers = []
    for n in g.node:
        if n.op_type != "Conv":
            continue
        x, w, y = n.input[0], n.input[1], n.output[0]
        if x not in dims or w not in dims or y not in dims:
            continue
        out_dims, w_dims = dims[y], dims[w]
        macs = int(np.prod(out_dims)) * int(np.prod(w_dims[1:]))
        # Walk the single-consumer chain the fusion pass folds into the convolution.
        residual, relu, tail = False, False, y
        chain = consumers.get(tail, [])
        if len(chain) == 1 and chain[0].op_type == "BatchNormalization":
            tail = chain[0].output[0]
            chain = consumers.get(tail, [])
        if len(chain) == 1 and chain[0].op_type == "Add":
            other = [i for i in chain[0].input if i != tail]
            if other and other[0] not in constants and dims.get(other[0]) == out_dims:
                residual, tail = True, chain[0].output[0]
                chain = consumers.get(tail, [])
        if len(chain) == 1 and chain[0].op_type == "Relu":
            relu = True
        layers.append({
            "name": n.name or y, "attrs": attribute_values(n), "in_dims": dims[x],
            "w_dims": w_dims, "out_dims": out_dims, "macs": macs, "residual": residual,
            "relu": relu, "opset": [(o.domain, o.version) for o in model.opset_import],
            "ir_version": model.ir_version,
        })
    return layers


def layer_model(layer: dict, path: str) -> None:
    """Writes `layer` as a one-layer ONNX model: Conv with bias (+ residual Add) (+ Relu)."""
    rng = np.random.default_rng(0)
    w_dims, out_dims = layer["w_dims"], layer["out_dims"]
    fan_in = int(np.prod(w_dims[1:]))
    weight = (rng.standard_normal(w_dims) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    bias = (rng.standard_normal(w_dims[0]) * 0.1).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, layer["in_dims"])]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], name=layer["name"],
                              **layer["attrs"])]
    last = "conv"
    if layer["residual"]:
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, out_dims))
        nodes.append(helper.make_node("Add", [last, "residual"], ["sum"], name="add"))
        last = "sum"
    if layer["relu"]:
        nodes.append(helper.make_node("Relu", [last], ["relu"], name="relu"))
        last = "relu"
    nodes.append(helper.make_node("Identity", [last], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, "layer", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid(domain, version) for domain, version in layer["opset"]])
    model.ir_version = layer["ir_version"]
    onnx.checker.check_model(model)
    onnx.save(model, path)


def layer_shape(layer: dict) -> str:
    a = layer["attrs"]
    k, s = a.get("kernel_shape", layer["w_dims"][2:]), a.get("strides", [1, 1])
    group = a.get("group", 1)
    _, cin, h, w = layer["in_dims"]
    text = f"{k[0]}×{k[1]}/{s[0]} {cin}→{layer['w_dims'][0]} @{h}×{w}"
    return text + (f" g{group}" if group != 1 else "")


class QccLayerProfile:
    """`qcc bench MODEL --layers --json`: every layer of the compiled model timed alone
    (median of REPEATS back-to-back runs of its step, on the data a full run left), a fresh
    process per round."""

    def __init__(self, qcc: str, model: str, repeats: int):
        self.cmd = [qcc, "bench", model, "--target", TARGET, "--iterations", "1", "--warmup",
                    "1", "--layers", "--layer-repeats", str(repeats), "--json"]
        self.error = None

    def round(self):
        """node name → layer record (node, op, kernel, macs, median_ms), or None."""
        if self.error is not None:
            return None
        proc = subprocess.run(self.cmd, capture_output=True, text=True)
        layers = None
        for line in reversed(proc.stdout.strip().splitlines()):
            try:
                layers = json.loads(line).get("layers")
                break
            except (json.JSONDecodeError, AttributeError):
                continue
        if proc.returncode != 0 or not isinstance(layers, list):
            why = (qcc_error_text(proc.stderr) if proc.returncode != 0
                   else "no \"layers\" in the JSON (a qcc without `bench --layers`?)")
            self.error = f"exit {proc.returncode}: {why}"
            return None
        return {layer["node"]: layer for layer in layers}


def ceiling_executable() -> str:
    """Builds benches/kernels.rs (`cargo bench --no-run`) and returns its executable, so that
    each round runs the same binary even if the sources change meanwhile."""
    cmd = ["cargo", "bench", "--bench", "kernels", "--no-run", "--message-format=json"]
    note(f"building the f32x4 FMA ceiling benchmark: {shlex.join(cmd)}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{shlex.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
    for line in proc.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (message.get("reason") == "compiler-artifact"
                and message.get("target", {}).get("name") == "kernels"
                and message.get("executable")):
            return message["executable"]
    fail(f"{shlex.join(cmd)} named no executable for the kernels benchmark")


def measure_ceiling(executable: str, criterion_home: str) -> float:
    """GFLOP/s of the f32x4 FMA ceiling benchmark (criterion's median), one short run."""
    cmd = [executable, "--bench", CEILING_BENCH]
    # CRITERION_HOME: criterion writes its results here rather than into a target dir.
    env = dict(os.environ, CRITERION_HOME=criterion_home)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        fail(f"{shlex.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
    best = None
    group = os.path.join(criterion_home, CEILING_BENCH)
    for bench in sorted(os.listdir(group)) if os.path.isdir(group) else []:
        base = os.path.join(group, bench, "new")
        try:
            with open(os.path.join(base, "estimates.json"), encoding="utf-8") as f:
                median_ns = json.load(f)["median"]["point_estimate"]
            with open(os.path.join(base, "benchmark.json"), encoding="utf-8") as f:
                flops = json.load(f)["throughput"]["Elements"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            continue
        value = flops / median_ns  # FLOP per ns = GFLOP/s
        best = value if best is None else max(best, value)
    if best is None:
        fail(f"{shlex.join(cmd)} left no criterion results under {group}"
             + ("" if proc.stderr.strip() == "" else f":\n{proc.stderr.strip()[-1000:]}"))
    return best


def layers_report(args, qcc: str, workdir: str) -> list:
    model = os.path.join(workdir, f"{LAYERS_MODEL}.onnx")
    run_checked([qcc, "zoo", LAYERS_MODEL, "-o", model], f"qcc zoo {LAYERS_MODEL}")
    # The ceiling is measured once per round, between the engines' turns, and the highest
    # value kept: on a loaded machine every figure drops, and the least disturbed
    # measurement is the closest to the machine's real ceiling.
    ceilings = []
    executable = ceiling_executable() if args.ceiling is None else None

    def measure() -> None:
        if executable is not None:
            ceilings.append(measure_ceiling(executable, os.path.join(workdir, "criterion")))

    measure()
    onnx_convs = {layer["name"]: layer for layer in conv_layers(model)}
    profile = QccLayerProfile(qcc, model, args.layer_runs)
    # Round 1's qcc run also picks the layers: the compiled model's (after fusion), by MACs,
    # ties in execution order. Without it, the ONNX model's convolutions.
    first = profile.round()
    if first is not None:
        top = sorted(first.values(), key=lambda l: (-l["macs"], l.get("index", 0)))
        names = [layer["node"] for layer in top[:LAYERS_COUNT]]
    else:
        top = sorted(onnx_convs.values(), key=lambda l: -l["macs"])
        names = [layer["name"] for layer in top[:LAYERS_COUNT]]
    ort_benches = {}
    for i, name in enumerate(names):
        layer = onnx_convs.get(name)
        if layer is None:
            continue
        if first is not None:
            # qcc says what it fused (a residual Add may go to either convolution feeding it).
            parts = first[name]["op"].split("+")
            layer["residual"], layer["relu"] = "Add" in parts, "Relu" in parts
        path = os.path.join(workdir, f"layer{i:02}.onnx")
        layer_model(layer, path)
        ort_benches[name] = OrtBench(path, args.layer_runs, args.warmup)

    qcc_ms = {name: [] for name in names}
    ort_ms = {name: [] for name in names}

    def run_qcc(result) -> None:
        for name in names:
            if result is not None and name in result:
                qcc_ms[name].append(float(result[name]["median_ms"]))

    def run_ort() -> None:
        for name, bench in ort_benches.items():
            value = bench.round()
            if value is not None:
                ort_ms[name].append(value)

    for r in range(args.rounds):
        if r > 0:
            measure()
        if r == 0:
            run_qcc(first)
            run_ort()
        elif r % 2 == 1:
            run_ort()
            run_qcc(profile.round())
        else:
            run_qcc(profile.round())
            run_ort()
        note(f"round {r + 1}/{args.rounds} layers: "
             f"qcc {'failed' if profile.error else 'done'}, onnxruntime done")

    if args.ceiling is not None:
        ceiling, ceiling_source = args.ceiling, "given by --ceiling"
    else:
        ceiling = max(ceilings)
        ceiling_source = (f"`{CEILING_BENCH}` in benches/kernels.rs, the highest of "
                          f"{len(ceilings)} measurements, one per round: "
                          f"{min(ceilings):.1f}–{max(ceilings):.1f}")
    rows = [
        f"{args.rounds} alternating rounds: qcc times each layer of the compiled model alone "
        f"(`qcc bench {LAYERS_MODEL}.onnx --layers --layer-repeats {args.layer_runs}`: the "
        f"median of {args.layer_runs} back-to-back runs of that layer's step, on the data a "
        "full run left); onnxruntime runs the same convolution (same geometry and fused "
        f"epilogue, random weights) as a one-layer model, {args.layer_runs} timed runs "
        f"({args.warmup} warm-up). Both keep the layer's data warm in cache.",
        "",
        f"Ceiling: {ceiling:.1f} GFLOP/s (f32x4 FMA, one core, {ceiling_source}).",
        "",
        "| layer | shape | qcc op | MMAC | qcc kernel | qcc median µs | onnxruntime median µs "
        "| ratio qcc/ort | qcc GFLOP/s | % of ceiling | ort GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = [f"- qcc bench --layers failed: {profile.error}"] if profile.error else []
    for name in names:
        layer = onnx_convs.get(name)
        record = (first or {}).get(name, {})
        macs = record.get("macs", layer["macs"] if layer else 0)
        q = qcc_ms[name]
        bench = ort_benches.get(name)
        o = ort_ms[name] if bench is not None and bench.error is None else []
        if bench is not None and bench.error is not None:
            failures.append(f"- {name}: onnxruntime failed: {bench.error}")
        ratio = f"{statistics.median(q) / statistics.median(o):.2f}" if q and o else "—"
        q_rate = 2 * macs / (statistics.median(q) * 1e-3) / 1e9 if q and macs else None
        rate = f"{q_rate:.1f} | {100 * q_rate / ceiling:.0f}%" if q_rate else "— | —"
        rows.append(
            f"| {name} | {layer_shape(layer) if layer else '—'} | {record.get('op', '—')} "
            f"| {macs / 1e6:.1f} | {record.get('kernel', '—')} | {fmt_us(q) if q else '—'} "
            f"| {fmt_us(o) if bench else '—'} | {ratio} | {rate} | {gflops(2 * macs, o)} |")
    return rows + ([""] + failures if failures else [])


# --- main -----------------------------------------------------------------------------------


def default_qcc() -> str:
    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target_dir, "release", "qcc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated zoo models (default {DEFAULT_MODELS})")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per round (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per round (default 3)")
    p.add_argument("--qcc", default=default_qcc(),
                   help="the qcc binary (default $CARGO_TARGET_DIR or target/, release/qcc)")
    p.add_argument("--workdir", default=os.path.join(REPO, "out", "bench-vs-ort"),
                   help="where models are written (default out/bench-vs-ort)")
    p.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    p.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    p.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    p.add_argument("--layers", action="store_true",
                   help=f"also time the {LAYERS_COUNT} most expensive layers of {LAYERS_MODEL}")
    p.add_argument("--layers-only", action="store_true", help="--layers without the models")
    p.add_argument("--layer-runs", type=int, default=50,
                   help="per round, qcc's --layer-repeats and onnxruntime's timed runs of "
                   "each layer (default 50)")
    p.add_argument("--ceiling", type=float, metavar="GFLOPS",
                   help="the f32x4 FMA ceiling; measured with cargo bench when not given")
    args = p.parse_args()
    if args.rounds < 1 or args.runs < 1 or args.warmup < 0 or args.layer_runs < 1:
        fail("--rounds, --runs and --layer-runs must be at least 1, --warmup at least 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models and not args.layers_only:
        fail("--models names no model")
    if not os.access(args.qcc, os.X_OK):
        fail(f"no qcc binary at {args.qcc}: build it with `cargo build --release` "
             "(or give --qcc PATH)")

    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})  # inherited by the qcc subprocesses
            pinned = f"pinned to core {args.cpu}"
        except OSError as e:
            note(f"cannot pin to core {args.cpu} ({e}); running unpinned")
    os.makedirs(args.workdir, exist_ok=True)
    version = run_checked([args.qcc, "--version"], "qcc --version").strip()
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    if commit:
        version += f" (commit {commit})"

    out = ["## qcc vs onnxruntime (fp32, batch 1, one thread)", ""]
    out += header_lines(args, version, pinned)
    if not args.layers_only:
        flops, benches = {}, {}
        for name in models:
            path = os.path.join(args.workdir, f"{name}.onnx")
            run_checked([args.qcc, "zoo", name, "-o", path], f"qcc zoo {name}")
            stats = json.loads(run_checked([args.qcc, "inspect", path, "--format", "json"],
                                           f"qcc inspect {name}"))
            flops[name] = int(stats.get("flops") or stats.get("totals", {}).get("flops", 0))
            benches[name] = (QccBench(args.qcc, path, args.runs, args.warmup),
                             OrtBench(path, args.runs, args.warmup))
        results = alternate([(n, *benches[n]) for n in models], args.rounds)
        out += ["", method_line(args.rounds, args.runs, args.warmup, "model"), ""]
        out += model_table(models, flops, results, benches)
    if args.layers or args.layers_only:
        out += ["", f"### The {LAYERS_COUNT} most expensive layers of {LAYERS_MODEL}", ""]
        out += layers_report(args, args.qcc, args.workdir)
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
        note(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
