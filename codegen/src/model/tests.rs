use std::sync::Arc;

use qcc_ir::{Activation, BinaryOp};

use super::*;
use crate::lower::test_support::native;
use crate::lower::{ActivationKernel, Arg, BinaryKernel, BroadcastPlan, KernelCall, NodeLowering};
use crate::target::Arch;

#[test]
fn run_node_calls_kernels_in_order_with_resolved_arguments() {
    let arch = native().arch();
    let plan = BroadcastPlan::new(&[2, 3], &[3]).expect("plan");
    let add = BinaryKernel::new(arch, BinaryOp::Add, plan.kind, None);
    let mut args = vec![Arg::input(0), Arg::input(1), Arg::output(0)];
    args.extend(plan.sizes.iter().map(|&n| Arg::Size(n)));
    let relu = ActivationKernel::new(arch, Activation::Relu);
    // The second call reads the first call's output in place, through the output's place.
    let lowering = NodeLowering {
        calls: vec![
            KernelCall::new(Arc::new(add), args).expect("add call"),
            KernelCall::new(
                Arc::new(relu),
                vec![
                    Arg::Output {
                        index: 0,
                        offset: 4,
                    },
                    Arg::Output {
                        index: 0,
                        offset: 4,
                    },
                    Arg::Size(4),
                ],
            )
            .expect("relu call"),
        ],
        ..NodeLowering::default()
    };
    let a = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0];
    let b = [-1.5, 0.5, -10.0];
    let out = run_node(&native(), &lowering, &[&a, &b], &[6]).expect("run");
    // add: [-0.5, -1.5, -7, -5.5, 5.5, -16]; relu on elements 1..5 only.
    assert_eq!(out[0], vec![-0.5, 0.0, 0.0, 0.0, 5.5, -16.0]);
}

#[test]
fn run_node_reads_packed_constants_and_leaves_unwritten_outputs_nan() {
    let arch = native().arch();
    let relu = ActivationKernel::new(arch, Activation::Relu);
    let lowering = NodeLowering {
        calls: vec![KernelCall::new(
            Arc::new(relu),
            vec![Arg::packed(0), Arg::output(0), Arg::Size(3)],
        )
        .expect("call")],
        packed: vec![vec![-1.0, 2.0, -3.0]],
        ..NodeLowering::default()
    };
    let out = run_node(&native(), &lowering, &[], &[4]).expect("run");
    assert_eq!(&out[0][..3], &[0.0, 2.0, 0.0]);
    assert!(out[0][3].is_nan());
}

#[test]
fn a_call_whose_arguments_do_not_fit_the_signature_is_refused() {
    let relu = ActivationKernel::new(Arch::X86_64, Activation::Relu);
    let wrong = KernelCall::new(Arc::new(relu), vec![Arg::output(0), Arg::input(0)]);
    assert!(wrong.is_err());
    let relu = ActivationKernel::new(Arch::X86_64, Activation::Relu);
    let size_for_pointer = KernelCall::new(
        Arc::new(relu),
        vec![Arg::Size(1), Arg::output(0), Arg::Size(3)],
    );
    assert!(size_for_pointer.is_err());
}

fn conv_attrs() -> qcc_ir::ConvAttrs {
    qcc_ir::ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: qcc_ir::Padding::Explicit(vec![1, 1, 1, 1]),
        group: 1,
    }
}

#[test]
fn a_weight_computed_at_run_time_is_an_error_naming_the_node() {
    use qcc_ir::{DType, Graph, Op, TensorType};
    let mut g = Graph::new("runtime_weight");
    let x = g
        .add_input("x", TensorType::new(DType::F32, [1, 2, 5, 5]))
        .unwrap();
    let w = g
        .add_input("w", TensorType::new(DType::F32, [4, 2, 3, 3]))
        .unwrap();
    let n = g
        .add_node(
            "the_conv",
            Op::Conv(conv_attrs()),
            vec![x, w],
            vec!["y".into()],
        )
        .unwrap();
    let y = g.node(n).outputs[0];
    g.set_outputs(vec![y]);
    let error = lower_graph(&g, &native(), "m")
        .err()
        .expect("an error")
        .to_string();
    assert!(error.contains("the_conv"), "{error}");
    assert!(
        error.contains("weight W") && error.contains("must be a constant"),
        "{error}"
    );
}

#[test]
fn an_op_without_a_kernel_is_an_error_naming_node_and_op() {
    use qcc_ir::{DType, Graph, Op, TensorType};
    let mut g = Graph::new("pad");
    let x = g
        .add_input("x", TensorType::new(DType::F32, [1, 2, 5, 5]))
        .unwrap();
    let pad = Op::Pad {
        pads: vec![0, 0, 1, 1, 0, 0, 1, 1],
        value: 0.0,
    };
    let n = g
        .add_node("the_pad", pad, vec![x], vec!["y".into()])
        .unwrap();
    let y = g.node(n).outputs[0];
    g.set_outputs(vec![y]);
    let error = lower_graph(&g, &native(), "m")
        .err()
        .expect("an error")
        .to_string();
    assert!(
        error.contains("the_pad") && error.contains("Pad"),
        "{error}"
    );
    assert!(error.contains("not compiled"), "{error}");
}

#[test]
fn a_graph_output_that_is_an_input_is_copied_and_views_cost_nothing() {
    use qcc_ir::{DType, Graph, Op, TensorType};
    let mut g = Graph::new("copies");
    let x = g
        .add_input("x", TensorType::new(DType::F32, [2, 3, 4]))
        .unwrap();
    let n = g
        .add_node("flat", Op::Flatten { axis: 1 }, vec![x], vec!["f".into()])
        .unwrap();
    let f = g.node(n).outputs[0];
    let r = g
        .add_node(
            "relu",
            Op::Activation(Activation::Relu),
            vec![f],
            vec!["r".into()],
        )
        .unwrap();
    let r = g.node(r).outputs[0];
    g.set_outputs(vec![r, x]);
    let model = lower_graph(&g, &native(), "m").expect("lowered");
    assert_eq!(model.layers[0].kernel, "view (no code)");
    let jit = JitProgram::new(&native(), &crate::IsaOptions::default(), &model.program)
        .expect("compiled");
    let data: Vec<f32> = (0..24).map(|i| i as f32 - 12.0).collect();
    let mut input = AlignedBuffer::new(96);
    input.write_f32(&data);
    let mut out0 = AlignedBuffer::new(96);
    let mut out1 = AlignedBuffer::new(96);
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    jit.run(&[&input], &mut [&mut out0, &mut out1], &mut workspace)
        .expect("ran");
    let relu: Vec<f32> = data.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(out0.read_f32(), relu);
    assert_eq!(out1.read_f32(), data);
}
