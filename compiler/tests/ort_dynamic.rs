//! Models quantized by onnxruntime's `quantize_dynamic` (DynamicQuantizeLinear →
//! ConvInteger/MatMulInteger → Cast → Mul → Add), compiled by qcc for `x86_64-int8`: every
//! integer product must run as a dynamically quantized int8 layer
//! (`realize-integer-products`), and the result must be onnxruntime's.
//!
//! The integer products, their f32 epilogues (Cast, the scale product, the bias, the residual
//! Add, Relu) and DynamicQuantizeLinear are exact operations, each one rounding defined by
//! IEEE f32, so a model made only of them must give onnxruntime's bits. Zoo models add fp32
//! pooling layers whose summation order is each engine's own: those are compared within a
//! relative L2 bound, and the printed line says how many outputs were bit-identical
//! (ResNet-18: all of them, on this machine).

mod common;

use common::{onnxruntime, repo_root, s, temp_dir, venv_python};

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use qcc::compile::{lower_graph_quantized, JitModel};
use qcc_codegen::Target;
use qcc_ir::{Graph, Op, Tensor};

/// `scripts/ort_quantize_dynamic.py MODEL OUT ARGS`.
fn quantize_dynamic(model: &Path, out: &Path, args: &[&str]) {
    let result = Command::new(venv_python())
        .arg(repo_root().join("scripts/ort_quantize_dynamic.py"))
        .arg(model)
        .arg(out)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        result.status.success(),
        "quantize_dynamic failed on {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.petgraph()
        .node_indices()
        .filter(|&n| pred(&g.node(n).op))
        .count()
}

/// One model through onnxruntime and through qcc (interpreter and int8 JIT).
struct Runs {
    /// Integer products in the model, and dynamic int8 layers in qcc's compiled graph.
    products: usize,
    realized: usize,
    /// `None` when onnxruntime cannot run the model.
    ort: Option<Vec<Tensor>>,
    jit: Vec<Tensor>,
    interpreter: Vec<Tensor>,
}

/// Exports `float`, quantizes it with onnxruntime (`args`), runs qcc and, `with_ort`,
/// onnxruntime on one seeded input.
fn run_both(float: &Graph, tag: &str, args: &[&str], with_ort: bool) -> Runs {
    let dir = temp_dir(tag);
    let model = dir.join("float.onnx");
    qcc::onnx::export::write_model(float, &Default::default(), &model).expect("export");
    let quantized = dir.join("dynamic.onnx");
    quantize_dynamic(&model, &quantized, args);
    run_engines(&quantized, &dir, tag, with_ort)
}

/// Runs the quantized model at `quantized` in qcc and, `with_ort`, in onnxruntime, on one
/// seeded input (written to `dir`).
fn run_engines(quantized: &Path, dir: &Path, tag: &str, with_ort: bool) -> Runs {
    let g = qcc::onnx::import::import_file(quantized, &Default::default())
        .unwrap_or_else(|e| panic!("{tag}: import: {e}"));
    let products = count(&g, |op| {
        matches!(op, Op::ConvInteger { .. } | Op::MatMulInteger { .. })
    });

    let input_value = g.input_values()[0];
    let input_name = g.value(input_value).name.clone();
    let mut rng = qcc::rng::SeededRng::new(11);
    let input = qcc::driver::random_tensor(&g.value(input_value).ty, &mut rng);
    let input_path = dir.join("input.npy");
    qcc::npy::write(&input_path, &input).expect("write the input");
    let output_names: Vec<String> = g
        .outputs()
        .iter()
        .map(|&o| g.value(o).name.clone())
        .collect();
    let ort = with_ort.then(|| {
        let mut ort = onnxruntime(quantized, (&input_name, &input_path), &output_names, dir);
        output_names
            .iter()
            .map(|n| ort.remove(n).expect("every output"))
            .collect()
    });

    let feeds = HashMap::from([(input_name, input.clone())]);
    let interpreter = qcc_ir::eval::run(&g, &feeds).expect("the interpreter runs the model");
    let target = Target::parse("x86_64-int8").expect("target");
    let mut lowered = lower_graph_quantized(g, &target, "model", None)
        .unwrap_or_else(|e| panic!("{tag}: compile: {e}"));
    let realized = count(&lowered.graph, |op| {
        matches!(
            op,
            Op::DynamicQuantizedConv { .. } | Op::DynamicQuantizedMatMul { .. }
        )
    });
    let jit = JitModel::new(&mut lowered).expect("JIT");
    let jit = jit
        .run(&[&input])
        .expect("run")
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    Runs {
        products,
        realized,
        ort,
        jit,
        interpreter,
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32()
        .expect("f32 outputs")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn relative_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (bits(a), bits(b));
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(&b) {
        let (x, y) = (f32::from_bits(x) as f64, f32::from_bits(y) as f64);
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    (diff / norm.max(1e-30)).sqrt()
}

fn identical(a: &[Tensor], b: &[Tensor]) -> (usize, usize) {
    let same = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            bits(x)
                .iter()
                .zip(bits(y))
                .filter(|(p, q)| **p == *q)
                .count()
        })
        .sum();
    (same, a.iter().map(|t| t.ty().shape.numel()).sum())
}

