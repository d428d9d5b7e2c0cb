//! Pooling kernels, JIT-compiled for the host, against the reference interpreter.

use qcc_ir::eval::eval_op;
use qcc_ir::{Op, Padding, PoolAttrs, Tensor};

use super::{lower_pool, GlobalPoolKernel, PoolKind, PoolLowering, WindowPoolKernel};
use crate::emit::{object_kernels, FinalizedKernels, JitKernels};
use crate::lower::test_support::{assert_identical, native, values};
use crate::lower::Kernel;
use crate::target::Target;

type WindowFn = unsafe extern "C" fn(*const f32, *mut f32, usize);
type GlobalFn = unsafe extern "C" fn(*const f32, *mut f32, usize, usize);

/// A deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Mostly small multiples of 1/4 (ties, exact sums), some arbitrary fractions, and
    /// the special values whose handling must match: NaN, ±0, ±inf.
    fn value(&mut self) -> f32 {
        match self.below(40) {
            0 => f32::NAN,
            1 | 2 => -0.0,
            3 | 4 => 0.0,
            5 => f32::NEG_INFINITY,
            6 => f32::INFINITY,
            7..=20 => (self.below(33) as f32 - 16.0) * 0.25,
            _ => (self.next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0,
        }
    }
    fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_f32(dims, (0..n).map(|_| self.value()).collect())
    }
}

fn reference(op: &Op, x: &Tensor) -> Tensor {
    eval_op(op, &[x]).expect("interpreter evaluates").remove(0)
}

fn jit(kernels: &[&dyn Kernel]) -> FinalizedKernels {
    let mut jit = JitKernels::new(&native()).expect("JIT module");
    for kernel in kernels {
        jit.define(*kernel).expect("kernel compiles");
    }
    jit.finalize().expect("JIT finalizes")
}

/// Calls a lowered pooling kernel on `x`.
fn run(kernels: &FinalizedKernels, lowering: &PoolLowering, x: &Tensor) -> Vec<f32> {
    let name = &lowering.kernel.spec().name;
    let input = values(x);
    let mut out = vec![f32::from_bits(0x7fc0_dead); lowering.output_dims.iter().product()];
    let (px, py) = (input.as_ptr(), out.as_mut_ptr());
    let s = &lowering.sizes;
    // SAFETY: the sizes describe exactly these buffers, and `kernels` is alive.
    unsafe {
        match s.len() {
            1 => kernels.get::<WindowFn>(name).expect("signature")(px, py, s[0]),
            _ => kernels.get::<GlobalFn>(name).expect("signature")(px, py, s[0], s[1]),
        }
    }
    out
}

fn attrs(axes: [(usize, usize, usize, usize, usize); 2], ceil_mode: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: axes.iter().map(|a| a.0).collect(),
        strides: axes.iter().map(|a| a.1).collect(),
        dilations: axes.iter().map(|a| a.2).collect(),
        padding: Padding::Explicit(vec![axes[0].3, axes[1].3, axes[0].4, axes[1].4]),
        ceil_mode,
    }
}

fn window_ops(pool: &PoolAttrs) -> [Op; 3] {
    [
        Op::MaxPool(pool.clone()),
        Op::AveragePool {
            pool: pool.clone(),
            count_include_pad: true,
        },
        Op::AveragePool {
            pool: pool.clone(),
            count_include_pad: false,
        },
    ]
}

