//! The int8 matrix product against its scalar reference, the 255 × −128 saturation test of
//! both dot products, the disassembly checks (`vpdpbusd` in the VNNI inner loops, no
//! `pmaddubsw` anywhere) and the speed report.

use proptest::prelude::*;
use qcc_ir::requant::FixedPoint;
use qcc_ir::DType;

use super::tests::{
    channel_fixed, disassemble, no_vnni, quant_strategy, requantize, run_conv, same_bytes, vnni,
    Bytes, ConvCase, Quant,
};
use super::*;
use crate::model::{compile_node, run_node_bytes, AlignedBuffer};
use crate::target::Target;

/// One matrix product to check.
#[derive(Clone, Debug)]
struct GemmCase {
    m: usize,
    k: usize,
    n: usize,
    trans_b: bool,
    seed: u64,
}

/// `Y[i, j] = requant_j(bias[j] + Σ (A[i, kk] − zx)·B[kk, j])`.
fn reference_gemm(
    case: &GemmCase,
    a: &[u8],
    w: &[i8],
    bias: Option<&[i32]>,
    fixed: &[FixedPoint],
    quant: &Quant,
) -> Vec<u8> {
    let (m, k, n) = (case.m, case.k, case.n);
    let zx = i32::from(quant.zx);
    let weight = |kk: usize, j: usize| {
        i32::from(if case.trans_b {
            w[j * k + kk]
        } else {
            w[kk * n + j]
        })
    };
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0, |b| b[j]);
            for kk in 0..k {
                acc = acc.wrapping_add((i32::from(a[i * k + kk]) - zx) * weight(kk, j));
            }
            y.push(requantize(channel_fixed(fixed, j), acc, &quant.output));
        }
    }
    y
}

fn run_gemm(
    target: &Target,
    case: &GemmCase,
    a: &[u8],
    w: &[i8],
    bias: Option<&[i32]>,
    quant: &Quant,
) -> (Vec<u8>, Vec<u8>) {
    let fixed = quant.fixed_points();
    let params = QGemmParams {
        m: case.m,
        k: case.k,
        n: case.n,
        weight: w,
        trans_b: case.trans_b,
        bias,
        requant: &fixed,
        input_zero_point: i32::from(quant.zx),
        weight_zero_points: None,
        output: quant.output,
    };
    let lowering = lower_qgemm(target, &params).expect("int8 Gemm lowers");
    let got = run_node_bytes(target, &lowering, &[a], &[case.m * case.n]).expect("node runs");
    let want = reference_gemm(case, a, w, bias, &fixed, quant);
    (got.into_iter().next().unwrap_or_default(), want)
}

fn check_gemm(target: &Target, case: &GemmCase, quant: &Quant) -> Result<(), TestCaseError> {
    let mut bytes = Bytes(case.seed | 1);
    let a: Vec<u8> = (0..case.m * case.k).map(|_| bytes.u8()).collect();
    let w: Vec<i8> = (0..case.k * case.n).map(|_| bytes.i8()).collect();
    let bias: Vec<i32> = (0..case.n).map(|_| bytes.bias()).collect();
    let bias = quant.with_bias.then_some(&bias[..]);
    let (got, want) = run_gemm(target, case, &a, &w, bias, quant);
    same_bytes(&got, &want, &format!("{case:?}\n{quant:?}"))
}

