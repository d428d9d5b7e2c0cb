//! QuantizedConv and QuantizedMatMul against straightforward scalar loops that apply the
//! policy written out in the test (multipliers from f64 ratios, `FixedPoint::apply`, zero
//! point, saturation, clamp), and the type checks inference makes.

use super::super::test_util::*;
use crate::dtype::TensorType;
use crate::infer::infer_types;
use crate::op::{ConvAttrs, Op, Padding};
use crate::quant::QParams;
use crate::requant::FixedPoint;
use crate::{DType, Tensor};

/// xorshift64: deterministic random cases without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    /// A value of `dtype`, the type's extremes a third of the time.
    pub(crate) fn value(&mut self, dtype: DType) -> i32 {
        let (lo, hi) = if dtype == DType::U8 {
            (0, 255)
        } else {
            (-128, 127)
        };
        match self.below(6) {
            0 => lo,
            1 => hi,
            _ => self.range(lo, hi),
        }
    }
    pub(crate) fn scale(&mut self) -> f32 {
        2f32.powf(-(self.below(1200) as f32) / 100.0)
    }
    pub(crate) fn dtype(&mut self) -> DType {
        if self.below(2) == 0 {
            DType::U8
        } else {
            DType::I8
        }
    }
}

pub(crate) fn tensor(dtype: DType, dims: &[usize], v: &[i32]) -> Tensor {
    match dtype {
        DType::U8 => u8s(dims, &v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        DType::I8 => i8s(dims, &v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
        _ => i32s(dims, v),
    }
}

pub(crate) fn ints(t: &Tensor) -> Vec<i32> {
    values(t).into_iter().map(|v| v as i32).collect()
}

/// The policy as the op documents it, one output element.
fn reference_output(acc: i64, s_x: f32, s_w: f32, y: &QParams, clamp: Option<(i32, i32)>) -> i32 {
    let acc = acc as i32; // the accumulator wraps like an i32
    let m = FixedPoint::from_real(s_x as f64 * s_w as f64 / y.scales()[0] as f64).unwrap();
    let (lo, hi) = if y.dtype() == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    };
    let (lo, hi) = clamp.map_or((lo, hi), |(a, b)| (lo.max(a), hi.min(b)));
    (m.apply(acc) + y.zero_points()[0] as i64).clamp(lo as i64, hi as i64) as i32
}

fn random_weights_params(rng: &mut Rng, channels: usize, axis: usize) -> QParams {
    if rng.below(2) == 0 {
        QParams::per_tensor(DType::I8, rng.scale(), rng.range(-3, 3)).unwrap()
    } else {
        let scales = (0..channels).map(|_| rng.scale()).collect();
        let zps = (0..channels).map(|_| rng.range(-2, 2)).collect();
        QParams::per_channel(DType::I8, axis, scales, zps).unwrap()
    }
}

pub(crate) fn random_clamp(rng: &mut Rng, y: &QParams) -> Option<(i32, i32)> {
    let zp = y.zero_points()[0];
    let max = if y.dtype() == DType::U8 { 255 } else { 127 };
    match rng.below(3) {
        0 => None,
        1 => Some((zp, max)),
        _ => Some((zp, rng.range(zp, max))),
    }
}

struct ConvCase {
    op: Op,
    inputs: Vec<Tensor>,
    want: Vec<i32>,
    dims: Vec<usize>,
}

/// A random 2-D QuantizedConv and its output by direct summation.
fn random_conv_case(rng: &mut Rng) -> ConvCase {
    let batch = 1 + rng.below(2);
    let group = [1, 1, 2, 3][rng.below(4)];
    let (cin, cout) = (group * (1 + rng.below(3)), group * (1 + rng.below(3)));
    let kernel = [1 + rng.below(3), 1 + rng.below(3)];
    let strides = [1 + rng.below(2), 1 + rng.below(2)];
    let dilations = [1 + rng.below(2), 1 + rng.below(2)];
    let pads: Vec<usize> = (0..4).map(|_| rng.below(3)).collect();
    let mut input = [0; 2];
    let mut output = [0; 2];
    for d in 0..2 {
        let span = (kernel[d] - 1) * dilations[d] + 1;
        input[d] = (span + rng.below(5))
            .saturating_sub(pads[d] + pads[d + 2])
            .max(1);
        output[d] = (input[d] + pads[d] + pads[d + 2] - span) / strides[d] + 1;
    }
    let (xt, yt) = (rng.dtype(), rng.dtype());
    let qx = QParams::per_tensor(xt, rng.scale(), rng.value(xt)).unwrap();
    let qw = random_weights_params(rng, cout, 0);
    let qy = QParams::per_tensor(yt, rng.scale(), rng.value(yt)).unwrap();
    let clamp = random_clamp(rng, &qy);
    let cin_g = cin / group;
    let x_dims = [batch, cin, input[0], input[1]];
    let w_dims = [cout, cin_g, kernel[0], kernel[1]];
    let x: Vec<i32> = (0..x_dims.iter().product())
        .map(|_| rng.value(xt))
        .collect();
    let w: Vec<i32> = (0..w_dims.iter().product())
        .map(|_| rng.value(DType::I8))
        .collect();
    let bias: Option<Vec<i32>> =
        (rng.below(2) == 0).then(|| (0..cout).map(|_| rng.range(-5000, 5000)).collect());
    let mut want = Vec::new();
    for n in 0..batch {
        for co in 0..cout {
            let g = co / (cout / group);
            let (s_w, zp_w) = qw.channel(co);
            for oy in 0..output[0] {
                for ox in 0..output[1] {
                    let mut acc = bias.as_ref().map_or(0, |b| b[co]) as i64;
                    for ci in 0..cin_g {
                        for ky in 0..kernel[0] {
                            for kx in 0..kernel[1] {
                                let iy =
                                    (oy * strides[0] + ky * dilations[0]) as i64 - pads[0] as i64;
                                let ix =
                                    (ox * strides[1] + kx * dilations[1]) as i64 - pads[1] as i64;
                                if iy < 0
                                    || ix < 0
                                    || iy >= input[0] as i64
                                    || ix >= input[1] as i64
                                {
                                    continue; // padding reads the zero point
                                }
                                let c = g * cin_g + ci;
                                let xi = ((n * cin + c) * input[0] + iy as usize) * input[1]
                                    + ix as usize;
                                let wi = ((co * cin_g + ci) * kernel[0] + ky) * kernel[1] + kx;
                                acc += (x[xi] - qx.zero_points()[0]) as i64 * (w[wi] - zp_w) as i64;
                            }
                        }
                    }
                    want.push(reference_output(acc, qx.scales()[0], s_w, &qy, clamp));
                }
            }
        }
    }
    let mut inputs = vec![tensor(xt, &x_dims, &x), tensor(DType::I8, &w_dims, &w)];
    if let Some(b) = &bias {
        inputs.push(i32s(&[cout], b));
    }
    let op = Op::QuantizedConv {
        conv: ConvAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            padding: Padding::Explicit(pads),
            group,
        },
        x: qx,
        w: qw,
        y: qy,
        residual: None,
        clamp,
    };
    ConvCase {
        op,
        inputs,
        want,
        dims: vec![batch, cout, output[0], output[1]],
    }
}

