//! Depthwise convolution kernels, JIT-compiled for the host, against the reference
//! interpreter's `FusedConv` (`act(conv + bias + residual)`).
//!
//! Without FMA the kernel performs the interpreter's roundings in the interpreter's order, so
//! `native-fp32-fma` must match bit for bit (±0 compare equal: a zero sum's sign may differ),
//! except Sigmoid and Tanh (polynomials, [`SIGMOID_MAX_REL_ERROR`] from exact, plus an ulp for
//! the interpreter's own libm error). With FMA each tap skips a
//! rounding: the bound is `(taps + 2) · 2⁻²³ · (Σ|w·x| + |bias| + |residual|)` on the value
//! before the activation, times the activation's largest slope (1.5, HardSwish), plus the
//! activation's own relative error.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Activation, ConvAttrs, Op, Padding, Tensor};

use super::{lower_depthwise, DepthwiseKernel, MAX_BLOCK_VECTORS};
use crate::emit::{disassemble_kernel, JitKernels};
use crate::lower::test_support::native;
use crate::lower::vmath::{SIGMOID_MAX_REL_ERROR, TANH_MAX_REL_ERROR};
use crate::lower::{ConvGeometry, Epilogue, Kernel, KernelContext, KernelError, NodeLowering};
use crate::model::run_node;
use crate::target::{Arch, Feature, IsaOptions, OptLevel, Target};

/// Node input index of the residual, as in `FusedConv` (X, W, B, residual).
const RESIDUAL_INPUT: usize = 3;
/// The largest slope of any activation (HardSwish at x = 3).
const MAX_ACTIVATION_SLOPE: f64 = 1.5;
/// How far the interpreter's `f32::tanh` / `exp` based results may be from exact: one ulp.
const LIBM_REL_ERROR: f64 = 1.0 / (1u64 << 23) as f64;

/// An x86-64 target without FMA that this host runs (x86-64-v3 minus FMA): every multiply
/// and add rounds, as in the interpreter. `None` on other hosts (aarch64 always fuses).
fn without_fma() -> Option<Target> {
    let host = native();
    if host.arch() != Arch::X86_64 || !host.has(Feature::Avx2) || !host.has(Feature::Fma) {
        return None;
    }
    let target = Target::parse("x86_64-fp32-fma").expect("x86-64-v3 minus FMA is valid");
    assert!(!target.fma(), "x86_64-fp32-fma must not fuse");
    Some(target)
}

/// One depthwise convolution to test.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    channels: usize,
    /// `[H, W]`, or `[W]` for a 1-D convolution.
    spatial: Vec<usize>,
    attrs: ConvAttrs,
    bias: bool,
    residual: bool,
    activation: Option<Activation>,
    seed: u64,
}

impl Case {
    fn input_dims(&self) -> Vec<usize> {
        let mut dims = vec![self.batch, self.channels];
        dims.extend(&self.spatial);
        dims
    }

    fn weight_dims(&self) -> Vec<usize> {
        let mut dims = vec![self.channels, 1];
        dims.extend(&self.attrs.kernel);
        dims
    }

    fn op(&self) -> Op {
        Op::FusedConv {
            conv: self.attrs.clone(),
            residual: self.residual,
            activation: self.activation,
        }
    }
}

