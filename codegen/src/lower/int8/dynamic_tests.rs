//! Dynamic quantization's kernels, JIT-compiled, against the interpreter's ops
//! (`qcc_ir::eval::eval_op`, the definition) bit for bit: DynamicQuantizeLinear on awkward
//! floats (NaN, ±inf, huge, subnormal, all-zero, one-signed inputs, odd lengths), and the
//! dynamic convolution and matrix product over random geometry, run-time zero points
//! (0 and 255 included), per-tensor and per-channel weight scales, weight zero points (none,
//! per tensor or per channel, −128 and 127 included), residual and the exact activations,
//! on the VNNI target, the widening fallback and `sdot`'s flipped activations. The
//! whole-graph test and the speed report are in `dynamic_graph_tests`.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::quant::QParams;
use qcc_ir::{Activation, ConvAttrs, DType, Op, Padding, Tensor, TensorType};

use super::tests::{conv_case, no_vnni, vnni, Bytes, ConvCase};
use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::run_node_bytes;
use crate::target::Target;

pub(super) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn u8_tensor(dims: &[usize], values: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(DType::U8, dims.to_vec()), values).expect("u8 bytes")
}

fn i8_tensor(dims: &[usize], values: &[i8]) -> Tensor {
    let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    Tensor::from_le_bytes(&TensorType::new(DType::I8, dims.to_vec()), &bytes).expect("i8 bytes")
}

/// The f32 values of an interpreter output.
fn f32_values(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("an f32 tensor").iter().copied().collect()
}

/// Bit equality (so `-0.0 ≠ 0.0` and NaN payloads count), first difference in the message.
pub(super) fn same_f32(got: &[f32], want: &[f32], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    let wrong: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&first) = wrong.first() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} of {} outputs differ; first at {first}: kernel {:e}, interpreter {:e}",
            wrong.len(),
            got.len(),
            got[first],
            want[first]
        )));
    }
    Ok(())
}

/// A float in `[0, 1)`.
fn unit(rng: &mut Bytes) -> f32 {
    (rng.next() >> 40) as f32 / (1u64 << 24) as f32
}

/// A positive scale spanning a few decades.
fn scale(rng: &mut Bytes) -> f32 {
    (0.05 + unit(rng)) * 2f32.powi((rng.next() % 12) as i32 - 9)
}

// ---------------------------------------------------------------- DynamicQuantizeLinear

/// What an input of DynamicQuantizeLinear looks like.
#[derive(Clone, Copy, Debug)]
enum InputKind {
    Mixed,
    AllZero,
    AllPositive,
    AllNegative,
    WithNaN,
    WithInfinity,
    Huge,
    Tiny,
}

fn dynamic_input(kind: InputKind, n: usize, rng: &mut Bytes) -> Vec<f32> {
    let spread = 2f32.powi((rng.next() % 16) as i32 - 8);
    (0..n)
        .map(|i| {
            let u = unit(rng);
            let mixed = (u - 0.4) * 100.0 * spread;
            match kind {
                InputKind::Mixed => mixed,
                InputKind::AllZero => {
                    if i % 3 == 0 {
                        -0.0
                    } else {
                        0.0
                    }
                }
                InputKind::AllPositive => (u + 0.01) * spread,
                InputKind::AllNegative => -(u + 0.01) * spread,
                InputKind::WithNaN if rng.next().is_multiple_of(5) => f32::NAN,
                InputKind::WithInfinity if rng.next().is_multiple_of(7) => {
                    if rng.next().is_multiple_of(2) {
                        f32::INFINITY
                    } else {
                        f32::NEG_INFINITY
                    }
                }
                InputKind::Huge => (u - 0.5) * f32::MAX,
                InputKind::Tiny => f32::from_bits(rng.next() as u32 & 0x807f_ffff),
                _ => mixed,
            }
        })
        .collect()
}

