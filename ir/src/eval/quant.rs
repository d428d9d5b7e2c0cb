//! QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the requantization step that
//! QLinearConv and QLinearMatMul share.
//!
//! Rounding policy, everywhere: round half to even (ONNX's QuantizeLinear rule, and what the
//! SSE/NEON float-to-int conversions used by onnxruntime do), then saturate.

use super::{array_from, op_err, row_major, R};
use crate::dtype::DType;
use crate::quant::{quant_range, InputZeroPoint, QParams, ZeroPoint};
use crate::tensor::Tensor;
use ndarray::ArrayD;

/// The input zero point of ConvInteger/MatMulInteger: the attribute, or the one value of the
/// run-time input `tensor` (the node's input 2).
pub(super) fn input_zero_point(zp: &InputZeroPoint, tensor: Option<&Tensor>) -> R<ZeroPoint> {
    match (zp, tensor) {
        (InputZeroPoint::Constant(zp), _) => Ok(zp.clone()),
        (InputZeroPoint::RunTime, Some(t)) => match int_values(t)?[..] {
            [v] => Ok(ZeroPoint {
                axis: None,
                values: vec![v],
            }),
            ref values => Err(op_err(format!(
                "the run-time zero point must be one value, has {}",
                values.len()
            ))),
        },
        (InputZeroPoint::RunTime, None) => Err(op_err("the run-time zero point input is missing")),
    }
}

/// Every element of an integer tensor widened to i32, row-major.
pub(super) fn int_values(t: &Tensor) -> R<Vec<i32>> {
    Ok(match t {
        Tensor::I8(a) => a.iter().map(|&v| v as i32).collect(),
        Tensor::U8(a) => a.iter().map(|&v| v as i32).collect(),
        Tensor::I32(a) => row_major(a).into_owned(),
        other => {
            return Err(op_err(format!(
                "expected an i8, u8 or i32 tensor, found {}",
                other.dtype()
            )))
        }
    })
}

/// A tensor of the quantized type `dtype` from values already inside its range.
pub(super) fn int_tensor(dtype: DType, dims: &[usize], values: Vec<i32>) -> R<Tensor> {
    Ok(match dtype {
        DType::I8 => Tensor::I8(array_from(
            dims,
            values.into_iter().map(|v| v as i8).collect(),
        )?),
        DType::U8 => Tensor::U8(array_from(
            dims,
            values.into_iter().map(|v| v as u8).collect(),
        )?),
        DType::I32 => Tensor::I32(array_from(dims, values)?),
        other => return Err(op_err(format!("{other} is not a quantized type"))),
    })
}

/// `saturate(round_half_to_even(value) + zero_point)` into `dtype`'s range; NaN maps to the
/// zero point (as the x86 conversion's out-of-range result never could: documented choice).
fn saturate_rounded(value: f32, zero_point: i32, dtype: DType) -> i32 {
    let (lo, hi) = quant_range(dtype).unwrap_or((i32::MIN as i64, i32::MAX as i64));
    let r = value.round_ties_even();
    let q = if r.is_nan() { 0 } else { r as i64 }; // `as` saturates at the i64 range
    (q.saturating_add(zero_point as i64)).clamp(lo, hi) as i32
}

/// One accumulator of QLinearConv / QLinearMatMul to the output type.
///
/// onnxruntime computes the multiplier once per output channel as the f32 expression
/// `(x_scale * w_scale) / y_scale`, converts the i32 accumulator to f32, multiplies in f32,
/// rounds half to even and adds the output zero point with saturation (MLAS requantize
/// output). We do exactly that; the ONNX backend node tests' outputs agree bit for bit.
pub(super) fn requantize(acc: i32, multiplier: f32, zero_point: i32, dtype: DType) -> i32 {
    saturate_rounded(acc as f32 * multiplier, zero_point, dtype)
}