/// Every kernel/stride/dilation in 1..=3 on one axis (the other axis random), both
/// axes in turn, ceil_mode both ways, pads 0..=2, odd sizes, batch and channels > 1:
/// MaxPool and AveragePool (both divisor rules) bit for bit.
#[test]
fn window_pools_match_the_interpreter_bit_for_bit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let arch = native().arch();
    let mut cases = Vec::new();
    for swept in 0..2 {
        for kernel in 1..=3 {
            for stride in 1..=3 {
                for dilation in 1..=3 {
                    for ceil_mode in [false, true] {
                        let random_axis = (
                            1 + rng.below(3),
                            1 + rng.below(3),
                            1 + rng.below(3),
                            rng.below(3),
                            rng.below(3),
                        );
                        let chosen = (kernel, stride, dilation, rng.below(3), rng.below(3));
                        let mut axes = [random_axis, chosen];
                        if swept == 1 {
                            axes.swap(0, 1);
                        }
                        // Inputs at least as large as the window span minus the pads,
                        // up to 9 more.
                        let size = |a: (usize, usize, usize, usize, usize), r: &mut Rng| {
                            let span = (a.0 - 1) * a.2 + 1;
                            span.saturating_sub(a.3 + a.4).max(1) + r.below(10)
                        };
                        let dims = [
                            1 + rng.below(2),
                            1 + 2 * rng.below(2),
                            size(axes[0], &mut rng),
                            size(axes[1], &mut rng),
                        ];
                        let pool = attrs(axes, ceil_mode);
                        for op in window_ops(&pool) {
                            let x = rng.tensor(&dims);
                            cases.push((op, x));
                        }
                    }
                }
            }
        }
    }
    let lowerings: Vec<PoolLowering> = cases
        .iter()
        .map(|(op, x)| lower_pool(arch, op, x.dims()).expect("pool lowers"))
        .collect();
    let kernels: Vec<&dyn Kernel> = lowerings
        .iter()
        .map(|l| l.kernel.as_ref() as &dyn Kernel)
        .collect();
    let compiled = jit(&kernels);
    for ((op, x), lowering) in cases.iter().zip(&lowerings) {
        let want = reference(op, x);
        assert_eq!(
            lowering.output_dims,
            want.dims(),
            "{op:?} on {:?}",
            x.dims()
        );
        let got = run(&compiled, lowering, x);
        let what = format!("{op:?} on {:?}", x.dims());
        assert_identical(&got, &values(&want), &what);
    }
}

/// Padding wider than the window and SAME padding: windows entirely in the padding give
/// -inf (max) and NaN (0 / 0, average excluding padding), as in the interpreter.
#[test]
fn window_pools_with_same_padding_and_all_padding_windows() {
    let mut rng = Rng(7);
    let arch = native().arch();
    let mut cases = Vec::new();
    for padding in [
        Padding::SameUpper,
        Padding::SameLower,
        Padding::Explicit(vec![3, 0, 0, 4]),
    ] {
        for ceil_mode in [false, true] {
            let pool = PoolAttrs {
                kernel: vec![2, 3],
                strides: vec![2, 1],
                dilations: vec![1, 2],
                padding: padding.clone(),
                ceil_mode,
            };
            for op in window_ops(&pool) {
                cases.push((op, rng.tensor(&[2, 3, 5, 7])));
            }
        }
    }
    let lowerings: Vec<PoolLowering> = cases
        .iter()
        .map(|(op, x)| lower_pool(arch, op, x.dims()).expect("pool lowers"))
        .collect();
    let kernels: Vec<&dyn Kernel> = lowerings
        .iter()
        .map(|l| l.kernel.as_ref() as &dyn Kernel)
        .collect();
    let compiled = jit(&kernels);
    for ((op, x), lowering) in cases.iter().zip(&lowerings) {
        let got = run(&compiled, lowering, x);
        assert_identical(&got, &values(&reference(op, x)), &format!("{op:?}"));
    }
}

