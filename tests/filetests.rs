//! Pass filetests: every `.qir` file under `tests/filetests/` is one behaviour of a pass.
//!
//! # Format
//!
//! ```text
//! ; Identity feeding a graph output: the output name moves to the Identity's input.
//! ; pipeline: remove-identities eliminate-dead-code
//! graph g(%x: f32[1,4]) -> (%out) {
//!   %a = Relu(%x) : f32[1,4]
//!   %out = Identity(%a) : f32[1,4]
//! }
//! ; check: graph g(%x: f32[1,4]) -> (%out) {
//! ; check:   %out = Relu(%x) : f32[1,4] @a
//! ; check: }
//! ```
//!
//! - Comment lines at the top say why the file exists (what behaviour it pins down).
//! - `; quantize: PROFILE` (optional) quantizes for a hardware profile: the `default`
//!   pipeline then includes the `quantize` pass, with statistics from running the input graph
//!   on four seeded random inputs. `; quantize: dynamic PROFILE` quantizes dynamically (the
//!   `quantize-dynamic` pass, no statistics).
//! - `; pipeline: NAME NAME ...` names the passes, as `qcc_passes::pipeline_from_names`
//!   takes them (`default` is the whole standard pipeline), with `PipelineOptions::default()`.
//! - The input graph is the file's `.qir` text; `; check:` lines are comments to the parser.
//! - The `; check:` lines are the exact text of the graph after the pipeline, printed with
//!   [`CHECK_PRINT`] (constants over 16 elements are elided, so weights do not flood the
//!   file while small folded values stay visible), one printed line per check line; the text
//!   after `; check: ` is compared verbatim, line by line. A mismatch prints a diff.
//! - The pipeline runs with the pass manager's verification after every pass.
//!
//! `QCC_BLESS=1 cargo test --test filetests` rewrites every file's check lines from the actual
//! output (review the diff before committing). `QCC_FILETEST=substr` runs only the files whose
//! path contains `substr`. The suite fails when it finds no file at all.

use qcc_ir::text::{parse_graph, print_graph, PrintOptions};
use qcc_passes::{pipeline_from_names, PipelineOptions};
use std::path::{Path, PathBuf};

/// How the expected output is printed.
const CHECK_PRINT: PrintOptions = PrintOptions {
    elide_constants_over: Some(16),
};

const CHECK_PREFIX: &str = "; check:";
const PIPELINE_PREFIX: &str = "; pipeline:";
const QUANTIZE_PREFIX: &str = "; quantize:";

fn filetest_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "qir") {
            out.push(path);
        }
    }
    Ok(())
}

/// One file, split into its parts.
struct Filetest {
    pipeline: Vec<String>,
    /// `; quantize: PROFILE`: the pipeline quantizes for that profile, with statistics from
    /// the input graph run on seeded random inputs.
    quantize: Option<String>,
    /// Every line that is not a check line: header comments and the input graph.
    source_lines: Vec<String>,
    checks: Vec<String>,
}

