//! qcc's dynamically quantized ops, DynamicQuantizedConv and DynamicQuantizedMatMul: the
//! exact i32 dot product of a run-time-quantized u8 input with compile-time s8 weights
//! (both centred on their zero points, the weights' per tensor or per channel), then
//! a float epilogue whose every step rounds once in f32 in the order the op's doc gives
//! ([`crate::op::Op::DynamicQuantizedConv`]), so compiled code equals this interpreter bit
//! for bit.

use super::conv::{centered, integer_accumulators};
use super::elementwise::activation;
use super::matmul::batched_matmul;
use super::quant::int_values;
use super::{op_err, R};
use crate::op::{Activation, ConvAttrs};
use crate::quant::QParams;
use crate::tensor::Tensor;

/// The run-time quantization of the input: DynamicQuantizeLinear's scale and zero point.
fn input_quantization(scale: &Tensor, zero_point: &Tensor) -> R<(f32, i32)> {
    let scale = scale
        .as_f32()
        .map_err(|e| op_err(format!("input scale: {e}")))?;
    let scale = match scale.iter().collect::<Vec<_>>()[..] {
        [&s] => s,
        _ => return Err(op_err("the input scale must be one f32 value")),
    };
    match int_values(zero_point)?[..] {
        [zp] => Ok((scale, zp)),
        _ => Err(op_err("the input zero point must be one u8 value")),
    }
}

/// `f32(acc)·(s_x·s_w[c]) + bias[c]` for every accumulator, `c = channel(i)`.
fn float_epilogue(
    acc: &[i32],
    x_scale: f32,
    w: &QParams,
    bias: &Tensor,
    channels: usize,
    channel: impl Fn(usize) -> usize,
) -> R<Vec<f32>> {
    let bias = bias.as_f32().map_err(|e| op_err(format!("bias: {e}")))?;
    let bias: Vec<f32> = bias.iter().copied().collect();
    if bias.len() != channels {
        return Err(op_err(format!(
            "bias has {} values, expected {channels}",
            bias.len()
        )));
    }
    let w_scales = w.scales();
    if w_scales.len() != 1 && w_scales.len() != channels {
        return Err(op_err(format!(
            "{} weight scales for {channels} output channels",
            w_scales.len()
        )));
    }
    let scales: Vec<f32> = (0..channels)
        .map(|c| x_scale * w_scales[if w_scales.len() == 1 { 0 } else { c }])
        .collect();
    Ok(acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = channel(i);
            a as f32 * scales[c] + bias[c]
        })
        .collect())
}

/// `y (+ r)`, then the activation.
fn finish(
    dims: &[usize],
    y: Vec<f32>,
    residual: Option<&Tensor>,
    act: Option<Activation>,
) -> R<Tensor> {
    let mut y = y;
    if let Some(r) = residual {
        let r = r.as_f32().map_err(|e| op_err(format!("residual: {e}")))?;
        if r.shape() != dims {
            return Err(op_err(format!(
                "residual has dims {:?}, the output {dims:?}",
                r.shape()
            )));
        }
        for (v, &r) in y.iter_mut().zip(r.iter()) {
            *v += r;
        }
    }
    let y = Tensor::from_f32(dims, y);
    match act {
        Some(a) => activation(a, &y),
        None => Ok(y),
    }
}

/// DynamicQuantizedConv: inputs x, x_scale, x_zero_point, w, bias, [r].
pub(super) fn dynamic_quantized_conv(
    conv: &ConvAttrs,
    w: &QParams,
    residual: bool,
    act: Option<Activation>,
    inputs: &[&Tensor],
) -> R<Tensor> {
    let (x_scale, x_zp) = input_quantization(inputs[1], inputs[2])?;
    let (dims, acc) = integer_accumulators(
        conv,
        inputs[0],
        &[x_zp],
        inputs[3],
        w.zero_points(),
        w.axis(),
    )?;
    let cout = dims[1];
    let plane = dims[2..].iter().product::<usize>().max(1);
    let y = float_epilogue(&acc, x_scale, w, inputs[4], cout, |i| {
        (i / plane) % cout.max(1)
    })?;
    let r = if residual {
        Some(
            *inputs
                .get(5)
                .ok_or_else(|| op_err("the residual input is missing"))?,
        )
    } else {
        None
    };
    finish(&dims, y, r, act)
}