/// The index along `axis` of each row-major element of a tensor of shape `dims`.
fn channel_of(dims: &[usize], axis: usize) -> impl Fn(usize) -> usize {
    let inner: usize = dims[axis + 1..].iter().product::<usize>().max(1);
    let size = dims[axis].max(1);
    move |i| (i / inner) % size
}

/// QuantizeLinear: `y = saturate(round_half_to_even(x / scale) + zero_point)`.
///
/// f32 and f16 inputs divide in f32, as onnxruntime does (f16 is widened exactly). i32 inputs
/// divide in f64, as the ONNX reference does (numpy promotes int32 / float32 to float64);
/// the quotient is then rounded from f64.
pub(super) fn quantize_linear(q: &QParams, x: &Tensor) -> R<Tensor> {
    let dims = x.dims().to_vec();
    let channel = q.axis().map(|a| channel_of(&dims, a));
    let params = |i: usize| q.channel(channel.as_ref().map_or(0, |f| f(i)));
    let quantize_f32 = |(i, v): (usize, f32)| {
        let (scale, zp) = params(i);
        saturate_rounded(v / scale, zp, q.dtype())
    };
    let values: Vec<i32> = match x {
        Tensor::F32(a) => a.iter().copied().enumerate().map(quantize_f32).collect(),
        Tensor::F16(a) => a
            .iter()
            .map(|v| v.to_f32())
            .enumerate()
            .map(quantize_f32)
            .collect(),
        Tensor::I32(a) => a
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (scale, zp) = params(i);
                let r = (v as f64 / scale as f64).round_ties_even();
                let (lo, hi) = quant_range(q.dtype()).unwrap_or((i32::MIN as i64, i32::MAX as i64));
                ((r as i64).saturating_add(zp as i64)).clamp(lo, hi) as i32
            })
            .collect(),
        other => {
            return Err(op_err(format!(
                "cannot quantize a {} tensor",
                other.dtype()
            )))
        }
    };
    int_tensor(q.dtype(), &dims, values)
}

/// DequantizeLinear: `y = (x - zero_point) * scale`, the difference exact, the product in f32.
pub(super) fn dequantize_linear(q: &QParams, x: &Tensor) -> R<Tensor> {
    let dims = x.dims().to_vec();
    let channel = q.axis().map(|a| channel_of(&dims, a));
    let values = int_values(x)?;
    let out: Vec<f32> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let (scale, zp) = q.channel(channel.as_ref().map_or(0, |f| f(i)));
            (v as i64 - zp as i64) as f32 * scale
        })
        .collect();
    Ok(Tensor::F32(array_from(&dims, out)?))
}