fn check_dynamic_quantize(target: &Target, x: &[f32], what: &str) -> Result<(), TestCaseError> {
    let n = x.len();
    let lowering = lower_dynamic_quantize(target.arch(), n).expect("lowers");
    let got = run_node_bytes(target, &lowering, &[&f32_bytes(x)], &[n, 4, 1]).expect("runs");
    let want = eval_op(
        &Op::DynamicQuantizeLinear,
        &[&Tensor::from_f32(&[n], x.to_vec())],
    )
    .expect("the interpreter runs");
    let want_scale = f32_values(&want[1])[0];
    let got_scale = bytes_f32(&got[1])[0];
    prop_assert_eq!(
        got_scale.to_bits(),
        want_scale.to_bits(),
        "{}: scale {} vs {}",
        what,
        got_scale,
        want_scale
    );
    prop_assert_eq!(&got[2], &want[2].to_le_bytes(), "{}: zero point", what);
    let want_y = want[0].to_le_bytes();
    if let Some(i) = (0..n).find(|&i| got[0][i] != want_y[i]) {
        return Err(TestCaseError::fail(format!(
            "{what}: y[{i}] of x = {:e}: kernel {}, interpreter {}",
            x[i], got[0][i], want_y[i]
        )));
    }
    Ok(())
}

fn input_kind() -> impl Strategy<Value = InputKind> {
    prop_oneof![
        3 => Just(InputKind::Mixed),
        1 => Just(InputKind::AllZero),
        1 => Just(InputKind::AllPositive),
        1 => Just(InputKind::AllNegative),
        1 => Just(InputKind::WithNaN),
        1 => Just(InputKind::WithInfinity),
        1 => Just(InputKind::Huge),
        1 => Just(InputKind::Tiny),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn dynamic_quantize_equals_the_interpreter(
        kind in input_kind(),
        n in prop_oneof![0usize..40, 40usize..300],
        seed in any::<u64>(),
    ) {
        let x = dynamic_input(kind, n, &mut Bytes(seed | 1));
        check_dynamic_quantize(&vnni(), &x, &format!("{kind:?} n = {n}"))?;
    }
}

#[test]
fn dynamic_quantize_edge_inputs_equal_the_interpreter() {
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("empty", vec![]),
        ("one NaN", vec![f32::NAN]),
        ("NaN only", vec![f32::NAN; 21]),
        ("the spec's example", vec![0., 2., -3., -2.5, 1.34, 0.5]),
        (
            "both infinities",
            vec![f32::INFINITY, 1.0, f32::NEG_INFINITY, 0.5],
        ),
        ("max and min", vec![f32::MAX, -f32::MAX, 1.0, -1.0, 0.0]),
        ("signed zeros", vec![-0.0; 19]),
        (
            "NaN in every vector lane",
            (0..37)
                .map(|i| if i % 4 == 1 { f32::NAN } else { i as f32 - 9.5 })
                .collect(),
        ),
    ];
    for target in [vnni(), no_vnni()] {
        for (what, x) in &cases {
            check_dynamic_quantize(&target, x, what).expect("kernel equals the interpreter");
        }
    }
}

// ---------------------------------------------------------------- convolution

/// The weights' zero points of one dynamic case.
#[derive(Clone, Copy, Debug)]
enum WeightZeroPoints {
    /// All zero: the plain kernel, no input sums.
    Zero,
    PerTensor(i8),
    /// One per output channel (column), drawn from the case's seed with −128 and 127
    /// over-represented.
    PerChannel,
}

impl WeightZeroPoints {
    /// One value, or one per channel (`channels`).
    fn values(self, channels: usize, rng: &mut Bytes) -> Vec<i32> {
        match self {
            WeightZeroPoints::Zero => vec![0],
            WeightZeroPoints::PerTensor(z) => vec![i32::from(z)],
            WeightZeroPoints::PerChannel => (0..channels)
                .map(|_| match rng.next() % 4 {
                    0 => -128,
                    1 => 127,
                    _ => i32::from(rng.i8()),
                })
                .collect(),
        }
    }
}

/// The run-time quantization, weight scales and zero points and epilogue of one dynamic
/// case.
#[derive(Clone, Debug)]
struct DynamicQuant {
    zero_point: u8,
    per_channel: bool,
    weight_zero_points: WeightZeroPoints,
    residual: bool,
    activation: Option<Activation>,
}

fn exact_activation() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Clip {
            min: -0.75,
            max: 2.5
        })),
        Just(Some(Activation::LeakyRelu { alpha: 0.125 })),
        Just(Some(Activation::HardSwish)),
    ]
}

