//! Whole models quantized dynamically (`--mode dynamic`: s8 weights at compile time, each
//! layer's input quantized at run time, float outputs) and compiled for int8 targets: the
//! compiled program must agree with the reference interpreter on the same quantized graph,
//! every convolution and matrix product but depthwise ones must run as a dynamic integer op,
//! and the output must stay close to the fp32 model's.
//!
//! The integer layers are bit-exact (the kernel tests prove it); between them the fp32
//! kernels of global average pooling and depthwise convolution carry their stated bound, and
//! one ulp on the largest value of a layer's input changes its run-time scale, moving many of
//! the next layer's quantized values by one step. So a model with one fp32 layer before its
//! classifier (ResNet-18's pooling) is compared within 1e-4 relative L2, and MobileNetV2, with
//! 17 fp32 depthwise layers between dynamic ones, within a quarter of its distance to fp32
//! (measured: 0.015 against 0.084); the printed line says which outputs were bit-identical.

mod common;

use qcc::compile::{lower_graph_quantized, JitModel};
use qcc_codegen::Target;
use qcc_ir::{Graph, Op, Tensor};
use qcc_passes::quant::{DynamicOptions, Profile, Quantization, RangeMethod};
use std::collections::HashMap;

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

fn dynamic(profile: Profile) -> Quantization {
    Quantization::Dynamic(DynamicOptions {
        profile,
        weight_method: RangeMethod::MinMax,
        exclude: Vec::new(),
    })
}

struct Checked {
    dynamic_layers: usize,
    float_layers: usize,
    vs_reference: f64,
    vs_float: f64,
    bit_exact: bool,
}

fn check(g: Graph, target: &str, profile: Profile) -> Result<Checked, String> {
    let inputs = random_inputs(&g, 5);
    let map: HashMap<String, Tensor> = inputs.iter().cloned().collect();
    let float = qcc_ir::eval::run(&g, &map).map_err(|e| e.to_string())?;
    let target = Target::parse(target).map_err(|e| e.to_string())?;
    let mut lowered = lower_graph_quantized(g, &target, "model", Some(dynamic(profile)))
        .map_err(|e| e.to_string())?;
    let ops: Vec<&Op> = lowered
        .graph
        .petgraph()
        .node_indices()
        .map(|n| &lowered.graph.node(n).op)
        .collect();
    let dynamic_layers = ops
        .iter()
        .filter(|op| {
            matches!(
                op,
                Op::DynamicQuantizedConv { .. } | Op::DynamicQuantizedMatMul { .. }
            )
        })
        .count();
    let float_layers = ops
        .iter()
        .filter(|op| {
            matches!(
                op,
                Op::Conv(_) | Op::FusedConv { .. } | Op::Gemm(_) | Op::FusedGemm { .. }
            )
        })
        .count();
    if ops
        .iter()
        .any(|op| matches!(op, Op::QuantizedConv { .. } | Op::QuantizeLinear(_)))
    {
        return Err("dynamic mode left static quantization ops".into());
    }
    let expected = qcc_ir::eval::run(&lowered.graph, &map).map_err(|e| e.to_string())?;
    let jit = JitModel::new(&mut lowered).map_err(|e| e.to_string())?;
    let tensors: Vec<&Tensor> = inputs.iter().map(|(_, t)| t).collect();
    let actual = jit.run(&tensors).map_err(|e| e.to_string())?;
    let (mut vs_reference, mut vs_float, mut bit_exact) = (0.0f64, 0.0f64, true);
    for (((_, a), e), f) in actual.iter().zip(&expected).zip(&float) {
        bit_exact &= a == e;
        vs_reference = vs_reference.max(common::relative_l2(a, e));
        vs_float = vs_float.max(common::relative_l2(a, f));
    }
    Ok(Checked {
        dynamic_layers,
        float_layers,
        vs_reference,
        vs_float,
        bit_exact,
    })
}

fn zoo(model: &str, batch: usize) -> Graph {
    qcc::zoo::build(model, &qcc::zoo::ZooOptions { seed: 3, batch })
        .unwrap_or_else(|e| panic!("{model}: {e}"))
}

#[test]
fn resnet18_mobilenetv2_and_tiny_cnn_run_dynamically_and_agree_with_the_interpreter() {
    // (model, batch, profile, target, float layers expected: depthwise convolutions)
    let cases = [
        ("resnet18", 1, Profile::X86_VNNI, "x86_64-int8", 0),
        ("resnet18", 1, Profile::TVM, "x86_64-int8-vnni", 0),
        ("mobilenetv2", 1, Profile::X86_VNNI, "x86_64-int8", 17),
        ("tiny-cnn", 3, Profile::TENSORRT, "native-int8", 1),
        // Asymmetric weights: per-channel zero points (fbgemm), u8 stored as s8 (snpe).
        ("resnet18", 1, Profile::FBGEMM, "x86_64-int8", 0),
        ("tiny-cnn", 2, Profile::SNPE, "x86_64-int8-vnni", 1),
    ];
    let mut failures = Vec::new();
    for (model, batch, profile, target, float_expected) in cases {
        let what = format!("{model} batch {batch} / {} / {target}", profile.name);
        match check(zoo(model, batch), target, profile) {
            Ok(c) => {
                println!(
                    "{what}: {} dynamic int8 layers, {} fp32, relative L2 {:.2e} to the \
                     interpreter ({}), {:.4} to fp32",
                    c.dynamic_layers,
                    c.float_layers,
                    c.vs_reference,
                    if c.bit_exact {
                        "bit-exact"
                    } else {
                        "not bit-exact"
                    },
                    c.vs_float
                );
                if c.dynamic_layers == 0 || c.float_layers != float_expected {
                    failures.push(format!(
                        "{what}: {} dynamic and {} fp32 layers (expected {float_expected} fp32)",
                        c.dynamic_layers, c.float_layers
                    ));
                }
                let bound = if float_expected > 1 {
                    c.vs_float / 4.0
                } else {
                    1e-4
                };
                if c.vs_reference.is_nan() || c.vs_reference > bound {
                    failures.push(format!(
                        "{what}: compiled is {:.2e} from the interpreter",
                        c.vs_reference
                    ));
                }
                // Random-weight networks (MobileNetV2's linear bottlenecks accumulate the
                // most: 0.084 measured); a wrong scale or a lost bias gives errors near 1.
                if c.vs_float.is_nan() || c.vs_float > 0.15 {
                    failures.push(format!("{what}: {:.4} from fp32", c.vs_float));
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
