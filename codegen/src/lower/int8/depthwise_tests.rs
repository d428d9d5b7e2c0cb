//! The int8 depthwise kernel against the interpreter (`qcc_ir::eval::eval_op` on
//! `Op::QuantizedConv`), bit for bit, on the VNNI target and the widening fallback; the
//! refusals that send a node to the grouped path; the instruction selection of the inner
//! loop; and the speed report against the grouped implicit GEMM.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::op::requant_multipliers;
use qcc_ir::requant::FixedPoint;
use qcc_ir::{ConvAttrs, DType, Op, Padding, QParams, Tensor, TensorType};

use super::super::tests::{disassemble, no_vnni, same_bytes, vnni, Bytes, ConvCase};
use super::super::{lower_qconv, with_dot_product, OutputQuant, QConvParams, ResidualQuant};
use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::{compile_node, run_node_bytes, AlignedBuffer};
use crate::target::Target;

/// The quantization of one case, as the realized op carries it (weight zero points 0).
#[derive(Clone, Debug)]
struct Quant {
    zx: u8,
    /// Per-channel weight scale exponents (one value: per tensor).
    spread: Vec<f64>,
    /// `s_x·s_w[0] / s_y = 2^-out_exp`.
    out_exp: f64,
    y_signed: bool,
    zy: u8,
    /// 0: none, 1: ReLU, 2: a ReLU6-like band.
    clamp: u8,
    with_bias: bool,
}

/// The op's parameters: x, w, y and the clamp.
struct Realized {
    x: QParams,
    w: QParams,
    y: QParams,
    clamp: Option<(i32, i32)>,
}

impl Quant {
    fn realize(&self) -> Realized {
        let s_x = 0.02f32;
        let s_w: Vec<f32> = self
            .spread
            .iter()
            .map(|f| (0.003 * 2f64.powf(*f)) as f32)
            .collect();
        let s_y = (f64::from(s_x) * f64::from(s_w[0]) * 2f64.powf(self.out_exp)) as f32;
        let x = QParams::per_tensor(DType::U8, s_x, i32::from(self.zx)).expect("x params");
        let w = if s_w.len() == 1 {
            QParams::per_tensor(DType::I8, s_w[0], 0)
        } else {
            let zeros = vec![0; s_w.len()];
            QParams::per_channel(DType::I8, 0, s_w, zeros)
        }
        .expect("w params");
        let (dtype, zy, max) = if self.y_signed {
            (DType::I8, i32::from(self.zy as i8), 127)
        } else {
            (DType::U8, i32::from(self.zy), 255)
        };
        let y = QParams::per_tensor(dtype, s_y, zy).expect("y params");
        let clamp = match self.clamp {
            1 => Some((zy, max)),
            2 => Some((zy, (zy + 40).min(max))),
            _ => None,
        };
        Realized { x, w, y, clamp }
    }
}

fn quant_strategy(channels: usize) -> impl Strategy<Value = Quant> {
    (
        prop_oneof![Just(0u8), Just(255), any::<u8>()],
        any::<bool>(),
        prop::collection::vec(-1.0f64..1.0, channels),
        // Mostly unsaturated outputs for these sizes; sometimes multipliers of 1/2 and up
        // (`n < 32`) or tiny ones.
        prop_oneof![3 => 5.0f64..12.0, 1 => -0.5f64..28.0],
        (
            any::<bool>(),
            prop_oneof![Just(0u8), Just(255), any::<u8>()],
        ),
        (0u8..3, any::<bool>()),
    )
        .prop_map(
            |(zx, per_channel, mut spread, out_exp, (y_signed, zy), (clamp, with_bias))| {
                if !per_channel {
                    spread.truncate(1);
                }
                Quant {
                    zx,
                    spread,
                    out_exp,
                    y_signed,
                    zy,
                    clamp,
                    with_bias,
                }
            },
        )
}

fn tensor(dtype: DType, dims: &[usize], bytes: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(dtype, dims), bytes).expect("byte count matches")
}

fn attrs(case: &ConvCase) -> ConvAttrs {
    ConvAttrs {
        kernel: case.kernel.to_vec(),
        strides: case.strides.to_vec(),
        dilations: case.dilations.to_vec(),
        padding: Padding::Explicit(case.pads.to_vec()),
        group: case.group,
    }
}

/// A depthwise case: `group` channels of one input and one output channel each.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    batch: usize,
    channels: usize,
    in_hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    seed: u64,
) -> ConvCase {
    ConvCase {
        batch,
        group: channels,
        cin_g: 1,
        cout_g: 1,
        in_hw,
        kernel,
        strides,
        dilations,
        pads,
        seed,
    }
}