fn weight_zero_points() -> impl Strategy<Value = WeightZeroPoints> {
    prop_oneof![
        1 => Just(WeightZeroPoints::Zero),
        1 => Just(WeightZeroPoints::PerTensor(-128)),
        1 => Just(WeightZeroPoints::PerTensor(127)),
        2 => any::<i8>().prop_map(WeightZeroPoints::PerTensor),
        3 => Just(WeightZeroPoints::PerChannel),
    ]
}

fn dynamic_quant() -> impl Strategy<Value = DynamicQuant> {
    (
        prop_oneof![Just(0u8), Just(255u8), any::<u8>()],
        any::<bool>(),
        weight_zero_points(),
        any::<bool>(),
        exact_activation(),
    )
        .prop_map(
            |(zero_point, per_channel, weight_zero_points, residual, activation)| DynamicQuant {
                zero_point,
                per_channel,
                weight_zero_points,
                residual,
                activation,
            },
        )
}

fn conv_attrs(case: &ConvCase) -> ConvAttrs {
    let [top, left, bottom, right] = case.pads;
    ConvAttrs {
        kernel: case.kernel.to_vec(),
        strides: case.strides.to_vec(),
        dilations: case.dilations.to_vec(),
        padding: Padding::Explicit(vec![top, left, bottom, right]),
        group: case.group,
    }
}

/// The op's weight parameters from the kernel's (one or `channels` scales and zero points,
/// independently): per channel along `axis` when either is.
fn weight_qparams(scales: &[f32], zero_points: &[i32], channels: usize, axis: usize) -> QParams {
    if scales.len() == 1 && zero_points.len() == 1 {
        return QParams::per_tensor(DType::I8, scales[0], zero_points[0]).expect("valid");
    }
    let pick = |len: usize, c: usize| if len == 1 { 0 } else { c };
    let scales = (0..channels)
        .map(|c| scales[pick(scales.len(), c)])
        .collect();
    let zero_points = (0..channels)
        .map(|c| zero_points[pick(zero_points.len(), c)])
        .collect();
    QParams::per_channel(DType::I8, axis, scales, zero_points).expect("valid")
}

fn check_dynamic_conv(
    target: &Target,
    case: &ConvCase,
    quant: &DynamicQuant,
) -> Result<(), TestCaseError> {
    if case.geometry().is_none() {
        return Ok(());
    }
    let attrs = conv_attrs(case);
    let (cin, cout) = (case.cin_g * case.group, case.cout_g * case.group);
    let x_dims = [case.batch, cin, case.in_hw[0], case.in_hw[1]];
    let w_dims = [cout, case.cin_g, case.kernel[0], case.kernel[1]];
    let g = ConvGeometry::new(&attrs, &x_dims, &w_dims).expect("valid geometry");
    let mut rng = Bytes(case.seed | 1);
    let x: Vec<u8> = (0..x_dims.iter().product()).map(|_| rng.u8()).collect();
    let w: Vec<i8> = (0..w_dims.iter().product()).map(|_| rng.i8()).collect();
    let x_scale = scale(&mut rng);
    let scales: Vec<f32> = (0..if quant.per_channel { cout } else { 1 })
        .map(|_| scale(&mut rng))
        .collect();
    let bias: Vec<f32> = (0..cout).map(|_| (unit(&mut rng) - 0.5) * 8.0).collect();
    let out_len = g.batch * cout * g.out_h * g.out_w;
    let y_dims = [g.batch, cout, g.out_h, g.out_w];
    let residual: Vec<f32> = (0..out_len).map(|_| (unit(&mut rng) - 0.5) * 8.0).collect();
    let zero_points = quant.weight_zero_points.values(cout, &mut rng);
    let params = DynamicConvParams {
        geometry: g,
        weight: &w,
        weight_scales: &scales,
        weight_zero_points: &zero_points,
        bias: &bias,
        residual: quant.residual,
        activation: quant.activation,
    };
    let lowering = lower_dynamic_qconv(target, &params).expect("lowers");
    let w_bytes: Vec<u8> = w.iter().map(|&v| v as u8).collect();
    let inputs = [
        x.clone(),
        f32_bytes(&[x_scale]),
        vec![quant.zero_point],
        w_bytes,
        f32_bytes(&bias),
        f32_bytes(&residual),
    ];
    let count = if quant.residual { 6 } else { 5 };
    let input_refs: Vec<&[u8]> = inputs[..count].iter().map(|v| &v[..]).collect();
    let got = run_node_bytes(target, &lowering, &input_refs, &[4 * out_len]).expect("runs");
    let op = Op::DynamicQuantizedConv {
        conv: attrs,
        w: weight_qparams(&scales, &zero_points, cout, 0),
        residual: quant.residual,
        activation: quant.activation,
    };
    let tensors = [
        u8_tensor(&x_dims, &x),
        Tensor::from_f32(&[], vec![x_scale]),
        u8_tensor(&[], &[quant.zero_point]),
        i8_tensor(&w_dims, &w),
        Tensor::from_f32(&[cout], bias.clone()),
        Tensor::from_f32(&y_dims, residual),
    ];
    let tensor_refs: Vec<&Tensor> = tensors[..count].iter().collect();
    let want = eval_op(&op, &tensor_refs).expect("the interpreter runs");
    same_f32(
        &bytes_f32(&got[0]),
        &f32_values(&want[0]),
        &format!("{g:?}\n{quant:?}"),
    )
}

