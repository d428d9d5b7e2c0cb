//! `qcc compare` end to end on the tiny-cnn zoo model with synthetic data: the JSON contract
//! that scripts/accuracy/run.sh parses, the per-layer attribution, and that worse ranges
//! really show up as lower SQNR.

mod common;

use common::{ok, qcc, s, temp_dir, TempDir};

use std::path::{Path, PathBuf};

/// tiny-cnn (seed 1) and synthetic calibration statistics for it, in a fresh directory.
fn tiny_model_and_stats(tag: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let model = dir.join("tiny.onnx");
    let opts = qcc::zoo::ZooOptions { seed: 1, batch: 1 };
    let g = qcc::zoo::build("tiny-cnn", &opts).unwrap();
    qcc::onnx::export::write_model(&g, &Default::default(), &model).unwrap();
    let stats = dir.join("stats.json");
    ok(&["calibrate", s(&model), "--synthetic", "8", "-o", s(&stats)]);
    (dir, model, stats)
}

fn compare_json(model: &Path, stats: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "compare",
        s(model),
        "--target",
        "x86_64-int8",
        "--stats",
        s(stats),
        "--synthetic",
        "6",
        "--layer-samples",
        "2",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Mean SQNR over the layers that are not exact.
fn mean_sqnr(v: &serde_json::Value) -> f64 {
    let finite: Vec<f64> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["sqnr_db"].as_f64())
        .collect();
    assert!(!finite.is_empty(), "{v}");
    finite.iter().sum::<f64>() / finite.len() as f64
}

#[test]
fn compare_json_reports_every_quantized_layer_and_both_outputs() {
    let (_dir, model, stats) = tiny_model_and_stats("json");
    let v = compare_json(&model, &stats, &[]);
    assert_eq!(v["target"], "x86_64-int8");
    assert_eq!(v["profile"], "x86-vnni");
    assert_eq!(v["samples"], 6);
    assert_eq!(v["layer_samples"], 2);
    assert!(v["model"].as_str().unwrap().ends_with("tiny.onnx"));

    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() >= 8, "{v}");
    for l in layers {
        let cosine = l["cosine"].as_f64().unwrap();
        assert!(cosine > 0.9 && cosine <= 1.0, "{l}");
        assert!(
            l["sqnr_db"].is_null() || l["sqnr_db"].as_f64().unwrap() > 0.0,
            "{l}"
        );
        for key in ["node", "op", "tensor"] {
            assert!(!l[key].as_str().unwrap().is_empty(), "{l}");
        }
    }
    let ops: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert!(ops.contains(&"QuantizedConv"), "{ops:?}");
    assert!(ops.contains(&"QuantizedMatMul"), "{ops:?}");
    // The input's quantization comes first (graph order), and the conv stem follows it.
    assert_eq!(layers[0]["tensor"], "input.q", "{v}");
    let stem = layers
        .iter()
        .position(|l| l["node"].as_str().unwrap().starts_with("stem"))
        .expect("a stem layer");
    let fc = layers
        .iter()
        .position(|l| l["op"] == "QuantizedMatMul")
        .unwrap();
    assert!(stem < fc);

    let outputs = v["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["logits", "probs"]);
    for o in outputs {
        let top1 = o["top1_agreement"].as_f64().unwrap();
        let top5 = o["top5_agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&top1), "{o}");
        // fp32's class is in the top 5 whenever it is the top 1.
        assert!(top5 >= top1 && top5 <= 1.0, "{o}");
        let cosine = o["cosine"].as_f64().unwrap();
        assert!(cosine > 0.9 && cosine <= 1.0 + 1e-12, "{o}");
        assert!(o["mean_abs_error"].as_f64().unwrap() >= 0.0, "{o}");
    }
}

#[test]
fn clipping_activations_at_a_low_percentile_lowers_the_sqnr() {
    let (_dir, model, stats) = tiny_model_and_stats("percentile");
    let minmax = mean_sqnr(&compare_json(&model, &stats, &[]));
    let clipped = compare_json(&model, &stats, &["--activation-range", "percentile=60"]);
    let clipped = mean_sqnr(&clipped);
    assert!(
        clipped < minmax - 3.0,
        "percentile=60 gives {clipped:.2} dB, minmax {minmax:.2} dB"
    );
}

#[test]
fn the_table_and_the_svg_name_the_layers() {
    let (dir, model, stats) = tiny_model_and_stats("svg");
    let svg = dir.join("sqnr.svg");
    let out = ok(&[
        "compare",
        s(&model),
        "--target",
        "x86_64-int8",
        "--stats",
        s(&stats),
        "--synthetic",
        "2",
        "--layer-samples",
        "1",
        "--svg",
        s(&svg),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("SQNR dB") && table.contains("QuantizedConv"),
        "{table}"
    );
    assert!(table.contains("top-1 agreement"), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("seeded random inputs"));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("SQNR (dB)"),
        "{text}"
    );
    assert!(text.contains("stem"), "{text}");
}

#[test]
fn compare_needs_an_int8_target_and_statistics() {
    let (_dir, model, stats) = tiny_model_and_stats("errors");
    let fp32 = qcc(&[
        "compare",
        s(&model),
        "--target",
        "native-fp32",
        "--synthetic",
        "1",
    ]);
    assert_eq!(fp32.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&fp32.stderr).contains("int8 target"));
    let no_stats = qcc(&[
        "compare",
        s(&model),
        "--target",
        "x86_64-int8",
        "--synthetic",
        "1",
    ]);
    assert_eq!(no_stats.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_stats.stderr).contains("--stats"));
    let no_data = qcc(&[
        "compare",
        s(&model),
        "--target",
        "x86_64-int8",
        "--stats",
        s(&stats),
    ]);
    assert_eq!(
        no_data.status.code(),
        Some(2),
        "clap rejects a missing --data"
    );
}

#[test]
fn dynamic_mode_compares_without_statistics_and_names_the_dynamic_layers() {
    let (_dir, model, stats) = tiny_model_and_stats("dynamic");
    let out = ok(&[
        "compare",
        s(&model),
        "--target",
        "x86_64-int8",
        "--mode",
        "dynamic",
        "--synthetic",
        "4",
        "--layer-samples",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let layers = v["layers"].as_array().expect("layers");
    let ops: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert!(ops.contains(&"DynamicQuantizedConv"), "{ops:?}");
    assert!(ops.contains(&"DynamicQuantizedMatMul"), "{ops:?}");
    assert!(!ops.contains(&"QuantizedConv"), "{ops:?}");
    // Run-time ranges fit each input: every quantized layer stays close to fp32.
    for l in layers {
        assert!(l["cosine"].as_f64().unwrap() > 0.99, "{l}");
    }
    for o in v["outputs"].as_array().expect("outputs") {
        assert!(o["cosine"].as_f64().unwrap() > 0.99, "{o}");
    }
    // Statistics make no sense with run-time ranges: an error, not silently ignored.
    let err = qcc(&[
        "compare",
        s(&model),
        "--target",
        "x86_64-int8",
        "--mode",
        "dynamic",
        "--stats",
        s(&stats),
        "--synthetic",
        "2",
    ]);
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("--mode dynamic") && stderr.contains("--stats"),
        "{stderr}"
    );
}
