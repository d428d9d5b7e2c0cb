//! Operand checks of the quantized ops (ONNX QLinear*/Integer ops and qcc's realized int8
//! ops): types, zero points and quantization parameters.

use super::R;
use crate::dtype::{DType, TensorType};

pub(super) fn expect_float(t: &TensorType, what: &str) -> R<()> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be f32 or f16, is {}", t.dtype))
    }
}

/// The operands of a realized int8 op (QuantizedConv, QuantizedMatMul): activations u8 or
/// i8 per tensor, weights i8 per tensor or per channel along `weight_axis`, output u8 or i8
/// per tensor with a clamp inside its range, and representable requantization multipliers.
#[allow(clippy::too_many_arguments)]
pub(super) fn realized_operands(
    qx: &crate::QParams,
    x: &TensorType,
    x_name: &str,
    qw: &crate::QParams,
    w: &TensorType,
    w_name: &str,
    weight_axis: usize,
    y: &crate::QParams,
    clamp: Option<(i32, i32)>,
) -> R<()> {
    expect_8bit(x, x_name)?;
    qparams_match(qx, x, x_name)?;
    if w.dtype != DType::I8 {
        return Err(format!("{w_name} must be i8, is {}", w.dtype));
    }
    qparams_match(qw, w, w_name)?;
    if !qx.is_per_tensor() || qw.axis().is_some_and(|a| a != weight_axis) {
        return Err(format!(
            "{x_name} must be quantized per tensor, {w_name} per tensor or per channel along \
             axis {weight_axis}"
        ));
    }
    realized_output(y, clamp)?;
    crate::op::requant_multipliers(qx, qw, y).map_err(|e| format!("requantization: {e}"))?;
    Ok(())
}

/// The output of a realized int8 op: u8 or i8 per tensor, and a fused clamp that is a
/// non-empty range inside the output type's.
fn realized_output(y: &crate::QParams, clamp: Option<(i32, i32)>) -> R<()> {
    if !y.dtype().is_quantized() || !y.is_per_tensor() {
        return Err(format!("the output must be u8 or i8 per tensor, is {y}"));
    }
    if let Some((lo, hi)) = clamp {
        let (min, max) = crate::quant::quant_range(y.dtype()).unwrap_or((0, -1));
        if lo > hi || (lo as i64) < min || (hi as i64) > max {
            return Err(format!(
                "clamp [{lo}, {hi}] is not a range inside {}",
                y.dtype()
            ));
        }
    }
    Ok(())
}

/// An 8-bit activation of a realized int8 op: u8 or i8, of its parameters' type, per tensor.
fn per_tensor_activation(q: &crate::QParams, t: &TensorType, what: &str) -> R<()> {
    expect_8bit(t, what)?;
    qparams_match(q, t, what)?;
    if q.is_per_tensor() {
        Ok(())
    } else {
        Err(format!("{what} must be quantized per tensor, is {q}"))
    }
}

/// The operands of QuantizedAdd: two per-tensor 8-bit inputs of the same dims (the realized
/// add does not broadcast), an 8-bit per-tensor output with its clamp, and representable
/// add multipliers. Returns the output type.
pub(super) fn realized_add_operands(
    qa: &crate::QParams,
    a: &TensorType,
    qb: &crate::QParams,
    b: &TensorType,
    y: &crate::QParams,
    clamp: Option<(i32, i32)>,
) -> R<TensorType> {
    per_tensor_activation(qa, a, "a")?;
    per_tensor_activation(qb, b, "b")?;
    if a.dims() != b.dims() {
        return Err(format!(
            "a is {a} and b is {b}: QuantizedAdd needs equal dims (it does not broadcast)"
        ));
    }
    realized_output(y, clamp)?;
    crate::op::add_multipliers(qa, qb, y).map_err(|e| format!("add multipliers: {e}"))?;
    Ok(TensorType::new(y.dtype(), a.dims().to_vec()))
}

/// The largest plane QuantizedGlobalAveragePool takes: its i32 sum of centred values
/// (each within ±255) then cannot overflow, in the interpreter or in a kernel.
pub const MAX_POOL_WINDOW: usize = i32::MAX as usize / 255;

/// The operands of QuantizedGlobalAveragePool: x `[N, C, *spatial]` 8-bit per tensor, an
/// 8-bit per-tensor output and a representable pool multiplier. Returns the output type
/// `[N, C, 1, ...]`.
pub(super) fn realized_pool_operands(
    qx: &crate::QParams,
    x: &TensorType,
    y: &crate::QParams,
) -> R<TensorType> {
    if x.rank() < 3 {
        return Err(format!(
            "x needs N, C and spatial dims, has rank {}",
            x.rank()
        ));
    }
    per_tensor_activation(qx, x, "x")?;
    realized_output(y, None)?;
    let window: usize = x.dims()[2..].iter().product();
    if window > MAX_POOL_WINDOW {
        return Err(format!(
            "x has {window} elements per plane; the i32 sum of at most {MAX_POOL_WINDOW} \
             centred 8-bit values is what the realized pool takes"
        ));
    }
    crate::op::pool_multiplier(qx, y, window).map_err(|e| format!("pool multiplier: {e}"))?;
    let mut dims = x.dims()[..2].to_vec();
    dims.resize(x.rank(), 1);
    Ok(TensorType::new(y.dtype(), dims))
}

