//! Element-wise kernels, JIT-compiled for the host, against the reference interpreter.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Activation, BinaryOp, Op, Tensor};

use super::elementwise::{ActivationKernel, BinaryKernel, BroadcastKind, BroadcastPlan, Side};
use super::kernel::Kernel;
use super::vmath::{SIGMOID_MAX_REL_ERROR, TANH_MAX_REL_ERROR};
use crate::emit::{object_kernels, FinalizedKernels, JitKernels};
use crate::lower::test_support::{assert_identical, native, values};
use crate::target::Target;

type UnaryFn = unsafe extern "C" fn(*const f32, *mut f32, usize);
type BinaryN = unsafe extern "C" fn(*const f32, *const f32, *mut f32, usize);
type BinaryRow = unsafe extern "C" fn(*const f32, *const f32, *mut f32, usize, usize);
type BinaryChannel = unsafe extern "C" fn(*const f32, *const f32, *mut f32, usize, usize, usize);
type BinaryStrided = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const usize);

fn jit(kernels: &[&dyn Kernel]) -> FinalizedKernels {
    let mut jit = JitKernels::new(&native()).expect("JIT module");
    for kernel in kernels {
        jit.define(*kernel).expect("kernel compiles");
    }
    jit.finalize().expect("JIT finalizes")
}

fn reference(op: &Op, inputs: &[&Tensor]) -> Tensor {
    let mut outputs = eval_op(op, inputs).expect("interpreter evaluates");
    outputs.remove(0)
}

/// Runs `epilogue(a op b)` through the planned kernel.
fn run_binary(
    op: BinaryOp,
    epilogue: Option<Activation>,
    a: &Tensor,
    b: &Tensor,
) -> (BroadcastKind, Vec<f32>) {
    let plan = BroadcastPlan::new(a.dims(), b.dims()).expect("shapes broadcast");
    let arch = native().arch();
    let kernel = BinaryKernel::new(arch, op, plan.kind, epilogue);
    let kernels = jit(&[&kernel]);
    let name = &kernel.spec().name;
    let (a, b) = (values(a), values(b));
    let mut out = vec![f32::NAN; plan.out_dims.iter().product()];
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let s = &plan.sizes;
    // SAFETY: the plan's sizes describe exactly these buffers, and `kernels` is alive.
    unsafe {
        match plan.kind {
            BroadcastKind::Same | BroadcastKind::Scalar(_) => {
                kernels.get::<BinaryN>(name).expect("signature")(pa, pb, po, s[0])
            }
            BroadcastKind::Row(_) => {
                kernels.get::<BinaryRow>(name).expect("signature")(pa, pb, po, s[0], s[1])
            }
            BroadcastKind::Channel(_) => {
                kernels.get::<BinaryChannel>(name).expect("signature")(pa, pb, po, s[0], s[1], s[2])
            }
            BroadcastKind::Strided { .. } => {
                kernels.get::<BinaryStrided>(name).expect("signature")(
                    pa,
                    pb,
                    po,
                    plan.descriptor.as_ptr(),
                )
            }
        }
    }
    (plan.kind, out)
}

fn run_activation(activation: Activation, x: &[f32]) -> Vec<f32> {
    run_activation_on(&native(), activation, x)
}

/// Runs an activation kernel compiled for `target`, which must run on this host.
fn run_activation_on(target: &Target, activation: Activation, x: &[f32]) -> Vec<f32> {
    let kernel = ActivationKernel::new(target.arch(), activation);
    let mut jit = JitKernels::new(target).expect("JIT module");
    jit.define(&kernel).expect("kernel compiles");
    let kernels = jit.finalize().expect("JIT finalizes");
    let f = kernels
        .get::<UnaryFn>(&kernel.spec().name)
        .expect("signature");
    let mut y = vec![f32::NAN; x.len()];
    // SAFETY: both buffers hold x.len() elements; `kernels` is alive.
    unsafe { f(x.as_ptr(), y.as_mut_ptr(), x.len()) };
    y
}

