//! Dynamic quantization through the whole back end: a graph built by hand
//! (DynamicQuantizeLinear → DynamicQuantizedConv+Relu → Flatten → DynamicQuantizeLinear →
//! DynamicQuantizedMatMul), with symmetric and with asymmetric weights, compiled by
//! `model::lower_graph`, JIT-run, equal bit for bit to `qcc_ir::eval::run`; and the speed
//! report (not a timed test).

use std::collections::HashMap;

use qcc_ir::quant::QParams;
use qcc_ir::{Activation, ConvAttrs, DType, Graph, Op, Padding, Tensor, TensorType};

use super::dynamic_tests::same_f32;
use super::tests::{no_vnni, vnni, Bytes, ConvCase};
use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::{compile_node, lower_graph, AlignedBuffer, JitProgram};
use crate::target::{IsaOptions, Target};

fn i8_constant(dims: &[usize], values: &[i8]) -> Tensor {
    let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    Tensor::from_le_bytes(&TensorType::new(DType::I8, dims.to_vec()), &bytes).expect("i8 bytes")
}

/// `x [2, 3, 6, 7]` → DQL → conv 3→5 3×3 pad 1 (+Relu, per-channel scales) → Flatten →
/// DQL → matmul `[210, 9]` (per-column scales) → `y [2, 9]`. `asymmetric`: the weights have
/// zero points, per channel (the conv, −128 and 127 included) and per column (the matmul).
fn dynamic_graph(asymmetric: bool) -> Graph {
    let mut rng = Bytes(0x5eed_1234_abcd_0001);
    let mut unit = || (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
    let mut g = Graph::new("dynamic");
    let x = g
        .add_input("x", TensorType::new(DType::F32, [2, 3, 6, 7]))
        .expect("input");
    let quantize = |g: &mut Graph, name: &str, v| {
        let node = g
            .add_node(
                name,
                Op::DynamicQuantizeLinear,
                vec![v],
                vec![
                    format!("{name}_y"),
                    format!("{name}_s"),
                    format!("{name}_z"),
                ],
            )
            .expect("DynamicQuantizeLinear");
        g.node(node).outputs.clone()
    };
    let q = quantize(&mut g, "q0", x);
    let mut weights = Bytes(77);
    let w: Vec<i8> = (0..5 * 3 * 9).map(|_| weights.i8()).collect();
    let w = g
        .add_constant("w", i8_constant(&[5, 3, 3, 3], &w))
        .expect("w");
    let bias: Vec<f32> = (0..5).map(|_| unit() - 0.5).collect();
    let bias = g
        .add_constant("b", Tensor::from_f32(&[5], bias))
        .expect("bias");
    let scales: Vec<f32> = (0..5).map(|_| 0.001 + unit() * 0.01).collect();
    let conv_zero_points = if asymmetric {
        vec![-128, 127, 3, 0, -40]
    } else {
        vec![0; 5]
    };
    let conv = Op::DynamicQuantizedConv {
        conv: ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![1, 1, 1, 1]),
            group: 1,
        },
        w: QParams::per_channel(DType::I8, 0, scales, conv_zero_points).expect("valid"),
        residual: false,
        activation: Some(Activation::Relu),
    };
    let c = g
        .add_node(
            "conv",
            conv,
            vec![q[0], q[1], q[2], w, bias],
            vec!["c".into()],
        )
        .expect("conv");
    let c = g.node(c).outputs[0];
    let f = g
        .add_node("flat", Op::Flatten { axis: 1 }, vec![c], vec!["f".into()])
        .expect("flatten");
    let f = g.node(f).outputs[0];
    let q = quantize(&mut g, "q1", f);
    let (k, n) = (5 * 6 * 7, 9);
    let b: Vec<i8> = (0..k * n).map(|_| weights.i8()).collect();
    let b = g.add_constant("B", i8_constant(&[k, n], &b)).expect("B");
    let bias: Vec<f32> = (0..n).map(|_| unit() - 0.5).collect();
    let bias = g
        .add_constant("fc_bias", Tensor::from_f32(&[n], bias))
        .expect("bias");
    let scales: Vec<f32> = (0..n).map(|_| 0.001 + unit() * 0.01).collect();
    let fc_zero_points: Vec<i32> = (0..n as i32)
        .map(|j| if asymmetric { j * 29 % 256 - 128 } else { 0 })
        .collect();
    let matmul = Op::DynamicQuantizedMatMul {
        b: QParams::per_channel(DType::I8, 1, scales, fc_zero_points).expect("valid"),
        activation: None,
    };
    let y = g
        .add_node(
            "fc",
            matmul,
            vec![q[0], q[1], q[2], b, bias],
            vec!["y".into()],
        )
        .expect("matmul");
    let y = g.node(y).outputs[0];
    g.set_outputs(vec![y]);
    g
}