#[test]
fn quantized_conv_matches_scalar_reference_on_random_cases() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..300 {
        let c = random_conv_case(&mut rng);
        let refs: Vec<&Tensor> = c.inputs.iter().collect();
        let y = run1(&c.op, &refs);
        assert_eq!(y.dims(), &c.dims[..], "case {case}: {:?}", c.op);
        assert_eq!(ints(&y), c.want, "case {case}: {:?}", c.op);
    }
}

fn conv1x1(x: QParams, w: QParams, y: QParams, clamp: Option<(i32, i32)>) -> Op {
    Op::QuantizedConv {
        conv: ConvAttrs {
            kernel: vec![1],
            strides: vec![1],
            dilations: vec![1],
            padding: Padding::Explicit(vec![0, 0]),
            group: 1,
        },
        x,
        w,
        y,
        residual: None,
        clamp,
    }
}

#[test]
fn quantized_conv_rounds_half_up_where_qlinear_conv_rounds_to_even() {
    // M = 1 · 0.5 / 1 = 0.5 exactly: acc 5 → 2.5 → 3 (QLinearConv gives 2), −5 → −2.
    let op = conv1x1(
        QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        QParams::per_tensor(DType::I8, 0.5, 0).unwrap(),
        QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        None,
    );
    let x = i8s(&[1, 1, 4], &[5, -5, 7, -7]);
    let w = i8s(&[1, 1, 1], &[1]);
    assert_eq!(run1(&op, &[&x, &w]), i8s(&[1, 1, 4], &[3, -2, 4, -3]));
}

