//! ONNX backend conformance: the node tests and the PyTorch-converted/-operator tests shipped
//! in the onnx 1.15.0 wheel, run through qcc's importer and reference interpreter.
//!
//! A test is in scope when every op of its model is one the importer supports
//! (`SUPPORTED_OPS`, the foundation issue's list), so every supported op is exercised.
//! `tests/conformance/onnx_backend.manifest` records each in-scope test as `pass` or `xfail`
//! with a reason; this suite fails when a pass regresses, an expected failure starts passing,
//! a test is missing from the manifest, or anything panics. `QCC_BLESS=1` rewrites the
//! manifest from the current results, keeping the reasons already written.

mod common;

use prost::Message;
use qcc::onnx::import::SUPPORTED_OPS;
use qcc::onnx::proto::ModelProto;
use qcc::onnx::{import_bytes, ImportOptions};
use qcc_ir::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const SUITES: &[&str] = &["node", "pytorch-converted", "pytorch-operator"];
const MANIFEST: &str = "tests/conformance/onnx_backend.manifest";
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

/// Every in-scope test directory, as `suite/test_name`.
fn in_scope_tests(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for suite in SUITES {
        let mut dirs: Vec<_> = std::fs::read_dir(data.join(suite))
            .expect("suite dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else {
                continue;
            };
            let Ok(model) = ModelProto::decode(bytes.as_slice()) else {
                continue;
            };
            let Some(graph) = model.graph else { continue };
            let in_scope = !graph.node.is_empty()
                && graph.node.iter().all(|n| {
                    (n.domain.is_empty() || n.domain == "ai.onnx")
                        && SUPPORTED_OPS.contains(&n.op_type.as_str())
                });
            if in_scope {
                out.push(format!(
                    "{suite}/{}",
                    dir.file_name().expect("dir name").to_string_lossy()
                ));
            }
        }
    }
    out
}

/// Runs one backend test; `Err` says why it failed.
fn run_one(dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let graph = model.graph.as_ref().ok_or("model has no graph")?;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let declared_inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !initializers.contains(n))
        .collect();
    let data_dir = dir.join("test_data_set_0");
    let read_all = |prefix: &str| -> Result<Vec<(String, Tensor)>, String> {
        let mut out = Vec::new();
        for i in 0.. {
            let p = data_dir.join(format!("{prefix}_{i}.pb"));
            if !p.exists() {
                break;
            }
            out.push(common::read_pb(&p)?);
        }
        Ok(out)
    };
    let inputs = read_all("input")?;
    let expected = read_all("output")?;
    // Tensor files may be unnamed: then they follow the graph's input order.
    let inputs: HashMap<String, Tensor> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, (name, t))| {
            (
                if name.is_empty() {
                    declared_inputs
                        .get(i)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                } else {
                    name
                },
                t,
            )
        })
        .collect();
    let opts = ImportOptions {
        batch: 1,
        input_values: inputs.clone(),
    };
    let g = import_bytes(&bytes, Some(dir), &opts).map_err(|e| format!("import: {e}"))?;
    let feeds: HashMap<String, Tensor> = g
        .input_values()
        .iter()
        .map(|&v| g.value(v).name.clone())
        .filter_map(|n| inputs.get(&n).map(|t| (n, t.clone())))
        .collect();
    let actual = qcc_ir::eval::run(&g, &feeds).map_err(|e| format!("eval: {e}"))?;
    if actual.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (a, (name, e))) in actual.iter().zip(&expected).enumerate() {
        common::compare(a, e, RTOL, ATOL).map_err(|m| format!("output {i} '{name}': {m}"))?;
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Pass,
    XFail(String),
}

fn read_manifest(path: &Path) -> BTreeMap<String, Expect> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let e = if rest == "pass" {
            Expect::Pass
        } else if let Some(reason) = rest.strip_prefix("xfail") {
            Expect::XFail(reason.trim().to_string())
        } else {
            panic!("{path:?}: cannot read manifest line '{line}'");
        };
        out.insert(name.to_string(), e);
    }
    out
}

fn write_manifest(path: &Path, entries: &BTreeMap<String, Expect>) {
    let mut text = String::from(
        "# ONNX backend tests (onnx 1.15.0 wheel) whose ops are all in qcc's list, run through the\n\
         # importer and the reference interpreter by tests/onnx_backend.rs.\n\
         # `pass`, or `xfail <reason>`. Regenerate with QCC_BLESS=1 (reasons already written are kept).\n",
    );
    for (name, e) in entries {
        match e {
            Expect::Pass => text.push_str(&format!("{name} pass\n")),
            Expect::XFail(r) => text.push_str(&format!("{name} xfail {r}\n")),
        }
    }
    std::fs::write(path, text).expect("write manifest");
}

#[test]
fn onnx_backend_tests_match_the_manifest() {
    let data = common::backend_data();
    let manifest_path = common::repo_root().join(MANIFEST);
    let manifest = read_manifest(&manifest_path);
    let tests = in_scope_tests(&data);
    assert!(
        tests.len() > 300,
        "only {} in-scope tests found: is the test data complete?",
        tests.len()
    );

    let mut results = BTreeMap::new();
    let mut problems = Vec::new();
    for t in &tests {
        let outcome = std::panic::catch_unwind(|| run_one(&data.join(t)));
        let result = match outcome {
            Ok(r) => r,
            Err(_) => {
                problems.push(format!("{t}: PANICKED (qcc must never panic on input)"));
                Err("panicked".to_string())
            }
        };
        results.insert(t.clone(), result);
    }

    let (mut passed, mut xfailed) = (0, 0);
    let mut blessed = BTreeMap::new();
    for (t, r) in &results {
        match (manifest.get(t), r) {
            (Some(Expect::Pass), Ok(())) => passed += 1,
            (Some(Expect::XFail(_)), Err(_)) => xfailed += 1,
            (Some(Expect::Pass), Err(e)) => problems.push(format!("{t}: REGRESSED: {e}")),
            (Some(Expect::XFail(reason)), Ok(())) => problems.push(format!(
                "{t}: now PASSES (expected to fail: {reason}); update the manifest"
            )),
            (None, r) => problems.push(format!(
                "{t}: not in the manifest ({})",
                if r.is_ok() {
                    "passes".to_string()
                } else {
                    format!("fails: {}", r.as_ref().unwrap_err())
                }
            )),
        }
        let entry = match (r, manifest.get(t)) {
            (Ok(()), _) => Expect::Pass,
            (Err(_), Some(Expect::XFail(reason))) => Expect::XFail(reason.clone()),
            (Err(e), _) => {
                Expect::XFail(e.lines().next().unwrap_or("").chars().take(200).collect())
            }
        };
        blessed.insert(t.clone(), entry);
    }
    for t in manifest.keys().filter(|t| !results.contains_key(*t)) {
        problems.push(format!("{t}: in the manifest but not an in-scope test"));
    }
    if std::env::var_os("QCC_BLESS").is_some() {
        write_manifest(&manifest_path, &blessed);
        eprintln!("blessed {} entries into {MANIFEST}", blessed.len());
    }
    println!("node tests: {passed} passed, {xfailed} expected-fail");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