fn conv_with_quant() -> impl Strategy<Value = (ConvCase, DynamicQuant)> {
    (conv_case(), dynamic_quant())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn dynamic_conv_vnni_equals_the_interpreter((case, quant) in conv_with_quant()) {
        check_dynamic_conv(&vnni(), &case, &quant)?;
    }

    #[test]
    fn dynamic_conv_without_vnni_equals_the_interpreter((case, quant) in conv_with_quant()) {
        check_dynamic_conv(&no_vnni(), &case, &quant)?;
    }

    /// aarch64's `sdot` kernel: the epilogue compensates the run-time `zx − 128`.
    #[test]
    fn dynamic_conv_sdot_equals_the_interpreter((case, quant) in conv_with_quant()) {
        with_dot_product(DotProduct::Sdot, || check_dynamic_conv(&vnni(), &case, &quant))?;
    }
}

#[test]
fn dynamic_conv_vector_packing_and_edges_equal_the_interpreter() {
    let base = ConvCase {
        batch: 2,
        group: 1,
        cin_g: 16,
        cout_g: 7,
        in_hw: [5, 30],
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        seed: 9,
    };
    let cases = [
        base.clone(),
        // Pointwise, channels not a multiple of four.
        ConvCase {
            cin_g: 13,
            cout_g: 9,
            kernel: [1, 1],
            pads: [0; 4],
            ..base.clone()
        },
        // Depthwise through the grouped path.
        ConvCase {
            group: 8,
            cin_g: 1,
            cout_g: 1,
            ..base
        },
    ];
    for target in [vnni(), no_vnni()] {
        for case in &cases {
            let runs = [
                (0u8, WeightZeroPoints::Zero),
                (255, WeightZeroPoints::PerChannel),
                (131, WeightZeroPoints::PerTensor(-128)),
                (7, WeightZeroPoints::PerTensor(127)),
            ];
            for (zero_point, weight_zero_points) in runs {
                let quant = DynamicQuant {
                    zero_point,
                    per_channel: true,
                    weight_zero_points,
                    residual: zero_point == 131,
                    activation: Some(Activation::Relu),
                };
                check_dynamic_conv(&target, case, &quant).expect("kernel equals the interpreter");
            }
        }
    }
}

