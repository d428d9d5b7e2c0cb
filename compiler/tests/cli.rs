//! The `qcc` command line, end to end, on the tiny-cnn zoo model.

mod common;

use common::{ok, qcc, s, temp_dir, TempDir};

use std::path::PathBuf;
use std::process::Command;

#[test]
fn zoo_lists_every_model() {
    let out = ok(&["zoo", "--list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for m in [
        "mobilenetv2",
        "resnet18",
        "resnet50",
        "densenet121",
        "efficientnet-lite0",
        "vgg19",
        "tiny-cnn",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(m)),
            "{m} missing from:\n{text}"
        );
    }
}

#[test]
fn inspect_json_reports_nodes_op_counts_and_totals() {
    let dir = temp_dir("inspect");
    let model = dir.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model), "--seed", "3"]);
    let out = ok(&["inspect", s(&model), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let nodes = json["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty());
    let conv = nodes
        .iter()
        .find(|n| n["op"] == "Conv")
        .expect("a Conv node");
    for key in ["name", "inputs", "outputs", "shapes", "flops"] {
        assert!(!conv[key].is_null(), "node lacks {key}: {conv}");
    }
    assert!(conv["flops"].as_u64().unwrap() > 0);
    let sum: u64 = nodes.iter().map(|n| n["flops"].as_u64().unwrap()).sum();
    assert_eq!(json["totals"]["flops"].as_u64().unwrap(), sum);
    let counted: u64 = json["op_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, nodes.len());
    assert!(
        json["op_counts"]["BatchNormalization"].as_u64().unwrap() > 0,
        "zoo keeps BN separate"
    );

    let table = String::from_utf8_lossy(&ok(&["inspect", s(&model)]).stdout).to_string();
    assert!(
        table.contains("totals:") && table.contains("Conv"),
        "{table}"
    );
    let qir =
        String::from_utf8_lossy(&ok(&["inspect", s(&model), "--format", "qir"]).stdout).to_string();
    assert!(qir.starts_with("graph"), "{qir}");
}

#[test]
fn run_writes_outputs_and_is_reproducible_from_saved_inputs() {
    let dir = temp_dir("run");
    let model = dir.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let first = ok(&[
        "run",
        s(&model),
        "--output-dir",
        s(&dir.join("a")),
        "--seed",
        "5",
    ]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("seeded random"),
        "must say it made up the input: {stderr}"
    );
    let mut outputs: Vec<String> = std::fs::read_dir(dir.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outputs.sort();
    assert_eq!(
        outputs,
        ["logits.npy", "probs.npy"],
        "one file per graph output"
    );
    let name = "logits.npy";
    let a = qcc::npy::read(&dir.join("a").join(name)).unwrap();

    // The same seed gives the same output; another seed another.
    ok(&[
        "run",
        s(&model),
        "--output-dir",
        s(&dir.join("b")),
        "--seed",
        "5",
    ]);
    ok(&[
        "run",
        s(&model),
        "--output-dir",
        s(&dir.join("c")),
        "--seed",
        "6",
    ]);
    assert_eq!(qcc::npy::read(&dir.join("b").join(name)).unwrap(), a);
    assert_ne!(qcc::npy::read(&dir.join("c").join(name)).unwrap(), a);

    // Feeding an explicit input file gives what that input gives.
    let g = qcc::driver::load_model(&model, 1).unwrap();
    let input = g.value(g.input_values()[0]);
    let x = qcc::driver::random_tensor(&input.ty, &mut qcc::rng::SeededRng::new(5));
    let x_path = dir.join("x.npy");
    qcc::npy::write(&x_path, &x).unwrap();
    let spec = format!("{}={}", input.name, s(&x_path));
    let out = ok(&[
        "run",
        s(&model),
        "--input",
        &spec,
        "--output-dir",
        s(&dir.join("d")),
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("seeded random"));
    assert_eq!(qcc::npy::read(&dir.join("d").join(name)).unwrap(), a);
}

#[test]
fn bad_inputs_are_clear_errors_not_panics() {
    let dir = temp_dir("bad");
    let missing = qcc(&["run", "/nonexistent/model.onnx"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("/nonexistent/model.onnx") && !err.contains("panicked"),
        "{err}"
    );

    let model = dir.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let wrong_name = qcc(&["run", s(&model), "--input", "nope=x.npy"]);
    assert!(String::from_utf8_lossy(&wrong_name.stderr).contains("no input 'nope'"));

    let wrong_shape = dir.join("wrong.npy");
    qcc::npy::write(
        &wrong_shape,
        &qcc_ir::Tensor::from_f32(&[2], vec![1.0, 2.0]),
    )
    .unwrap();
    let g = qcc::driver::load_model(&model, 1).unwrap();
    let spec = format!("{}={}", g.value(g.input_values()[0]).name, s(&wrong_shape));
    let out = qcc(&["run", s(&model), "--input", &spec]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the model expects"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07\x12\xff\xff\xff").unwrap();
    let out = qcc(&["inspect", s(&garbage)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let unknown = qcc(&["zoo", "alexnet-9000", "-o", s(&dir.join("x.onnx"))]);
    assert_eq!(unknown.status.code(), Some(1));
}

/// The tiny-cnn model written to a fresh directory.
fn tiny_model(tag: &str) -> (TempDir, PathBuf) {
    let dir = temp_dir(tag);
    let model = dir.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model), "--seed", "1"]);
    (dir, model)
}

/// `Op 5 → 2` pairs from an `ops before → after:` line.
fn before_after_counts(text: &str) -> Vec<(String, usize, usize)> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ops before → after: "))
        .unwrap_or_else(|| panic!("no 'ops before → after' line in:\n{text}"));
    line.split(", ")
        .filter(|part| !part.starts_with('('))
        .map(|part| {
            let (op, counts) = part.split_once(' ').expect("OP N → M");
            let (b, a) = counts.split_once(" → ").expect("N → M");
            (op.to_string(), b.parse().unwrap(), a.parse().unwrap())
        })
        .collect()
}

#[test]
fn inspect_after_passes_reports_op_counts_and_each_pass() {
    let (_dir, model) = tiny_model("after-passes");
    let out = ok(&["inspect", s(&model), "--after-passes"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let g = qcc::driver::load_model(&model, 1).unwrap();
    let bn_before = qcc::zoo::op_counts(&g)
        .into_iter()
        .find(|(op, _)| *op == "BatchNormalization")
        .map_or(0, |(_, n)| n);
    assert!(bn_before > 0);
    // Every changed op is listed with its count before the passes, which must be the
    // imported graph's.
    let counts = before_after_counts(&text);
    assert!(!counts.is_empty(), "{text}");
    for (op, before, after) in &counts {
        assert_ne!(before, after, "{op} listed as changed: {text}");
        let imported = qcc::zoo::op_counts(&g)
            .into_iter()
            .find(|(o, _)| o == op)
            .map_or(0, |(_, n)| n);
        assert_eq!(*before, imported, "{op}: {text}");
    }
    for pass in ["fold-constants", "eliminate-dead-code", "total"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(pass) && l.contains(" ms")),
            "no report line for {pass}:\n{text}"
        );
    }
    assert!(
        text.contains("totals:"),
        "the optimized graph's table: {text}"
    );
}

#[test]
fn inspect_json_after_passes_has_counts_before_and_display_names() {
    let (_dir, model) = tiny_model("json-after");
    let out = ok(&["inspect", s(&model), "--after-passes", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let before = json["op_counts_before"]
        .as_object()
        .expect("op_counts_before");
    assert!(before["BatchNormalization"].as_u64().unwrap() > 0);
    let nodes = json["nodes"].as_array().unwrap();
    let counted: u64 = json["op_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        counted as usize,
        nodes.len(),
        "op_counts describe the optimized graph"
    );
    assert!(json["passes"].as_array().is_some_and(|p| !p.is_empty()));
    // Each node's "op" is its display name in the optimized graph: a fused node is named by
    // what it contains ("Conv+Relu"), never "FusedConv".
    let mut g = qcc::driver::load_model(&model, 1).unwrap();
    qcc::driver::optimize(&mut g, &qcc::driver::pipeline_options(None), None, None).unwrap();
    let display: std::collections::HashMap<String, String> = g
        .petgraph()
        .node_indices()
        .map(|n| (g.node(n).name.clone(), g.node(n).op.display_name()))
        .collect();
    assert_eq!(display.len(), nodes.len());
    for n in nodes {
        let name = n["name"].as_str().unwrap();
        assert_eq!(
            n["op"].as_str(),
            display.get(name).map(String::as_str),
            "{n}"
        );
    }
}

#[test]
fn dump_after_prints_the_graph_after_that_pass_and_rejects_unknown_names() {
    let (_dir, model) = tiny_model("dump");
    let bad = qcc(&["inspect", s(&model), "--dump-after", "fold-everything"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("fold-everything") && err.contains("fold-constants"),
        "the error lists the pass names: {err}"
    );

    let out = ok(&["inspect", s(&model), "--dump-after", "fold-constants"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with("; after pass fold-constants\ngraph "),
        "{text}"
    );
    assert!(
        text.contains("BatchNormalization("),
        "before any BN folding: {text}"
    );
    assert!(!text.contains("totals:"), "stdout holds only the dump");
    assert!(String::from_utf8_lossy(&out.stderr).contains("passes:"));
}

#[test]
fn dot_writes_one_box_per_node_of_the_drawn_graph() {
    let (dir, model) = tiny_model("dot");
    let node_ids = |dot: &str| {
        dot.lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with('n')
                    && l[1..]
                        .split(' ')
                        .next()
                        .is_some_and(|id| id.parse::<usize>().is_ok())
                    && !l.contains("->")
            })
            .count()
    };
    let imported = qcc::driver::load_model(&model, 1).unwrap();
    let mut optimized = imported.clone();
    qcc::driver::optimize(
        &mut optimized,
        &qcc::driver::pipeline_options(None),
        None,
        None,
    )
    .unwrap();
    for (flags, graph) in [(&[][..], &imported), (&["--after-passes"][..], &optimized)] {
        let path = dir.join(format!("g{}.dot", flags.len()));
        let mut args = vec!["inspect", s(&model), "--dot", s(&path)];
        args.extend_from_slice(flags);
        ok(&args);
        let dot = std::fs::read_to_string(&path).unwrap();
        assert!(dot.starts_with("digraph "), "{dot}");
        assert!(dot.trim_end().ends_with('}'));
        assert_eq!(node_ids(&dot), graph.node_count(), "{flags:?}:\n{dot}");
        // Graphviz itself, when installed, must accept the file.
        if let Ok(out) = Command::new("dot").arg("-Tsvg").arg(&path).output() {
            assert!(
                out.status.success(),
                "dot rejects the file: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn run_after_passes_gives_the_same_outputs() {
    let (dir, model) = tiny_model("run-after");
    let plain = dir.join("plain");
    let optimized = dir.join("optimized");
    ok(&["run", s(&model), "--output-dir", s(&plain), "--reference"]);
    let out = ok(&[
        "run",
        s(&model),
        "--reference",
        "--after-passes",
        "--output-dir",
        s(&optimized),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("passes:"));
    for name in ["logits.npy", "probs.npy"] {
        let a = qcc::npy::read(&plain.join(name)).unwrap().to_f64_vec();
        let b = qcc::npy::read(&optimized.join(name)).unwrap().to_f64_vec();
        let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        let norm: f64 = a.iter().map(|x| x * x).sum();
        assert!(
            (diff / norm).sqrt() <= 1e-5,
            "{name}: rel L2 {}",
            (diff / norm).sqrt()
        );
    }
}

#[test]
fn targets_are_listed_and_select_the_cost_model() {
    let list = String::from_utf8_lossy(&ok(&["targets"]).stdout).to_string();
    for t in [
        "x86_64-fp32",
        "x86_64-int8",
        "aarch64-int8+i8mm",
        "aarch64-fp16",
        "native-fp32",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(t)),
            "{t} missing:\n{list}"
        );
    }
    let dir = temp_dir("targets");
    let model = dir.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let out = ok(&[
        "inspect",
        s(&model),
        "--after-passes",
        "--target",
        "x86_64-fp32",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cost model: x86_64-fp32"), "{err}");
    let out = ok(&["inspect", s(&model), "--after-passes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cost model: generic-cpu"));
    let bad = qcc(&[
        "inspect",
        s(&model),
        "--after-passes",
        "--target",
        "riscv-fp32",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown architecture `riscv`"));
}

#[test]
fn batch_needs_a_symbolic_batch_dimension_and_bench_counts_samples() {
    let d = temp_dir("batch");
    let fixed = d.join("fixed.onnx");
    let dynamic = d.join("dynamic.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&fixed)]);
    ok(&["zoo", "tiny-cnn", "--dynamic-batch", "-o", s(&dynamic)]);
    let out = qcc(&["bench", s(&fixed), "--batch", "4", "--iterations", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic first dimension"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ok(&[
        "bench",
        s(&dynamic),
        "--batch",
        "4",
        "--iterations",
        "3",
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["batch"], 4);
    let p50 = value["p50_ms"].as_f64().unwrap();
    let throughput = value["throughput_per_s"].as_f64().unwrap();
    // Three runs of 4 samples each: throughput counts samples, about 4 per p50.
    assert!(throughput > 4.0 * 1e3 / (p50 * 20.0), "{value}");
}

#[test]
fn calibrate_writes_statistics_of_every_tensor() {
    let d = temp_dir("calibrate");
    let model = d.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let stats = d.join("stats.json");
    let out = ok(&["calibrate", s(&model), "--synthetic", "3", "-o", s(&stats)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("accuracy claims need --data"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).expect("valid JSON");
    assert_eq!(json["format"], "qcc-calibration-stats");
    assert_eq!(json["samples"], 3);
    assert_eq!(json["synthetic_inputs"], true);
    let tensors = json["tensors"].as_object().expect("tensors");
    assert!(
        tensors.contains_key("input") && tensors.contains_key("logits"),
        "{:?}",
        tensors.keys()
    );
    assert!(!json["weights"].as_object().expect("weights").is_empty());
    // Real data: a stacked .npy of the wrong shape is refused, naming the file.
    let bad = d.join("bad.npy");
    qcc::npy::write(
        &bad,
        &qcc_ir::Tensor::from_f32(&[2, 3, 3, 3], vec![0.0; 54]),
    )
    .unwrap();
    let out = qcc(&["calibrate", s(&model), "--data", s(&bad), "-o", s(&stats)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.npy"));
    // A .npz archive as numpy writes it (compressed), the array named after the input.
    let npz = d.join("calib.npz");
    let script = format!(
        "import numpy as np; np.savez_compressed({:?}, input=np.random.default_rng(0)\
         .random((5, 3, 32, 32), dtype=np.float32))",
        s(&npz)
    );
    let made = std::process::Command::new(common::venv_python())
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(made.status.success(), "{made:?}");
    ok(&["calibrate", s(&model), "--data", s(&npz), "-o", s(&stats)]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).expect("valid JSON");
    assert_eq!(json["samples"], 5);
    assert_eq!(json["synthetic_inputs"], false);
}
