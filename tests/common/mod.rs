//! Helpers shared by the end-to-end suites: where the test data and the Python venv live,
//! reading ONNX tensors, and comparing tensors.
#![allow(dead_code)]

use qcc_ir::Tensor;
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ONNX backend test data, unpacked by `scripts/setup-venv.sh`. Missing data is a failure,
/// not a skip: a suite that silently ran nothing would look green.
pub fn backend_data() -> PathBuf {
    let dir = repo_root().join("third_party/onnx-backend-data");
    assert!(
        dir.join("node").is_dir(),
        "{} is missing: run scripts/setup-venv.sh first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

pub fn venv_python() -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup-venv.sh first (scripts/test.sh does)",
        py.display()
    );
    py
}

/// Reads a serialized TensorProto (`input_0.pb`, `output_0.pb`...).
pub fn read_pb(path: &Path) -> Result<(String, Tensor), String> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = qcc::onnx::proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t = qcc::onnx::import::tensor_from_proto(&proto, path.parent())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((proto.name.clone(), t))
}

/// Relative L2 error ||a - b|| / ||b|| (absolute when b is zero), over all elements.
pub fn relative_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Compares like numpy's `assert_allclose` (|a - b| <= atol + rtol |b|, NaN equal to NaN) for
/// floats and exactly for integers. Returns a description of the first mismatch.
pub fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.dtype() != expected.dtype() || actual.dims() != expected.dims() {
        return Err(format!(
            "type {} differs from expected {}",
            actual.ty(),
            expected.ty()
        ));
    }
    let exact = !expected.dtype().is_float();
    let (a, b) = (actual.to_f64_vec(), expected.to_f64_vec());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = if exact {
            x == y
        } else {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs()
        };
        if !ok {
            let bad = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| {
                    if exact {
                        x != y
                    } else {
                        !((x.is_nan() && y.is_nan())
                            || x == y
                            || (*x - *y).abs() <= atol + rtol * y.abs())
                    }
                })
                .count();
            return Err(format!(
                "element {i}: got {x}, expected {y} ({bad} of {} elements differ)",
                a.len()
            ));
        }
    }
    Ok(())
}