pub(super) fn expect_i32_bias(b: &TensorType) -> R<()> {
    if b.dtype == DType::I32 {
        Ok(())
    } else {
        Err(format!("bias must be i32, is {}", b.dtype))
    }
}

pub(super) fn expect_8bit(t: &TensorType, what: &str) -> R<()> {
    if t.dtype.is_quantized() {
        Ok(())
    } else {
        Err(format!("{what} must be i8 or u8, is {}", t.dtype))
    }
}

pub(super) fn same_dtype(a: &TensorType, b: &TensorType, what: &str) -> R<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(format!("{what} has type {}, expected {}", b.dtype, a.dtype))
    }
}

pub(super) fn check_axis(axis: usize, rank: usize) -> R<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// The quantized tensor `t` is of the parameters' type and their channel axis fits it.
pub(super) fn qparams_match(q: &crate::QParams, t: &TensorType, what: &str) -> R<()> {
    if q.dtype() != t.dtype {
        return Err(format!(
            "{what} is {} but its quantization parameters are for {}",
            t.dtype,
            q.dtype()
        ));
    }
    qparams_fit(q, t)
}

/// Zero points of ConvInteger/MatMulInteger: one, or one per channel, inside the type's range.
pub(super) fn zero_point_fits(zp: &crate::ZeroPoint, t: &TensorType, what: &str) -> R<()> {
    let n = match zp.axis {
        None => 1,
        Some(a) => {
            check_axis(a, t.rank())?;
            t.dims()[a]
        }
    };
    if zp.values.len() != n {
        return Err(format!(
            "{what} has {} zero points, expected {n}",
            zp.values.len()
        ));
    }
    let (lo, hi) =
        crate::quant::quant_range(t.dtype).ok_or_else(|| format!("{what} is not quantized"))?;
    if let Some(v) = zp
        .values
        .iter()
        .find(|&&v| (v as i64) < lo || (v as i64) > hi)
    {
        return Err(format!(
            "{what} zero point {v} is outside the range of {}",
            t.dtype
        ));
    }
    Ok(())
}

/// The input zero point of ConvInteger/MatMulInteger: a constant that fits, or the run-time
/// input `run_time` (node input 2), one value of the input's type.
pub(super) fn input_zero_point_fits(
    zp: &crate::InputZeroPoint,
    run_time: Option<&TensorType>,
    t: &TensorType,
    what: &str,
) -> R<()> {
    match (zp, run_time) {
        (crate::InputZeroPoint::Constant(zp), _) => zero_point_fits(zp, t, what),
        (crate::InputZeroPoint::RunTime, Some(z)) => {
            if z.dtype != t.dtype || z.dims().iter().product::<usize>() != 1 {
                return Err(format!(
                    "{what}'s run-time zero point must be one {}, is {z}",
                    t.dtype
                ));
            }
            Ok(())
        }
        (crate::InputZeroPoint::RunTime, None) => {
            Err(format!("{what}'s run-time zero point input is missing"))
        }
    }
}

pub(super) fn qparams_fit(q: &crate::QParams, t: &TensorType) -> R<()> {
    if let Some(axis) = q.axis() {
        check_axis(axis, t.rank())?;
        if t.dims()[axis] != q.scales().len() {
            return Err(format!(
                "{} per-channel scales for axis {axis} of size {}",
                q.scales().len(),
                t.dims()[axis]
            ));
        }
    }
    Ok(())
}

/// The operands of a dynamically quantized op (DynamicQuantizedConv/MatMul): the three
/// outputs of a DynamicQuantizeLinear (u8 data, f32 scalar scale, u8 scalar zero point) and
/// i8 weights (any i8 zero points) per tensor or per channel along `weight_axis`.
pub(super) fn dynamic_operands(
    input: &[&TensorType],
    qw: &crate::QParams,
    w: &TensorType,
    w_name: &str,
    weight_axis: usize,
) -> R<()> {
    let scalar = |t: &TensorType| t.dims().iter().product::<usize>() == 1;
    if input[0].dtype != DType::U8 {
        return Err(format!("the input must be u8, is {}", input[0].dtype));
    }
    if input[1].dtype != DType::F32 || !scalar(input[1]) {
        return Err(format!("the input scale must be one f32, is {}", input[1]));
    }
    if input[2].dtype != DType::U8 || !scalar(input[2]) {
        return Err(format!(
            "the input zero point must be one u8, is {}",
            input[2]
        ));
    }
    if w.dtype != DType::I8 {
        return Err(format!("{w_name} must be i8, is {}", w.dtype));
    }
    qparams_match(qw, w, w_name)?;
    if qw.axis().is_some_and(|a| a != weight_axis) {
        return Err(format!(
            "{w_name} must be quantized per tensor or per channel along axis {weight_axis}"
        ));
    }
    // Nonzero weight zero points (asymmetric weights) are part of the op: `QParams` keeps
    // them inside i8's range and `qparams_match` checked their type and count.
    Ok(())
}

/// The f32 bias of a dynamically quantized op: `[channels]`.
pub(super) fn expect_f32_bias(bias: &TensorType, channels: usize) -> R<()> {
    if bias.dtype != DType::F32 || bias.dims() != [channels] {
        return Err(format!("bias must be f32 [{channels}], is {bias}"));
    }
    Ok(())
}