fn check_binary(
    op: BinaryOp,
    epilogue: Option<Activation>,
    a: &Tensor,
    b: &Tensor,
) -> BroadcastKind {
    let (kind, got) = run_binary(op, epilogue, a, b);
    let mut want = reference(&Op::Binary(op), &[a, b]);
    if let Some(activation) = epilogue {
        want = reference(&Op::Activation(activation), &[&want]);
    }
    let what = format!(
        "{op:?} {:?} {:?} ({kind:?}, {epilogue:?})",
        a.dims(),
        b.dims()
    );
    assert_identical(&got, &values(&want), &what);
    kind
}

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    // A small LCG: deterministic values in [-8, 8) with a few exact zeros.
    let n: usize = dims.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((state >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0;
            if (state >> 20).is_multiple_of(17) {
                0.0
            } else {
                v
            }
        })
        .collect();
    Tensor::from_f32(dims, data)
}

#[test]
fn plans_classify_cnn_broadcasts() {
    let kind = |a: &[usize], b: &[usize]| BroadcastPlan::new(a, b).map(|p| p.kind);
    assert_eq!(kind(&[2, 3, 5, 5], &[2, 3, 5, 5]), Ok(BroadcastKind::Same));
    assert_eq!(
        kind(&[2, 3, 5, 5], &[]),
        Ok(BroadcastKind::Scalar(Side::Rhs))
    );
    assert_eq!(kind(&[1], &[2, 3, 5]), Ok(BroadcastKind::Scalar(Side::Lhs)));
    assert_eq!(
        kind(&[2, 3, 5, 5], &[3, 1, 1]),
        Ok(BroadcastKind::Channel(Side::Rhs))
    );
    assert_eq!(
        kind(&[1, 3, 1, 1], &[2, 3, 5, 5]),
        Ok(BroadcastKind::Channel(Side::Lhs))
    );
    assert_eq!(
        kind(&[1, 3, 5, 5], &[1, 3, 1, 1]),
        Ok(BroadcastKind::Channel(Side::Rhs))
    );
    assert_eq!(kind(&[4, 7], &[7]), Ok(BroadcastKind::Row(Side::Rhs)));
    assert_eq!(
        kind(&[3, 1], &[1, 4]),
        Ok(BroadcastKind::Strided { rank: 2 })
    );
    let plan = BroadcastPlan::new(&[2, 3, 5, 5], &[3, 1, 1]).expect("broadcasts");
    assert_eq!(plan.sizes, vec![2, 3, 25]);
    assert!(BroadcastPlan::new(&[2, 3], &[4]).is_err());
}

#[test]
fn binary_cnn_patterns_match_interpreter() {
    let cases: [(&[usize], &[usize]); 9] = [
        (&[1, 7, 5, 3], &[1, 7, 5, 3]),
        (&[2, 5, 3, 3], &[]),
        (&[1], &[3, 5, 7]),
        (&[2, 5, 3, 3], &[5, 1, 1]),
        (&[1, 5, 1, 1], &[2, 5, 6, 6]),
        (&[3, 9], &[9]),
        (&[3, 1, 5], &[1, 4, 1]),
        (&[2, 1, 3, 1], &[2, 4, 1, 5]),
        (&[0, 3], &[3]),
    ];
    for (i, (a, b)) in cases.iter().enumerate() {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            check_binary(op, None, &tensor(a, i as u64), &tensor(b, 100 + i as u64));
        }
    }
    let relu = Some(Activation::Relu);
    check_binary(
        BinaryOp::Add,
        relu,
        &tensor(&[1, 6, 7, 7], 1),
        &tensor(&[1, 6, 7, 7], 2),
    );
}

fn activations() -> Vec<Activation> {
    vec![
        Activation::Relu,
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::Clip {
            min: -1.5,
            max: f32::INFINITY,
        },
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::HardSwish,
    ]
}

#[test]
fn exact_activations_match_interpreter_with_specials() {
    let mut x = values(&tensor(&[67], 7));
    x.extend([
        f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0,
        -3.0,
        6.0,
    ]);
    for activation in activations() {
        let got = run_activation(activation, &x);
        let want = reference(
            &Op::Activation(activation),
            &[&Tensor::from_f32(&[x.len()], x.clone())],
        );
        assert_identical(&got, &values(&want), &format!("{activation:?}"));
    }
}