fn gemm_with_quant() -> impl Strategy<Value = (GemmCase, Quant)> {
    (
        1usize..=9,
        1usize..=70,
        1usize..=40,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(m, k, n, trans_b, seed)| {
            let case = GemmCase {
                m,
                k,
                n,
                trans_b,
                seed,
            };
            (Just(case), quant_strategy(n))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn qgemm_vnni_equals_reference((case, quant) in gemm_with_quant()) {
        check_gemm(&vnni(), &case, &quant)?;
    }

    #[test]
    fn qgemm_without_vnni_equals_reference((case, quant) in gemm_with_quant()) {
        check_gemm(&no_vnni(), &case, &quant)?;
    }

    /// aarch64's `sdot` kernels (activation rows flipped per load) on the JIT.
    #[test]
    fn qgemm_sdot_equals_reference((case, quant) in gemm_with_quant()) {
        with_dot_product(DotProduct::Sdot, || check_gemm(&vnni(), &case, &quant))?;
    }
}

/// Activations 255 and weights −128 (and +127) everywhere: every product is ±32640, the worst
/// case for a 16-bit intermediate sum (two products already overflow i16). A multiplier
/// that maps the exact accumulator to about ±100 makes any lost bit visible. Activations 0
/// are `sdot`'s extreme (flipped to −128: products up to 2^14).
#[test]
fn saturating_operands_are_exact_with_and_without_vnni() {
    for target in [vnni(), no_vnni()] {
        check_saturating_operands(&target, 255);
    }
    for activation in [255, 0] {
        with_dot_product(DotProduct::Sdot, || {
            check_saturating_operands(&vnni(), activation)
        });
    }
}

fn check_saturating_operands(target: &Target, activation: u8) {
    for weight_value in [-128i8, 127] {
        let conv = ConvCase {
            batch: 1,
            group: 1,
            cin_g: 64,
            cout_g: 5,
            in_hw: [4, 13],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [0; 4],
            seed: 1,
        };
        let g = conv.geometry().expect("valid geometry");
        let k = g.reduction();
        let quant = Quant {
            zx: 0,
            output: OutputQuant {
                dtype: DType::I8,
                zero_point: 0,
                clamp: None,
            },
            exponents: vec![((32640.0 * k as f64 / 100.0).log2(), 0.0)],
            with_bias: false,
        };
        let x = vec![activation; g.batch * g.in_channels * g.in_h * g.in_w];
        let w = vec![weight_value; g.out_channels * k];
        let (got, want) = run_conv(target, &g, &x, &w, None, &quant);
        let expected = match (activation, weight_value < 0) {
            (0, _) => 0,
            (_, true) => -100i8,
            (_, false) => 99,
        };
        assert_eq!(want[0] as i8, expected, "reference sanity");
        same_bytes(&got, &want, &format!("conv on {}", target.name()))
            .expect("conv saturation case");

        let case = GemmCase {
            m: 3,
            k: 1001,
            n: 13,
            trans_b: false,
            seed: 1,
        };
        let quant = Quant {
            exponents: vec![((32640.0 * case.k as f64 / 100.0).log2(), 0.0)],
            ..quant
        };
        let a = vec![activation; case.m * case.k];
        let w = vec![weight_value; case.k * case.n];
        let (got, want) = run_gemm(target, &case, &a, &w, None, &quant);
        assert_eq!(want[0] as i8, expected, "reference sanity");
        same_bytes(&got, &want, &format!("gemm on {}", target.name()))
            .expect("gemm saturation case");
    }
}

fn conv_3x3_64(batch: usize, hw: usize) -> QConvParamsOwned {
    let case = ConvCase {
        batch,
        group: 1,
        cin_g: 64,
        cout_g: 64,
        in_hw: [hw, hw],
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        seed: 7,
    };
    let geometry = case.geometry().expect("valid geometry");
    let mut bytes = Bytes(7);
    QConvParamsOwned {
        geometry,
        weight: (0..64 * geometry.reduction()).map(|_| bytes.i8()).collect(),
        bias: (0..64).map(|_| bytes.bias()).collect(),
        requant: vec![FixedPoint::from_real(1.0 / 4096.0).expect("in range")],
    }
}

struct QConvParamsOwned {
    geometry: crate::lower::ConvGeometry,
    weight: Vec<i8>,
    bias: Vec<i32>,
    requant: Vec<FixedPoint>,
}

impl QConvParamsOwned {
    fn params(&self) -> QConvParams<'_> {
        QConvParams {
            geometry: self.geometry,
            weight: &self.weight,
            bias: Some(&self.bias),
            requant: &self.requant,
            input_zero_point: 128,
            weight_zero_points: None,
            residual: None,
            output: OutputQuant {
                dtype: DType::U8,
                zero_point: 0,
                clamp: Some((0, 255)),
            },
        }
    }
}

fn gemm_params<'a>(w: &'a [i8], requant: &'a [FixedPoint], m: usize, k: usize) -> QGemmParams<'a> {
    QGemmParams {
        m,
        k,
        n: w.len() / k,
        weight: w,
        trans_b: false,
        bias: None,
        requant,
        input_zero_point: 128,
        weight_zero_points: None,
        output: OutputQuant {
            dtype: DType::U8,
            zero_point: 128,
            clamp: None,
        },
    }
}

/// The conv and gemm kernels of `target`: the unrolled main loop alone holds
/// `rows × vectors × unroll` dot products, so at least that many `mnemonic` means the inner
/// loop is folded, not just an edge case somewhere.
fn assert_inner_loops_use(target: &Target, dot: DotProduct, mnemonic: &str) {
    let choice = Int8Choice::for_target(target);
    assert_eq!(choice.dot, dot);
    let per_loop = (choice.tile.rows * choice.tile.cols / LANES * choice.k_unroll) as usize;
    let conv = conv_3x3_64(1, 8);
    let requant = [FixedPoint::from_real(0.001).expect("in range")];
    let w = vec![1i8; 256 * 256];
    let lowerings = [
        ("conv", lower_qconv(target, &conv.params()).expect("lowers")),
        (
            "gemm",
            lower_qgemm(target, &gemm_params(&w, &requant, 256, 256)).expect("lowers"),
        ),
    ];
    for (what, lowering) in &lowerings {
        let code = disassemble(target, lowering);
        if std::env::var_os("QCC_DUMP_INT8").is_some() {
            std::fs::write(format!("/tmp/int8_{what}.s"), &code).ok();
        }
        // Whole words: `sdot` must not count `usdot`.
        let count = code.split_whitespace().filter(|w| *w == mnemonic).count();
        assert!(
            count >= per_loop,
            "{what}: {count} {mnemonic}, expected at least {per_loop}:\n{code}"
        );
        assert!(
            !code.contains("pmaddubsw"),
            "{what}: 16-bit saturating sums"
        );
    }
}

#[test]
fn x86_64_int8_conv_and_gemm_inner_loops_use_vpdpbusd() {
    assert_inner_loops_use(&vnni(), DotProduct::Vnni, "vpdpbusd");
}

/// aarch64 with i8mm: the tree with its unsigned operand first folds into `usdot`.
#[test]
fn aarch64_i8mm_conv_and_gemm_inner_loops_use_usdot() {
    let target = Target::parse("aarch64-int8+i8mm").expect("target parses");
    assert_inner_loops_use(&target, DotProduct::Usdot, "usdot");
}

/// aarch64 with the dot-product extension only: the flipped s8 × s8 tree folds into `sdot`.
#[test]
fn aarch64_dotprod_conv_and_gemm_inner_loops_use_sdot() {
    let target = Target::parse("aarch64-int8").expect("target parses");
    assert_inner_loops_use(&target, DotProduct::Sdot, "sdot");
}

#[test]
fn fallback_without_vnni_widens_to_i32_without_pmaddubsw() {
    let target = no_vnni();
    assert_eq!(Int8Choice::for_target(&target).dot, DotProduct::Widening);
    let conv = conv_3x3_64(1, 8);
    let lowering = lower_qconv(&target, &conv.params()).expect("lowers");
    let code = disassemble(&target, &lowering);
    assert!(!code.contains("vpdpbusd"), "VNNI on a target without it");
    assert!(
        !code.contains("pmaddubsw"),
        "16-bit saturating sums:\n{code}"
    );
    assert!(code.contains("pmaddwd"), "no i16 pair products:\n{code}");
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    let conv = conv_3x3_64(1, 8);
    let target = vnni();
    let bad_zero_point = QConvParams {
        input_zero_point: 256,
        ..conv.params()
    };
    assert!(lower_qconv(&target, &bad_zero_point).is_err());
    let short_weight = QConvParams {
        weight: &conv.weight[1..],
        ..conv.params()
    };
    assert!(lower_qconv(&target, &short_weight).is_err());
    let two_multipliers = [FixedPoint::from_real(0.5).expect("in range"); 2];
    let wrong_requant = QConvParams {
        requant: &two_multipliers,
        ..conv.params()
    };
    assert!(lower_qconv(&target, &wrong_requant).is_err());
    let empty_clamp = QConvParams {
        output: OutputQuant {
            dtype: DType::I8,
            zero_point: 0,
            clamp: Some((200, 255)),
        },
        ..conv.params()
    };
    assert!(lower_qconv(&target, &empty_clamp).is_err());
}

/// Best-of-`runs` seconds of one node (after a warm-up run).
fn time_node(
    target: &Target,
    lowering: &crate::lower::NodeLowering,
    input: usize,
    output: usize,
) -> f64 {
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

/// The 3×3 conv and the 256³ gemm with per-channel weight zero points, and the conv with a
/// residual (both targets): the cost of the epilogue terms next to the plain kernels.
fn epilogue_speed_report() {
    let conv = conv_3x3_64(1, 56);
    let g = conv.geometry;
    let zero_points: Vec<i32> = (0..64).map(|c| c % 7 - 3).collect();
    let rescale = [FixedPoint::from_real(300.0).expect("in range")];
    for target in [vnni(), no_vnni()] {
        let variants = [
            (
                "zw",
                QConvParams {
                    weight_zero_points: Some(&zero_points),
                    ..conv.params()
                },
            ),
            (
                "residual",
                QConvParams {
                    residual: Some(ResidualQuant {
                        zero_point: 128,
                        multipliers: &rescale,
                    }),
                    ..conv.params()
                },
            ),
        ];
        for (what, params) in variants {
            let lowering = lower_qconv(&target, &params).expect("lowers");
            let jit = compile_node(&target, &lowering, 4, 1).expect("compiles");
            let planes = [
                g.in_channels * g.in_h * g.in_w,
                1,
                1,
                g.out_channels * 56 * 56,
            ];
            let inputs: Vec<AlignedBuffer> =
                planes.iter().map(|&n| AlignedBuffer::new(n)).collect();
            let input_refs: Vec<&AlignedBuffer> = inputs.iter().collect();
            let mut y = AlignedBuffer::new(g.out_channels * g.out_h * g.out_w);
            let mut workspace = AlignedBuffer::new(jit.workspace_bytes());
            let mut best = f64::INFINITY;
            for _ in 0..20 {
                let start = std::time::Instant::now();
                jit.run(&input_refs, &mut [&mut y], &mut workspace)
                    .expect("runs");
                best = best.min(start.elapsed().as_secs_f64());
            }
            let gops = 2.0 * g.macs() as f64 / best / 1e9;
            println!(
                "{} conv 3x3 64->64 56x56 with {what}: {:.3} ms, {gops:.1} GOP/s",
                target.name(),
                best * 1e3
            );
        }
        let (m, k, n) = (256, 256, 256);
        let w: Vec<i8> = (0..k * n).map(|i| (i % 255) as i8).collect();
        let requant = [FixedPoint::from_real(1.0 / 8192.0).expect("in range")];
        let column_zero_points: Vec<i32> = (0..n as i32).map(|j| j % 5 - 2).collect();
        let params = QGemmParams {
            weight_zero_points: Some(&column_zero_points),
            ..gemm_params(&w, &requant, m, k)
        };
        let lowering = lower_qgemm(&target, &params).expect("lowers");
        let seconds = time_node(&target, &lowering, m * k, m * n);
        let gops = 2.0 * (m * k * n) as f64 / seconds / 1e9;
        println!(
            "{} gemm 256x256x256 with zw: {:.3} ms, {gops:.1} GOP/s",
            target.name(),
            seconds * 1e3
        );
    }
}

/// Not a timed assertion: GOP/s (2·MACs / time) of a resnet-like 3×3 64→64 56×56 conv and a
/// 256³ gemm. Run with
/// `cargo test --release -p qcc-codegen int8_speed_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn int8_speed_report() {
    for target in [vnni(), no_vnni()] {
        let conv = conv_3x3_64(1, 56);
        let g = conv.geometry;
        let choice = Int8Choice::for_target(&target);
        let lowering = lower_qconv(&target, &conv.params()).expect("lowers");
        let seconds = time_node(
            &target,
            &lowering,
            g.in_channels * g.in_h * g.in_w,
            g.out_channels * g.out_h * g.out_w,
        );
        let gops = 2.0 * g.macs() as f64 / seconds / 1e9;
        println!(
            "{} conv 3x3 64->64 56x56 {}: {:.3} ms, {gops:.1} GOP/s",
            target.name(),
            lowering.description,
            seconds * 1e3
        );
        let (m, k, n) = (256, 256, 256);
        let w: Vec<i8> = (0..k * n).map(|i| (i % 255) as i8).collect();
        let requant = [FixedPoint::from_real(1.0 / 8192.0).expect("in range")];
        let lowering = lower_qgemm(&target, &gemm_params(&w, &requant, m, k)).expect("lowers");
        let seconds = time_node(&target, &lowering, m * k, m * n);
        let gops = 2.0 * (m * k * n) as f64 / seconds / 1e9;
        println!(
            "{} gemm 256x256x256 tile {}x{}: {:.3} ms, {gops:.1} GOP/s",
            target.name(),
            choice.tile.rows,
            choice.tile.cols,
            seconds * 1e3
        );
    }
    epilogue_speed_report();
    // The same MACs as a pointwise 576 -> 64 conv: every panel takes the vector packing path.
    let target = vnni();
    let pointwise = ConvCase {
        batch: 1,
        group: 1,
        cin_g: 576,
        cout_g: 64,
        in_hw: [56, 56],
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [0; 4],
        seed: 1,
    };
    let g = pointwise.geometry().expect("valid geometry");
    let owned = QConvParamsOwned {
        geometry: g,
        weight: vec![3; 64 * 576],
        bias: vec![0; 64],
        requant: vec![FixedPoint::from_real(1.0 / 4096.0).expect("in range")],
    };
    let lowering = lower_qconv(&target, &owned.params()).expect("lowers");
    let seconds = time_node(
        &target,
        &lowering,
        g.in_channels * g.in_h * g.in_w,
        g.out_channels * g.out_h * g.out_w,
    );
    let gops = 2.0 * g.macs() as f64 / seconds / 1e9;
    println!("x86_64-int8 conv 1x1 576->64 56x56: {gops:.1} GOP/s");
    // The register blocks and unrolls around the default, VNNI conv.
    let conv = conv_3x3_64(1, 56);
    let g = conv.geometry;
    for (rows, cols) in [(4, 12), (3, 12), (4, 8), (5, 8), (6, 8), (2, 16), (3, 16)] {
        for k_unroll in [1, 2, 4, 8] {
            let choice = Int8Choice {
                dot: DotProduct::Vnni,
                tile: crate::lower::Tile { rows, cols },
                k_unroll,
            };
            let Ok(lowering) = lower_qconv_with(target.arch(), choice, &conv.params()) else {
                continue;
            };
            let seconds = time_node(
                &target,
                &lowering,
                g.in_channels * g.in_h * g.in_w,
                g.out_channels * g.out_h * g.out_w,
            );
            let gops = 2.0 * g.macs() as f64 / seconds / 1e9;
            println!("  conv tile {rows}x{cols} unroll {k_unroll}: {gops:.1} GOP/s");
        }
    }
}
