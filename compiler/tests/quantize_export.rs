//! `qcc quantize`'s QDQ model, run by onnxruntime, against qcc's int8 build and qcc's
//! interpreter on the same QDQ graph.
//!
//! For each zoo model and profile: calibrate on seeded random inputs, quantize, write the QDQ
//! model, then run on one seeded input
//! - onnxruntime on the QDQ model (graph optimizations off: DQ → f32 op → Q, as written),
//! - qcc's interpreter on the QDQ graph before export (the same computation in f32),
//! - qcc's int8 JIT build for x86_64-int8 with the same statistics and profile.
//!
//! Differences are counted in steps of the output tensor: the scale of the DequantizeLinear
//! that produces it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use qcc::calibration_data::DataSource;
use qcc::compile::{self, JitModel};
use qcc::quantize_export::{self, output_qparams};
use qcc::rng::SeededRng;
use qcc_ir::{Graph, Tensor};
use qcc_passes::quant::{CalibrationStats, Profile, QuantizeOptions, RangeMethods};

const PROFILES: [&str; 3] = ["x86-vnni", "tensorrt", "tvm"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qcc-qexp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create the temp directory");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// How far two runs of one output are apart, in steps of the output's quantization.
#[derive(Clone, Copy, Debug, Default)]
struct StepDiff {
    /// The largest |a - b| / step.
    max_steps: f64,
    /// Elements whose difference is at least half a step.
    differing: usize,
    total: usize,
}

impl StepDiff {
    fn measure(a: &Tensor, b: &Tensor, step: f64) -> StepDiff {
        assert_eq!(a.ty(), b.ty(), "output types differ");
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let mut d = StepDiff {
            total: a.len(),
            ..StepDiff::default()
        };
        for (x, y) in a.iter().zip(&b) {
            let steps = (x - y).abs() / step;
            // NaN must fail every bound rather than vanish in a max.
            let steps = if steps.is_nan() { f64::INFINITY } else { steps };
            d.max_steps = d.max_steps.max(steps);
            if steps >= 0.5 {
                d.differing += 1;
            }
        }
        d
    }

    /// At most `steps` apart everywhere; the slack absorbs the f32 rounding of `(q - zp)·s`.
    fn within(&self, steps: f64) -> bool {
        self.max_steps <= steps + 1e-3
    }

    fn fraction(&self) -> f64 {
        self.differing as f64 / self.total.max(1) as f64
    }
}

impl std::fmt::Display for StepDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max {:.3} steps, {}/{} elements ({:.2}%) differ",
            self.max_steps,
            self.differing,
            self.total,
            100.0 * self.fraction()
        )
    }
}

/// Runs `model` in onnxruntime through scripts/ort_run.py; outputs by name.
fn onnxruntime(
    model: &Path,
    input: (&str, &Path),
    outputs: &[String],
    dir: &Path,
) -> HashMap<String, Tensor> {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-venv.sh",
        python.display()
    );
    let out_dir = dir.join("ort");
    let result = Command::new(&python)
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

/// A zoo model, its calibration statistics and one seeded input, shared by the profiles.
struct Fixture {
    name: &'static str,
    graph: Graph,
    stats: Arc<CalibrationStats>,
    input_name: String,
    input: Tensor,
    dir: PathBuf,
}

fn fixture(name: &'static str, calibration_samples: usize) -> Fixture {
    let dir = temp_dir(name);
    let graph =
        qcc::zoo::build(name, &qcc::zoo::ZooOptions { seed: 1, batch: 1 }).expect("zoo model");
    let source = DataSource::Synthetic {
        count: calibration_samples,
        seed: 5,
    };
    let model_path = dir.join(format!("{name}.onnx"));
    let stats =
        qcc::calibrate::calibrate(&model_path, &graph, &source, None, false).expect("calibrate");
    let input_value = graph.input_values()[0];
    let input_name = graph.value(input_value).name.clone();
    let ty = graph.value(input_value).ty.clone();
    let input = qcc::driver::random_tensor(&ty, &mut SeededRng::new(11));
    Fixture {
        name,
        graph,
        stats: Arc::new(stats),
        input_name,
        input,
        dir,
    }
}

/// What one (model, profile) run measured, per quantized output.
struct Measured {
    output: String,
    /// onnxruntime on the QDQ model against qcc's interpreter on the QDQ graph.
    ort_vs_interpreter: StepDiff,
    /// onnxruntime on the QDQ model against qcc's int8 JIT build.
    ort_vs_int8: StepDiff,
}