/// Weight zero points are spelled in the kernel's name (`_zw`) and cost the input sums (in
/// scratch) only when one is nonzero; out-of-range or miscounted ones are refused.
#[test]
fn weight_zero_points_name_the_kernel_and_only_nonzero_ones_cost_sums() {
    let case = ConvCase {
        batch: 1,
        group: 1,
        cin_g: 4,
        cout_g: 4,
        in_hw: [3, 3],
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [0; 4],
        seed: 1,
    };
    let g = case.geometry().expect("valid geometry");
    let w = vec![1i8; 16];
    let conv = |zero_points: &[i32]| {
        let params = DynamicConvParams {
            geometry: g,
            weight: &w,
            weight_scales: &[0.5],
            weight_zero_points: zero_points,
            bias: &[0.0; 4],
            residual: false,
            activation: None,
        };
        lower_dynamic_qconv(&vnni(), &params)
    };
    let plain = conv(&[0, 0, 0, 0]).expect("lowers");
    let asymmetric = conv(&[0, 0, -128, 127]).expect("lowers");
    let plain_name = &plain.calls[0].kernel.spec().name;
    let asymmetric_name = &asymmetric.calls[0].kernel.spec().name;
    assert!(!plain_name.contains("_zw"), "{plain_name}");
    assert!(asymmetric_name.ends_with("f32_zw"), "{asymmetric_name}");
    let nr = Int8Choice::for_target(&vnni()).tile.cols as usize;
    assert_eq!(plain.scratch_bytes, packed_reduction(&g) * nr);
    assert_eq!(asymmetric.scratch_bytes, plain.scratch_bytes + 4 * nr);
    for bad in [&[128][..], &[-129], &[1, 2]] {
        let error = conv(bad).err().expect("refused").to_string();
        assert!(error.contains("weight zero point"), "{bad:?}: {error}");
    }
    let gemm = |zero_points: &[i32]| {
        let params = DynamicGemmParams {
            m: 3,
            k: 4,
            n: 4,
            weight: &w,
            weight_scales: &[0.5],
            weight_zero_points: zero_points,
            bias: &[0.0; 4],
            activation: None,
        };
        lower_dynamic_qgemm(&vnni(), &params)
    };
    let plain = gemm(&[0]).expect("lowers");
    let asymmetric = gemm(&[0, 0, -1, 0]).expect("lowers");
    assert!(!plain.calls[0].kernel.spec().name.contains("_zw"));
    assert!(asymmetric.calls[0].kernel.spec().name.ends_with("f32_zw"));
    assert_eq!((plain.scratch_bytes, asymmetric.scratch_bytes), (0, 4 * 3));
    assert!(gemm(&[1, 2]).is_err());
}

// ---------------------------------------------------------------- matrix product

#[derive(Clone, Debug)]
struct GemmCase {
    batch: Option<usize>,
    m: usize,
    k: usize,
    n: usize,
    seed: u64,
}

fn gemm_case() -> impl Strategy<Value = GemmCase> {
    (
        prop_oneof![Just(None), (1usize..=3).prop_map(Some)],
        1usize..=13,
        1usize..=70,
        1usize..=40,
        any::<u64>(),
    )
        .prop_map(|(batch, m, k, n, seed)| GemmCase {
            batch,
            m,
            k,
            n,
            seed,
        })
}

