//! One function per quantization op. Scales and zero points must be known at import time;
//! they become `QParams` / `ZeroPoint` attributes (but for the input zero point of
//! ConvInteger/MatMulInteger, which onnxruntime's dynamic quantization computes at run time). A scale with one element is per tensor, a
//! 1-D scale with more is per channel along the op's channel axis.

use super::node::{Lowered, NodeCtx};
use super::ops::{conv_attrs, unary};
use super::tensor::{dtype_from_onnx, onnx_type_name};
use super::ImportError;
use qcc_ir::{DType, InputZeroPoint, Op, QParams, ValueId, ZeroPoint};

type R = Result<Lowered, ImportError>;

/// Builds quantization parameters from a scale input and an optional zero-point input.
/// `default_dtype` is the quantized type when no zero point is given; `axis` is where
/// per-channel parameters apply (`None`: only per-tensor parameters are accepted).
fn qparams(
    ctx: &NodeCtx,
    scale_idx: usize,
    zp_idx: usize,
    default_dtype: DType,
    axis: Option<usize>,
    what: &str,
) -> Result<QParams, ImportError> {
    let scale = ctx
        .known(scale_idx, &format!("{what} scale"))?
        .ok_or_else(|| ctx.err(format!("input {scale_idx} ({what} scale) is missing")))?;
    if !scale.dtype().is_float() || scale.dims().len() > 1 {
        return Err(ctx.err(format!(
            "{what} scale must be a float scalar or 1-D tensor, is {}",
            scale.ty()
        )));
    }
    let mut scales: Vec<f32> = scale.to_f64_vec().into_iter().map(|v| v as f32).collect();
    let (dtype, mut zps) = match ctx.known(zp_idx, &format!("{what} zero point"))? {
        None => (default_dtype, vec![0]),
        Some(zp) => {
            if zp.dims().len() > 1 {
                return Err(ctx.err(format!(
                    "{what} zero point must be a scalar or 1-D tensor, is {}",
                    zp.ty()
                )));
            }
            (zp.dtype(), zero_point_values(ctx, zp, what)?)
        }
    };
    let bad = |e: qcc_ir::quant::QParamsError| ctx.err(format!("{what} quantization: {e}"));
    if scales.len() == 1 && zps.len() == 1 {
        return QParams::per_tensor(dtype, scales[0], zps[0]).map_err(bad);
    }
    let Some(axis) = axis else {
        return Err(ctx.err(format!(
            "{what} quantization must be per tensor, has {} scales and {} zero points",
            scales.len(),
            zps.len()
        )));
    };
    let n = scales.len().max(zps.len());
    if scales.len() == 1 {
        scales = vec![scales[0]; n];
    }
    if zps.len() == 1 {
        zps = vec![zps[0]; n];
    }
    if scales.len() != zps.len() {
        return Err(ctx.err(format!(
            "{what}: {} scales but {} zero points",
            scales.len(),
            zps.len()
        )));
    }
    QParams::per_channel(dtype, axis, scales, zps).map_err(bad)
}

fn zero_point_values(
    ctx: &NodeCtx,
    zp: &qcc_ir::Tensor,
    what: &str,
) -> Result<Vec<i32>, ImportError> {
    if !matches!(zp.dtype(), DType::I8 | DType::U8 | DType::I32) {
        return Err(ctx.err(format!(
            "{what} zero point of type {} is not supported",
            zp.dtype()
        )));
    }
    let values = zp.to_i64_vec().unwrap_or_default();
    values
        .iter()
        .map(|&v| {
            i32::try_from(v).map_err(|_| ctx.err(format!("{what} zero point {v} is out of range")))
        })
        .collect()
}

/// The per-axis `axis` attribute (opset 13+, default 1), normalised against `x`'s rank.
fn channel_axis(ctx: &NodeCtx, x: ValueId) -> Result<usize, ImportError> {
    ctx.axis("axis", ctx.attr_i("axis", 1)?, ctx.rank(x))
}

/// Only the axis that parameters with several elements would use; per-tensor parameters do
/// not need the input to have that axis (a scalar input with axis 1, say).
fn optional_axis(ctx: &NodeCtx, x: ValueId) -> Result<Option<usize>, ImportError> {
    match channel_axis(ctx, x) {
        Ok(a) => Ok(Some(a)),
        Err(_) if ctx.attr("axis").is_none() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The zero point defaults to u8 0, or to opset 21's `output_dtype`.
pub(crate) fn quantize_linear(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "x")?;
    let mut default = DType::U8;
    if ctx.opset >= 21 {
        let code = ctx.attr_i("output_dtype", 0)?;
        if code != 0 {
            let code32 = i32::try_from(code).unwrap_or(0);
            default = dtype_from_onnx(code32)
                .filter(|d| d.is_quantized())
                .ok_or_else(|| {
                    ctx.attr_err(
                        "output_dtype",
                        format!("quantizing to {} is not supported", onnx_type_name(code32)),
                    )
                })?;
            if ctx
                .known(2, "y_zero_point")?
                .is_some_and(|zp| zp.dtype() != default)
            {
                return Err(ctx.attr_err("output_dtype", "differs from the zero point's type"));
            }
        }
    }
    let q = qparams(ctx, 1, 2, default, optional_axis(ctx, x)?, "y")?;
    ctx.node(Op::QuantizeLinear(q), vec![x])
}

/// The zero point defaults to 0 of the input's type (i32 inputs always have zero point 0).
pub(crate) fn dequantize_linear(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "x")?;
    let q = qparams(ctx, 1, 2, ctx.ty(x).dtype, optional_axis(ctx, x)?, "x")?;
    ctx.node(Op::DequantizeLinear(q), vec![x])
}

