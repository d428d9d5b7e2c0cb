//! Helpers shared by the `qcc` command-line tests: run the binary, insist that a command
//! succeeded (printing its output when it did not), make a fresh temporary directory, and run
//! a model in onnxruntime (the project's venv).
//!
//! Each test binary compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qcc_ir::Tensor;

/// Runs the `qcc` binary built with the tests.
pub fn qcc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qcc"))
        .args(args)
        .output()
        .expect("qcc runs")
}

/// `qcc ARGS`, which must succeed.
pub fn ok(args: &[&str]) -> Output {
    succeeded(qcc(args), &format!("qcc {args:?}"))
}

/// `out`, after checking that the command (`what`) succeeded.
pub fn succeeded(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An empty directory for one test: named after the test binary, `tag` and the process, so
/// test binaries running in parallel never share one. Removed when the test passes; kept
/// (and named on stderr) when it fails, for a look at what the test wrote.
pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "qcc-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the temporary directory");
    TempDir(d)
}

/// A test's temporary directory (see [`temp_dir`]); derefs to its path.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A path as the `&str` an argument list takes (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project venv's Python (numpy, onnx, onnxruntime), which scripts/setup-venv.sh makes.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-venv.sh",
        python.display()
    );
    python
}

/// Runs `model` in onnxruntime through scripts/ort_run.py (graph optimizations off, so the
/// model's ops run as written) on one input; the named outputs.
pub fn onnxruntime(
    model: &Path,
    input: (&str, &Path),
    outputs: &[String],
    dir: &Path,
) -> HashMap<String, Tensor> {
    let out_dir = dir.join("ort");
    let result = Command::new(venv_python())
        .arg(repo_root().join("scripts/ort_run.py"))
        .arg(model)
        .arg("--input")
        .arg(format!("{}={}", input.0, s(input.1)))
        .arg("--output-dir")
        .arg(&out_dir)
        .output()
        .expect("run python");
    assert!(
        result.status.success(),
        "onnxruntime failed on {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    outputs
        .iter()
        .map(|name| {
            let path = out_dir.join(qcc::npy::file_name_for(name));
            let t = qcc::npy::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name.clone(), t)
        })
        .collect()
}
