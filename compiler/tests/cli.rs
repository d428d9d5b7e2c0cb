//! The `qcc` command line, end to end, on the tiny-cnn zoo model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qcc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .output()
        .expect("qcc runs")
}

fn ok(args: &[&str]) -> Output {
    let out = qcc(args);
    assert!(
        out.status.success(),
        "qcc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

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