/// A deterministic generator (xorshift64*), so failures reproduce from the case's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly arbitrary fractions in [-2, 2), some exact quarters and zeros of both signs.
    fn value(&mut self) -> f32 {
        match self.next() % 16 {
            0 => 0.0,
            1 => -0.0,
            2..=4 => ((self.next() % 17) as f32 - 8.0) * 0.25,
            _ => (self.next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0,
        }
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

fn tensor_values(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 tensor").iter().copied().collect()
}

/// Everything a comparison needs: the kernel's and the interpreter's outputs, and per output
/// element the magnitude `Σ|w·x| + |bias| + |residual|` that bounds rounding differences.
struct Outcome {
    got: Vec<f32>,
    want: Vec<f32>,
    magnitude: Vec<f32>,
    taps: usize,
}

fn run_case(target: &Target, case: &Case) -> Result<Outcome, String> {
    let mut rng = Rng(case.seed | 1);
    let (x_dims, w_dims) = (case.input_dims(), case.weight_dims());
    let x = rng.values(x_dims.iter().product());
    let w = rng.values(w_dims.iter().product());
    let b = if case.bias {
        rng.values(case.channels)
    } else {
        vec![0.0; case.channels]
    };
    let geometry = ConvGeometry::new(&case.attrs, &x_dims, &w_dims).map_err(|e| e.to_string())?;
    let mut y_dims = vec![case.batch, case.channels];
    if case.spatial.len() == 2 {
        y_dims.push(geometry.out_h);
    }
    y_dims.push(geometry.out_w);
    let y_len: usize = y_dims.iter().product();
    let r = rng.values(y_len);

    let x_t = Tensor::from_f32(&x_dims, x.clone());
    let w_t = Tensor::from_f32(&w_dims, w.clone());
    let b_t = Tensor::from_f32(&[case.channels], b.clone());
    let r_t = Tensor::from_f32(&y_dims, r.clone());
    let mut inputs = vec![&x_t, &w_t, &b_t];
    if case.residual {
        inputs.push(&r_t);
    }
    let want = eval_op(&case.op(), &inputs).map_err(|e| e.to_string())?;
    let want = tensor_values(&want[0]);

    // Σ|w·x| from the interpreter's own convolution of the absolute values.
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
    let plain = Op::Conv(case.attrs.clone());
    let abs_x = Tensor::from_f32(&x_dims, abs(&x));
    let abs_w = Tensor::from_f32(&w_dims, abs(&w));
    let products = eval_op(&plain, &[&abs_x, &abs_w]).map_err(|e| e.to_string())?;
    let plane = y_len / (case.batch * case.channels);
    let magnitude = tensor_values(&products[0])
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let residual = if case.residual { r[i].abs() } else { 0.0 };
            p + b[(i / plane) % case.channels].abs() + residual
        })
        .collect();

    let epilogue = Epilogue {
        residual_input: case.residual.then_some(RESIDUAL_INPUT),
        activation: case.activation,
    };
    let bias = case.bias.then_some(b.as_slice());
    let lowering =
        lower_depthwise(target.arch(), &geometry, &w, bias, epilogue).map_err(|e| e.to_string())?;
    let node_inputs: Vec<&[f32]> = vec![&x, &w, &b, &r];
    let got = run_node(target, &lowering, &node_inputs, &[y_len]).map_err(|e| e.to_string())?;
    Ok(Outcome {
        got: got.into_iter().next().unwrap_or_default(),
        want,
        magnitude,
        taps: geometry.kernel_h * geometry.kernel_w,
    })
}

/// The allowed |kernel − interpreter| for one element (see the module docs).
fn tolerance(case: &Case, outcome: &Outcome, i: usize, fma: bool) -> f64 {
    let rounding = if fma {
        (outcome.taps + 2) as f64 * 2f64.powi(-23) * f64::from(outcome.magnitude[i])
    } else {
        0.0
    };
    // The polynomials' bound is against exact values; the interpreter's libm result is
    // itself up to an ulp (2⁻²³ relative) away from them.
    let activation = match case.activation {
        Some(Activation::Sigmoid) => SIGMOID_MAX_REL_ERROR + LIBM_REL_ERROR,
        Some(Activation::Tanh) => TANH_MAX_REL_ERROR + LIBM_REL_ERROR,
        _ => 0.0,
    };
    // Results below the smallest normal f32 may be flushed to zero by the polynomials.
    let subnormal = if activation > 0.0 { 1e-37 } else { 0.0 };
    MAX_ACTIVATION_SLOPE * rounding
        + activation * f64::from(outcome.want[i].abs()) * (1.0 + 1e-6)
        + subnormal
}

