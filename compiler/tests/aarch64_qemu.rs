//! aarch64 objects executed: `qcc compile --target aarch64-*` output is linked into the C
//! example (examples/c) with the aarch64 cross gcc, run under qemu-user, and its outputs are
//! compared with the same model run in process on x86 (JIT).
//!
//! - fp32: `aarch64-fp32` against the `x86_64-fp32` JIT. Both targets fuse every
//!   multiply-add (`fmla` / `vfmadd`) and the kernels fix the summation order, so the results
//!   are expected to be identical; measured on tiny-cnn and resnet18 (and mobilenetv2): relative
//!   L2 difference exactly 0, no element differs. So the test asserts bit equality. (The JIT
//!   side is the fixed-ISA `x86_64-fp32`, not `native-fp32`, so the comparison does not depend on
//!   whether the test machine has FMA.)
//! - int8: `aarch64-int8` (`sdot`) and `aarch64-int8+i8mm` (`usdot`) against the
//!   `x86_64-int8` JIT (`vpdpbusd`) with the same calibration statistics and the same
//!   profile: every int8 kernel follows one integer rounding policy (qcc_ir::requant), so
//!   the outputs must agree bit for bit. Also `--mode dynamic` (the integer kernels with
//!   the float epilogue), with symmetric weights and with the asymmetric weights of the
//!   `fbgemm` (s8 per channel) and `snpe` (u8 per tensor, stored as s8) profiles, whose
//!   kernels subtract `zw·Σ (x − zx)` from the run-time input sums; and onnxruntime's own
//!   `quantize_dynamic` MobileNetV2 (its depthwise ConvIntegers on the dynamic depthwise
//!   kernel).
//!
//! Cost under qemu 7.2 (measured, one core): resnet18 fp32 ~17 s of CPU (qemu emulates float
//! NEON lane by lane in helpers), resnet18 int8 ~4 s, mobilenetv2 int8 ~1 s; each int8 compile
//! (quantization passes) takes a few seconds more.
//!
//! Needs `aarch64-linux-gnu-gcc` and `qemu-aarch64` (`bash scripts/setup-cross.sh` installs
//! them). Without them a test prints a skip notice and passes, except under CI (the `CI`
//! environment variable set), where it fails: CI must run them.

mod common;

use common::{qcc, s, succeeded as ok, temp_dir, TempDir};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use qcc_ir::Tensor;