/// A 3x3 conv with Relu, a 1x1 conv with a residual Add and Relu, then a fully connected
/// layer: only exact operations once quantized.
fn exact_graph() -> Graph {
    let mut rng = qcc::rng::SeededRng::new(4);
    let mut values = |n: usize, scale: f32| -> String {
        let t = qcc::driver::random_tensor(
            &qcc_ir::TensorType::new(qcc_ir::DType::F32, vec![n]),
            &mut rng,
        );
        let v: Vec<String> = t
            .as_f32()
            .expect("f32")
            .iter()
            .map(|x| format!("{}", x * scale))
            .collect();
        v.join(", ")
    };
    let src = format!(
        "graph g(%x: f32[1,8,6,6]) -> (%y) {{
  %w1 = const f32[8,8,3,3] dense<{}>
  %b1 = const f32[8] dense<{}>
  %w2 = const f32[8,8,1,1] dense<{}>
  %b2 = const f32[8] dense<{}>
  %w3 = const f32[288,10] dense<{}>
  %b3 = const f32[10] dense<{}>
  %c1 = Conv(%x, %w1, %b1) {{kernel=[3,3], pads=[1,1,1,1]}}
  %r1 = Relu(%c1)
  %c2 = Conv(%r1, %w2, %b2) {{kernel=[1,1]}}
  %a = Add(%c2, %x)
  %r2 = Relu(%a)
  %f = Flatten(%r2) {{axis=1}}
  %m = MatMul(%f, %w3)
  %y = Add(%m, %b3)
}}",
        values(576, 0.2),
        values(8, 1.0),
        values(64, 0.5),
        values(8, 1.0),
        values(2880, 0.1),
        values(10, 1.0)
    );
    qcc_ir::text::parse_graph(&src).expect("the test graph parses")
}

#[test]
fn a_model_of_exact_operations_gives_onnxruntimes_bits() {
    // u8 weights (asymmetric, onnxruntime's choice for convolutions), per-column MatMul.
    let runs = run_both(&exact_graph(), "exact", &["--per-channel"], true);
    let ort = runs.ort.expect("onnxruntime ran");
    assert_eq!(
        (runs.products, runs.realized),
        (3, 3),
        "every product realized"
    );
    for (i, ((jit, ort), interpreter)) in
        runs.jit.iter().zip(&ort).zip(&runs.interpreter).enumerate()
    {
        assert_eq!(bits(jit), bits(ort), "output {i}: compiled vs onnxruntime");
        assert_eq!(
            bits(interpreter),
            bits(ort),
            "output {i}: interpreter vs onnxruntime"
        );
    }
}

