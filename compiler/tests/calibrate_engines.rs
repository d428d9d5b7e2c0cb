//! `qcc calibrate --calibrate-with compiled|interpreter`, end to end: both engines write
//! statistics of the same tensors, and a model the fp32 back end does not compile is
//! calibrated by the interpreter with a warning, never silently.

mod common;

use common::{ok, qcc, s, temp_dir};

use std::collections::BTreeMap;
use std::path::Path;

use qcc_ir::{Activation, DType, Graph, Op, TensorType};

const FALLBACK_WARNING: &str = "qcc: warning: calibration runs the reference interpreter: ";

/// Tensor name → observed value count, from a statistics file.
fn counts(path: &Path) -> BTreeMap<String, u64> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    json["tensors"]
        .as_object()
        .expect("tensors")
        .iter()
        .map(|(name, t)| (name.clone(), t["count"].as_u64().expect("a count")))
        .collect()
}

#[test]
fn both_engines_write_statistics_of_the_same_tensors() {
    let d = temp_dir("engines");
    let model = d.join("tiny.onnx");
    ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let mut files = Vec::new();
    for engine in [None, Some("compiled"), Some("interpreter")] {
        let stats = d.join(format!("{}.json", engine.unwrap_or("default")));
        let mut args = vec!["calibrate", s(&model), "--synthetic", "2", "-o", s(&stats)];
        if let Some(engine) = engine {
            args.extend(["--calibrate-with", engine]);
        }
        let out = ok(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(FALLBACK_WARNING), "{stderr}");
        files.push(counts(&stats));
    }
    assert!(files[0].contains_key("input") && files[0].contains_key("logits"));
    assert_eq!(files[0], files[1], "the default engine is the compiled one");
    assert_eq!(files[1], files[2], "same tensors, same counts");
    let out = qcc(&[
        "calibrate",
        s(&model),
        "--synthetic",
        "1",
        "--calibrate-with",
        "gpu",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("compiled") && stderr.contains("interpreter"),
        "{stderr}"
    );
}

#[test]
fn a_model_the_back_end_does_not_compile_is_calibrated_by_the_interpreter_with_a_warning() {
    // x → Pad → Relu: the fp32 back end compiles no Pad.
    let mut g = Graph::new("padded");
    let x = g
        .add_input("x", TensorType::new(DType::F32, [1, 2, 3, 3]))
        .unwrap();
    let pad = Op::Pad {
        pads: vec![0, 0, 1, 1, 0, 0, 1, 1],
        value: 0.0,
    };
    let n = g.add_node("pad", pad, vec![x], vec!["p".into()]).unwrap();
    let p = g.node(n).outputs[0];
    let relu = Op::Activation(Activation::Relu);
    let n = g.add_node("relu", relu, vec![p], vec!["y".into()]).unwrap();
    let y = g.node(n).outputs[0];
    g.set_outputs(vec![y]);
    let d = temp_dir("fallback");
    let model = d.join("padded.onnx");
    qcc::onnx::export::write_model(&g, &Default::default(), &model).unwrap();
    let stats = d.join("stats.json");
    let out = ok(&["calibrate", s(&model), "--synthetic", "2", "-o", s(&stats)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(FALLBACK_WARNING) && stderr.contains("Pad"),
        "{stderr}"
    );
    let fallback = counts(&stats);
    assert_eq!(fallback.get("p"), Some(&(2 * 2 * 5 * 5)));
    // Asked for, the interpreter runs without a warning and gives the same statistics.
    let asked = d.join("asked.json");
    let args = ["calibrate", s(&model), "--synthetic", "2", "-o", s(&asked)];
    let out = ok(&[&args[..], &["--calibrate-with", "interpreter"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(FALLBACK_WARNING), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&stats).unwrap(),
        std::fs::read_to_string(&asked).unwrap()
    );
}