/// Max relative error of `got` against `exact` over results that are normal f32 numbers
/// (subnormal results are only required to be within one smallest-normal of zero).
fn max_relative_error(x: &[f32], got: &[f32], exact: impl Fn(f64) -> f64) -> f64 {
    let mut worst = 0.0f64;
    for (&xi, &g) in x.iter().zip(got) {
        let e = exact(f64::from(xi));
        if e.abs() < f64::from(f32::MIN_POSITIVE) {
            assert!(
                f64::from(g).abs() <= f64::from(f32::MIN_POSITIVE),
                "x={xi}: {g} vs {e}"
            );
            continue;
        }
        worst = worst.max(((f64::from(g) - e) / e).abs());
    }
    worst
}

fn dense_range() -> Vec<f32> {
    // Every 61st f32 bit pattern in [-100, 100] would be too many; a dense uniform grid plus
    // the small-magnitude region (where tanh switches formulas) in fine steps.
    let mut x: Vec<f32> = (0..=2_000_000).map(|i| -100.0 + i as f32 * 1e-4).collect();
    x.extend((0..=200_000).map(|i| -1.0 + i as f32 * 1e-5));
    x.extend((-40..=0).map(|e| 2f32.powi(e)));
    x.extend((-40..=0).map(|e| -(2f32.powi(e))));
    x
}

fn check_error_bounds(target: &Target) {
    let x = dense_range();
    let sigmoid = run_activation_on(target, Activation::Sigmoid, &x);
    let worst = max_relative_error(&x, &sigmoid, |v| 1.0 / (1.0 + (-v).exp()));
    println!("{target}: sigmoid max relative error {worst:e}");
    assert!(
        worst <= SIGMOID_MAX_REL_ERROR,
        "{target}: sigmoid {worst:e}"
    );
    let tanh = run_activation_on(target, Activation::Tanh, &x);
    let worst = max_relative_error(&x, &tanh, f64::tanh);
    println!("{target}: tanh max relative error {worst:e}");
    assert!(worst <= TANH_MAX_REL_ERROR, "{target}: tanh {worst:e}");
}

/// Without FMA the polynomials round after every multiply: the bounds must still hold.
#[test]
fn error_bounds_hold_without_fma() {
    if native().arch() == crate::target::Arch::X86_64 {
        check_error_bounds(&Target::parse("x86_64-fp32-fma").expect("target"));
    }
}

#[test]
fn sigmoid_and_tanh_error_bounds_over_dense_range() {
    check_error_bounds(&native());
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
    let s = run_activation(Activation::Sigmoid, &specials);
    assert!(s[0].is_nan() && s[1] == 1.0 && s[2] == 0.0 && s[3] == 0.5 && s[4] == 0.5);
    let t = run_activation(Activation::Tanh, &specials);
    assert!(t[0].is_nan() && t[1] == 1.0 && t[2] == -1.0);
    assert!(t[3].to_bits() == 0.0f32.to_bits() && t[4].to_bits() == (-0.0f32).to_bits());
}

#[test]
fn kernels_build_into_an_aarch64_object() {
    let target = Target::parse("aarch64-fp32").expect("target");
    let arch = target.arch();
    let mut kernels: Vec<Box<dyn Kernel>> = Vec::new();
    for activation in activations()
        .into_iter()
        .chain([Activation::Sigmoid, Activation::Tanh])
    {
        kernels.push(Box::new(ActivationKernel::new(arch, activation)));
    }
    let kinds = [
        BroadcastKind::Same,
        BroadcastKind::Scalar(Side::Lhs),
        BroadcastKind::Channel(Side::Rhs),
        BroadcastKind::Row(Side::Lhs),
        BroadcastKind::Strided { rank: 3 },
    ];
    for kind in kinds {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            kernels.push(Box::new(BinaryKernel::new(arch, op, kind, None)));
        }
    }
    kernels.push(Box::new(BinaryKernel::new(
        arch,
        BinaryOp::Add,
        BroadcastKind::Same,
        Some(Activation::Tanh),
    )));
    let refs: Vec<&dyn Kernel> = kernels.iter().map(|k| k.as_ref()).collect();
    let bytes = object_kernels(&target, "elementwise", &refs).expect("object builds");
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[18], 183, "e_machine is EM_AARCH64");
    let text = String::from_utf8_lossy(&bytes);
    for kernel in &refs {
        assert!(
            text.contains(&kernel.spec().name),
            "symbol {}",
            kernel.spec().name
        );
    }
}