/// GlobalMaxPool bit for bit; GlobalAveragePool (f32x4 partial sums, so another
/// summation order) within `2·n·ε·mean|x|` of the interpreter's sequential sum, the
/// worst-case bound for either order.
#[test]
fn global_pools_match_the_interpreter() {
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let arch = native().arch();
    let shapes: Vec<Vec<usize>> = (0..40)
        .map(|i| match i % 3 {
            0 => vec![1 + rng.below(3), 1 + rng.below(5), 1 + rng.below(41)],
            1 => vec![
                1 + rng.below(2),
                1 + rng.below(5),
                1 + rng.below(7),
                1 + rng.below(7),
            ],
            _ => vec![2, 3, 1 + rng.below(3), 1 + rng.below(4), 1 + rng.below(5)],
        })
        .collect();
    let max = lower_pool(arch, &Op::GlobalMaxPool, &shapes[0]).expect("lowers");
    let avg = lower_pool(arch, &Op::GlobalAveragePool, &shapes[0]).expect("lowers");
    let compiled = jit(&[
        max.kernel.as_ref() as &dyn Kernel,
        avg.kernel.as_ref() as &dyn Kernel,
    ]);
    for dims in &shapes {
        let x = rng.tensor(dims);
        let max = lower_pool(arch, &Op::GlobalMaxPool, dims).expect("lowers");
        let want = reference(&Op::GlobalMaxPool, &x);
        assert_eq!(max.output_dims, want.dims());
        assert_identical(&run(&compiled, &max, &x), &values(&want), "GlobalMaxPool");

        // Finite inputs only: with infinities the bound is meaningless.
        let finite: Vec<f32> = values(&x)
            .into_iter()
            .map(|v| if v.is_finite() { v } else { 1.5 })
            .collect();
        let x = Tensor::from_f32(dims, finite.clone());
        let avg = lower_pool(arch, &Op::GlobalAveragePool, dims).expect("lowers");
        let want = values(&reference(&Op::GlobalAveragePool, &x));
        let got = run(&compiled, &avg, &x);
        let n = avg.sizes[1];
        for (plane, (g, w)) in got.iter().zip(&want).enumerate() {
            let mean_abs = finite[plane * n..][..n]
                .iter()
                .map(|v| v.abs())
                .sum::<f32>()
                / n as f32;
            let bound = 2.0 * n as f32 * f32::EPSILON * mean_abs;
            assert!(
                (g - w).abs() <= bound,
                "GlobalAveragePool {dims:?} plane {plane}: {g:e} vs {w:e} (bound {bound:e})"
            );
        }
    }
}

/// A zero maximum takes the sign of the plane's first zero, even when another lane saw
/// a zero of the other sign first.
#[test]
fn global_max_of_zeros_keeps_the_first_zero() {
    let arch = native().arch();
    let kernel = GlobalPoolKernel::new(arch, true);
    let compiled = jit(&[&kernel]);
    for (data, first) in [
        (
            vec![-3.0, -2.0, -1.0, 0.0, -0.0, -0.0, -0.0, -0.0, -5.0],
            0.0f32,
        ),
        (vec![-3.0, -0.0, -1.0, 0.0, 0.0, 0.0], -0.0),
        (vec![-1.0, -2.0, -4.0, -4.0, -0.0, 0.0, f32::NAN], -0.0),
    ] {
        let x = Tensor::from_f32(&[1, 1, data.len()], data.clone());
        let lowering = lower_pool(arch, &Op::GlobalMaxPool, x.dims()).expect("lowers");
        let got = run(&compiled, &lowering, &x);
        assert_eq!(got[0].to_bits(), first.to_bits(), "{data:?}");
        assert_identical(&got, &values(&reference(&Op::GlobalMaxPool, &x)), "zeros");
    }
}

