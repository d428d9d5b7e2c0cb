use std::sync::Arc;

use qcc_ir::{Activation, BinaryOp};

use super::*;
use crate::lower::{ActivationKernel, Arg, BinaryKernel, BroadcastPlan, KernelCall, NodeLowering};
use crate::target::{Arch, Target};

fn native() -> Target {
    Target::parse("native-fp32").expect("native target")
}

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
