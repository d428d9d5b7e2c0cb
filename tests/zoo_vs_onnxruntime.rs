//! Every zoo model, written as ONNX, run by onnxruntime and by qcc's importer + reference
//! interpreter on the same seeded input: outputs agree to a relative L2 error of 1e-4.

mod common;

use qcc::onnx::export::{write_model, ExportOptions};
use qcc::onnx::{import_file, ImportOptions};
use qcc_ir::Tensor;
use std::collections::HashMap;
use std::process::Command;

const MAX_RELATIVE_L2: f64 = 1e-4;

/// Builds `name`, writes it (the batch symbolic if `dynamic_batch`), imports it back with
/// `batch`, runs both engines and returns the worst relative L2 error over the outputs.
fn check(
    name: &str,
    dir: &std::path::Path,
    dynamic_batch: bool,
    batch: usize,
) -> Result<f64, String> {
    let model_path = dir.join(format!("{name}.onnx"));
    let g = qcc::zoo::build(name, &qcc::zoo::ZooOptions { seed: 1, batch: 1 })
        .map_err(|e| e.to_string())?;
    let opts = ExportOptions {
        dynamic_batch,
        ..ExportOptions::default()
    };
    write_model(&g, &opts, &model_path).map_err(|e| e.to_string())?;

    let imported = import_file(
        &model_path,
        &ImportOptions {
            batch,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let input = imported.input_values()[0];
    let (in_name, in_ty) = (
        imported.value(input).name.clone(),
        imported.value(input).ty.clone(),
    );
    if in_ty.dims()[0] != batch {
        return Err(format!(
            "input batch is {}, expected {batch}",
            in_ty.dims()[0]
        ));
    }
    let x = qcc::driver::random_tensor(&in_ty, &mut qcc::rng::SeededRng::new(3));
    let in_path = dir.join(format!("{name}_input.npy"));
    qcc::npy::write(&in_path, &x).map_err(|e| e.to_string())?;

    let ort_dir = dir.join(format!("{name}_ort"));
    let status = Command::new(common::venv_python())
        .arg(common::repo_root().join("scripts/ort_run.py"))
        .arg(&model_path)
        .arg("--input")
        .arg(format!("{in_name}={}", in_path.display()))
        .arg("--output-dir")
        .arg(&ort_dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("onnxruntime failed on {name}"));
    }
    let ours =
        qcc_ir::eval::run(&imported, &HashMap::from([(in_name, x)])).map_err(|e| e.to_string())?;
    let mut worst: f64 = 0.0;
    for (&o, t) in imported.outputs().iter().zip(&ours) {
        let out_name = &imported.value(o).name;
        let theirs: Tensor = qcc::npy::read(&ort_dir.join(qcc::npy::file_name_for(out_name)))
            .map_err(|e| e.to_string())?;
        if theirs.dims() != t.dims() {
            return Err(format!(
                "output '{out_name}': qcc {} vs onnxruntime {}",
                t.ty(),
                theirs.ty()
            ));
        }
        worst = worst.max(common::relative_l2(t, &theirs));
    }
    Ok(worst)
}

#[test]
fn zoo_models_match_onnxruntime() {
    let dir = std::env::temp_dir().join(format!("qcc-zoo-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (name, _) in qcc::zoo::MODELS {
        match check(name, &dir, false, 1) {
            Ok(err) if err <= MAX_RELATIVE_L2 => println!("{name}: relative L2 {err:.2e}"),
            Ok(err) => failures.push(format!(
                "{name}: relative L2 {err:.2e} > {MAX_RELATIVE_L2:e}"
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "zoo vs onnxruntime: {} passed, {} failed",
        qcc::zoo::MODELS.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_symbolic_batch_binds_to_the_requested_size() {
    let dir = std::env::temp_dir().join(format!("qcc-zoo-ort-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = check("tiny-cnn", &dir, true, 3).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err <= MAX_RELATIVE_L2, "relative L2 {err:.2e}");
}
