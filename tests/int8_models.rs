//! Whole models quantized for every hardware profile and compiled for `x86_64-int8`: the
//! compiled program must equal the reference interpreter run on the same quantized graph,
//! bit for bit (one rounding policy everywhere), every profile must realize integer ops, and
//! the int8 output must stay close to the fp32 model's (the quantization itself is sane).
//!
//! Calibration uses seeded random inputs (the zoo models have random weights anyway); the
//! real-model accuracy suite is `scripts/accuracy/run.sh`.

mod common;

use qcc::calibration_data::DataSource;
use qcc::compile::{lower_graph_quantized, JitModel};
use qcc_codegen::Target;
use qcc_ir::{Graph, Op, Tensor};
use qcc_passes::quant::{Profile, Quantization, QuantizeOptions, RangeMethods};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

fn random_inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = qcc::rng::SeededRng::new(seed);
    g.input_values()
        .iter()
        .map(|&v| {
            let value = g.value(v);
            (
                value.name.clone(),
                qcc::driver::random_tensor(&value.ty, &mut rng),
            )
        })
        .collect()
}

fn options(g: &Graph, profile: Profile) -> Result<QuantizeOptions, String> {
    let stats = qcc::calibrate::calibrate(
        Path::new("zoo.onnx"),
        g,
        &DataSource::Synthetic { count: 2, seed: 11 },
        None,
        false,
    )
    .map_err(|e| e.to_string())?;
    Ok(QuantizeOptions {
        profile,
        stats: Arc::new(stats),
        methods: RangeMethods::default(),
        exclude: Vec::new(),
        quantized_io: false,
    })
}

/// Quantizes and compiles `g` for `profile`; checks the compiled output against the
/// interpreter on the quantized graph and against the fp32 interpreter.
fn check(name: &str, g: Graph, profile: Profile) -> Result<String, String> {
    let what = format!("{name} / {}", profile.name);
    let fail = |e: String| format!("{what}: {e}");
    let inputs = random_inputs(&g, 5);
    let map: HashMap<String, Tensor> = inputs.iter().cloned().collect();
    let float = qcc_ir::eval::run(&g, &map).map_err(|e| fail(e.to_string()))?;
    let target = Target::parse("x86_64-int8").map_err(|e| e.to_string())?;
    let opts = options(&g, profile).map_err(fail)?;
    let mut lowered = lower_graph_quantized(g, &target, "model", Some(Quantization::Static(opts)))
        .map_err(|e| fail(e.to_string()))?;
    let integer_ops = lowered
        .graph
        .petgraph()
        .node_indices()
        .filter(|&n| {
            matches!(
                lowered.graph.node(n).op,
                Op::QuantizedConv { .. } | Op::QuantizedMatMul { .. }
            )
        })
        .count();
    if integer_ops == 0 {
        return Err(fail("no integer convolution or matrix product".into()));
    }
    let expected = qcc_ir::eval::run(&lowered.graph, &map).map_err(|e| fail(e.to_string()))?;
    let jit = JitModel::new(&mut lowered).map_err(|e| fail(e.to_string()))?;
    let tensors: Vec<&Tensor> = inputs.iter().map(|(_, t)| t).collect();
    let actual = jit.run(&tensors).map_err(|e| fail(e.to_string()))?;
    let mut worst_vs_float = 0.0f64;
    let float_tail = ends_in_float_compute(&lowered.graph);
    for (((out, a), e), f) in actual.iter().zip(&expected).zip(&float) {
        // Integer layers are exact; an fp32 layer after the last DQ (tiny-cnn's Softmax)
        // carries the fp32 back end's tolerance.
        if a != e && float_tail && common::relative_l2(a, e) <= 1e-6 {
            worst_vs_float = worst_vs_float.max(common::relative_l2(a, f));
            continue;
        }
        if a != e {
            let a = a.as_f32().map_err(|e| e.to_string())?;
            let e = e.as_f32().map_err(|e| e.to_string())?;
            let differing = a.iter().zip(e.iter()).filter(|(x, y)| x != y).count();
            return Err(fail(format!(
                "output '{out}': compiled int8 differs from the interpreter in {differing} of {} \
                 values",
                a.len()
            )));
        }
        worst_vs_float = worst_vs_float.max(common::relative_l2(a, f));
    }
    // Random-weight networks with 2 calibration samples: a loose bound that still catches a
    // wrong scale, a swapped zero point or a dropped residual (those give errors near 1).
    if worst_vs_float.is_nan() || worst_vs_float >= 0.35 {
        return Err(fail(format!(
            "int8 output is {worst_vs_float:.3} (relative L2) away from fp32"
        )));
    }
    Ok(format!(
        "{what}: bit-exact with the interpreter, {integer_ops} integer conv/matmul, relative L2 \
         to fp32 {worst_vs_float:.3}, {} fallbacks",
        lowered.model.fallbacks().len()
    ))
}