#[test]
fn quantized_conv_saturates_at_the_extremes() {
    // 255 × −128 and 255 × 127 over 4 taps, large multiplier: both ends saturate.
    let x = u8s(&[1, 4, 1], &[255; 4]);
    let w = i8s(&[2, 4, 1], &[-128, -128, -128, -128, 127, 127, 127, 127]);
    for (yt, zp, want) in [(DType::U8, 128, [0u8, 255]), (DType::U8, 0, [0, 255])] {
        let op = conv1x1(
            QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
            QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
            QParams::per_tensor(yt, 1.0, zp).unwrap(),
            None,
        );
        assert_eq!(run1(&op, &[&x, &w]), u8s(&[1, 2, 1], &want));
    }
    let op = conv1x1(
        QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
        QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        None,
    );
    assert_eq!(run1(&op, &[&x, &w]), i8s(&[1, 2, 1], &[-128, 127]));
    // A clamp (ReLU6 with s_y = 1: [zp, zp + 6]) bounds the result from both sides.
    let op = conv1x1(
        QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
        QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        QParams::per_tensor(DType::U8, 1.0, 10).unwrap(),
        Some((10, 16)),
    );
    assert_eq!(run1(&op, &[&x, &w]), u8s(&[1, 2, 1], &[10, 16]));
}

#[test]
fn quantized_conv_adds_the_residual_in_the_accumulator_scale() {
    // s_x·s_w = 0.25 per channel 0, 0.5 per channel 1; s_r = 1: R = [4, 2]; s_y = 1: M = s_x·s_w.
    let op = Op::QuantizedConv {
        conv: ConvAttrs {
            kernel: vec![1],
            strides: vec![1],
            dilations: vec![1],
            padding: Padding::Explicit(vec![0, 0]),
            group: 1,
        },
        x: QParams::per_tensor(DType::U8, 0.5, 100).unwrap(),
        w: QParams::per_channel(DType::I8, 0, vec![0.5, 1.0], vec![0, 0]).unwrap(),
        y: QParams::per_tensor(DType::I8, 1.0, -10).unwrap(),
        residual: Some(QParams::per_tensor(DType::U8, 1.0, 3).unwrap()),
        clamp: None,
    };
    let x = u8s(&[1, 1, 2], &[104, 90]); // centered 4, −10
    let w = i8s(&[2, 1, 1], &[3, -1]);
    let bias = i32s(&[2], &[1, 2]);
    let r = u8s(&[1, 2, 2], &[5, 3, 255, 0]); // centered 2, 0, 252, −3
                                              // Channel 0: acc = [12 + 1, −30 + 1] + 4·[2, 0] = [21, −29]; ·0.25 → [5.25, −7.25] → [5, −7].
                                              // Channel 1: acc = [−4 + 2, 10 + 2] + 2·[252, −3] = [502, 6]; ·0.5 → [251, 3] → sat 127.
    let y = run1(&op, &[&x, &w, &bias, &r]);
    assert_eq!(y, i8s(&[1, 2, 2], &[-5, -17, 127, -7]));
}