/// The parameters `lower_qdepthwise` gets for one case, as the model lowering builds them.
struct Data {
    x: Vec<u8>,
    w: Vec<i8>,
    bias: Vec<i32>,
    requant: Vec<FixedPoint>,
}

impl Data {
    fn new(g: &ConvGeometry, seed: u64, q: &Realized) -> Data {
        let mut bytes = Bytes(seed | 1);
        Data {
            x: (0..g.batch * g.in_channels * g.in_h * g.in_w)
                .map(|_| bytes.u8())
                .collect(),
            w: (0..g.out_channels * g.reduction())
                .map(|_| bytes.i8())
                .collect(),
            bias: (0..g.out_channels).map(|_| bytes.bias()).collect(),
            requant: requant_multipliers(&q.x, &q.w, &q.y).expect("output multipliers"),
        }
    }

    fn params<'a>(&'a self, g: &ConvGeometry, q: &'a Realized, with_bias: bool) -> QConvParams<'a> {
        QConvParams {
            geometry: *g,
            weight: &self.w,
            bias: with_bias.then_some(&self.bias[..]),
            requant: &self.requant,
            input_zero_point: q.x.zero_points()[0],
            weight_zero_points: Some(q.w.zero_points()),
            residual: None,
            output: OutputQuant {
                dtype: q.y.dtype(),
                zero_point: q.y.zero_points()[0],
                clamp: q.clamp,
            },
        }
    }
}

/// The interpreter's output bytes for one case.
fn interpret(case: &ConvCase, g: &ConvGeometry, data: &Data, q: &Realized, bias: bool) -> Vec<u8> {
    let x = tensor(
        DType::U8,
        &[g.batch, g.in_channels, g.in_h, g.in_w],
        &data.x,
    );
    let w_bytes: Vec<u8> = data.w.iter().map(|&v| v as u8).collect();
    let w = tensor(
        DType::I8,
        &[g.out_channels, 1, g.kernel_h, g.kernel_w],
        &w_bytes,
    );
    let bias_bytes: Vec<u8> = data.bias.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bias_tensor = tensor(DType::I32, &[g.out_channels], &bias_bytes);
    let op = Op::QuantizedConv {
        conv: attrs(case),
        x: q.x.clone(),
        w: q.w.clone(),
        y: q.y.clone(),
        residual: None,
        clamp: q.clamp,
    };
    let mut inputs = vec![&x, &w];
    if bias {
        inputs.push(&bias_tensor);
    }
    let want = eval_op(&op, &inputs).expect("interpreter runs");
    want.first().map(Tensor::to_le_bytes).unwrap_or_default()
}

fn check(target: &Target, case: &ConvCase, quant: &Quant) -> Result<(), TestCaseError> {
    let Some(g) = case.geometry() else {
        return Ok(());
    };
    let q = quant.realize();
    let data = Data::new(&g, case.seed, &q);
    let want = interpret(case, &g, &data, &q, quant.with_bias);
    let lowering = lower_qdepthwise(target, &data.params(&g, &q, quant.with_bias))
        .map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
    prop_assert!(lowering.fallback.is_none());
    let got = run_node_bytes(target, &lowering, &[&data.x], &[want.len()])
        .map_err(|e| TestCaseError::fail(format!("node fails: {e}")))?;
    let got = got.into_iter().next().unwrap_or_default();
    same_bytes(&got, &want, &format!("{} {g:?}\n{quant:?}", target.name()))
}

fn depthwise_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 1usize..=9),
        (
            [1usize..=13, 1usize..=23],
            prop_oneof![Just(3usize), Just(5), 1usize..=4],
        ),
        ([1usize..=2, 1usize..=2], [1usize..=2, 1usize..=2]),
        [0usize..=2, 0usize..=3, 0usize..=2, 0usize..=3],
        any::<u64>(),
    )
        .prop_map(
            |((batch, channels), (in_hw, k), (strides, dilations), pads, seed)| {
                depthwise(
                    batch,
                    channels,
                    in_hw,
                    [k, k],
                    strides,
                    dilations,
                    pads,
                    seed,
                )
            },
        )
}

