//! The convolution lowering, JIT-compiled for the host through `model::run_node`, against
//! the reference interpreter's FusedConv.
//!
//! Accuracy bound (summation order differs from the interpreter's blocked GEMM; FMA rounds
//! once per step): for every output element
//! `|kernel − interpreter| ≤ 2e-5 · √K · max|x| · max|w| + 1e-6 · (1 + max|bias| + max|r|)`,
//! `K = C_in/group · kH · kW`. A wrong tap, channel or pixel changes elements by ~0.1 with
//! the values used (uniform in [-1, 1)), far above the bound.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::{Activation, ConvAttrs, Op, Padding, Tensor};

use super::*;
use crate::emit::{FinalizedKernels, JitKernels};
use crate::lower::test_support::{native, Random};
use crate::model::run_node;
use crate::target::{IsaOptions, OptLevel, Target};

/// One convolution to check. `one_d` makes it a 1-D ONNX Conv (the `_h` fields are ignored).
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    group: usize,
    cin_g: usize,
    cout_g: usize,
    in_hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// top, left, bottom, right.
    pads: [usize; 4],
    one_d: bool,
    bias: bool,
    residual: bool,
    activation: Option<Activation>,
    seed: u64,
}

const ACTIVATIONS: [Option<Activation>; 8] = [
    None,
    Some(Activation::Relu),
    Some(Activation::LeakyRelu { alpha: 0.1 }),
    Some(Activation::Clip {
        min: -0.25,
        max: 0.5,
    }),
    Some(Activation::Sigmoid),
    Some(Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    }),
    Some(Activation::HardSwish),
    Some(Activation::Tanh),
];