#[test]
fn quantized_matmul_matches_scalar_reference_on_random_cases() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for case in 0..300 {
        let batch: Vec<usize> = (0..rng.below(2)).map(|_| 1 + rng.below(3)).collect();
        let (m, k, n) = (1 + rng.below(5), 1 + rng.below(40), 1 + rng.below(6));
        let (at, yt) = (rng.dtype(), rng.dtype());
        let qa = QParams::per_tensor(at, rng.scale(), rng.value(at)).unwrap();
        let qb = random_weights_params(&mut rng, n, 1);
        let qy = QParams::per_tensor(yt, rng.scale(), rng.value(yt)).unwrap();
        let clamp = random_clamp(&mut rng, &qy);
        let mut a_dims = batch.clone();
        a_dims.extend([m, k]);
        let a: Vec<i32> = (0..a_dims.iter().product())
            .map(|_| rng.value(at))
            .collect();
        let b: Vec<i32> = (0..k * n).map(|_| rng.value(DType::I8)).collect();
        let bias: Option<Vec<i32>> =
            (rng.below(2) == 0).then(|| (0..n).map(|_| rng.range(-100_000, 100_000)).collect());
        let rows = a.len() / k;
        let mut want = Vec::new();
        for row in 0..rows {
            for col in 0..n {
                let (s_b, zp_b) = qb.channel(col);
                let mut acc = bias.as_ref().map_or(0, |v| v[col]) as i64;
                for i in 0..k {
                    acc += (a[row * k + i] - qa.zero_points()[0]) as i64
                        * (b[i * n + col] - zp_b) as i64;
                }
                want.push(reference_output(acc, qa.scales()[0], s_b, &qy, clamp));
            }
        }
        let op = Op::QuantizedMatMul {
            a: qa,
            b: qb,
            y: qy,
            clamp,
        };
        let mut inputs = vec![tensor(at, &a_dims, &a), tensor(DType::I8, &[k, n], &b)];
        if let Some(v) = &bias {
            inputs.push(i32s(&[n], v));
        }
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let y = run1(&op, &refs);
        let mut dims = batch.clone();
        dims.extend([m, n]);
        assert_eq!(y.dims(), &dims[..], "case {case}: {op:?}");
        assert_eq!(ints(&y), want, "case {case}: {op:?}");
    }
}

#[test]
fn quantized_matmul_per_column_multipliers_and_bias() {
    let op = Op::QuantizedMatMul {
        a: QParams::per_tensor(DType::U8, 1.0, 128).unwrap(),
        b: QParams::per_channel(DType::I8, 1, vec![0.5, 0.25], vec![0, 0]).unwrap(),
        y: QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
        clamp: None,
    };
    let a = u8s(&[1, 2], &[129, 130]); // centered 1, 2
    let b = i8s(&[2, 2], &[1, 2, 2, 4]);
    let bias = i32s(&[2], &[0, 2]);
    // Column 0: 5 · 0.5 = 2.5 → 3; column 1: (10 + 2) · 0.25 = 3.
    assert_eq!(run1(&op, &[&a, &b, &bias]), u8s(&[1, 2], &[3, 3]));
}

pub(crate) fn tt(dtype: DType, dims: &[usize]) -> TensorType {
    TensorType::new(dtype, dims.to_vec())
}