fn measure(f: &Fixture, profile_name: &str) -> Vec<Measured> {
    let target = quantize_export::int8_target(Some("x86_64-int8")).expect("target");
    let profile = Profile::parse(profile_name).expect("profile");
    let options = QuantizeOptions {
        profile,
        stats: f.stats.clone(),
        methods: RangeMethods::default(),
        exclude: Vec::new(),
    };
    let qdq = quantize_export::quantize_graph(f.graph.clone(), &target, options.clone())
        .expect("quantize")
        .graph;
    let dir = f.dir.join(profile_name);
    std::fs::create_dir_all(&dir).expect("create dir");
    let qdq_path = dir.join("qdq.onnx");
    quantize_export::write_qdq_model(&qdq, &qdq_path).expect("write the QDQ model");
    let input_path = dir.join("input.npy");
    qcc::npy::write(&input_path, &f.input).expect("write the input");

    let output_names: Vec<String> = qdq
        .outputs()
        .iter()
        .map(|&o| qdq.value(o).name.clone())
        .collect();
    let ort = onnxruntime(&qdq_path, (&f.input_name, &input_path), &output_names, &dir);
    let inputs = HashMap::from([(f.input_name.clone(), f.input.clone())]);
    let interpreted = qcc_ir::eval::run(&qdq, &inputs).expect("interpreter");

    let mut lowered = compile::lower_graph_quantized(
        f.graph.clone(),
        &target,
        &format!("qexp_{}", f.name.replace('-', "_")),
        Some(options),
    )
    .expect("int8 build");
    let jit = JitModel::new(&mut lowered).expect("JIT");
    let int8: HashMap<String, Tensor> = jit
        .run(&[&f.input])
        .expect("int8 run")
        .into_iter()
        .collect();

    let mut measured = Vec::new();
    for (k, &o) in qdq.outputs().iter().enumerate() {
        let name = &output_names[k];
        let Some(q) = output_qparams(&qdq, o) else {
            println!(
                "{} {profile_name}: output '{name}' is f32, not compared",
                f.name
            );
            continue;
        };
        assert!(
            q.is_per_tensor(),
            "output '{name}' is quantized per channel"
        );
        let step = q.scales()[0] as f64;
        let theirs = &ort[name];
        let ours_int8 = int8
            .get(name)
            .unwrap_or_else(|| panic!("the int8 build has no output '{name}'"));
        let m = Measured {
            output: name.clone(),
            ort_vs_interpreter: StepDiff::measure(&interpreted[k], theirs, step),
            ort_vs_int8: StepDiff::measure(ours_int8, theirs, step),
        };
        println!(
            "{} {profile_name} '{name}' (step {step:.3e}): onnxruntime vs interpreter: {}; \
             onnxruntime vs int8 build: {}",
            f.name, m.ort_vs_interpreter, m.ort_vs_int8
        );
        measured.push(m);
    }
    assert!(!measured.is_empty(), "{}: no quantized output", f.name);
    measured
}

#[test]
fn tiny_cnn_qdq_model_in_onnxruntime_is_within_one_step_of_the_int8_build() {
    let f = fixture("tiny-cnn", 8);
    for profile in PROFILES {
        for m in measure(&f, profile) {
            assert!(
                m.ort_vs_interpreter.within(1.0),
                "tiny-cnn {profile} '{}': onnxruntime vs interpreter: {}",
                m.output,
                m.ort_vs_interpreter
            );
            assert!(
                m.ort_vs_int8.within(1.0),
                "tiny-cnn {profile} '{}': onnxruntime vs int8 build: {}",
                m.output,
                m.ort_vs_int8
            );
        }
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn resnet18_qdq_model_in_onnxruntime_is_close_to_the_int8_build() {
    let f = fixture("resnet18", 2);
    for profile in PROFILES {
        for m in measure(&f, profile) {
            assert!(
                m.ort_vs_interpreter.within(1.0),
                "resnet18 {profile} '{}': onnxruntime vs interpreter: {}",
                m.output,
                m.ort_vs_interpreter
            );
            assert!(
                m.ort_vs_int8.within(3.0),
                "resnet18 {profile} '{}': onnxruntime vs int8 build: {}",
                m.output,
                m.ort_vs_int8
            );
        }
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}


#[test]
fn diag_tvm() {
    let f = fixture("tiny-cnn", 8);
    let target = quantize_export::int8_target(Some("x86_64-int8")).expect("target");
    let options = QuantizeOptions {
        profile: Profile::parse("tvm").unwrap(),
        stats: f.stats.clone(),
        methods: RangeMethods::default(),
        exclude: Vec::new(),
    };
    let qdq = quantize_export::quantize_graph(f.graph.clone(), &target, options.clone())
        .unwrap()
        .graph;
    let mut lowered =
        compile::lower_graph_quantized(f.graph.clone(), &target, "d", Some(options)).unwrap();
    let print = qcc_ir::text::PrintOptions { elide_constants_over: Some(16) };
    println!("{}", qcc_ir::text::print_graph(&qdq, &print));
    println!("{}", qcc_ir::text::print_graph(&lowered.graph, &print));
    let inputs = HashMap::from([(f.input_name.clone(), f.input.clone())]);
    let a = qcc_ir::eval::run_all(&qdq, &inputs).unwrap();
    let b = qcc_ir::eval::run_all(&lowered.graph, &inputs).unwrap();
    for (id, t) in &b {
        let name = &lowered.graph.value(*id).name;
        if let Some(q) = qdq.value_by_name(name) {
            let (x, y) = (t.to_f64_vec(), a[&q].to_f64_vec());
            if x.len() != y.len() { continue; }
            let diff = x.iter().zip(&y).filter(|(p, q)| p != q).count();
            let maxd = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            println!("{name} {}: {diff}/{} differ, max {maxd}", t.ty(), x.len());
        }
    }
    let jit = JitModel::new(&mut lowered).unwrap();
    let out = jit.run(&[&f.input]).unwrap();
    let interp = qcc_ir::eval::run(&lowered.graph, &inputs).unwrap();
    for ((n, t), u) in out.iter().zip(&interp) {
        println!("jit vs realized interp {n}: equal {}", t.to_le_bytes() == u.to_le_bytes());
    }
}