#[test]
fn configurations_get_distinct_symbols() {
    let arch = native().arch();
    let name = |axes, ceil, kind| {
        WindowPoolKernel::new(arch, kind, &attrs(axes, ceil), &[1, 1, 8, 8])
            .expect("kernel")
            .spec()
            .name
            .clone()
    };
    let base = [(3, 2, 1, 1, 1), (3, 2, 1, 1, 1)];
    let names = [
        name(base, false, PoolKind::Max),
        name(base, true, PoolKind::Max),
        name([(3, 2, 1, 0, 1), (3, 2, 1, 1, 1)], false, PoolKind::Max),
        name([(3, 2, 2, 1, 1), (3, 2, 1, 1, 1)], false, PoolKind::Max),
        name(
            base,
            false,
            PoolKind::Average {
                count_include_pad: true,
            },
        ),
        name(
            base,
            false,
            PoolKind::Average {
                count_include_pad: false,
            },
        ),
    ];
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn unsupported_inputs_are_errors() {
    let arch = native().arch();
    let pool = PoolAttrs {
        kernel: vec![2],
        strides: vec![1],
        dilations: vec![1],
        padding: Padding::Explicit(vec![0, 0]),
        ceil_mode: false,
    };
    assert!(WindowPoolKernel::new(arch, PoolKind::Max, &pool, &[1, 1, 5]).is_err());
    let big = attrs([(3, 1, 1, 0, 0), (3, 1, 1, 0, 0)], false);
    assert!(WindowPoolKernel::new(arch, PoolKind::Max, &big, &[1, 1, 2, 2]).is_err());
    assert!(lower_pool(arch, &Op::GlobalMaxPool, &[1, 3]).is_err());
    assert!(lower_pool(arch, &Op::Flatten { axis: 1 }, &[1, 3, 4, 4]).is_err());
}

#[test]
fn kernels_build_into_an_aarch64_object() {
    let target = Target::parse("aarch64-fp32").expect("target");
    let arch = target.arch();
    let mut lowerings = Vec::new();
    for (stride, ceil_mode) in [(1, false), (2, true), (3, false)] {
        let pool = attrs([(3, stride, 1, 1, 1), (3, stride, 2, 1, 2)], ceil_mode);
        for op in window_ops(&pool) {
            lowerings.push(lower_pool(arch, &op, &[1, 8, 13, 17]).expect("lowers"));
        }
    }
    for op in [Op::GlobalMaxPool, Op::GlobalAveragePool] {
        lowerings.push(lower_pool(arch, &op, &[1, 8, 7, 7]).expect("lowers"));
    }
    let kernels: Vec<&dyn Kernel> = lowerings
        .iter()
        .map(|l| l.kernel.as_ref() as &dyn Kernel)
        .collect();
    let bytes = object_kernels(&target, "pool", &kernels).expect("object builds");
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[18], 183, "e_machine is EM_AARCH64");
    let text = String::from_utf8_lossy(&bytes);
    for kernel in &kernels {
        let name = &kernel.spec().name;
        assert!(name.starts_with("aarch64_f32x4_"), "{name}");
        assert!(text.contains(name.as_str()), "symbol {name} in the object");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random window pools through the path models take (`lower_pool` → a kernel call →
    /// `run_node`), bit for bit against the interpreter: batch and channels > 1, odd sizes,
    /// every kernel/stride/dilation/pad in 1..=3 (pads 0..=2) per axis, ceil mode, and all
    /// three window ops.
    #[test]
    fn lowered_window_pools_match_the_interpreter(
        n in 1usize..=2,
        c in 1usize..=5,
        axes in proptest::array::uniform2((1usize..=3, 1usize..=3, 1usize..=3, 0usize..=2, 0usize..=2)),
        extra in proptest::array::uniform2(0usize..=8),
        ceil_mode in proptest::bool::ANY,
        which in 0usize..3,
        seed in 1u64..u64::MAX,
    ) {
        use std::sync::Arc;
        use crate::lower::{Arg, KernelCall, NodeLowering};
        // Pads smaller than the window (ONNX requires it for max pooling).
        let axes = axes.map(|(k, s, d, b, e)| (k, s, d, b.min(k - 1), e.min(k - 1)));
        let size = |a: (usize, usize, usize, usize, usize), extra: usize| {
            ((a.0 - 1) * a.2 + 1).saturating_sub(a.3 + a.4).max(1) + extra
        };
        let dims = [n, c, size(axes[0], extra[0]), size(axes[1], extra[1])];
        let op = window_ops(&attrs(axes, ceil_mode))[which].clone();
        let x = Rng(seed).tensor(&dims);
        let lowering = lower_pool(native().arch(), &op, &dims).expect("pool lowers");
        let mut args = vec![Arg::input(0), Arg::output(0)];
        args.extend(lowering.sizes.iter().map(|&s| Arg::Size(s)));
        let node = NodeLowering {
            calls: vec![KernelCall::new(Arc::clone(&lowering.kernel), args).expect("call")],
            ..NodeLowering::default()
        };
        let want = reference(&op, &x);
        let got = crate::model::run_node(
            &native(),
            &node,
            &[&values(&x)],
            &[want.dims().iter().product()],
        )
        .expect("runs");
        assert_identical(&got[0], &values(&want), &format!("{op:?} on {dims:?}"));
    }
}