#[test]
fn inference_rejects_what_the_int8_kernels_cannot_take() {
    let u8q = |s: f32| QParams::per_tensor(DType::U8, s, 0).unwrap();
    let i8q = |s: f32| QParams::per_tensor(DType::I8, s, 0).unwrap();
    let conv = |x: QParams, w: QParams, y: QParams, residual, clamp| Op::QuantizedConv {
        conv: ConvAttrs {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![0; 4]),
            group: 1,
        },
        x,
        w,
        y,
        residual,
        clamp,
    };
    let (x, w) = (tt(DType::U8, &[1, 2, 3, 3]), tt(DType::I8, &[4, 2, 1, 1]));
    let good = conv(u8q(0.1), i8q(0.1), u8q(0.1), None, Some((0, 255)));
    let out = infer_types(&good, &[&x, &w, &tt(DType::I32, &[4])]).unwrap();
    assert_eq!(out, vec![tt(DType::U8, &[1, 4, 3, 3])]);
    let rejected = |op: &Op, inputs: &[&TensorType], why: &str| {
        assert!(infer_types(op, inputs).is_err(), "accepted {why}");
    };
    let (xf, wu) = (tt(DType::F32, &[1, 2, 3, 3]), tt(DType::U8, &[4, 2, 1, 1]));
    rejected(&good, &[&xf, &w], "f32 x");
    rejected(
        &conv(u8q(0.1), u8q(0.1), u8q(0.1), None, None),
        &[&x, &wu],
        "u8 w",
    );
    rejected(&good, &[&x, &w, &tt(DType::F32, &[4])], "f32 bias");
    rejected(
        &good,
        &[&x, &w, &tt(DType::I32, &[3])],
        "bias of the wrong length",
    );
    let y32 = QParams::per_tensor(DType::I32, 0.1, 0).unwrap();
    rejected(
        &conv(u8q(0.1), i8q(0.1), y32, None, None),
        &[&x, &w],
        "i32 output",
    );
    let w_axis1 = QParams::per_channel(DType::I8, 1, vec![0.1, 0.1], vec![0, 0]).unwrap();
    rejected(
        &conv(u8q(0.1), w_axis1, u8q(0.1), None, None),
        &[&x, &w],
        "w along axis 1",
    );
    rejected(
        &conv(u8q(0.1), i8q(0.1), i8q(0.1), None, Some((0, 200))),
        &[&x, &w],
        "clamp",
    );
    rejected(
        &conv(u8q(0.1), i8q(0.1), u8q(0.1), None, Some((9, 8))),
        &[&x, &w],
        "empty clamp",
    );
    rejected(
        &conv(u8q(1e20), i8q(1e20), u8q(1e-20), None, None),
        &[&x, &w],
        "multiplier",
    );
    let with_residual = conv(u8q(0.1), i8q(0.1), u8q(0.1), Some(u8q(0.2)), None);
    let bias = tt(DType::I32, &[4]);
    let r_good = tt(DType::U8, &[1, 4, 3, 3]);
    assert!(infer_types(&with_residual, &[&x, &w, &bias, &r_good]).is_ok());
    rejected(
        &with_residual,
        &[&x, &w, &bias, &tt(DType::U8, &[1, 4, 1, 1])],
        "residual dims",
    );
    rejected(
        &with_residual,
        &[&x, &w, &bias, &tt(DType::I8, &[1, 4, 3, 3])],
        "residual type",
    );

    let mm = Op::QuantizedMatMul {
        a: u8q(0.1),
        b: i8q(0.1),
        y: i8q(0.1),
        clamp: None,
    };
    let (a, b) = (tt(DType::U8, &[2, 3, 5]), tt(DType::I8, &[5, 7]));
    assert_eq!(
        infer_types(&mm, &[&a, &b]).unwrap(),
        vec![tt(DType::I8, &[2, 3, 7])]
    );
    rejected(&mm, &[&a, &tt(DType::I8, &[1, 5, 7])], "batched b");
    rejected(&mm, &[&tt(DType::U8, &[5]), &b], "1-D a");
    rejected(
        &mm,
        &[&tt(DType::I8, &[3, 5]), &b],
        "a of another type than its parameters",
    );
    rejected(&mm, &[&a, &b, &tt(DType::I32, &[5])], "bias per row");
}

#[test]
fn eval_reports_an_unrepresentable_multiplier_instead_of_panicking() {
    let op = conv1x1(
        QParams::per_tensor(DType::U8, 1e20, 0).unwrap(),
        QParams::per_tensor(DType::I8, 1e20, 0).unwrap(),
        QParams::per_tensor(DType::U8, 1e-20, 0).unwrap(),
        None,
    );
    let x = u8s(&[1, 1, 1], &[1]);
    let w = i8s(&[1, 1, 1], &[1]);
    assert!(super::super::eval_op(&op, &[&x, &w]).is_err());
}