fn parse_filetest(text: &str) -> Result<Filetest, String> {
    let mut pipeline = None;
    let mut quantize = None;
    let mut source_lines = Vec::new();
    let mut checks = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(CHECK_PREFIX) {
            checks.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix(QUANTIZE_PREFIX) {
            quantize = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix(PIPELINE_PREFIX) {
            if pipeline.is_some() {
                return Err("more than one '; pipeline:' line".into());
            }
            pipeline = Some(
                rest.split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            );
        }
        source_lines.push(line.to_string());
    }
    let pipeline = pipeline.ok_or("no '; pipeline: NAME ...' line")?;
    if pipeline.is_empty() {
        return Err("'; pipeline:' names no pass".into());
    }
    Ok(Filetest {
        pipeline,
        quantize,
        source_lines,
        checks,
    })
}

/// The printed graph after the file's pipeline.
fn actual_output(t: &Filetest) -> Result<String, String> {
    let source = t.source_lines.join("\n");
    let mut graph = parse_graph(&source).map_err(|e| format!("input graph: {e}"))?;
    let names: Vec<&str> = t.pipeline.iter().map(String::as_str).collect();
    let mut options = PipelineOptions::default();
    if let Some(spec) = &t.quantize {
        use qcc_passes::quant::{DynamicOptions, Profile, Quantization, QuantizeOptions};
        options.quantize = Some(match spec.strip_prefix("dynamic ") {
            Some(profile) => Quantization::Dynamic(DynamicOptions {
                profile: Profile::parse(profile.trim()).map_err(|e| e.to_string())?,
                weight_method: qcc_passes::quant::RangeMethod::MinMax,
                exclude: Vec::new(),
            }),
            None => {
                let profile = Profile::parse(spec).map_err(|e| e.to_string())?;
                let source = qcc::calibration_data::DataSource::Synthetic { count: 4, seed: 7 };
                // The interpreter: expected text must not depend on the host's fp32 kernels.
                let stats = qcc::calibrate::calibrate_with(
                    Path::new("filetest.qir"),
                    &graph,
                    &source,
                    None,
                    false,
                    qcc::calibrate::CalibrationEngine::Interpreter,
                )
                .map_err(|e| format!("calibration: {e}"))?;
                Quantization::Static(QuantizeOptions {
                    profile,
                    stats: std::sync::Arc::new(stats),
                    methods: Default::default(),
                    exclude: Vec::new(),
                    quantized_io: false,
                })
            }
        });
    }
    let pm = pipeline_from_names(&names, &options).map_err(|e| e.to_string())?;
    pm.run(&mut graph, None, None).map_err(|e| e.to_string())?;
    Ok(print_graph(&graph, &CHECK_PRINT))
}

/// A line diff (longest common subsequence; the files are small): `-` expected, `+` actual.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out += &format!("    {}\n", expected[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("  - {}\n", expected[i]);
            i += 1;
        } else {
            out += &format!("  + {}\n", actual[j]);
            j += 1;
        }
    }
    out
}

/// The file's text with its check lines replaced by `actual`.
fn blessed(t: &Filetest, actual: &[String]) -> String {
    let mut lines = t.source_lines.clone();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    for line in actual {
        if line.is_empty() {
            out += CHECK_PREFIX;
        } else {
            out += &format!("{CHECK_PREFIX} {line}");
        }
        out.push('\n');
    }
    out
}

/// Runs one file: `Ok` when it passes (or was blessed), `Err` with the report otherwise.
fn run_file(path: &Path, bless: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = parse_filetest(&text)?;
    let actual: Vec<String> = actual_output(&t)?.lines().map(String::from).collect();
    if bless {
        let new = blessed(&t, &actual);
        if new != text {
            std::fs::write(path, new).map_err(|e| e.to_string())?;
            println!("blessed {}", path.display());
        }
        return Ok(());
    }
    if t.checks.is_empty() {
        return Err("no '; check:' lines (run with QCC_BLESS=1 to write them)".into());
    }
    if t.checks != actual {
        return Err(format!(
            "output differs from the check lines (- expected, + actual):\n{}",
            diff(&t.checks, &actual)
        ));
    }
    Ok(())
}

#[test]
fn pass_filetests() {
    let root = filetest_root();
    let mut files = Vec::new();
    if let Err(e) = collect_files(&root, &mut files) {
        panic!("cannot list filetests: {e}");
    }
    files.sort();
    let filter = std::env::var("QCC_FILETEST").ok();
    if let Some(f) = &filter {
        files.retain(|p| p.to_string_lossy().contains(f.as_str()));
    }
    assert!(
        !files.is_empty(),
        "no .qir filetests found under {}{}",
        root.display(),
        filter.map_or(String::new(), |f| format!(" matching '{f}'"))
    );
    let bless = std::env::var_os("QCC_BLESS").is_some_and(|v| v != "0");
    let mut failures = Vec::new();
    for path in &files {
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        if let Err(report) = run_file(path, bless) {
            failures.push(format!("FAIL {shown}: {report}"));
        }
    }
    for f in &failures {
        println!("{f}\n");
    }
    println!(
        "filetests: {} passed, {} failed",
        files.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed (see above)",
        failures.len(),
        files.len()
    );
}

#[test]
fn the_diff_marks_changed_lines() {
    let e: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let a: Vec<String> = ["a", "x", "c"].map(String::from).to_vec();
    assert_eq!(diff(&e, &a), "    a\n  - b\n  + x\n    c\n");
}

#[test]
fn a_filetest_without_a_pipeline_is_an_error() {
    let err = parse_filetest("; why\ngraph g() -> () {\n}\n").err();
    assert!(err.is_some_and(|e| e.contains("pipeline")));
}