/// DynamicQuantizeLinear (u8): the range `[min(0, min x), max(0, max x)]` maps to 0..255.
///
/// `scale = (max - min) / 255` and `zero_point = saturate(round_half_to_even(0 - min / scale))`
/// and `y = saturate(round_half_to_even(x / scale) + zero_point)`, all in f32 as the spec's
/// reference. Deviation: when the range is empty (all inputs zero) the spec divides by a zero
/// scale; we use scale 1 (as onnxruntime does), giving y = 0 and zero point 0. NaN inputs are
/// ignored by min/max and quantize to the zero point.
pub(super) fn dynamic_quantize_linear(x: &Tensor) -> R<Vec<Tensor>> {
    let a = x.as_f32().map_err(|e| op_err(e.to_string()))?;
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in a.iter() {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = saturate_rounded(0.0 - lo / scale, 0, DType::U8);
    let y: Vec<u8> = a
        .iter()
        .map(|&v| saturate_rounded(v / scale, zp, DType::U8) as u8)
        .collect();
    Ok(vec![
        Tensor::U8(array_from(a.shape(), y)?),
        Tensor::F32(ArrayD::from_elem(ndarray::IxDyn(&[]), scale)),
        Tensor::U8(ArrayD::from_elem(ndarray::IxDyn(&[]), zp as u8)),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::op::Op;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = f32s(&[7], &[0.5, 1.5, 2.5, -0.5, -1.5, 300., -300.]);
        let q = Op::QuantizeLinear(QParams::per_tensor(DType::I8, 1.0, 0).unwrap());
        assert_eq!(run1(&q, &[&x]), i8s(&[7], &[0, 2, 2, 0, -2, 127, -128]));
        let x = f32s(&[4], &[1.0, 3.0, -1000.0, f32::NAN]);
        let q = Op::QuantizeLinear(QParams::per_tensor(DType::U8, 2.0, 128).unwrap());
        // 0.5 -> 0, 1.5 -> 2; NaN goes to the zero point.
        assert_eq!(run1(&q, &[&x]), u8s(&[4], &[128, 130, 0, 128]));
    }

    #[test]
    fn quantize_per_axis_f16_and_i32_inputs() {
        let x = f32s(&[2, 2], &[1., 2., 4., 6.]);
        let q = Op::QuantizeLinear(
            QParams::per_channel(DType::U8, 0, vec![1.0, 2.0], vec![0, 10]).unwrap(),
        );
        assert_eq!(run1(&q, &[&x]), u8s(&[2, 2], &[1, 2, 12, 13]));
        let xh = super::super::elementwise::cast(&x, DType::F16);
        assert_eq!(run1(&q, &[&xh]), u8s(&[2, 2], &[1, 2, 12, 13]));
        let xi = i32s(&[2, 2], &[1, 2, 5, 7]);
        // 5 / 2 = 2.5 -> 2, 7 / 2 = 3.5 -> 4.
        assert_eq!(run1(&q, &[&xi]), u8s(&[2, 2], &[1, 2, 12, 14]));
    }

    #[test]
    fn dequantize_per_tensor_per_axis_and_i32() {
        let q = Op::DequantizeLinear(QParams::per_tensor(DType::U8, 0.5, 128).unwrap());
        assert_close(&run1(&q, &[&u8s(&[3], &[0, 128, 255])]), &[-64., 0., 63.5]);
        let q = Op::DequantizeLinear(
            QParams::per_channel(DType::I8, 1, vec![1.0, 0.25], vec![0, -4]).unwrap(),
        );
        assert_close(&run1(&q, &[&i8s(&[1, 2], &[-3, 4])]), &[-3., 2.]);
        let q = Op::DequantizeLinear(QParams::per_tensor(DType::I32, 0.5, 0).unwrap());
        assert_close(&run1(&q, &[&i32s(&[2], &[-1000, 3])]), &[-500., 1.5]);
    }

    #[test]
    fn dynamic_quantize_matches_the_spec_example() {
        let x = f32s(&[6], &[0., 2., -3., -2.5, 1.34, 0.5]);
        let out = super::super::eval_op(&Op::DynamicQuantizeLinear, &[&x]).unwrap();
        assert_eq!(out[0], u8s(&[6], &[153, 255, 0, 26, 221, 179]));
        assert_close(&out[1], &[(5.0f32 / 255.0) as f64]);
        assert_eq!(out[2].to_f64_vec(), vec![153.0]);
        let zeros =
            super::super::eval_op(&Op::DynamicQuantizeLinear, &[&f32s(&[2], &[0., 0.])]).unwrap();
        assert_eq!(zeros[0], u8s(&[2], &[0, 0]));
        assert_close(&zeros[1], &[1.0]);
    }

    #[test]
    fn requantize_ties_and_saturation() {
        assert_eq!(requantize(5, 0.5, 0, DType::I8), 2);
        assert_eq!(requantize(7, 0.5, 0, DType::I8), 4);
        assert_eq!(requantize(-5, 0.5, 0, DType::I8), -2);
        assert_eq!(requantize(1000, 1.0, 0, DType::I8), 127);
        assert_eq!(requantize(-1000, 1.0, 10, DType::U8), 0);
    }
}