impl Case {
    fn spatial(&self) -> std::ops::Range<usize> {
        if self.one_d {
            1..2
        } else {
            0..2
        }
    }
    fn attrs(&self) -> ConvAttrs {
        let pick = |v: &[usize; 2]| v[self.spatial()].to_vec();
        let [top, left, bottom, right] = self.pads;
        let pads = if self.one_d {
            vec![left, right]
        } else {
            vec![top, left, bottom, right]
        };
        ConvAttrs {
            kernel: pick(&self.kernel),
            strides: pick(&self.strides),
            dilations: pick(&self.dilations),
            padding: Padding::Explicit(pads),
            group: self.group,
        }
    }
    fn input_dims(&self) -> Vec<usize> {
        let mut dims = vec![self.batch, self.cin_g * self.group];
        dims.extend_from_slice(&self.in_hw[self.spatial()]);
        dims
    }
    fn weight_dims(&self) -> Vec<usize> {
        let mut dims = vec![self.cout_g * self.group, self.cin_g];
        dims.extend_from_slice(&self.kernel[self.spatial()]);
        dims
    }
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Lowers, runs and compares one case; panics with the case on a mismatch.
fn check(case: &Case) {
    let attrs = case.attrs();
    let (x_dims, w_dims) = (case.input_dims(), case.weight_dims());
    let geometry = ConvGeometry::new(&attrs, &x_dims, &w_dims).expect("valid geometry");
    let mut random = Random(case.seed | 1);
    let x = random.vec(x_dims.iter().product());
    let w = random.vec(w_dims.iter().product());
    let bias = random.vec(geometry.out_channels);
    let mut y_dims = vec![geometry.batch, geometry.out_channels];
    if !case.one_d {
        y_dims.push(geometry.out_h);
    }
    y_dims.push(geometry.out_w);
    let out_len: usize = y_dims.iter().product();
    let residual = random.vec(out_len);

    let epilogue = Epilogue {
        residual_input: case.residual.then_some(3),
        activation: case.activation,
    };
    let lowering = lower_conv(
        native().arch(),
        &geometry,
        &w,
        case.bias.then_some(bias.as_slice()),
        epilogue,
    )
    .expect("convolution lowers");
    // Node inputs by index: X, W (unused by the kernel: it reads the packed copy), B, R.
    let inputs: Vec<&[f32]> = vec![&x, &w, &bias, &residual];
    let got = run_node(&native(), &lowering, &inputs, &[out_len])
        .expect("node runs")
        .remove(0);

    // The interpreter's FusedConv always has a bias: a zero one stands for none.
    let zero_bias = vec![0.0; geometry.out_channels];
    let op = Op::FusedConv {
        conv: attrs,
        residual: case.residual,
        activation: case.activation,
    };
    let mut tensors = vec![
        Tensor::from_f32(&x_dims, x.clone()),
        Tensor::from_f32(&w_dims, w.clone()),
        Tensor::from_f32(
            &[geometry.out_channels],
            if case.bias { bias.clone() } else { zero_bias },
        ),
    ];
    if case.residual {
        tensors.push(Tensor::from_f32(&y_dims, residual.clone()));
    }
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let want = eval_op(&op, &refs)
        .expect("interpreter evaluates")
        .remove(0);
    assert_eq!(want.dims(), y_dims.as_slice(), "{case:?}: output dims");
    let want: Vec<f32> = want.as_f32().expect("f32").iter().copied().collect();

    let reduction = geometry.reduction() as f32;
    let extra = 1.0
        + if case.bias { max_abs(&bias) } else { 0.0 }
        + if case.residual {
            max_abs(&residual)
        } else {
            0.0
        };
    let tolerance = 2e-5 * reduction.sqrt() * max_abs(&x) * max_abs(&w) + 1e-6 * extra;
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(!g.is_nan(), "{case:?}: element {i} not written (NaN)");
        assert!(
            (g - w).abs() <= tolerance,
            "{case:?}: element {i}: kernel {g:e}, interpreter {w:e}, bound {tolerance:e} ({})",
            lowering.description
        );
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let sizes = (1usize..=2, 1usize..=3, 1usize..=5, 1usize..=7);
    let window = (
        prop::sample::select(vec![1usize, 2, 3, 7]),
        prop::sample::select(vec![1usize, 2, 3, 7]),
        1usize..=3,
        1usize..=3,
        1usize..=2,
        1usize..=2,
    );
    let padding = (
        0usize..=3,
        0usize..=3,
        0usize..=3,
        0usize..=3,
        0usize..=9,
        0usize..=15,
    );
    let epilogue = (
        any::<bool>(),
        any::<bool>(),
        0usize..ACTIVATIONS.len(),
        any::<u64>(),
    );
    (sizes, window, padding, epilogue, prop::bool::weighted(0.2)).prop_map(
        |((batch, group, cin_g, cout_g), w, p, e, one_d)| {
            let (kh, kw, sh, sw, dh, dw) = w;
            let (top, left, bottom, right, extra_h, extra_w) = p;
            let (bias, residual, activation, seed) = e;
            // Inputs at least as large as the window's span minus the padding.
            let input = |k: usize, d: usize, pads: usize, extra: usize| {
                ((k - 1) * d + 1 + extra).saturating_sub(pads).max(1)
            };
            let mut case = Case {
                batch,
                group,
                cin_g,
                cout_g,
                in_hw: [
                    input(kh, dh, top + bottom, extra_h),
                    input(kw, dw, left + right, extra_w),
                ],
                kernel: [kh, kw],
                strides: [sh, sw],
                dilations: [dh, dw],
                pads: [top, left, bottom, right],
                one_d,
                bias,
                residual,
                activation: ACTIVATIONS[activation],
                seed,
            };
            if one_d {
                case.in_hw[0] = 1;
                case.kernel[0] = 1;
                case.strides[0] = 1;
                case.dilations[0] = 1;
                case.pads[0] = 0;
                case.pads[2] = 0;
            }
            case
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random geometry (odd channel counts, 1×1 to 7×7, strides, dilations, asymmetric pads,
    /// groups, batch 2, 1-D) and every epilogue, against the interpreter.
    #[test]
    fn matches_interpreter_on_random_convolutions(case in case_strategy()) {
        check(&case);
    }
}

fn fixed(cin: usize, cout: usize, hw: [usize; 2], kernel: usize, stride: usize) -> Case {
    let pad = kernel / 2;
    Case {
        batch: 1,
        group: 1,
        cin_g: cin,
        cout_g: cout,
        in_hw: hw,
        kernel: [kernel; 2],
        strides: [stride; 2],
        dilations: [1; 2],
        pads: [pad; 4],
        one_d: false,
        bias: true,
        residual: false,
        activation: Some(Activation::Relu),
        seed: 0x5eed,
    }
}

/// Network-like layers: long reductions, many panels, the stem's 7×7/2, a strided 1×1
/// (downsample), a pointwise layer (the flattened path), a grouped 3×3 with a residual.
#[test]
fn matches_interpreter_on_network_like_layers() {
    check(&fixed(64, 64, [14, 14], 3, 1));
    check(&fixed(3, 16, [33, 31], 7, 2));
    check(&Case {
        pads: [0; 4],
        ..fixed(24, 40, [15, 15], 1, 2)
    });
    check(&Case {
        residual: true,
        ..fixed(45, 23, [13, 13], 1, 1)
    });
    check(&Case {
        group: 4,
        batch: 2,
        residual: true,
        ..fixed(5, 6, [9, 11], 3, 1)
    });
}

#[test]
fn weight_and_bias_lengths_are_checked() {
    let case = fixed(2, 3, [5, 5], 3, 1);
    let geometry = ConvGeometry::new(&case.attrs(), &case.input_dims(), &case.weight_dims())
        .expect("valid geometry");
    let epilogue = Epilogue {
        residual_input: None,
        activation: None,
    };
    let arch = native().arch();
    let weight = vec![0.5; 3 * 2 * 9];
    assert!(lower_conv(arch, &geometry, &weight[1..], None, epilogue).is_err());
    assert!(lower_conv(arch, &geometry, &weight, Some(&[1.0, 2.0]), epilogue).is_err());
    let lowering = lower_conv(arch, &geometry, &weight, Some(&[1.0; 3]), epilogue).expect("ok");
    assert_eq!(lowering.scratch_bytes, 2 * 9 * 12 * 4, "one K × NR panel");
}

#[test]
fn pack_conv_weights_lays_out_row_panels_per_group() {
    // Two groups of 4 output channels, K = 2: w[o][kk] = 10·o + kk. MR = 3: rows 0..3 of
    // each group interleaved by kk, row 3 left row-major.
    let case = Case {
        group: 2,
        ..fixed(2, 4, [3, 3], 1, 1)
    };
    let geometry = ConvGeometry::new(&case.attrs(), &case.input_dims(), &case.weight_dims())
        .expect("valid geometry");
    let weight: Vec<f32> = (0..8)
        .flat_map(|o| (0..2).map(move |kk| (10 * o + kk) as f32))
        .collect();
    let packed = pack_conv_weights(&geometry, &weight, 3).expect("packs");
    let group = |o: f32| {
        [
            o,
            o + 10.0,
            o + 20.0,
            o + 1.0,
            o + 11.0,
            o + 21.0,
            o + 30.0,
            o + 31.0,
        ]
    };
    let want: Vec<f32> = group(0.0).into_iter().chain(group(40.0)).collect();
    assert_eq!(packed, want);
}

#[test]
fn x86_64_3x3_conv_inner_loop_uses_fma() {
    let target = Target::parse("x86_64-fp32+fma").expect("target parses");
    let isa = target.isa().expect("ISA builds");
    let context = crate::lower::KernelContext {
        pointer: isa.pointer_type(),
        fma: target.fma(),
    };
    let case = fixed(64, 64, [56, 56], 3, 1);
    let geometry = ConvGeometry::new(&case.attrs(), &case.input_dims(), &case.weight_dims())
        .expect("valid geometry");
    let epilogue = TileEpilogue {
        bias: BiasKind::PerRow,
        residual: false,
        activation: Some(Activation::Relu),
    };
    let kernel = ConvKernel::new(target.arch(), &geometry, DEFAULT_TILE, epilogue, 4)
        .expect("kernel builds");
    let code =
        crate::emit::disassemble_kernel(isa.as_ref(), &context, &kernel).expect("kernel compiles");
    assert!(code.contains("vfmadd"), "no vfmadd in\n{code}");
}

type ConvFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, *mut f32);

/// Times one layer: GFLOP/s = 2·MACs / time, best of `runs` after a warm-up.
fn time_layer(case: &Case, options: &IsaOptions, tile: Tile, unroll: u32) -> f64 {
    let geometry = ConvGeometry::new(&case.attrs(), &case.input_dims(), &case.weight_dims())
        .expect("valid geometry");
    let epilogue = TileEpilogue {
        bias: BiasKind::PerRow,
        residual: false,
        activation: Some(Activation::Relu),
    };
    let kernel =
        ConvKernel::new(native().arch(), &geometry, tile, epilogue, unroll).expect("kernel builds");
    let mut random = Random(7);
    let x = random.vec(geometry.batch * geometry.in_channels * geometry.in_h * geometry.in_w);
    let weight = random.vec(geometry.out_channels * geometry.reduction());
    let packed = pack_conv_weights(&geometry, &weight, tile.rows as usize).expect("packs");
    let bias = random.vec(geometry.out_channels);
    let mut y =
        vec![0.0f32; geometry.batch * geometry.out_channels * geometry.out_h * geometry.out_w];
    let mut scratch = vec![0.0f32; kernel.scratch_bytes() / 4];
    let mut jit = JitKernels::with_options(&native(), options).expect("JIT module");
    jit.define(&kernel).expect("kernel compiles");
    let kernels: FinalizedKernels = jit.finalize().expect("JIT finalizes");
    let f: ConvFn = kernels.get(&kernel.spec().name).expect("signature");
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = std::time::Instant::now();
        // SAFETY: every buffer has the size the kernel's geometry implies.
        unsafe {
            f(
                x.as_ptr(),
                packed.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                scratch.as_mut_ptr(),
            )
        };
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * geometry.macs() as f64 / best / 1e9
}

/// Not a timed assertion: prints GFLOP/s of resnet50-like layers. Run with
/// `cargo test --release -p qcc-codegen conv_speed_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn conv_speed_report() {
    let layers = [
        ("3x3 64->64 56x56", fixed(64, 64, [56, 56], 3, 1)),
        (
            "1x1 256->64 56x56",
            Case {
                pads: [0; 4],
                ..fixed(256, 64, [56, 56], 1, 1)
            },
        ),
    ];
    let tiles = [
        DEFAULT_TILE,
        Tile { rows: 4, cols: 8 },
        Tile { rows: 2, cols: 16 },
    ];
    for (name, case) in &layers {
        let mut runs = vec![(OptLevel::Speed, DEFAULT_TILE, DEFAULT_K_UNROLL)];
        for tile in tiles {
            for unroll in [1, 4, 8] {
                runs.push((OptLevel::None, tile, unroll));
            }
        }
        for (opt_level, tile, unroll) in runs {
            let options = IsaOptions {
                opt_level,
                ..IsaOptions::default()
            };
            let gflops = time_layer(case, &options, tile, unroll);
            println!(
                "{name} {opt_level:?} tile {}x{} unroll {unroll}: {gflops:.1} GFLOP/s",
                tile.rows, tile.cols
            );
        }
    }
}