fn case_with_quant() -> impl Strategy<Value = (ConvCase, Quant)> {
    let fits = |case: &ConvCase| case.geometry().is_some();
    depthwise_case()
        .prop_filter("window fits", fits)
        .prop_flat_map(|case| {
            let channels = case.group;
            (Just(case), quant_strategy(channels))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn qdepthwise_vnni_equals_interpreter((case, quant) in case_with_quant()) {
        check(&vnni(), &case, &quant)?;
    }

    #[test]
    fn qdepthwise_without_vnni_equals_interpreter((case, quant) in case_with_quant()) {
        check(&no_vnni(), &case, &quant)?;
    }

    /// aarch64's `sdot` kernel (flipped scratch plane) on the JIT.
    #[test]
    fn qdepthwise_sdot_equals_interpreter((case, quant) in case_with_quant()) {
        with_dot_product(DotProduct::Sdot, || check(&vnni(), &case, &quant))?;
    }
}

fn fixed_quant(channels: usize) -> Quant {
    Quant {
        zx: 131,
        spread: (0..channels).map(|c| (c % 5) as f64 * 0.3 - 0.6).collect(),
        out_exp: 7.5,
        y_signed: false,
        zy: 9,
        clamp: 1,
        with_bias: true,
    }
}

/// Rows wider than a block with a remainder, every stride up to 5 (chunks of 4, 3, 2 and
/// 1 taps), a wide dilation, 7×7 and 1×N kernels, a single channel, rows under 16 bytes and
/// rows over 8 vectors.
#[test]
fn qdepthwise_edge_geometries_equal_interpreter() {
    let cases = [
        depthwise(1, 6, [9, 61], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1),
        depthwise(2, 5, [12, 45], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 2),
        depthwise(1, 3, [10, 50], [3, 5], [3, 3], [1, 2], [1, 2, 0, 1], 3),
        depthwise(1, 3, [9, 40], [3, 3], [4, 4], [1, 1], [1, 1, 1, 1], 4),
        depthwise(1, 2, [11, 47], [5, 5], [5, 5], [2, 3], [2, 2, 2, 2], 5),
        depthwise(1, 4, [15, 33], [7, 7], [1, 1], [3, 3], [9, 9, 9, 9], 6),
        depthwise(2, 1, [6, 7], [1, 7], [1, 1], [1, 1], [0, 3, 0, 3], 7),
        depthwise(1, 7, [3, 3], [3, 3], [1, 2], [1, 1], [2, 0, 0, 2], 8),
        depthwise(1, 3, [5, 37], [1, 1], [1, 1], [1, 1], [0; 4], 9),
        // Input rows copied by a loop, with and without the overlapping last vector.
        depthwise(1, 2, [4, 150], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 10),
        depthwise(1, 2, [3, 144], [3, 3], [1, 1], [1, 1], [1, 0, 1, 2], 11),
    ];
    for target in [vnni(), no_vnni()] {
        for case in &cases {
            check(&target, case, &fixed_quant(case.group)).expect("kernel equals interpreter");
        }
    }
}

/// Maximal products and a wrapping bias: `(255 − 0)·(−128)` at every tap, and `zx = 255`
/// with zero input (`(0 − 255)·(−128)`), both through large multipliers.
#[test]
fn qdepthwise_extreme_bytes_equal_interpreter() {
    let case = depthwise(1, 5, [7, 19], [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], 1);
    let g = case.geometry().expect("valid geometry");
    for (x, zx, out_exp) in [
        (255u8, 0u8, 12.0),
        (0, 255, 12.0),
        (255, 0, -0.5),
        (0, 255, 25.0),
    ] {
        let quant = Quant {
            zx,
            out_exp,
            ..fixed_quant(g.in_channels)
        };
        let q = quant.realize();
        let mut data = Data::new(&g, 1, &q);
        data.x.fill(x);
        data.w.fill(-128);
        data.bias[0] = i32::MAX;
        data.bias[1] = i32::MIN;
        for target in [vnni(), no_vnni()] {
            let want = interpret(&case, &g, &data, &q, true);
            let lowering = lower_qdepthwise(&target, &data.params(&g, &q, true)).expect("lowers");
            let got = run_node_bytes(&target, &lowering, &[&data.x], &[want.len()]).expect("runs");
            same_bytes(&got[0], &want, &format!("x {x} zx {zx} exp {out_exp}"))
                .expect("kernel equals interpreter");
        }
    }
}

/// What the kernel does not do is refused, never miscompiled: the caller falls back to the
/// grouped implicit GEMM.
#[test]
fn unsupported_depthwise_parameters_are_refused() {
    let target = vnni();
    let case = depthwise(1, 4, [8, 8], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let g = case.geometry().expect("valid geometry");
    let quant = fixed_quant(4);
    let q = quant.realize();
    let data = Data::new(&g, 1, &q);
    let params = data.params(&g, &q, true);
    assert!(lower_qdepthwise(&target, &params).is_ok());
    let zero_points = [0, 0, 3, 0];
    let with_zw = QConvParams {
        weight_zero_points: Some(&zero_points),
        ..params
    };
    assert!(lower_qdepthwise(&target, &with_zw).is_err());
    let rescale = [FixedPoint::from_real(2.0).expect("in range")];
    let with_residual = QConvParams {
        residual: Some(ResidualQuant {
            zero_point: 3,
            multipliers: &rescale,
        }),
        ..params
    };
    assert!(lower_qdepthwise(&target, &with_residual).is_err());
    let not_depthwise = QConvParams {
        geometry: ConvGeometry { group: 2, ..g },
        ..params
    };
    assert!(lower_qdepthwise(&target, &not_depthwise).is_err());
    let wide_stride = depthwise(1, 4, [8, 40], [3, 3], [1, 6], [1, 1], [1, 1, 1, 1], 1)
        .geometry()
        .expect("valid geometry");
    let wide = QConvParams {
        geometry: wide_stride,
        ..params
    };
    assert!(lower_qdepthwise(&target, &wide).is_err());
    let dilated = depthwise(1, 4, [8, 40], [3, 3], [1, 1], [1, 2], [1, 2, 1, 2], 1);
    let dilated = QConvParams {
        geometry: dilated.geometry().expect("valid geometry"),
        ..params
    };
    let dot = DotProduct::for_target(&target);
    assert!(lower_qdepthwise_with(target.arch(), dot, Gather::Shuffled, 8, &dilated).is_ok());
    assert!(lower_qdepthwise_with(target.arch(), dot, Gather::Direct, 8, &dilated).is_err());
    let short = QConvParams {
        weight: &data.w[1..],
        ..params
    };
    assert!(lower_qdepthwise(&target, &short).is_err());
    let bad_zero_point = QConvParams {
        input_zero_point: -1,
        ..params
    };
    assert!(lower_qdepthwise(&target, &bad_zero_point).is_err());
}

/// A 3×3 block is three chunks × `block_vectors` vectors, each one `vpdpbusd` with VNNI,
/// `pmaddwd` pairs without, never `pmaddubsw` (16-bit saturation); the shuffled gather has
/// one `pshufb` per dot product, the plain loads one per 16 outputs.
#[test]
fn inner_loop_is_dot_products_with_or_without_shuffles() {
    // 48 outputs a row: a full block and a remainder of whole groups, both plain loads.
    let direct = depthwise(1, 8, [20, 48], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let shuffled = depthwise(1, 8, [20, 40], [3, 3], [1, 1], [1, 2], [1, 2, 1, 2], 1);
    for (case, gather) in [(direct, Gather::Direct), (shuffled, Gather::Shuffled)] {
        let g = case.geometry().expect("valid geometry");
        assert_eq!(Gather::for_geometry(&g), gather);
        let quant = fixed_quant(8);
        let q = quant.realize();
        let data = Data::new(&g, 1, &q);
        for target in [vnni(), no_vnni()] {
            let lowering = lower_qdepthwise(&target, &data.params(&g, &q, true)).expect("lowers");
            let code = disassemble(&target, &lowering);
            if std::env::var_os("QCC_DUMP_INT8").is_some() {
                let path = format!("/tmp/int8_dw_{}_{gather:?}.s", target.name());
                std::fs::write(path, &code).ok();
            }
            let dot = DotProduct::for_target(&target);
            let per_block = 3 * block_vectors(dot);
            let shuffles = code.matches("pshufb").count();
            match gather {
                Gather::Shuffled => assert!(shuffles >= per_block, "{code}"),
                // One per 16 bytes of the full and the remainder block.
                Gather::Direct => assert!(shuffles <= 4, "{shuffles} pshufb:\n{code}"),
            }
            assert!(!code.contains("pmaddubsw"), "16-bit saturating sums");
            let (wanted, count) = match dot {
                DotProduct::Vnni => ("vpdpbusd", per_block),
                DotProduct::Widening => ("pmaddwd", 2 * per_block),
                DotProduct::Usdot | DotProduct::Sdot => unreachable!("x86 targets only here"),
            };
            assert!(
                code.matches(wanted).count() >= count,
                "{}: fewer than {count} {wanted}:\n{code}",
                target.name()
            );
        }
    }
}

/// aarch64: each of a 3×3 block's `3 × block_vectors` dot products is one `sdot` (flipped
/// scratch plane) with the dot-product extension, one `usdot` with i8mm.
#[test]
fn aarch64_inner_loop_is_sdot_or_usdot() {
    let direct = depthwise(1, 8, [20, 48], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let shuffled = depthwise(1, 8, [20, 40], [3, 3], [1, 1], [1, 2], [1, 2, 1, 2], 1);
    for case in [direct, shuffled] {
        let g = case.geometry().expect("valid geometry");
        let quant = fixed_quant(8);
        let q = quant.realize();
        let data = Data::new(&g, 1, &q);
        for (name, dot, mnemonic) in [
            ("aarch64-int8", DotProduct::Sdot, "sdot"),
            ("aarch64-int8+i8mm", DotProduct::Usdot, "usdot"),
        ] {
            let target = Target::parse(name).expect("target parses");
            assert_eq!(DotProduct::for_target(&target), dot);
            let lowering = lower_qdepthwise(&target, &data.params(&g, &q, true)).expect("lowers");
            let code = disassemble(&target, &lowering);
            let per_block = 3 * block_vectors(dot);
            // Whole words: `sdot` must not count `usdot`.
            let count = code.split_whitespace().filter(|w| *w == mnemonic).count();
            assert!(
                count >= per_block,
                "{name}: {count} {mnemonic}, fewer than {per_block}:\n{code}"
            );
        }
    }
}

/// Best-of-20 seconds of one single-input node.
fn time_node(target: &Target, lowering: &NodeLowering, input: usize, output: usize) -> f64 {
    let jit = compile_node(target, lowering, 1, 1).expect("compiles");
    let mut x = AlignedBuffer::new(input);
    x.as_bytes_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 37 % 251) as u8);
    let mut y = AlignedBuffer::new(output);
    let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = std::time::Instant::now();
        jit.run(&[&x], &mut [&mut y], &mut workspace).expect("runs");
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

/// Not a timed assertion: GOP/s (2·MACs / time) of two MobileNetV2 depthwise layers, this
/// kernel against the grouped implicit GEMM (`lower_qconv`) on the same parameters. Run with
/// `cargo test --release -p qcc-codegen -- --ignored --nocapture qdepthwise_speed_report`.
#[test]
#[ignore]
fn qdepthwise_speed_report() {
    let layers = [
        (
            "96ch 112x112 s2",
            depthwise(1, 96, [112, 112], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 1),
        ),
        (
            "144ch 56x56 s1",
            depthwise(1, 144, [56, 56], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 2),
        ),
    ];
    // Without AVX-512 DQ Cranelift multiplies the requantization's i64 lanes with
    // `pmuldq` instead of the slower `vpmullq`: the epilogue's share of the time.
    let without_dq = Target::parse("x86_64-int8-avx512dq").expect("target parses");
    for target in [vnni(), no_vnni(), without_dq] {
        for (name, case) in &layers {
            let g = case.geometry().expect("valid geometry");
            let quant = fixed_quant(g.in_channels);
            let q = quant.realize();
            let data = Data::new(&g, 1, &q);
            let params = data.params(&g, &q, true);
            let (input, output) = (
                g.in_channels * g.in_h * g.in_w,
                g.out_channels * g.out_h * g.out_w,
            );
            let gops = |seconds: f64| 2.0 * g.macs() as f64 / seconds / 1e9;
            let grouped = lower_qconv(&target, &params).expect("grouped lowers");
            let grouped = time_node(&target, &grouped, input, output);
            let dot = DotProduct::for_target(&target);
            let mut line = format!(
                "{} depthwise 3x3 {name}: grouped gemm {:.1} GOP/s ({:.3} ms)",
                target.name(),
                gops(grouped),
                grouped * 1e3
            );
            for gather in [Gather::Direct, Gather::Shuffled] {
                for vectors in [4, 8, 12] {
                    let lowering =
                        lower_qdepthwise_with(target.arch(), dot, gather, vectors, &params)
                            .expect("depthwise lowers");
                    let seconds = time_node(&target, &lowering, input, output);
                    let default =
                        vectors == block_vectors(dot) && gather == Gather::for_geometry(&g);
                    line.push_str(&format!(
                        "\n  {gather:?} {vectors}v{} {:.1} GOP/s ({:.3} ms)",
                        if default { " (default)" } else { "" },
                        gops(seconds),
                        seconds * 1e3
                    ));
                }
            }
            println!("{line}");
        }
    }
}