#[test]
fn a_dynamic_graph_equals_the_interpreter_bit_for_bit() {
    for asymmetric in [false, true] {
        check_dynamic_graph(&dynamic_graph(asymmetric), asymmetric);
    }
}

fn check_dynamic_graph(graph: &Graph, asymmetric: bool) {
    let mut rng = Bytes(99);
    let x: Vec<f32> = (0..2 * 3 * 6 * 7)
        .map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.3) * 4.0)
        .collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::from_f32(&[2, 3, 6, 7], x.clone()))]);
    let want = qcc_ir::eval::run(graph, &inputs).expect("the interpreter runs");
    let want: Vec<f32> = want[0]
        .as_f32()
        .expect("f32 output")
        .iter()
        .copied()
        .collect();
    for name in ["native-int8", "x86_64-int8-vnni"] {
        let target = Target::parse(name).expect("target parses");
        let model = lower_graph(graph, &target, "m").expect("lowered");
        assert!(
            model.layers.iter().all(|l| l.fallback.is_none()),
            "{name}: a layer fell back"
        );
        let zw_kernels = model
            .program
            .steps
            .iter()
            .flat_map(|step| &step.calls)
            .filter(|call| call.kernel.spec().name.contains("_zw"))
            .count();
        assert_eq!(zw_kernels, if asymmetric { 2 } else { 0 }, "{name}");
        let jit =
            JitProgram::new(&target, &IsaOptions::default(), &model.program).expect("compiled");
        let mut input = AlignedBuffer::new(4 * x.len());
        input.write_f32(&x);
        let mut output = AlignedBuffer::new(4 * want.len());
        output.write_f32(&vec![f32::NAN; want.len()]);
        let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
        jit.run(&[&input], &mut [&mut output], &mut workspace)
            .expect("ran");
        let what = format!("{name}, asymmetric {asymmetric}");
        same_f32(&output.read_f32(), &want, &what).expect("compiled equals interpreted");
    }
}

/// An input of a timed node: bytes, or f32 values (never subnormal: those are slow).
#[derive(Clone, Copy)]
enum Fill {
    Bytes(usize),
    Floats(usize),
}

/// Best-of-20 seconds of `lowering` with `inputs` filled with a fixed pattern.
fn time_node(
    target: &Target,
    lowering: &crate::lower::NodeLowering,
    inputs: &[Fill],
    output_bytes: usize,
) -> f64 {
    let jit = compile_node(target, lowering, inputs.len(), 1).expect("compiles");
    let inputs: Vec<AlignedBuffer> = inputs
        .iter()
        .map(|&fill| match fill {
            Fill::Bytes(n) => {
                let mut buffer = AlignedBuffer::new(n);
                buffer
                    .as_bytes_mut()
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i * 37 % 251) as u8);
                buffer
            }
            Fill::Floats(n) => {
                let mut buffer = AlignedBuffer::new(4 * n);
                let values: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.01 - 0.05).collect();
                buffer.write_f32(&values);
                buffer
            }
        })
        .collect();
    let input_refs: Vec<&AlignedBuffer> = inputs.iter().collect();
    let mut y = AlignedBuffer::new(output_bytes);
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = std::time::Instant::now();
        jit.run(&input_refs, &mut [&mut y], &mut workspace)
            .expect("runs");
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