#[test]
fn zoo_models_quantized_by_onnxruntime_run_as_int8_and_match_it() {
    // (model, quantize_dynamic arguments, compare with onnxruntime): s8 convolutions do not
    // load in onnxruntime, so that build is compared with qcc's interpreter only.
    let cases: [(&str, &[&str], bool); 4] = [
        ("tiny-cnn", &["--preprocess", "--per-channel"], true),
        ("tiny-cnn", &["--preprocess", "--weight-type", "s8"], false),
        ("resnet18", &["--preprocess"], true),
        // 17 depthwise ConvIntegers with u8 weights: the dynamic depthwise kernel.
        ("mobilenetv2", &["--preprocess"], true),
    ];
    let tags = ["tiny_u8", "tiny_s8", "resnet18", "mobilenetv2"];
    let mut failures = Vec::new();
    for ((model, args, with_ort), tag) in cases.into_iter().zip(tags) {
        let float = qcc::zoo::build(model, &qcc::zoo::ZooOptions { seed: 3, batch: 1 })
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let what = format!("{model} {args:?}");
        let runs = run_both(&float, tag, args, with_ort);
        let reference = runs.ort.as_ref().unwrap_or(&runs.interpreter);
        let (same, total) = identical(&runs.jit, reference);
        let distance = runs
            .jit
            .iter()
            .zip(reference)
            .map(|(a, b)| relative_l2(a, b))
            .fold(0.0, f64::max);
        println!(
            "{what}: {}/{} integer products realized; compiled vs {}: relative L2 {distance:.2e}, \
             {same}/{total} outputs bit-identical",
            runs.realized,
            runs.products,
            if with_ort {
                "onnxruntime"
            } else {
                "interpreter"
            }
        );
        if runs.products == 0 || runs.realized != runs.products {
            failures.push(format!(
                "{what}: {} of {} integer products realized",
                runs.realized, runs.products
            ));
        }
        // Measured 0 (resnet18, mobilenetv2) and 6.2e-8 (tiny-cnn's pooling); a wrong zero
        // point or scale gives errors above 1e-3.
        if distance.is_nan() || distance > 1e-5 {
            failures.push(format!("{what}: relative L2 {distance:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ConvInteger with constant zero points after a static QuantizeLinear, its i32 result scaled
/// by a constant: the same rewrite with an input scale of 1, compiled, gives onnxruntime's
/// bits (a per-tensor weight zero point: onnxruntime's ConvInteger takes no other).
#[test]
fn conv_integer_with_constant_zero_points_compiles_and_gives_onnxruntimes_bits() {
    let weights: Vec<String> = (0..108)
        .map(|i| ((i * 97 + 13) % 256).to_string())
        .collect();
    let src = "graph g(%x: f32[1,3,5,5]) -> (%y) {
  %w = const u8[4,3,3,3] dense<WEIGHTS>
  %s = const f32[] dense<0.0031>
  %b = const f32[1,4,1,1] dense<0.5, -1.0, 0.25, 2.0>
  %xq = QuantizeLinear(%x) {q=u8(scale=0.02, zp=117)}
  %acc = ConvInteger(%xq, %w) {kernel=[3,3], pads=[1,1,1,1], strides=[2,2], x_zp=117, w_zp=131}
  %f = Cast(%acc) {to=f32}
  %m = Mul(%f, %s)
  %a = Add(%m, %b)
  %y = Relu(%a)
}"
    .replace("WEIGHTS", &weights.join(", "));
    let g = qcc_ir::text::parse_graph(&src).expect("the test graph parses");
    let dir = temp_dir("constant_zero_points");
    let model = dir.join("conv_integer.onnx");
    qcc::onnx::export::write_model(&g, &Default::default(), &model).expect("export");
    let runs = run_engines(&model, &dir, "constant_zero_points", true);
    assert_eq!((runs.products, runs.realized), (1, 1));
    let ort = runs.ort.expect("onnxruntime ran");
    assert_eq!(bits(&runs.jit[0]), bits(&ort[0]), "compiled vs onnxruntime");
    assert_eq!(
        bits(&runs.interpreter[0]),
        bits(&ort[0]),
        "interpreter vs onnxruntime"
    );
}

#[test]
fn qcc_compile_takes_an_onnxruntime_dynamic_model_without_statistics() {
    let dir = temp_dir("cli");
    let model = dir.join("tiny.onnx");
    common::ok(&["zoo", "tiny-cnn", "-o", s(&model)]);
    let quantized = dir.join("tiny-dynamic.onnx");
    quantize_dynamic(&model, &quantized, &["--preprocess"]);
    let out = common::ok(&[
        "compile",
        s(&quantized),
        "--target",
        "x86_64-int8",
        "-o",
        s(&dir.join("out")),
        "--report",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("dynamic int8 implicit gemm") && !report.contains("ConvInteger"),
        "{report}"
    );
    // Its quantization is its own: statistics are refused, and `compare` says it needs the
    // float model instead of asking for statistics.
    let with_stats = common::qcc(&[
        "compile",
        s(&quantized),
        "--target",
        "x86_64-int8",
        "--mode",
        "dynamic",
        "-o",
        s(&dir.join("out2")),
    ]);
    let stderr = String::from_utf8_lossy(&with_stats.stderr);
    assert!(
        !with_stats.status.success() && stderr.contains("already quantized"),
        "{stderr}"
    );
    let compare = common::qcc(&[
        "compare",
        s(&quantized),
        "--target",
        "x86_64-int8",
        "--synthetic",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&compare.stderr);
    assert!(
        !compare.status.success() && stderr.contains("needs the fp32 model"),
        "{stderr}"
    );
}

#[test]
fn an_integer_product_read_as_an_integer_is_a_clear_compile_error() {
    let src = "graph g(%x: f32[2,3]) -> (%y) {
  %w = const i8[3,2] dense<1, 2, 3, 4, 5, 6>
  %k = const i32[] dense<7>
  %xq = QuantizeLinear(%x) {q=u8(scale=0.1, zp=3)}
  %acc = MatMulInteger(%xq, %w) {a_zp=3}
  %sum = Add(%acc, %k)
  %y = Cast(%sum) {to=f32}
}";
    let g = qcc_ir::text::parse_graph(src).expect("the test graph parses");
    let target = Target::parse("x86_64-int8").expect("target");
    let err = match lower_graph_quantized(g, &target, "model", None) {
        Ok(_) => panic!("an i32 MatMulInteger result has no kernel"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("MatMulInteger") && err.contains("Cast to f32"),
        "{err}"
    );
}