/// DynamicQuantizedMatMul: inputs a, a_scale, a_zero_point, b `[K, N]`, bias `[N]`.
pub(super) fn dynamic_quantized_matmul(
    b: &QParams,
    act: Option<Activation>,
    inputs: &[&Tensor],
) -> R<Tensor> {
    let (a, bw) = (inputs[0], inputs[3]);
    if bw.dims().len() != 2 || a.dims().len() < 2 {
        return Err(op_err(
            "DynamicQuantizedMatMul takes a of rank >= 2 and b of rank 2",
        ));
    }
    let n = bw.dims()[1];
    let (a_scale, a_zp) = input_quantization(inputs[1], inputs[2])?;
    let ac = centered(a, &[a_zp], None)?;
    let bc = centered(bw, b.zero_points(), b.axis())?;
    let (dims, acc) = batched_matmul(&ac, a.dims(), &bc, bw.dims())?;
    let y = float_epilogue(&acc, a_scale, b, inputs[4], n, |i| i % n.max(1))?;
    finish(&dims, y, None, act)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::{Activation, ConvAttrs, Op, Padding};
    use crate::quant::QParams;
    use crate::DType;

    fn scalar_f32(v: f32) -> crate::Tensor {
        f32s(&[], &[v])
    }

    fn scalar_u8(v: u8) -> crate::Tensor {
        u8s(&[], &[v])
    }

    fn conv_attrs(kernel: usize, pad: usize) -> ConvAttrs {
        ConvAttrs {
            kernel: vec![kernel, kernel],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![pad; 4]),
            group: 1,
        }
    }

    #[test]
    fn conv_is_the_integer_dot_product_scaled_then_biased_then_activated() {
        // One input channel 2x2, two 1x1 filters with weights 2 and -3, per-channel scales.
        let x = u8s(&[1, 1, 2, 2], &[10, 12, 14, 9]);
        let w = i8s(&[2, 1, 1, 1], &[2, -3]);
        let wq = QParams::per_channel(DType::I8, 0, vec![0.5, 0.25], vec![0, 0]).unwrap();
        let bias = f32s(&[2], &[1.0, -1.0]);
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(1, 0),
            w: wq,
            residual: false,
            activation: Some(Activation::Relu),
        };
        let y = run1(&op, &[&x, &scalar_f32(0.1), &scalar_u8(10), &w, &bias]);
        // Channel 0: (x − 10)·2 → [0, 4, 8, −2]; ·(0.1·0.5) + 1, then Relu.
        // Channel 1: (x − 10)·−3 → [0, −6, −12, 3]; ·(0.1·0.25) − 1, then Relu.
        let s0 = 0.1f32 * 0.5;
        let s1 = 0.1f32 * 0.25;
        let expect: Vec<f32> = [0, 4, 8, -2]
            .iter()
            .map(|&a| (a as f32 * s0 + 1.0).max(0.0))
            .chain([0, -6, -12, 3].iter().map(|&a| {
                let v = a as f32 * s1 - 1.0;
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }))
            .collect();
        assert_eq!(
            y.as_f32().unwrap().iter().copied().collect::<Vec<_>>(),
            expect
        );
    }

    #[test]
    fn conv_padding_reads_the_run_time_zero_point_and_residual_adds_before_activation() {
        let x = u8s(&[1, 1, 1, 1], &[7]);
        let w = i8s(&[1, 1, 3, 3], &[1; 9]);
        let wq = QParams::per_tensor(DType::I8, 1.0, 0).unwrap();
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(3, 1),
            w: wq,
            residual: true,
            activation: None,
        };
        let r = f32s(&[1, 1, 1, 1], &[0.25]);
        let y = run1(
            &op,
            &[
                &x,
                &scalar_f32(2.0),
                &scalar_u8(5),
                &w,
                &f32s(&[1], &[0.5]),
                &r,
            ],
        );
        // Only the centre tap is real: (7 − 5)·1·2 + 0.5 + 0.25.
        assert_eq!(
            y.as_f32().unwrap().iter().copied().collect::<Vec<_>>(),
            [4.75]
        );
    }

    /// `[3, 5]` (zero point 1, scale 0.5) times `[[1, −1], [2, 4]]` with per-column scales
    /// `[1, 0.5]`, zero points `zero_points`, bias `[0, 1]`.
    fn per_column_matmul(zero_points: Vec<i32>) -> Vec<f32> {
        let a = u8s(&[1, 2], &[3, 5]);
        let b = i8s(&[2, 2], &[1, -1, 2, 4]);
        let bq = QParams::per_channel(DType::I8, 1, vec![1.0, 0.5], zero_points).unwrap();
        let op = Op::DynamicQuantizedMatMul {
            b: bq,
            activation: None,
        };
        let inputs = [
            &a,
            &scalar_f32(0.5),
            &scalar_u8(1),
            &b,
            &f32s(&[2], &[0.0, 1.0]),
        ];
        let y = run1(&op, &inputs);
        y.as_f32().unwrap().iter().copied().collect()
    }

    #[test]
    fn matmul_scales_per_column() {
        // a − 1 = [2, 4]: column 0: 2 + 8 = 10 → 10·0.5 = 5; column 1: −2 + 16 = 14 → 14·0.25 + 1.
        assert_eq!(per_column_matmul(vec![0, 0]), [5.0, 4.5]);
    }

    #[test]
    fn conv_centres_the_weights_on_their_per_channel_zero_points() {
        // The first test's convolution with weight zero points 1 and −2: the centred weights
        // are 2 − 1 = 1 and −3 + 2 = −1.
        let x = u8s(&[1, 1, 2, 2], &[10, 12, 14, 9]);
        let w = i8s(&[2, 1, 1, 1], &[2, -3]);
        let wq = QParams::per_channel(DType::I8, 0, vec![0.5, 0.25], vec![1, -2]).unwrap();
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(1, 0),
            w: wq,
            residual: false,
            activation: None,
        };
        let y = run1(
            &op,
            &[
                &x,
                &scalar_f32(0.1),
                &scalar_u8(10),
                &w,
                &f32s(&[2], &[1.0, -1.0]),
            ],
        );
        let (s0, s1) = (0.1f32 * 0.5, 0.1f32 * 0.25);
        // Channel 0: (x − 10)·1 = [0, 2, 4, −1]; channel 1: (x − 10)·−1 = [0, −2, −4, 1].
        let expect: Vec<f32> = [0, 2, 4, -1]
            .iter()
            .map(|&a| a as f32 * s0 + 1.0)
            .chain([0, -2, -4, 1].iter().map(|&a| a as f32 * s1 - 1.0))
            .collect();
        assert_eq!(
            y.as_f32().unwrap().iter().copied().collect::<Vec<_>>(),
            expect
        );
    }

    #[test]
    fn conv_padding_contributes_nothing_with_a_weight_zero_point() {
        // As the padding test, weights 1 with zero point 3: padding taps are
        // (x_zero_point − x_zero_point)·(1 − 3) = 0, the centre tap (7 − 5)·(1 − 3) = −4.
        let x = u8s(&[1, 1, 1, 1], &[7]);
        let w = i8s(&[1, 1, 3, 3], &[1; 9]);
        let wq = QParams::per_tensor(DType::I8, 1.0, 3).unwrap();
        let op = Op::DynamicQuantizedConv {
            conv: conv_attrs(3, 1),
            w: wq,
            residual: false,
            activation: None,
        };
        let y = run1(
            &op,
            &[&x, &scalar_f32(2.0), &scalar_u8(5), &w, &f32s(&[1], &[0.5])],
        );
        assert_eq!(
            y.as_f32().unwrap().iter().copied().collect::<Vec<_>>(),
            [-7.5]
        );
    }

    #[test]
    fn matmul_centres_the_weights_on_their_per_column_zero_points() {
        // a − 1 = [2, 4]; b − zb: column 0 [2, 3] → 4 + 12 = 16 → 16·0.5 = 8;
        // column 1 [−3, 2] → −6 + 8 = 2 → 2·0.25 + 1 = 1.5.
        assert_eq!(per_column_matmul(vec![-1, 2]), [8.0, 1.5]);
    }
}