const CROSS_GCC: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Whether the cross gcc and qemu are here. Missing tools skip the test on a developer's
/// machine but fail it under CI, where a skip would hide that nothing aarch64 ran.
fn cross_tools_present(test: &str) -> bool {
    let missing: Vec<&str> = [CROSS_GCC, QEMU]
        .into_iter()
        .filter(|tool| !runs(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!(
        "{} not found: run `bash scripts/setup-cross.sh`",
        missing.join(" and ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {what}");
    }
    // Straight to stderr: libtest captures `eprintln!` of a passing test, and a skip must
    // be seen.
    let _ = writeln!(std::io::stderr(), "{test}: SKIPPED: {what}");
    false
}

fn example_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c/main.c")
}

/// A zoo model with a seeded random input.
struct Case {
    dir: TempDir,
    model: PathBuf,
    input: PathBuf,
    input_name: String,
    output_names: Vec<String>,
}

impl Case {
    fn new(zoo: &str, tag: &str) -> Case {
        let dir = temp_dir(tag);
        let model = dir.join(format!("{zoo}.onnx"));
        ok(qcc(&["zoo", zoo, "-o", s(&model)]), "qcc zoo");
        let g = qcc::driver::load_model(&model, 1).unwrap();
        let value = g.value(g.input_values()[0]);
        let mut rng = qcc::rng::SeededRng::new(21);
        let tensor = qcc::driver::random_tensor(&value.ty, &mut rng);
        let input = dir.join("input.npy");
        qcc::npy::write(&input, &tensor).unwrap();
        let output_names = g
            .outputs()
            .iter()
            .map(|&o| g.value(o).name.clone())
            .collect();
        Case {
            input_name: value.name.clone(),
            dir,
            model,
            input,
            output_names,
        }
    }

    /// The zoo model quantized by onnxruntime's `quantize_dynamic` (after its
    /// `quant_pre_process`; u8 weights): DynamicQuantizeLinear → ConvInteger/MatMulInteger
    /// chains that qcc compiles as they are.
    fn ort_dynamic(zoo: &str, tag: &str) -> Case {
        let mut case = Case::new(zoo, tag);
        let quantized = case.dir.join(format!("{zoo}-ort-dynamic.onnx"));
        let script = common::repo_root().join("scripts/ort_quantize_dynamic.py");
        let run = Command::new(common::venv_python())
            .arg(&script)
            .args([s(&case.model), s(&quantized), "--preprocess"])
            .output()
            .expect("python runs");
        ok(run, "scripts/ort_quantize_dynamic.py");
        case.model = quantized;
        case
    }

    /// `qcc calibrate --synthetic 4`: statistics for the int8 targets, as `--stats FILE`.
    fn synthetic_stats(&self) -> Vec<String> {
        let stats = self.dir.join("stats.json");
        ok(
            qcc(&[
                "calibrate",
                s(&self.model),
                "--synthetic",
                "4",
                "-o",
                s(&stats),
            ]),
            "qcc calibrate",
        );
        vec!["--stats".to_string(), s(&stats).to_string()]
    }

    /// The model run in process for `target` (which must run here), one tensor per output.
    fn jit_outputs(&self, target: &str, options: &[String]) -> Vec<Tensor> {
        let out_dir = self.dir.join(format!("jit-{target}"));
        let input = format!("{}={}", self.input_name, s(&self.input));
        let mut args = vec!["run", s(&self.model), "--target", target, "--input", &input];
        args.extend(["--output-dir", s(&out_dir)]);
        args.extend(options.iter().map(String::as_str));
        let start = Instant::now();
        ok(qcc(&args), &format!("qcc run --target {target}"));
        eprintln!("  qcc run --target {target}: {:.1?}", start.elapsed());
        self.output_names
            .iter()
            .map(|name| qcc::npy::read(&out_dir.join(qcc::npy::file_name_for(name))).unwrap())
            .collect()
    }

    /// The model compiled for `target`, linked statically into the C example with the cross
    /// gcc and run under `qemu-aarch64 -cpu max` (every extension the targets may use, i8mm
    /// included); one tensor per output.
    fn qemu_outputs(&self, target: &str, options: &[String]) -> Vec<Tensor> {
        let tag = target.replace('+', "_");
        let out_dir = self.dir.join(format!("obj-{tag}"));
        let mut args = vec!["compile", s(&self.model), "--target", target];
        args.extend(["-o", s(&out_dir), "--name", "net"]);
        args.extend(options.iter().map(String::as_str));
        let start = Instant::now();
        ok(qcc(&args), &format!("qcc compile --target {target}"));
        eprintln!("  qcc compile --target {target}: {:.1?}", start.elapsed());

        let app = self.dir.join(format!("app-{tag}"));
        let header = out_dir.join("net.h");
        let object = out_dir.join("net.o");
        let cross = Command::new(CROSS_GCC)
            .args([
                "-O2",
                "-Wall",
                "-Werror",
                "-static",
                "-DMODEL=net",
                "-include",
            ])
            .args([s(&header), s(&example_source()), s(&object), "-o", s(&app)])
            .output()
            .expect("the cross gcc runs");
        ok(cross, &format!("{CROSS_GCC} -static ({target})"));

        let outputs: Vec<PathBuf> = (0..self.output_names.len())
            .map(|i| self.dir.join(format!("qemu-{tag}-output{i}.npy")))
            .collect();
        let start = Instant::now();
        let run = Command::new(QEMU)
            .args(["-cpu", "max", s(&app), s(&self.input)])
            .args(outputs.iter().map(|p| s(p)))
            .output()
            .expect("qemu runs");
        ok(run, &format!("the C example for {target} under {QEMU}"));
        eprintln!("  {QEMU} ({target}): {:.1?}", start.elapsed());
        outputs.iter().map(|p| qcc::npy::read(p).unwrap()).collect()
    }

    fn assert_bit_equal(&self, what: &str, from_qemu: &[Tensor], from_jit: &[Tensor]) {
        for ((name, q), j) in self.output_names.iter().zip(from_qemu).zip(from_jit) {
            assert_eq!(q.ty(), j.ty(), "{what}: output {name}");
            if q.to_le_bytes() != j.to_le_bytes() {
                let (q, j) = (q.to_f64_vec(), j.to_f64_vec());
                let differing = q.iter().zip(&j).filter(|(a, b)| a != b).count();
                let err: f64 = q.iter().zip(&j).map(|(a, b)| (a - b) * (a - b)).sum();
                let norm: f64 = j.iter().map(|b| b * b).sum();
                panic!(
                    "{what}: output {name}: qemu and JIT differ in {differing} of {} elements \
                     (relative L2 {:e})",
                    j.len(),
                    (err / norm).sqrt()
                );
            }
        }
    }
}

fn fp32_matches_jit_bit_for_bit(zoo: &str, test: &str) {
    if !cross_tools_present(test) {
        return;
    }
    let case = Case::new(zoo, &format!("{zoo}-fp32"));
    let from_qemu = case.qemu_outputs("aarch64-fp32", &[]);
    let from_jit = case.jit_outputs("x86_64-fp32", &[]);
    case.assert_bit_equal(&format!("{zoo} aarch64-fp32"), &from_qemu, &from_jit);
}

/// `targets` compiled with `--profile profile` and synthetic statistics, each against one
/// `x86_64-int8` JIT run with the same statistics and profile.
fn int8_matches_jit_bit_for_bit(zoo: &str, profile: &str, targets: &[&str], test: &str) {
    if !cross_tools_present(test) {
        return;
    }
    let case = Case::new(zoo, &format!("{zoo}-int8-{profile}"));
    let mut options = case.synthetic_stats();
    options.extend(["--profile".to_string(), profile.to_string()]);
    let from_jit = case.jit_outputs("x86_64-int8", &options);
    for target in targets {
        let from_qemu = case.qemu_outputs(target, &options);
        let what = format!("{zoo} {target} --profile {profile}");
        case.assert_bit_equal(&what, &from_qemu, &from_jit);
    }
}

/// `targets` compiled with `--mode dynamic` (run-time activation ranges, no statistics) and
/// `--profile profile` when given, each against one `x86_64-int8` JIT run of the same: the
/// integer kernels with the float epilogue, whose float steps are each rounded once, the
/// same on both machines.
fn dynamic_int8_matches_jit_bit_for_bit(
    zoo: &str,
    profile: Option<&str>,
    targets: &[&str],
    test: &str,
) {
    if !cross_tools_present(test) {
        return;
    }
    let tag = profile.unwrap_or("default");
    let case = Case::new(zoo, &format!("{zoo}-int8-dynamic-{tag}"));
    let mut options = vec!["--mode".to_string(), "dynamic".to_string()];
    if let Some(profile) = profile {
        options.extend(["--profile".to_string(), profile.to_string()]);
    }
    let from_jit = case.jit_outputs("x86_64-int8", &options);
    for target in targets {
        let from_qemu = case.qemu_outputs(target, &options);
        let what = format!("{zoo} {target} --mode dynamic --profile {tag}");
        case.assert_bit_equal(&what, &from_qemu, &from_jit);
    }
}

#[test]
fn tiny_cnn_aarch64_fp32_matches_x86_jit_bit_for_bit() {
    fp32_matches_jit_bit_for_bit("tiny-cnn", "tiny_cnn_aarch64_fp32");
}

#[test]
fn resnet18_aarch64_fp32_matches_x86_jit_bit_for_bit() {
    fp32_matches_jit_bit_for_bit("resnet18", "resnet18_aarch64_fp32");
}

#[test]
fn resnet18_aarch64_int8_arm_profile_matches_x86_jit_bit_for_bit() {
    int8_matches_jit_bit_for_bit(
        "resnet18",
        "arm",
        &["aarch64-int8", "aarch64-int8+i8mm"],
        "resnet18_aarch64_int8_arm",
    );
}

#[test]
fn mobilenetv2_aarch64_int8_arm_profile_matches_x86_jit_bit_for_bit() {
    int8_matches_jit_bit_for_bit(
        "mobilenetv2",
        "arm",
        &["aarch64-int8", "aarch64-int8+i8mm"],
        "mobilenetv2_aarch64_int8_arm",
    );
}

/// A QDQ profile with symmetric int8 activations (stored as q + 128 by the back end).
#[test]
fn resnet18_aarch64_int8_tensorrt_profile_matches_x86_jit_bit_for_bit() {
    int8_matches_jit_bit_for_bit(
        "resnet18",
        "tensorrt",
        &["aarch64-int8"],
        "resnet18_aarch64_int8_tensorrt",
    );
}

/// Dynamic quantization: `sdot` kernels compensating the run-time zero point `zx − 128`
/// (padding taps read the run-time zero point through the flipping im2col packer).
#[test]
fn resnet18_aarch64_int8_dynamic_matches_x86_jit_bit_for_bit() {
    dynamic_int8_matches_jit_bit_for_bit(
        "resnet18",
        None,
        &["aarch64-int8"],
        "resnet18_aarch64_int8_dynamic",
    );
}

/// Dynamic quantization with asymmetric weights: `fbgemm`'s per-channel s8 zero points on
/// `sdot` (input sums of the flipped bytes, restored to u8 sums) and `usdot`, and `snpe`'s
/// per-tensor u8 weights stored as s8.
#[test]
fn resnet18_aarch64_int8_dynamic_asymmetric_weights_match_x86_jit_bit_for_bit() {
    dynamic_int8_matches_jit_bit_for_bit(
        "resnet18",
        Some("fbgemm"),
        &["aarch64-int8", "aarch64-int8+i8mm"],
        "resnet18_aarch64_int8_dynamic_fbgemm",
    );
    dynamic_int8_matches_jit_bit_for_bit(
        "tiny-cnn",
        Some("snpe"),
        &["aarch64-int8"],
        "tiny_cnn_aarch64_int8_dynamic_snpe",
    );
}

/// onnxruntime's own dynamic model: its depthwise ConvIntegers (u8 weights, nonzero zero
/// points) run on the dynamic depthwise kernel, `sdot` and `usdot`.
#[test]
fn onnxruntime_dynamic_mobilenetv2_aarch64_matches_x86_jit_bit_for_bit() {
    let test = "mobilenetv2_ort_dynamic_aarch64";
    if !cross_tools_present(test) {
        return;
    }
    let case = Case::ort_dynamic("mobilenetv2", "mobilenetv2-ort-dynamic");
    let from_jit = case.jit_outputs("x86_64-int8", &[]);
    for target in ["aarch64-int8", "aarch64-int8+i8mm"] {
        let from_qemu = case.qemu_outputs(target, &[]);
        let what = format!("onnxruntime's dynamic mobilenetv2 on {target}");
        case.assert_bit_equal(&what, &from_qemu, &from_jit);
    }
}