fn check(case: &Case, outcome: &Outcome, fma: bool) -> Result<(), String> {
    if outcome.got.len() != outcome.want.len() {
        return Err(format!(
            "{} outputs, interpreter {}",
            outcome.got.len(),
            outcome.want.len()
        ));
    }
    for (i, (&g, &w)) in outcome.got.iter().zip(&outcome.want).enumerate() {
        if g.is_nan() {
            return Err(format!(
                "element {i} is NaN (unwritten?), interpreter {w:e}"
            ));
        }
        let difference = (f64::from(g) - f64::from(w)).abs();
        let allowed = tolerance(case, outcome, i, fma);
        if difference > allowed {
            return Err(format!(
                "element {i}: kernel {g:e}, interpreter {w:e}, |diff| {difference:e} > {allowed:e}"
            ));
        }
    }
    Ok(())
}

fn activation_strategy() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Clip { min: 0.0, max: 6.0 })),
        Just(Some(Activation::Clip {
            min: -0.5,
            max: 0.75
        })),
        Just(Some(Activation::LeakyRelu { alpha: 0.1 })),
        Just(Some(Activation::Sigmoid)),
        Just(Some(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5
        })),
        Just(Some(Activation::HardSwish)),
        Just(Some(Activation::Tanh)),
    ]
}

