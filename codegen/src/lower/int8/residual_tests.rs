//! Weight zero points and the residual epilogue against the interpreter itself
//! (`qcc_ir::eval::eval_op` on `Op::QuantizedConv` / `Op::QuantizedMatMul`), bit for bit, on
//! the VNNI target and the widening fallback. The multipliers come from the ops' `QParams`
//! through `qcc_ir::op::{requant_multipliers, residual_multipliers}`, as in a model.

use proptest::prelude::*;
use qcc_ir::eval::eval_op;
use qcc_ir::op::{requant_multipliers, residual_multipliers};
use qcc_ir::{ConvAttrs, DType, Op, Padding, QParams, Tensor, TensorType};

use super::tests::{conv_case, no_vnni, same_bytes, vnni, Bytes, ConvCase};
use super::*;
use crate::lower::node::ConvGeometry;
use crate::model::run_node_bytes;

/// The quantization of one case, as the realized op carries it.
#[derive(Clone, Debug)]
struct Realized {
    x: QParams,
    w: QParams,
    y: QParams,
    /// With the residual's parameters (per tensor, u8).
    residual: Option<QParams>,
    clamp: Option<(i32, i32)>,
    with_bias: bool,
}

/// Scales chosen through the multipliers they imply: `M = s_x·s_w / s_y = 2^-out_exp` and
/// `R = s_r / (s_x·s_w) = 2^res_exp`, the weight scale per channel varied by `spread`.
#[derive(Clone, Debug)]
struct Choice {
    zx: u8,
    /// Weight zero points; one value means per tensor.
    zw: Vec<i32>,
    spread: Vec<f64>,
    out_exp: f64,
    y_signed: bool,
    zy: u8,
    residual: Option<(u8, f64)>,
    relu: bool,
    with_bias: bool,
}

impl Choice {
    fn realize(&self) -> Realized {
        let s_x = 0.02f32;
        let s_w: Vec<f32> = self
            .spread
            .iter()
            .map(|f| (0.003 * 2f64.powf(*f)) as f32)
            .collect();
        let s_y = (f64::from(s_x) * f64::from(s_w[0]) * 2f64.powf(self.out_exp)) as f32;
        let x = QParams::per_tensor(DType::U8, s_x, i32::from(self.zx)).expect("x params");
        let w = if self.zw.len() == 1 {
            QParams::per_tensor(DType::I8, s_w[0], self.zw[0])
        } else {
            QParams::per_channel(DType::I8, 0, s_w, self.zw.clone())
        }
        .expect("w params");
        let (y_dtype, zy) = if self.y_signed {
            (DType::I8, i32::from(self.zy as i8))
        } else {
            (DType::U8, i32::from(self.zy))
        };
        let y = QParams::per_tensor(y_dtype, s_y, zy).expect("y params");
        let residual = self.residual.map(|(zr, exp)| {
            let s_r = (f64::from(s_x) * 0.003 * 2f64.powf(exp)) as f32;
            QParams::per_tensor(DType::U8, s_r, i32::from(zr)).expect("r params")
        });
        let max = if self.y_signed { 127 } else { 255 };
        Realized {
            x,
            w,
            y,
            residual,
            clamp: self.relu.then_some((zy, max)),
            with_bias: self.with_bias || self.residual.is_some(),
        }
    }
}

fn choice_strategy(channels: usize, residual: bool) -> impl Strategy<Value = Choice> {
    let zero_point = prop_oneof![Just(-128i32), Just(127), Just(0), -128i32..=127];
    let per_channel = any::<bool>();
    (
        prop_oneof![Just(0u8), Just(255), any::<u8>()],
        per_channel,
        prop::collection::vec(zero_point, channels),
        prop::collection::vec(-1.0f64..1.0, channels),
        prop_oneof![3 => 8.0f64..15.0, 1 => -0.5f64..28.0],
        (any::<bool>(), any::<u8>()),
        (
            prop_oneof![Just(0u8), Just(255), any::<u8>()],
            // Up to 2^22: every scaled residual fits i32 (2^23 and up may not).
            prop_oneof![3 => 0.0f64..12.0, 1 => -20.0f64..22.0],
        ),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            move |(zx, per_channel, mut zw, mut spread, out_exp, y, r, (relu, with_bias))| {
                if !per_channel {
                    zw.truncate(1);
                    spread.truncate(1);
                }
                Choice {
                    zx,
                    zw,
                    spread,
                    out_exp,
                    y_signed: y.0,
                    zy: y.1,
                    residual: residual.then_some(r),
                    relu,
                    with_bias,
                }
            },
        )
}

