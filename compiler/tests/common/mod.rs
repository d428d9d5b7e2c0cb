//! Helpers shared by the `qcc` command-line tests: run the binary, insist that a command
//! succeeded (printing its output when it did not), and make a fresh temporary directory.
//!
//! Each test binary compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
/// test binaries running in parallel never share one.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "qcc-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the temporary directory");
    d
}

/// A path as the `&str` an argument list takes (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
