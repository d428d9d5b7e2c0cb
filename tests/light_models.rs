//! The ONNX "light" models (opset 9; weights built by ConstantOfShape) against their stored
//! outputs, with the inputs and tolerances ONNX's own test runner uses.

mod common;

use qcc::onnx::{import_file, ImportOptions};
use qcc_ir::Tensor;
use std::collections::HashMap;

const MODELS: &[&str] = &[
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
];

/// ONNX's runner feeds `arange(n).reshape(shape) / n` as float32.
fn arange_input(dims: &[usize]) -> Tensor {
    let n = dims.iter().product::<usize>();
    Tensor::from_f32(dims, (0..n).map(|i| (i as f64 / n as f64) as f32).collect())
}

fn check(name: &str) -> Result<(), String> {
    let dir = common::backend_data().join("light");
    let g = import_file(
        &dir.join(format!("light_{name}.onnx")),
        &ImportOptions {
            batch: 1,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let feeds: HashMap<String, Tensor> = g
        .input_values()
        .iter()
        .map(|&v| (g.value(v).name.clone(), arange_input(g.value(v).ty.dims())))
        .collect();
    let outs = qcc_ir::eval::run(&g, &feeds).map_err(|e| e.to_string())?;
    let (_, expected) = common::read_pb(&dir.join(format!("light_{name}_output_0.pb")))?;
    let rtol = if name == "densenet121" { 2e-3 } else { 1e-3 };
    common::compare(&outs[0], &expected, rtol, 1e-7)
}

#[test]
fn all_light_models_match_their_stored_outputs() {
    let failures: Vec<String> = MODELS
        .iter()
        .filter_map(|m| check(m).err().map(|e| format!("{m}: {e}")))
        .collect();
    println!(
        "light models: {} passed, {} failed",
        MODELS.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