fn tensor(dtype: DType, dims: &[usize], bytes: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(dtype, dims), bytes).expect("byte count matches")
}

fn i8_bytes(values: &[i8]) -> Vec<u8> {
    values.iter().map(|&v| v as u8).collect()
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
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

/// The inputs of one convolution.
struct ConvData {
    x: Vec<u8>,
    w: Vec<i8>,
    bias: Vec<i32>,
    r: Vec<u8>,
}

impl ConvData {
    fn random(g: &ConvGeometry, seed: u64) -> ConvData {
        let mut bytes = Bytes(seed | 1);
        ConvData {
            x: (0..g.batch * g.in_channels * g.in_h * g.in_w)
                .map(|_| bytes.u8())
                .collect(),
            w: (0..g.out_channels * g.reduction())
                .map(|_| bytes.i8())
                .collect(),
            bias: (0..g.out_channels).map(|_| bytes.bias()).collect(),
            r: (0..g.batch * g.out_channels * g.out_h * g.out_w)
                .map(|_| bytes.u8())
                .collect(),
        }
    }
}

/// (kernel output, interpreter output) of a QuantizedConv.
fn run_conv(
    target: &Target,
    case: &ConvCase,
    g: &ConvGeometry,
    data: &ConvData,
    q: &Realized,
) -> Result<(Vec<u8>, Vec<u8>), KernelError> {
    let requant = requant_multipliers(&q.x, &q.w, &q.y).expect("output multipliers");
    let rescale = q
        .residual
        .as_ref()
        .map(|r| residual_multipliers(&q.x, &q.w, r).expect("residual multipliers"));
    let bias = q.with_bias.then_some(&data.bias[..]);
    let params = QConvParams {
        geometry: *g,
        weight: &data.w,
        bias,
        requant: &requant,
        input_zero_point: q.x.zero_points()[0],
        weight_zero_points: Some(q.w.zero_points()),
        residual: q
            .residual
            .as_ref()
            .zip(rescale.as_ref())
            .map(|(r, multipliers)| ResidualQuant {
                zero_point: r.zero_points()[0],
                multipliers,
            }),
        output: OutputQuant {
            dtype: q.y.dtype(),
            zero_point: q.y.zero_points()[0],
            clamp: q.clamp,
        },
    };
    let lowering = lower_qconv(target, &params)?;
    let x_dims = [g.batch, g.in_channels, g.in_h, g.in_w];
    let w_dims = [
        g.out_channels,
        g.in_channels / g.group,
        g.kernel_h,
        g.kernel_w,
    ];
    let y_dims = [g.batch, g.out_channels, g.out_h, g.out_w];
    let x = tensor(DType::U8, &x_dims, &data.x);
    let w = tensor(DType::I8, &w_dims, &i8_bytes(&data.w));
    let zeros = vec![0; g.out_channels];
    let bias_tensor = tensor(
        DType::I32,
        &[g.out_channels],
        &i32_bytes(bias.unwrap_or(&zeros)),
    );
    let r = tensor(DType::U8, &y_dims, &data.r);
    let op = Op::QuantizedConv {
        conv: attrs(case),
        x: q.x.clone(),
        w: q.w.clone(),
        y: q.y.clone(),
        residual: q.residual.clone(),
        clamp: q.clamp,
    };
    let mut inputs = vec![&x, &w];
    if bias.is_some() || q.residual.is_some() {
        inputs.push(&bias_tensor);
    }
    if q.residual.is_some() {
        inputs.push(&r);
    }
    let want = eval_op(&op, &inputs).expect("interpreter runs");
    let want = want.first().map(Tensor::to_le_bytes).unwrap_or_default();
    let w_bytes = i8_bytes(&data.w);
    let bias_bytes = i32_bytes(&data.bias);
    let node_inputs: Vec<&[u8]> = vec![&data.x, &w_bytes, &bias_bytes, &data.r];
    let got = run_node_bytes(target, &lowering, &node_inputs, &[want.len()]).expect("node runs");
    Ok((got.into_iter().next().unwrap_or_default(), want))
}

fn check_conv(target: &Target, case: &ConvCase, choice: &Choice) -> Result<(), TestCaseError> {
    let Some(g) = case.geometry() else {
        return Ok(());
    };
    let data = ConvData::random(&g, case.seed);
    let q = choice.realize();
    let (got, want) = run_conv(target, case, &g, &data, &q)
        .map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
    same_bytes(&got, &want, &format!("{} {g:?}\n{choice:?}", target.name()))
}

fn conv_with(residual: bool) -> impl Strategy<Value = (ConvCase, Choice)> {
    conv_case().prop_flat_map(move |case| {
        let channels = case.cout_g * case.group;
        (Just(case), choice_strategy(channels, residual))
    })
}

/// One matrix product: `a [m, k]` u8, `b [k, n]` s8 (given to the kernel transposed when
/// `trans_b`).
#[derive(Clone, Debug)]
struct GemmCase {
    m: usize,
    k: usize,
    n: usize,
    trans_b: bool,
    seed: u64,
}

fn check_gemm(target: &Target, case: &GemmCase, choice: &Choice) -> Result<(), TestCaseError> {
    let (m, k, n) = (case.m, case.k, case.n);
    let mut bytes = Bytes(case.seed | 1);
    let a: Vec<u8> = (0..m * k).map(|_| bytes.u8()).collect();
    let b: Vec<i8> = (0..k * n).map(|_| bytes.i8()).collect();
    let bias: Vec<i32> = (0..n).map(|_| bytes.bias()).collect();
    let q = choice.realize();
    // QuantizedMatMul's weights are per column, along axis 1.
    let w = if q.w.is_per_tensor() {
        q.w.clone()
    } else {
        QParams::per_channel(
            DType::I8,
            1,
            q.w.scales().to_vec(),
            q.w.zero_points().to_vec(),
        )
        .expect("b params")
    };
    let requant = requant_multipliers(&q.x, &w, &q.y).expect("output multipliers");
    let kernel_weight: Vec<i8> = if case.trans_b {
        (0..n * k).map(|i| b[(i % k) * n + i / k]).collect()
    } else {
        b.clone()
    };
    let bias = q.with_bias.then_some(&bias[..]);
    let params = QGemmParams {
        m,
        k,
        n,
        weight: &kernel_weight,
        trans_b: case.trans_b,
        bias,
        requant: &requant,
        input_zero_point: q.x.zero_points()[0],
        weight_zero_points: Some(w.zero_points()),
        output: OutputQuant {
            dtype: q.y.dtype(),
            zero_point: q.y.zero_points()[0],
            clamp: q.clamp,
        },
    };
    let lowering = lower_qgemm(target, &params)
        .map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
    let op = Op::QuantizedMatMul {
        a: q.x.clone(),
        b: w,
        y: q.y.clone(),
        clamp: q.clamp,
    };
    let a_tensor = tensor(DType::U8, &[m, k], &a);
    let b_tensor = tensor(DType::I8, &[k, n], &i8_bytes(&b));
    let bias_tensor = bias.map(|bias| tensor(DType::I32, &[n], &i32_bytes(bias)));
    let mut inputs = vec![&a_tensor, &b_tensor];
    inputs.extend(bias_tensor.as_ref());
    let want = eval_op(&op, &inputs).expect("interpreter runs");
    let want = want.first().map(Tensor::to_le_bytes).unwrap_or_default();
    let got = run_node_bytes(target, &lowering, &[&a], &[m * n]).expect("node runs");
    let got = got.into_iter().next().unwrap_or_default();
    same_bytes(
        &got,
        &want,
        &format!("{} {case:?}\n{choice:?}", target.name()),
    )
}

fn gemm_with_choice() -> impl Strategy<Value = (GemmCase, Choice)> {
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
            (Just(case), choice_strategy(n, false))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn qconv_weight_zero_points_equal_interpreter((case, choice) in conv_with(false)) {
        check_conv(&vnni(), &case, &choice)?;
        check_conv(&no_vnni(), &case, &choice)?;
    }

    #[test]
    fn qconv_residual_equals_interpreter((case, choice) in conv_with(true)) {
        check_conv(&vnni(), &case, &choice)?;
        check_conv(&no_vnni(), &case, &choice)?;
    }

    #[test]
    fn qgemm_weight_zero_points_equal_interpreter((case, choice) in gemm_with_choice()) {
        check_gemm(&vnni(), &case, &choice)?;
        check_gemm(&no_vnni(), &case, &choice)?;
    }

    /// `sdot`'s flipped activations with the weight-zero-point sums and the residual.
    #[test]
    fn qconv_extras_sdot_equal_interpreter(
        (case, choice) in conv_with(false),
        (residual_case, residual_choice) in conv_with(true),
    ) {
        with_dot_product(DotProduct::Sdot, || {
            check_conv(&vnni(), &case, &choice)?;
            check_conv(&vnni(), &residual_case, &residual_choice)
        })?;
    }

    #[test]
    fn qgemm_weight_zero_points_sdot_equal_interpreter((case, choice) in gemm_with_choice()) {
        with_dot_product(DotProduct::Sdot, || check_gemm(&vnni(), &case, &choice))?;
    }
}

fn fixed_case(group: usize, cin_g: usize, cout_g: usize, kernel: usize, pad: usize) -> ConvCase {
    ConvCase {
        batch: 2,
        group,
        cin_g,
        cout_g,
        in_hw: [5, 19],
        kernel: [kernel, kernel],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [pad; 4],
        seed: 11,
    }
}

/// Inputs 255 or 0 against weights and weight zero points at −128 and 127 (the largest
/// `|x − zx|·|w − zw|`, 255·255), per tensor and per channel, grouped and not, with and
/// without a residual at its extremes.
#[test]
fn extreme_zero_points_equal_interpreter() {
    for target in [vnni(), no_vnni()] {
        for case in [
            fixed_case(1, 9, 7, 3, 1),
            fixed_case(3, 4, 5, 3, 1),
            fixed_case(1, 16, 13, 1, 0),
        ] {
            let g = case.geometry().expect("valid geometry");
            for (x_byte, w_value, zw) in [
                (255u8, -128i8, 127),
                (255, 127, -128),
                (0, -128, 127),
                (255, -128, -128),
            ] {
                let mut data = ConvData::random(&g, 3);
                data.x.fill(x_byte);
                data.w.fill(w_value);
                for (zr, r_byte) in [(0u8, 255u8), (255, 0), (128, 255)] {
                    data.r.fill(r_byte);
                    for per_channel in [false, true] {
                        let channels = if per_channel { g.out_channels } else { 1 };
                        let choice = Choice {
                            zx: 0,
                            zw: vec![zw; channels],
                            spread: vec![0.0; channels],
                            // |acc| reaches 255·255·K: scaled to about ±100.
                            out_exp: (65025.0 * g.reduction() as f64 / 100.0).log2(),
                            y_signed: true,
                            zy: 0,
                            residual: Some((zr, 16.0)),
                            relu: false,
                            with_bias: true,
                        };
                        let q = choice.realize();
                        let (got, want) = run_conv(&target, &case, &g, &data, &q).expect("lowers");
                        same_bytes(&got, &want, &format!("{} {choice:?}", target.name()))
                            .expect("kernel equals the interpreter");
                    }
                }
            }
        }
    }
}

/// Accumulators at the ends of i32 plus residuals that push them over: the sum saturates
/// (a wrapping sum would flip the output from one end of the range to the other).
#[test]
fn residual_sum_saturates_like_the_interpreter() {
    let case = fixed_case(1, 1, 6, 1, 0);
    let g = case.geometry().expect("valid geometry");
    let mut data = ConvData::random(&g, 5);
    data.bias = vec![
        i32::MAX,
        i32::MAX - 5,
        i32::MIN,
        i32::MIN + 5,
        1 << 30,
        -(1 << 30),
    ];
    data.w.fill(0);
    for target in [vnni(), no_vnni()] {
        for (zr, exp) in [(0u8, 22.9), (255, 22.9), (128, 22.0), (7, 3.0)] {
            let choice = Choice {
                zx: 17,
                zw: vec![0],
                spread: vec![0.0],
                out_exp: 24.0,
                y_signed: false,
                zy: 128,
                residual: Some((zr, exp)),
                relu: false,
                with_bias: true,
            };
            let q = choice.realize();
            let (got, want) = run_conv(&target, &case, &g, &data, &q).expect("lowers");
            same_bytes(&got, &want, &format!("{} {choice:?}", target.name()))
                .expect("kernel equals the interpreter");
        }
    }
}

/// A residual multiplier whose scaled residuals leave i32 is refused with a reason, not
/// computed wrongly.
#[test]
fn residual_multiplier_beyond_i32_is_unsupported() {
    let case = fixed_case(1, 2, 3, 1, 0);
    let g = case.geometry().expect("valid geometry");
    let data = ConvData::random(&g, 5);
    let choice = Choice {
        zx: 0,
        zw: vec![0],
        spread: vec![0.0],
        out_exp: 10.0,
        y_signed: false,
        zy: 0,
        residual: Some((0, 25.0)),
        relu: false,
        with_bias: true,
    };
    let q = choice.realize();
    match run_conv(&vnni(), &case, &g, &data, &q) {
        Err(KernelError::Unsupported { reason, .. }) => {
            assert!(reason.contains("beyond i32"), "{reason}")
        }
        other => panic!(
            "expected an unsupported residual, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// All-zero weight zero points are the plain kernel (same symbol, no extra blob).
#[test]
fn zero_weight_zero_points_keep_the_plain_kernel() {
    let case = fixed_case(1, 8, 8, 3, 1);
    let g = case.geometry().expect("valid geometry");
    let data = ConvData::random(&g, 5);
    let requant = [qcc_ir::requant::FixedPoint::from_real(0.001).expect("in range")];
    let base = QConvParams {
        geometry: g,
        weight: &data.w,
        bias: None,
        requant: &requant,
        input_zero_point: 3,
        weight_zero_points: None,
        residual: None,
        output: OutputQuant {
            dtype: DType::U8,
            zero_point: 0,
            clamp: None,
        },
    };
    let zeros = vec![0; g.out_channels];
    let with_zeros = QConvParams {
        weight_zero_points: Some(&zeros),
        ..base
    };
    let plain = lower_qconv(&vnni(), &base).expect("lowers");
    let zero = lower_qconv(&vnni(), &with_zeros).expect("lowers");
    assert_eq!(
        plain.calls[0].kernel.spec().name,
        zero.calls[0].kernel.spec().name
    );
    assert_eq!(zero.bytes.len(), 2);
    let ones = vec![1; g.out_channels];
    let with_ones = QConvParams {
        weight_zero_points: Some(&ones),
        ..base
    };
    let one = lower_qconv(&vnni(), &with_ones).expect("lowers");
    assert_ne!(
        plain.calls[0].kernel.spec().name,
        one.calls[0].kernel.spec().name
    );
    let bad = vec![128; g.out_channels];
    let with_bad = QConvParams {
        weight_zero_points: Some(&bad),
        ..base
    };
    assert!(lower_qconv(&vnni(), &with_bad).is_err());
}