/// Inputs: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, optional bias. The weight may
/// be quantized per output channel (axis 0).
pub(crate) fn qlinear_conv(ctx: &NodeCtx) -> R {
    let (x, w) = (ctx.required(0, "x")?, ctx.required(3, "w")?);
    let conv = conv_attrs(ctx, w)?;
    let qx = qparams(ctx, 1, 2, ctx.ty(x).dtype, None, "x")?;
    let qw = qparams(ctx, 4, 5, ctx.ty(w).dtype, Some(0), "w")?;
    let qy = qparams(ctx, 6, 7, ctx.ty(x).dtype, None, "y")?;
    let mut inputs = vec![x, w];
    inputs.extend(ctx.input(8));
    ctx.node(
        Op::QLinearConv {
            conv,
            x: qx,
            w: qw,
            y: qy,
        },
        inputs,
    )
}

/// `a` may be quantized per row, `b` per column.
pub(crate) fn qlinear_matmul(ctx: &NodeCtx) -> R {
    let (a, b) = (ctx.required(0, "a")?, ctx.required(3, "b")?);
    let row_axis = ctx.rank(a).checked_sub(2);
    let col_axis = ctx.rank(b).checked_sub(1).filter(|_| ctx.rank(b) >= 2);
    let qa = qparams(ctx, 1, 2, ctx.ty(a).dtype, row_axis, "a")?;
    let qb = qparams(ctx, 4, 5, ctx.ty(b).dtype, col_axis, "b")?;
    let qy = qparams(ctx, 6, 7, ctx.ty(a).dtype, None, "y")?;
    ctx.node(
        Op::QLinearMatMul {
            a: qa,
            b: qb,
            y: qy,
        },
        vec![a, b],
    )
}

/// A zero point for an integer op: absent means 0; one element is per tensor; a 1-D tensor
/// is per channel along `axis` of `input` (if the op allows that).
fn zero_point(
    ctx: &NodeCtx,
    idx: usize,
    input: ValueId,
    axis: Option<usize>,
    what: &str,
) -> Result<ZeroPoint, ImportError> {
    let Some(zp) = ctx.known(idx, what)? else {
        return Ok(ZeroPoint::zero());
    };
    let ty = ctx.ty(input);
    if zp.dtype() != ty.dtype {
        return Err(ctx.err(format!(
            "{what} has type {}, its input is {}",
            zp.dtype(),
            ty.dtype
        )));
    }
    let values = zero_point_values(ctx, zp, what)?;
    if values.len() == 1 && zp.dims().len() <= 1 {
        return Ok(ZeroPoint { axis: None, values });
    }
    match axis {
        Some(a) if zp.dims().len() == 1 && ty.dims().get(a) == Some(&values.len()) => {
            Ok(ZeroPoint {
                axis: Some(a),
                values,
            })
        }
        _ => Err(ctx.err(format!(
            "{what} of shape {} does not fit input {}",
            zp.shape(),
            ty
        ))),
    }
}

/// The zero point of the first operand (input 2): a constant, or a value computed at run time
/// (onnxruntime's dynamic quantization: an output of DynamicQuantizeLinear), which the node
/// then takes as its third input. Returns it and the node's inputs.
fn input_zero_point(
    ctx: &NodeCtx,
    operands: [ValueId; 2],
    axis: Option<usize>,
    what: &str,
) -> Result<(InputZeroPoint, Vec<ValueId>), ImportError> {
    match ctx.input(2) {
        Some(zp) if ctx.graph.known_value(zp).is_none() => {
            Ok((InputZeroPoint::RunTime, vec![operands[0], operands[1], zp]))
        }
        _ => Ok((
            InputZeroPoint::Constant(zero_point(ctx, 2, operands[0], axis, what)?),
            operands.to_vec(),
        )),
    }
}

/// x's zero point is per tensor (constant or run-time); w's per tensor or per output channel.
pub(crate) fn conv_integer(ctx: &NodeCtx) -> R {
    let (x, w) = (ctx.required(0, "x")?, ctx.required(1, "w")?);
    let conv = conv_attrs(ctx, w)?;
    let (x_zero_point, inputs) = input_zero_point(ctx, [x, w], None, "x_zero_point")?;
    let w_zero_point = zero_point(ctx, 3, w, Some(0), "w_zero_point")?;
    ctx.node(
        Op::ConvInteger {
            conv,
            x_zero_point,
            w_zero_point,
        },
        inputs,
    )
}

/// a's zero point may be per row (or a run-time scalar), b's per column.
pub(crate) fn matmul_integer(ctx: &NodeCtx) -> R {
    let (a, b) = (ctx.required(0, "A")?, ctx.required(1, "B")?);
    let a_axis = ctx.rank(a).checked_sub(2);
    let (a_zero_point, inputs) = input_zero_point(ctx, [a, b], a_axis, "a_zero_point")?;
    let b_axis = ctx.rank(b).checked_sub(1).filter(|_| ctx.rank(b) >= 2);
    let b_zero_point = zero_point(ctx, 3, b, b_axis, "b_zero_point")?;
    ctx.node(
        Op::MatMulInteger {
            a_zero_point,
            b_zero_point,
        },
        inputs,
    )
}

pub(crate) fn dynamic_quantize_linear(ctx: &NodeCtx) -> R {
    unary(ctx, Op::DynamicQuantizeLinear)
}