/// Whether a graph output is computed by a float op other than a DequantizeLinear.
fn ends_in_float_compute(g: &Graph) -> bool {
    g.outputs().iter().any(|&v| match g.value(v).def {
        qcc_ir::ValueDef::Node { node, .. } => !matches!(
            g.node(node).op,
            Op::DequantizeLinear(_) | Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity
        ),
        _ => false,
    })
}

fn report(results: Vec<Result<String, String>>) {
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for r in results.iter().flatten() {
        println!("{r}");
    }
    let failures: Vec<&str> = failures.iter().map(|s| s.as_str()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_profile_compiles_resnet18_and_mobilenetv2_bit_exact_with_the_interpreter() {
    let mut results = Vec::new();
    for model in ["resnet18", "mobilenetv2"] {
        let g = match qcc::zoo::build(model, &qcc::zoo::ZooOptions { seed: 3, batch: 1 }) {
            Ok(g) => g,
            Err(e) => {
                results.push(Err(format!("{model}: {e}")));
                continue;
            }
        };
        for profile in Profile::all() {
            results.push(check(model, g.clone(), profile));
        }
    }
    report(results);
}

#[test]
fn tiny_cnn_at_batch_3_and_arm_with_i8mm() {
    let g = qcc::zoo::build("tiny-cnn", &qcc::zoo::ZooOptions { seed: 4, batch: 3 })
        .expect("tiny-cnn builds");
    report(vec![
        check("tiny-cnn batch 3", g.clone(), Profile::X86_VNNI),
        check("tiny-cnn batch 3", g, Profile::arm(true)),
    ]);
}

#[test]
fn an_int8_target_without_statistics_is_an_error_naming_the_flags() {
    let dir = std::env::temp_dir().join(format!("qcc-int8-nostats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = dir.join("tiny.onnx");
    let g = qcc::zoo::build("tiny-cnn", &qcc::zoo::ZooOptions { seed: 1, batch: 1 })
        .expect("tiny-cnn builds");
    qcc::onnx::export::write_model(&g, &Default::default(), &model).expect("export");
    let target = Target::parse("x86_64-int8").expect("target");
    let err = qcc::quant_args::QuantArgs::default()
        .options(&model, &target)
        .expect_err("int8 needs stats");
    let text = err.to_string();
    assert!(
        text.contains("--stats") && text.contains("--calibrate"),
        "{text}"
    );
    // Quantization flags on a float target are refused, not ignored.
    let args = qcc::quant_args::QuantArgs {
        profile: Some("tvm".into()),
        ..Default::default()
    };
    let fp32 = Target::parse("native-fp32").expect("target");
    let err = args
        .options(&model, &fp32)
        .expect_err("fp32 refuses --profile");
    assert!(err.to_string().contains("int8 targets"), "{err}");
    // An --exclude pattern that matches nothing is an error naming it.
    let mut opts = options(&g, Profile::X86_VNNI).expect("calibrates");
    opts.exclude = vec!["no_such_node*".into()];
    let err = lower_graph_quantized(g, &target, "m", Some(Quantization::Static(opts)))
        .err()
        .expect("a pattern matching nothing fails");
    assert!(err.to_string().contains("no_such_node*"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model that arrives in QDQ form (here: qcc's own quantize pass, exported to ONNX and read
/// back) compiles for the int8 target without statistics, realizes integer ops, and equals
/// the interpreter; statistics given anyway are refused.
#[test]
fn a_prequantized_qdq_model_compiles_without_statistics() {
    let dir = std::env::temp_dir().join(format!("qcc-int8-qdq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = dir.join("resnet18-qdq.onnx");
    let g = qcc::zoo::build("resnet18", &qcc::zoo::ZooOptions { seed: 3, batch: 1 })
        .expect("resnet18 builds");
    let opts = options(&g, Profile::X86_VNNI).expect("calibrates");
    let mut prepared = g.clone();
    qcc_passes::calibration_pipeline(&qcc_passes::PipelineOptions::default())
        .run(&mut prepared, None, None)
        .expect("passes");
    let (qdq, summary) = qcc_passes::quant::insert_qdq(&prepared, &opts).expect("quantizes");
    assert!(summary.quantized_nodes > 20, "{summary:?}");
    qcc::onnx::export::write_model(&qdq, &Default::default(), &model).expect("export");

    let target = Target::parse("x86_64-int8").expect("target");
    let none = qcc::quant_args::QuantArgs::default();
    let mut lowered =
        qcc::compile::lower_model(&model, &target, 1, "m", &none).expect("compiles without stats");
    let integer = lowered
        .graph
        .petgraph()
        .node_indices()
        .filter(|&n| matches!(lowered.graph.node(n).op, Op::QuantizedConv { .. }))
        .count();
    assert_eq!(integer, 20, "every convolution of resnet18 is realized");
    let inputs = random_inputs(&lowered.graph, 9);
    let map: HashMap<String, Tensor> = inputs.iter().cloned().collect();
    let expected = qcc_ir::eval::run(&lowered.graph, &map).expect("interpreter");
    let jit = JitModel::new(&mut lowered).expect("jit");
    let tensors: Vec<&Tensor> = inputs.iter().map(|(_, t)| t).collect();
    let actual = jit.run(&tensors).expect("runs");
    assert_eq!(actual[0].1, expected[0]);

    let with_stats = qcc::quant_args::QuantArgs {
        profile: Some("tvm".into()),
        ..Default::default()
    };
    let err = qcc::compile::lower_model(&model, &target, 1, "m", &with_stats)
        .err()
        .expect("options on a quantized model are refused");
    assert!(err.to_string().contains("already quantized"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--io int8`: the model takes and returns u8 with published parameters. Fed the quantized
/// input, its u8 outputs dequantize to exactly the float-I/O build's outputs (the boundary's
/// DQ→Q pairs are exact), and the compiled quantized-I/O program equals the interpreter on
/// its own graph. For u8 (x86-vnni) and i8 (tensorrt: exposed as u8 with zero point + 128)
/// activations.
#[test]
fn quantized_io_takes_and_returns_u8_equal_to_the_float_io_build() {
    let g = qcc::zoo::build("resnet18", &qcc::zoo::ZooOptions { seed: 3, batch: 1 })
        .expect("resnet18 builds");
    let target = Target::parse("x86_64-int8").expect("target");
    let inputs = random_inputs(&g, 5);
    let x = &inputs[0].1;
    for profile in [Profile::X86_VNNI, Profile::TENSORRT] {
        let what = profile.name;
        let float_opts = options(&g, profile).expect("statistics");
        let mut io_opts = float_opts.clone();
        io_opts.quantized_io = true;
        let mut float_io = lower_graph_quantized(
            g.clone(),
            &target,
            "float_io",
            Some(Quantization::Static(float_opts)),
        )
        .expect("float-I/O build");
        let mut int8_io = lower_graph_quantized(
            g.clone(),
            &target,
            "int8_io",
            Some(Quantization::Static(io_opts)),
        )
        .expect("int8-I/O build");
        let (input, output) = (&int8_io.model.inputs[0], &int8_io.model.outputs[0]);
        assert_eq!(input.dtype, qcc_ir::DType::U8, "{what}");
        assert_eq!(output.dtype, qcc_ir::DType::U8, "{what}");
        let (in_scale, in_zp) = input.quantization.expect("input parameters");
        let (out_scale, out_zp) = output.quantization.expect("output parameters");
        let api_in = qcc_ir::QParams::per_tensor(qcc_ir::DType::U8, in_scale, in_zp).unwrap();
        let api_out = qcc_ir::QParams::per_tensor(qcc_ir::DType::U8, out_scale, out_zp).unwrap();
        let xq = qcc_ir::eval::eval_op(&Op::QuantizeLinear(api_in), &[x])
            .expect("quantize")
            .remove(0);

        let float_jit = JitModel::new(&mut float_io).expect("JIT");
        let expected = float_jit.run(&[x]).expect("runs").remove(0).1;
        let expected_map: HashMap<String, Tensor> =
            [(inputs[0].0.clone(), xq.clone())].into_iter().collect();
        let reference = qcc_ir::eval::run(&int8_io.graph, &expected_map).expect("interpreter");
        let int8_jit = JitModel::new(&mut int8_io).expect("JIT");
        let yq = int8_jit.run(&[&xq]).expect("runs").remove(0).1;
        assert_eq!(
            yq, reference[0],
            "{what}: compiled quantized I/O vs the interpreter"
        );
        let y = qcc_ir::eval::eval_op(&Op::DequantizeLinear(api_out), &[&yq])
            .expect("dequantize")
            .remove(0);
        assert_eq!(
            y, expected,
            "{what}: dequantized u8 output vs the float-I/O build"
        );
        println!(
            "{what}: input u8 scale {in_scale} zp {in_zp}, output scale {out_scale} zp {out_zp}"
        );
    }
}