/// Random depthwise convolutions: odd and even channel counts, widths that are not multiples
/// of 4 (and wider than one main-loop block), kernels 1..=5, strides 1..=3, dilations 1..=2,
/// independent pads 0..=2 per side, batch 1..=2, 1-D and 2-D.
fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 2usize..=7, any::<bool>()),
        (
            (1usize..=5, 1usize..=5),
            (1usize..=3, 1usize..=3),
            (1usize..=2, 1usize..=2),
        ),
        ((0usize..=2, 0usize..=2), (0usize..=2, 0usize..=2)),
        (1usize..=9, 1usize..=2 * MAX_BLOCK_VECTORS * 4 + 7),
        (
            any::<bool>(),
            any::<bool>(),
            activation_strategy(),
            any::<u64>(),
        ),
    )
        .prop_map(|(shape, window, pads, extent, epilogue)| {
            let (batch, channels, one_d) = shape;
            let ((kh, kw), (sh, sw), (dh, dw)) = window;
            let ((pt, pl), (pb, pr)) = pads;
            let (h, w) = extent;
            // Inputs at least as large as the window's span beyond the pads.
            let fit = |n: usize, k: usize, d: usize, pads: usize| {
                n.max(((k - 1) * d + 1).saturating_sub(pads)).max(1)
            };
            let (bias, residual, activation, seed) = epilogue;
            let w = fit(w, kw, dw, pl + pr);
            let attrs = if one_d {
                ConvAttrs {
                    kernel: vec![kw],
                    strides: vec![sw],
                    dilations: vec![dw],
                    padding: Padding::Explicit(vec![pl, pr]),
                    group: channels,
                }
            } else {
                ConvAttrs {
                    kernel: vec![kh, kw],
                    strides: vec![sh, sw],
                    dilations: vec![dh, dw],
                    padding: Padding::Explicit(vec![pt, pl, pb, pr]),
                    group: channels,
                }
            };
            let spatial = if one_d {
                vec![w]
            } else {
                vec![fit(h, kh, dh, pt + pb), w]
            };
            Case {
                batch,
                channels,
                spatial,
                attrs,
                bias,
                residual,
                activation,
                seed,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With FMA: within the stated rounding bound of the interpreter, no NaN left.
    #[test]
    fn depthwise_matches_interpreter_with_fma(case in case_strategy()) {
        let outcome = run_case(&native(), &case).map_err(TestCaseError::fail)?;
        check(&case, &outcome, true).map_err(TestCaseError::fail)?;
    }

    /// Without FMA: bit for bit (exact activations), no NaN left.
    #[test]
    fn depthwise_matches_interpreter_exactly_without_fma(case in case_strategy()) {
        let Some(target) = without_fma() else {
            return Ok(());
        };
        let outcome = run_case(&target, &case).map_err(TestCaseError::fail)?;
        check(&case, &outcome, false).map_err(TestCaseError::fail)?;
    }
}

fn mobilenet_case(channels: usize, size: usize, kernel: usize, stride: usize) -> Case {
    let pad = kernel / 2;
    Case {
        batch: 1,
        channels,
        spatial: vec![size, size],
        attrs: ConvAttrs {
            kernel: vec![kernel, kernel],
            strides: vec![stride, stride],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![pad; 4]),
            group: channels,
        },
        bias: true,
        residual: false,
        activation: Some(Activation::Clip { min: 0.0, max: 6.0 }),
        seed: 0x5eed,
    }
}

/// The MobileNetV2 / EfficientNet-Lite layer shapes, batch 2, with ReLU6 and a residual.
#[test]
fn mobilenet_layers_match_interpreter() {
    let layers = [
        (144, 56, 3, 1),
        (144, 56, 3, 2),
        (96, 112, 3, 2),
        (240, 28, 5, 1),
        (480, 14, 5, 2),
        (1152, 7, 5, 1),
    ];
    for (channels, size, kernel, stride) in layers {
        let mut case = mobilenet_case(channels, size, kernel, stride);
        case.batch = 2;
        case.residual = stride == 1;
        for target in [Some(native()), without_fma()].into_iter().flatten() {
            let outcome = run_case(&target, &case).expect("runs");
            let fma = target.fma();
            if let Err(message) = check(&case, &outcome, fma) {
                panic!("{channels}ch {size}x{size} k{kernel} s{stride} fma={fma}: {message}");
            }
        }
    }
}

/// Geometries the kernel cannot run are errors naming the problem, not wrong code.
#[test]
fn unsupported_geometries_are_refused() {
    let case = mobilenet_case(8, 10, 3, 1);
    let geometry = ConvGeometry::new(&case.attrs, &case.input_dims(), &case.weight_dims())
        .expect("valid geometry");
    let no_epilogue = Epilogue {
        residual_input: None,
        activation: None,
    };
    let arch = native().arch();
    let short = lower_depthwise(arch, &geometry, &[0.0; 8 * 9 - 1], None, no_epilogue);
    assert!(
        matches!(&short, Err(KernelError::Unsupported { reason, .. }) if reason.contains("weight")),
        "short weight"
    );
    let bias = lower_depthwise(arch, &geometry, &[0.0; 72], Some(&[0.0; 7]), no_epilogue);
    assert!(
        matches!(&bias, Err(KernelError::Unsupported { reason, .. }) if reason.contains("bias")),
        "short bias"
    );
    let dense = ConvGeometry {
        group: 1,
        ..geometry
    };
    let not_depthwise = lower_depthwise(arch, &dense, &[0.0; 72], None, no_epilogue);
    assert!(
        matches!(&not_depthwise, Err(KernelError::Unsupported { reason, .. })
            if reason.contains("not depthwise")),
        "group 1"
    );
    let too_wide = ConvGeometry {
        out_w: geometry.out_w + 1,
        ..geometry
    };
    let overrun = lower_depthwise(arch, &too_wide, &[0.0; 72], None, no_epilogue);
    assert!(overrun.is_err(), "an output wider than the input allows");
}

/// The symbol spells out every baked parameter, so two geometries never share a kernel.
#[test]
fn symbols_encode_the_geometry_and_epilogue() {
    let name = |case: &Case, residual, activation| {
        let geometry = ConvGeometry::new(&case.attrs, &case.input_dims(), &case.weight_dims())
            .expect("valid geometry");
        DepthwiseKernel::new(native().arch(), &geometry, true, residual, activation)
            .expect("kernel")
            .spec
            .name
            .clone()
    };
    let base = mobilenet_case(16, 12, 3, 1);
    let mut dilated = base.clone();
    dilated.attrs.dilations = vec![1, 2];
    dilated.attrs.padding = Padding::Explicit(vec![1, 2, 1, 2]);
    let names = [
        name(&base, false, None),
        name(&base, true, None),
        name(&base, false, Some(Activation::Relu)),
        name(&mobilenet_case(16, 12, 3, 2), false, None),
        name(&mobilenet_case(16, 14, 3, 1), false, None),
        name(&dilated, false, None),
    ];
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

/// The main loop is f32x4 FMA without vector spills (at Cranelift's default `opt_level`,
/// whose scheduling the kernel is written for), and the stride-2 copy splits phases with
/// `shufps`.
#[test]
fn main_loop_uses_fused_multiply_add_without_spills() {
    let target = native();
    if !target.fma() {
        return;
    }
    let isa = target.isa().expect("ISA");
    let context = KernelContext {
        pointer: isa.pointer_type(),
        fma: true,
    };
    for (size, kernel, stride) in [(56, 3, 2), (56, 3, 1), (28, 5, 1)] {
        let case = mobilenet_case(144, size, kernel, stride);
        let geometry = ConvGeometry::new(&case.attrs, &case.input_dims(), &case.weight_dims())
            .expect("valid geometry");
        let kernel = DepthwiseKernel::new(target.arch(), &geometry, true, true, case.activation)
            .expect("kernel");
        let code = disassemble_kernel(&*isa, &context, &kernel).expect("disassembles");
        let fmas = code.lines().filter(|l| l.contains("vfmadd")).count();
        let spills = code
            .lines()
            .filter(|l| l.contains("xmm") && l.contains("rsp"))
            .count();
        let name = &kernel.spec().name;
        assert!(
            fmas >= geometry.kernel_w,
            "{name}: expected f32x4 FMAs:\n{code}"
        );
        assert_eq!(spills, 0, "{name}: vector registers spilled:\n{code}");
        if stride == 2 {
            assert!(code.contains("shufps"), "{name}: expected shufps:\n{code}");
        }
        if std::env::var("DW_PRINT").is_ok() {
            println!("{code}");
        }
    }
}

/// Timing, not a test: `cargo test --release -p qcc-codegen depthwise_throughput --
/// --ignored --nocapture` prints GFLOP/s for two MobileNetV2 layers.
#[test]
#[ignore]
fn depthwise_throughput() {
    type NoResidualFn =
        unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut f32, usize, usize);
    let target = native();
    for (channels, size, stride) in [(144, 56, 1), (144, 56, 2), (96, 112, 2), (32, 112, 1)] {
        let case = mobilenet_case(channels, size, 3, stride);
        let geometry = ConvGeometry::new(&case.attrs, &case.input_dims(), &case.weight_dims())
            .expect("valid geometry");
        let weights = vec![0.125; channels * 9];
        let bias = vec![0.5; channels];
        let epilogue = Epilogue {
            residual_input: None,
            activation: case.activation,
        };
        let lowering: NodeLowering =
            lower_depthwise(target.arch(), &geometry, &weights, Some(&bias), epilogue)
                .expect("lowers");
        let kernel = &lowering.calls[0].kernel;
        for opt_level in [OptLevel::Speed, OptLevel::None] {
            let options = IsaOptions {
                opt_level,
                ..IsaOptions::default()
            };
            let mut jit = JitKernels::with_options(&target, &options).expect("JIT");
            jit.define(kernel.as_ref()).expect("compiles");
            let jit = jit.finalize().expect("finalizes");
            let run = jit
                .get::<NoResidualFn>(&kernel.spec().name)
                .expect("signature");
            let x = vec![1.0f32; geometry.batch * channels * size * size];
            let mut y = vec![0.0f32; geometry.batch * channels * geometry.out_h * geometry.out_w];
            let mut scratch = vec![0.0f32; lowering.scratch_bytes / 4];
            let packed = &lowering.packed[0];
            let call = |y: &mut [f32], scratch: &mut [f32]| {
                // SAFETY: every buffer has the size the lowering was made for; `jit` is alive.
                unsafe {
                    run(
                        x.as_ptr(),
                        packed.as_ptr(),
                        y.as_mut_ptr(),
                        scratch.as_mut_ptr(),
                        geometry.batch,
                        channels,
                    )
                }
            };
            for _ in 0..20 {
                call(&mut y, &mut scratch);
            }
            let iterations = 200;
            let start = std::time::Instant::now();
            for _ in 0..iterations {
                call(&mut y, &mut scratch);
            }
            let seconds = start.elapsed().as_secs_f64() / iterations as f64;
            let gflops = 2.0 * geometry.macs() as f64 / seconds / 1e9;
            println!(
                "depthwise {channels}ch {size}x{size} 3x3 s{stride} opt_level {opt_level:?}: \
             {:.1} us, {gflops:.1} GFLOP/s",
                seconds * 1e6
            );
        }
    }
}