/// Not a timed assertion: a resnet-like 3×3 64→64 56×56 conv (+Relu) as static int8,
/// dynamic int8 (float epilogue, with and without a residual, with a weight zero point), and
/// fp32; and the
/// DynamicQuantizeLinear of its input. Run with
/// `cargo test --release -p qcc-codegen dynamic_speed_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn dynamic_speed_report() {
    let case = ConvCase {
        batch: 1,
        group: 1,
        cin_g: 64,
        cout_g: 64,
        in_hw: [56, 56],
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        seed: 7,
    };
    let g: ConvGeometry = case.geometry().expect("valid geometry");
    let mut rng = Bytes(7);
    let w: Vec<i8> = (0..64 * g.reduction()).map(|_| rng.i8()).collect();
    let (input, output) = (64 * 56 * 56, 64 * 56 * 56);
    let gops = |seconds: f64| 2.0 * g.macs() as f64 / seconds / 1e9;
    for target in [vnni(), no_vnni()] {
        let requant = [qcc_ir::requant::FixedPoint::from_real(1.0 / 4096.0).expect("in range")];
        let bias = vec![0i32; 64];
        let static_params = QConvParams {
            geometry: g,
            weight: &w,
            bias: Some(&bias),
            requant: &requant,
            input_zero_point: 128,
            weight_zero_points: None,
            residual: None,
            output: OutputQuant {
                dtype: DType::U8,
                zero_point: 0,
                clamp: Some((0, 255)),
            },
        };
        let lowering = lower_qconv(&target, &static_params).expect("lowers");
        let seconds = time_node(&target, &lowering, &[Fill::Bytes(input)], output);
        println!(
            "{} static int8 conv: {:.3} ms, {:.1} GOP/s",
            target.name(),
            seconds * 1e3,
            gops(seconds)
        );
        for (residual, zero_point) in [(false, 0), (true, 0), (false, 3)] {
            let params = DynamicConvParams {
                geometry: g,
                weight: &w,
                weight_scales: &[0.01],
                weight_zero_points: &[zero_point],
                bias: &[0.5; 64],
                residual,
                activation: Some(Activation::Relu),
            };
            let lowering = lower_dynamic_qconv(&target, &params).expect("lowers");
            let mut inputs = vec![
                Fill::Bytes(input),
                Fill::Floats(1),
                Fill::Bytes(1),
                Fill::Bytes(0),
                Fill::Bytes(0),
            ];
            if residual {
                inputs.push(Fill::Floats(output));
            }
            let seconds = time_node(&target, &lowering, &inputs, 4 * output);
            println!(
                "{} dynamic int8 conv (residual {residual}, weight zero point {zero_point}): \
                 {:.3} ms, {:.1} GOP/s",
                target.name(),
                seconds * 1e3,
                gops(seconds)
            );
        }
        let lowering = lower_dynamic_quantize(target.arch(), input).expect("lowers");
        let jit = compile_node(&target, &lowering, 1, 3).expect("compiles");
        let mut x = AlignedBuffer::new(4 * input);
        let values: Vec<f32> = (0..input).map(|i| (i % 101) as f32 * 0.1 - 3.0).collect();
        x.write_f32(&values);
        let (mut y, mut s, mut z) = (
            AlignedBuffer::new(input),
            AlignedBuffer::new(4),
            AlignedBuffer::new(1),
        );
        let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let start = std::time::Instant::now();
            jit.run(&[&x], &mut [&mut y, &mut s, &mut z], &mut workspace)
                .expect("runs");
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{} DynamicQuantizeLinear of 64x56x56: {:.3} ms",
            target.name(),
            best * 1e3
        );
    }
    let fp32 = Target::parse("native-fp32").expect("target parses");
    let weight: Vec<f32> = w.iter().map(|&v| f32::from(v) * 0.01).collect();
    let epilogue = crate::lower::Epilogue {
        residual_input: None,
        activation: Some(Activation::Relu),
    };
    let lowering =
        crate::lower::conv::lower_conv(fp32.arch(), &g, &weight, Some(&[0.5; 64]), epilogue)
            .expect("lowers");
    let seconds = time_node(&fp32, &lowering, &[Fill::Floats(input)], 4 * output);
    println!(
        "native-fp32 conv: {:.3} ms, {:.1} GFLOP/s",
        seconds * 1e3,
        gops(seconds)
    );
}

/// The dynamic ops, with weight zero points, lower on every int8 target and compile to
/// objects, aarch64 included (run only where the machine can: the JIT test above and
/// `compiler/tests/aarch64_qemu.rs`).
#[test]
fn the_dynamic_graph_compiles_to_objects_for_every_int8_target() {
    let graph = dynamic_graph(true);
    for name in ["x86_64-int8", "x86_64-int8-vnni", "aarch64-int8"] {
        let target = Target::parse(name).expect("target parses");
        let model = lower_graph(&graph, &target, "m").expect("lowered");
        let object = crate::model::object_program(&target, &IsaOptions::default(), &model.program)
            .expect("object emitted");
        assert!(!object.is_empty(), "{name}: empty object");
    }
}
