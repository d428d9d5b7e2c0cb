//! Real and corrupt files: the nine "light" zoo models of the ONNX backend test data must
//! import; truncated and bit-flipped models must fail without panicking; the node tests are
//! imported for statistics (run with `--ignored --nocapture`).

use super::tests::*;
use super::*;
use crate::onnx::proto::DataType;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../third_party/onnx-backend-data")
}

#[test]
fn the_light_models_import() {
    let dir = data_dir().join("light");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("note: {} is absent; skipping", dir.display());
        return;
    };
    let mut models: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert_eq!(models.len(), 9, "{models:?}");
    for path in models {
        let g = import_file(&path, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(g.outputs().len(), 1, "{}", path.display());
        g.verify()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Per op type: the tests that imported, and the failed ones with their error.
type OpResults = (Vec<String>, Vec<(String, String)>);

/// Reads `test_data_set_0/input_N.pb` and pairs each with the model's N-th non-initializer input.
fn node_test_inputs(dir: &Path, model: &ModelProto) -> HashMap<String, Tensor> {
    let mut values = HashMap::new();
    let Some(graph) = &model.graph else {
        return values;
    };
    let inits: HashSet<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let names = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()));
    for (n, input) in names.enumerate() {
        let path = dir.join("test_data_set_0").join(format!("input_{n}.pb"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(proto) = crate::onnx::proto::TensorProto::decode(bytes.as_slice()) else {
            continue;
        };
        if let Ok(t) = tensor_from_proto(&proto, None) {
            values.insert(input.name.clone(), t);
        }
    }
    values
}

/// A short class for an import error, to group failures.
fn error_class(e: &ImportError) -> String {
    match e {
        ImportError::Unsupported(list) => {
            let reasons: Vec<String> = list
                .iter()
                .map(|u| match &u.reason {
                    Some(r) => format!("{}: {r}", u.op_type),
                    None => format!("op {}", u.op_type),
                })
                .collect();
            format!("unsupported ({})", reasons.join("; "))
        }
        other => {
            let s = other.to_string();
            let s = s.split(" (inputs:").next().unwrap_or(&s).to_string();
            s.chars().take(150).collect()
        }
    }
}

#[test]
#[ignore = "statistics over the ONNX backend node tests; run with --ignored --nocapture"]
fn backend_node_tests_import_statistics() {
    import_statistics("node");
}

#[test]
#[ignore = "statistics over the ONNX backend PyTorch tests; run with --ignored --nocapture"]
fn backend_pytorch_tests_import_statistics() {
    import_statistics("pytorch-converted");
    import_statistics("pytorch-operator");
}

/// Imports every `*/model.onnx` under the data set `set`, runs the imported ones in the
/// interpreter against the expected outputs, and prints the results per op.
fn import_statistics(set: &str) {
    let dir = data_dir().join(set);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("note: {} is absent; skipping", dir.display());
        return;
    };
    let mut tests: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    tests.sort();
    let mut per_op: BTreeMap<String, OpResults> = BTreeMap::new();
    let (mut ok, mut failed) = (0, 0);
    let mut mismatches = Vec::new();
    for test in tests {
        let Ok(bytes) = std::fs::read(test.join("model.onnx")) else {
            continue;
        };
        let Ok(model) = ModelProto::decode_bytes(&bytes) else {
            continue;
        };
        let op = model
            .graph
            .as_ref()
            .and_then(|g| g.node.last())
            .map_or("?".to_string(), |n| n.op_type.clone());
        let opts = ImportOptions {
            batch: 1,
            input_values: node_test_inputs(&test, &model),
        };
        let name = test
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let entry = per_op.entry(op).or_default();
        match import_bytes(&bytes, Some(&test), &opts) {
            Ok(g) => {
                ok += 1;
                if let Some(problem) = check_against_expected(&g, &test, &opts.input_values) {
                    mismatches.push(format!("{name}: {problem}"));
                }
                entry.0.push(name);
            }
            Err(e) => {
                failed += 1;
                entry.1.push((name, error_class(&e)));
            }
        }
    }
    println!("{set} tests: {ok} imported, {failed} failed");
    println!(
        "{} imported tests disagree with the expected outputs under the interpreter:",
        mismatches.len()
    );
    for m in &mismatches {
        println!("    {m}");
    }
    for (op, (oks, fails)) in &per_op {
        if fails.is_empty() {
            println!("{op}: {} ok", oks.len());
            continue;
        }
        println!("{op}: {} ok, {} failed", oks.len(), fails.len());
        for (name, e) in fails {
            println!("    {name}: {e}");
        }
    }
}

/// Runs an imported node test in the interpreter and compares with `output_N.pb`; `None` when
/// everything matches (1e-3 relative tolerance), otherwise what went wrong.
fn check_against_expected(
    g: &Graph,
    dir: &Path,
    values: &HashMap<String, Tensor>,
) -> Option<String> {
    let inputs: HashMap<String, Tensor> = g
        .inputs()
        .iter()
        .filter_map(|i| {
            let name = &g.value(i.value).name;
            values.get(name).map(|t| (name.clone(), t.clone()))
        })
        .collect();
    let outputs = match qcc_ir::eval::run(g, &inputs) {
        Ok(o) => o,
        Err(e) => return Some(format!("eval: {e}")),
    };
    for (n, got) in outputs.iter().enumerate() {
        let path = dir.join("test_data_set_0").join(format!("output_{n}.pb"));
        let Ok(bytes) = std::fs::read(&path) else {
            return Some(format!("{} is missing", path.display()));
        };
        let Ok(proto) = crate::onnx::proto::TensorProto::decode(bytes.as_slice()) else {
            return Some(format!("{} does not decode", path.display()));
        };
        let want = match tensor_from_proto(&proto, None) {
            Ok(t) => t,
            Err(e) => return Some(format!("expected output {n}: {e}")),
        };
        if got.ty() != want.ty() {
            return Some(format!(
                "output {n}: got {}, expected {}",
                got.ty(),
                want.ty()
            ));
        }
        let close = got
            .to_f64_vec()
            .iter()
            .zip(want.to_f64_vec())
            .all(|(a, b)| (a - b).abs() <= 1e-3 * b.abs().max(1.0) || (a.is_nan() && b.is_nan()));
        if !close {
            return Some(format!("output {n}: values differ"));
        }
    }
    None
}

// ---- robustness ----

/// Every prefix and many single-bit flips of `bytes` must import or fail, never panic.
fn assert_never_panics(bytes: &[u8], prefix_step: usize, flip_step: usize) -> (usize, usize) {
    let mut errors = 0;
    let mut tried = 0;
    for n in (0..bytes.len()).step_by(prefix_step.max(1)) {
        tried += 1;
        errors += import_bytes(&bytes[..n], None, &ImportOptions::default()).is_err() as usize;
    }
    let mut flipped = bytes.to_vec();
    for pos in (0..bytes.len()).step_by(flip_step.max(1)) {
        for bit in [0, 3, 7] {
            flipped[pos] ^= 1 << bit;
            tried += 1;
            errors += import_bytes(&flipped, None, &ImportOptions::default()).is_err() as usize;
            flipped[pos] ^= 1 << bit;
        }
    }
    (tried, errors)
}

#[test]
fn truncated_and_bit_flipped_models_fail_cleanly() {
    let m = model(
        13,
        vec![
            node(
                "Conv",
                &["x", "w", "b"],
                &["c"],
                vec![
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_ints("strides", &[1, 1]),
                ],
            ),
            node("Relu", &["c"], &["r"], vec![]),
            node("Shape", &["r"], &["s"], vec![]),
            node("Reshape", &["r", "shape"], &["y"], vec![]),
        ],
        vec![info("x", DataType::Float, &[-1, 2, 4, 4])],
        vec![info("y", DataType::Float, &[1, 48])],
        vec![
            init_f32("w", &[3, 2, 3, 3], &[0.5; 54]),
            init_f32("b", &[3], &[0.1, 0.2, 0.3]),
            init_i64("shape", &[2], &[1, -1]),
        ],
    );
    let bytes = m.encode_to_vec();
    assert!(import_bytes(&bytes, None, &ImportOptions::default()).is_ok());
    // The last field is length-prefixed, so every strict prefix that cuts it is an error.
    assert!(import_bytes(&bytes[..bytes.len() - 1], None, &ImportOptions::default()).is_err());
    let (tried, errors) = assert_never_panics(&bytes, 1, 1);
    assert!(
        errors > tried / 2,
        "{errors} errors in {tried} corrupt models"
    );
}

#[test]
fn a_real_model_survives_truncation_and_bit_flips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../third_party/onnx-backend-data/light/light_squeezenet.onnx");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("note: {} is absent; skipping", path.display());
        return;
    };
    assert!(import_bytes(&bytes, None, &ImportOptions::default()).is_ok());
    let step = (bytes.len() / 1500).max(1);
    let (tried, errors) = assert_never_panics(&bytes, step, step);
    println!(
        "{tried} corrupt variants of {}: {errors} errors, no panic",
        path.display()
    );
    assert!(errors > 0);
}