fn check_dynamic_gemm(
    target: &Target,
    case: &GemmCase,
    quant: &DynamicQuant,
) -> Result<(), TestCaseError> {
    let (m, k, n) = (case.m, case.k, case.n);
    let rows = m * case.batch.unwrap_or(1);
    let mut rng = Bytes(case.seed | 1);
    let a: Vec<u8> = (0..rows * k).map(|_| rng.u8()).collect();
    let b: Vec<i8> = (0..k * n).map(|_| rng.i8()).collect();
    let a_scale = scale(&mut rng);
    let scales: Vec<f32> = (0..if quant.per_channel { n } else { 1 })
        .map(|_| scale(&mut rng))
        .collect();
    let bias: Vec<f32> = (0..n).map(|_| (unit(&mut rng) - 0.5) * 8.0).collect();
    let zero_points = quant.weight_zero_points.values(n, &mut rng);
    let params = DynamicGemmParams {
        m: rows,
        k,
        n,
        weight: &b,
        weight_scales: &scales,
        weight_zero_points: &zero_points,
        bias: &bias,
        activation: quant.activation,
    };
    let lowering = lower_dynamic_qgemm(target, &params).expect("lowers");
    let b_bytes: Vec<u8> = b.iter().map(|&v| v as u8).collect();
    let inputs: [&[u8]; 5] = [
        &a,
        &f32_bytes(&[a_scale]),
        &[quant.zero_point],
        &b_bytes,
        &f32_bytes(&bias),
    ];
    let got = run_node_bytes(target, &lowering, &inputs, &[4 * rows * n]).expect("runs");
    let a_dims = match case.batch {
        Some(batch) => vec![batch, m, k],
        None => vec![m, k],
    };
    let op = Op::DynamicQuantizedMatMul {
        b: weight_qparams(&scales, &zero_points, n, 1),
        activation: quant.activation,
    };
    let tensors = [
        u8_tensor(&a_dims, &a),
        Tensor::from_f32(&[], vec![a_scale]),
        u8_tensor(&[], &[quant.zero_point]),
        i8_tensor(&[k, n], &b),
        Tensor::from_f32(&[n], bias.clone()),
    ];
    let tensor_refs: Vec<&Tensor> = tensors.iter().collect();
    let want = eval_op(&op, &tensor_refs).expect("the interpreter runs");
    same_f32(
        &bytes_f32(&got[0]),
        &f32_values(&want[0]),
        &format!("{case:?}\n{quant:?}"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn dynamic_gemm_vnni_equals_the_interpreter(case in gemm_case(), quant in dynamic_quant()) {
        check_dynamic_gemm(&vnni(), &case, &quant)?;
    }

    #[test]
    fn dynamic_gemm_without_vnni_equals_the_interpreter(
        case in gemm_case(),
        quant in dynamic_quant(),
    ) {
        check_dynamic_gemm(&no_vnni(), &case, &quant)?;
    }

    #[test]
    fn dynamic_gemm_sdot_equals_the_interpreter(case in gemm_case(), quant in dynamic_quant()) {
        with_dot_product(DotProduct::Sdot, || check_dynamic_gemm(&vnni(), &case, &quant))?;
    }
}

/// A matrix product with every edge at once (rows left over by the 4- and 3-row blocks,
/// `k` past the last 16-byte row-sum chunk and group of four, a narrow last column panel)
/// and weight zero points, on every dot product.
#[test]
fn dynamic_gemm_edges_with_weight_zero_points_equal_the_interpreter() {
    let case = GemmCase {
        batch: Some(1),
        m: 9,
        k: 39,
        n: 13,
        seed: 5,
    };
    let runs = [
        (255u8, WeightZeroPoints::PerChannel),
        (0, WeightZeroPoints::PerTensor(-128)),
        (128, WeightZeroPoints::PerTensor(127)),
    ];
    for dot in [DotProduct::Vnni, DotProduct::Widening, DotProduct::Sdot] {
        for (zero_point, weight_zero_points) in runs {
            let quant = DynamicQuant {
                zero_point,
                per_channel: zero_point != 0,
                weight_zero_points,
                residual: false,
                activation: Some(Activation::HardSwish),
            };
            with_dot_product(dot, || check_dynamic_gemm(&vnni(), &case, &quant))
                .unwrap_or_else(|e| panic!("{dot:?}: {e}"));
        }
    }
}

#[test]
fn dynamic_kernels_name_their_epilogue_and_inner_loops_use_vpdpbusd() {
    let case = ConvCase {
        batch: 1,
        group: 1,
        cin_g: 64,
        cout_g: 64,
        in_hw: [8, 8],
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        seed: 7,
    };
    let g = case.geometry().expect("valid geometry");
    let w = vec![1i8; 64 * g.reduction()];
    let params = DynamicConvParams {
        geometry: g,
        weight: &w,
        weight_scales: &[0.01],
        weight_zero_points: &[0],
        bias: &[0.0; 64],
        residual: true,
        activation: Some(Activation::Relu),
    };
    let target = vnni();
    let lowering = lower_dynamic_qconv(&target, &params).expect("lowers");
    let name = &lowering.calls[0].kernel.spec().name;
    assert!(
        name.contains("dqconv") && name.ends_with("f32_relu_r"),
        "{name}"
    );
    let code = super::tests::disassemble(&target, &lowering);
    let choice = Int8Choice::for_target(&target);
    let per_loop = (choice.tile.rows * choice.tile.cols / LANES * choice.k_unroll) as usize;
    let count = code.matches("vpdpbusd").count();
    assert!(count >= per_loop, "{count} vpdpbusd, expected {per_loop}");
}