#[test]
fn jit_rejects_a_mismatched_signature() {
    let kernel = ActivationKernel::new(native().arch(), Activation::Relu);
    let kernels = jit(&[&kernel]);
    assert!(kernels.get::<BinaryN>(&kernel.spec().name).is_err());
    assert!(kernels.get::<UnaryFn>("no_such_kernel").is_err());
}

/// Output dims (rank 0..4, extents 0..9 with odd sizes likely) and a broadcast-compatible
/// partner: each dim kept or set to 1, leading dims possibly dropped.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    (
        prop::collection::vec(prop_oneof![Just(1usize), 0usize..10, 1usize..20], 0..=4),
        prop::collection::vec(any::<bool>(), 4),
        0usize..=4,
        any::<bool>(),
    )
        .prop_map(|(full, keep, drop, swap)| {
            let small: Vec<usize> = full
                .iter()
                .zip(&keep)
                .map(|(&d, &k)| if k { d } else { 1 })
                .skip(drop.min(full.len()))
                .collect();
            (full, small, swap)
        })
}

fn binary_op() -> impl Strategy<Value = BinaryOp> {
    prop_oneof![
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul),
        Just(BinaryOp::Div)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn binary_matches_interpreter(
        (full, small, swap) in broadcast_pair(),
        op in binary_op(),
        relu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (a, b) = (tensor(&full, seed), tensor(&small, seed ^ 0x5555));
        let (a, b) = if swap { (b, a) } else { (a, b) };
        check_binary(op, relu.then_some(Activation::Relu), &a, &b);
    }

    #[test]
    fn activations_match_interpreter(
        x in prop::collection::vec(-12.0f32..12.0, 0..70),
        which in 0usize..6,
        alpha in -2.0f32..2.0,
    ) {
        let activation = match activations()[which] {
            Activation::LeakyRelu { .. } => Activation::LeakyRelu { alpha },
            other => other,
        };
        let got = run_activation(activation, &x);
        let want = reference(&Op::Activation(activation), &[&Tensor::from_f32(&[x.len()], x.clone())]);
        assert_identical(&got, &values(&want), &format!("{activation:?}"));
    }

    #[test]
    fn transcendentals_within_bound_of_interpreter(
        x in prop::collection::vec(-30.0f32..30.0, 0..40),
        tanh in any::<bool>(),
    ) {
        let (activation, bound) = if tanh {
            (Activation::Tanh, TANH_MAX_REL_ERROR)
        } else {
            (Activation::Sigmoid, SIGMOID_MAX_REL_ERROR)
        };
        let got = run_activation(activation, &x);
        let want = values(&reference(&Op::Activation(activation), &[&Tensor::from_f32(&[x.len()], x.clone())]));
        for (g, w) in got.iter().zip(&want) {
            // The interpreter itself is within an ulp of exact: allow one more ulp.
            let tolerance = (bound + 1.2e-7) * f64::from(w.abs()) + f64::from(f32::MIN_POSITIVE);
            prop_assert!((f64::from(*g) - f64::from(*w)).abs() <= tolerance, "{activation:?}: {g} vs {w}");
        }
    }
}

/// The main loops really are f32x4: packed adds on x86-64 (VEX, AVX is in x86_64-fp32) and
/// NEON `.4s` adds on aarch64.
#[test]
fn main_loop_uses_f32x4_instructions() {
    for (name, packed_add) in [("x86_64-fp32", "vaddps"), ("aarch64-fp32", "fadd v")] {
        let target = Target::parse(name).expect("target");
        let isa = target.isa().expect("isa");
        let context = crate::lower::KernelContext {
            pointer: isa.pointer_type(),
            fma: target.fma(),
        };
        let kernel = BinaryKernel::new(target.arch(), BinaryOp::Add, BroadcastKind::Same, None);
        let code = crate::emit::disassemble_kernel(isa.as_ref(), &context, &kernel)
            .expect("kernel compiles");
        assert!(
            code.contains(packed_add),
            "{name}: no `{packed_add}` in\n{code}"
        );
    }
}
