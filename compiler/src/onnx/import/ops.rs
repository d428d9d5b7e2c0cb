//! One function per ONNX op: neural-network ops (convolution, pooling, normalisation,
//! activations, arithmetic, matrix products). Shape manipulation lives in `shape_ops`,
//! quantization in `quant`.

use super::node::{Lowered, NodeCtx};
use super::{quant, shape_ops, ImportError};
use qcc_ir::{
    Activation, BinaryOp, ConvAttrs, GemmAttrs, LrnAttrs, Op, Padding, PoolAttrs, ValueId,
};

type R = Result<Lowered, ImportError>;

/// Translates one node; the op type was checked against `support::SUPPORTED_OPS` before.
pub(crate) fn lower(ctx: &NodeCtx) -> R {
    match ctx.op_type() {
        "Conv" => conv(ctx),
        "BatchNormalization" => batch_norm(ctx),
        "Relu" => activation(ctx, Activation::Relu),
        "LeakyRelu" => leaky_relu(ctx),
        "Clip" => clip(ctx),
        "Sigmoid" => activation(ctx, Activation::Sigmoid),
        "HardSigmoid" => hard_sigmoid(ctx),
        "HardSwish" => activation(ctx, Activation::HardSwish),
        "Tanh" => activation(ctx, Activation::Tanh),
        "Add" => binary(ctx, BinaryOp::Add),
        "Sub" => binary(ctx, BinaryOp::Sub),
        "Mul" => binary(ctx, BinaryOp::Mul),
        "Div" => binary(ctx, BinaryOp::Div),
        "Sum" => sum(ctx),
        "MaxPool" => max_pool(ctx),
        "AveragePool" => average_pool(ctx),
        "GlobalAveragePool" => unary(ctx, Op::GlobalAveragePool),
        "GlobalMaxPool" => unary(ctx, Op::GlobalMaxPool),
        "Gemm" => gemm(ctx),
        "MatMul" => matmul(ctx),
        "Softmax" => softmax(ctx),
        "LRN" => lrn(ctx),
        "Dropout" => dropout(ctx),
        "Identity" => unary(ctx, Op::Identity),
        "Concat" => shape_ops::concat(ctx),
        "Split" => shape_ops::split(ctx),
        "Flatten" => shape_ops::flatten(ctx),
        "Reshape" => shape_ops::reshape(ctx),
        "Transpose" => shape_ops::transpose(ctx),
        "Squeeze" => shape_ops::squeeze(ctx),
        "Unsqueeze" => shape_ops::unsqueeze(ctx),
        "Pad" => shape_ops::pad(ctx),
        "Shape" => shape_ops::shape(ctx),
        "Gather" => shape_ops::gather(ctx),
        "Slice" => shape_ops::slice(ctx),
        "Cast" => shape_ops::cast(ctx),
        "ReduceMean" => shape_ops::reduce_mean(ctx),
        "ConstantOfShape" => shape_ops::constant_of_shape(ctx),
        "Constant" => shape_ops::constant(ctx),
        "QuantizeLinear" => quant::quantize_linear(ctx),
        "DequantizeLinear" => quant::dequantize_linear(ctx),
        "QLinearConv" => quant::qlinear_conv(ctx),
        "QLinearMatMul" => quant::qlinear_matmul(ctx),
        "ConvInteger" => quant::conv_integer(ctx),
        "MatMulInteger" => quant::matmul_integer(ctx),
        "DynamicQuantizeLinear" => quant::dynamic_quantize_linear(ctx),
        other => Err(ctx.err(format!("op {other} is not supported"))),
    }
}

/// An op with the single input X.
pub(crate) fn unary(ctx: &NodeCtx, op: Op) -> R {
    let x = ctx.required(0, "X")?;
    ctx.node(op, vec![x])
}

/// Strides, dilations and padding of a window op with `spatial` dims.
fn window(ctx: &NodeCtx, spatial: usize) -> Result<(Vec<usize>, Vec<usize>, Padding), ImportError> {
    let per_dim = |name: &str| -> Result<Vec<usize>, ImportError> {
        match ctx.attr_sizes(name)? {
            None => Ok(vec![1; spatial]),
            Some(v) if v.len() == spatial => Ok(v),
            Some(v) => Err(ctx.attr_err(
                name,
                format!("has {} entries for {spatial} spatial dims", v.len()),
            )),
        }
    };
    let (strides, dilations) = (per_dim("strides")?, per_dim("dilations")?);
    let auto_pad = ctx.attr_str("auto_pad")?.unwrap_or_default();
    // The IR's SAME-padding arithmetic underflows on an empty spatial dim; refuse it here.
    let x = ctx.required(0, "X")?;
    if auto_pad.starts_with("SAME") && ctx.ty(x).dims().iter().skip(2).any(|&d| d == 0) {
        return Err(ctx.attr_err(
            "auto_pad",
            format!("{auto_pad} on an empty input {}", ctx.ty(x)),
        ));
    }
    let padding = match auto_pad.as_str() {
        "" | "NOTSET" => match ctx.attr_sizes("pads")? {
            None => Padding::Explicit(vec![0; 2 * spatial]),
            Some(p) if p.len() == 2 * spatial => Padding::Explicit(p),
            Some(p) => {
                return Err(ctx.attr_err(
                    "pads",
                    format!(
                        "has {} entries, {spatial} spatial dims need {}",
                        p.len(),
                        2 * spatial
                    ),
                ))
            }
        },
        "SAME_UPPER" => Padding::SameUpper,
        "SAME_LOWER" => Padding::SameLower,
        "VALID" => Padding::Explicit(vec![0; 2 * spatial]),
        other => return Err(ctx.attr_err("auto_pad", format!("unknown value '{other}'"))),
    };
    Ok((strides, dilations, padding))
}

/// Convolution attributes for a node whose weight is `w` (Conv, QLinearConv, ConvInteger).
pub(crate) fn conv_attrs(ctx: &NodeCtx, w: ValueId) -> Result<ConvAttrs, ImportError> {
    let wt = ctx.ty(w);
    if wt.rank() < 3 {
        return Err(ctx.err(format!(
            "the weight must have rank >= 3, has shape {}",
            wt.shape
        )));
    }
    let spatial = wt.rank() - 2;
    let kernel = match ctx.attr_sizes("kernel_shape")? {
        None => wt.dims()[2..].to_vec(),
        Some(k) if k.len() == spatial => k,
        Some(k) => {
            return Err(ctx.attr_err(
                "kernel_shape",
                format!(
                    "has {} entries, the weight {} has {spatial} spatial dims",
                    k.len(),
                    wt.shape
                ),
            ))
        }
    };
    let (strides, dilations, padding) = window(ctx, spatial)?;
    let group = ctx.attr_i("group", 1)?;
    if !(1..=1 << 24).contains(&group) {
        return Err(ctx.attr_err("group", format!("must be positive, is {group}")));
    }
    Ok(ConvAttrs {
        kernel,
        strides,
        dilations,
        padding,
        group: group as usize,
    })
}

fn conv(ctx: &NodeCtx) -> R {
    let (x, w) = (ctx.required(0, "X")?, ctx.required(1, "W")?);
    let attrs = conv_attrs(ctx, w)?;
    let mut inputs = vec![x, w];
    inputs.extend(ctx.input(2));
    ctx.node(Op::Conv(attrs), inputs)
}

fn pool_attrs(ctx: &NodeCtx) -> Result<PoolAttrs, ImportError> {
    let kernel = ctx
        .attr_sizes("kernel_shape")?
        .ok_or_else(|| ctx.attr_err("kernel_shape", "is required"))?;
    let (strides, dilations, padding) = window(ctx, kernel.len())?;
    let ceil_mode = ctx.attr_bool("ceil_mode", false)?;
    Ok(PoolAttrs {
        kernel,
        strides,
        dilations,
        padding,
        ceil_mode,
    })
}

/// `storage_order` only affects the Indices output, which is refused when used.
fn max_pool(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "X")?;
    ctx.node(Op::MaxPool(pool_attrs(ctx)?), vec![x])
}

fn average_pool(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "X")?;
    let count_include_pad = ctx.attr_bool("count_include_pad", false)?;
    ctx.node(
        Op::AveragePool {
            pool: pool_attrs(ctx)?,
            count_include_pad,
        },
        vec![x],
    )
}

/// Inference form only; training outputs are refused before translation.
fn batch_norm(ctx: &NodeCtx) -> R {
    let names = ["X", "scale", "B", "input_mean", "input_var"];
    let inputs = names
        .iter()
        .enumerate()
        .map(|(i, n)| ctx.required(i, n))
        .collect::<Result<Vec<_>, _>>()?;
    if ctx.opset < 9 && ctx.attr_i("spatial", 1)? == 0 && ctx.rank(inputs[0]) > 2 {
        return Err(ctx.attr_err(
            "spatial",
            "per-element statistics (spatial = 0) are not supported",
        ));
    }
    if ctx.attr_i("training_mode", 0)? != 0 {
        return Err(ctx.attr_err("training_mode", "training mode is not supported"));
    }
    let epsilon = ctx.attr_f("epsilon", 1e-5)?;
    ctx.node(Op::BatchNorm { epsilon }, inputs)
}

fn activation(ctx: &NodeCtx, a: Activation) -> R {
    unary(ctx, Op::Activation(a))
}

fn leaky_relu(ctx: &NodeCtx) -> R {
    let alpha = ctx.attr_f("alpha", 0.01)?;
    activation(ctx, Activation::LeakyRelu { alpha })
}

fn hard_sigmoid(ctx: &NodeCtx) -> R {
    let (alpha, beta) = (ctx.attr_f("alpha", 0.2)?, ctx.attr_f("beta", 0.5)?);
    activation(ctx, Activation::HardSigmoid { alpha, beta })
}

/// Bounds are attributes before opset 11 and optional inputs after; missing ones are infinite.
fn clip(ctx: &NodeCtx) -> R {
    let (min, max) = if ctx.opset < 11 {
        (
            ctx.attr_f("min", f32::NEG_INFINITY)?,
            ctx.attr_f("max", f32::INFINITY)?,
        )
    } else {
        let min = ctx.known_scalar(1, "min")?.unwrap_or(f32::NEG_INFINITY);
        (min, ctx.known_scalar(2, "max")?.unwrap_or(f32::INFINITY))
    };
    activation(ctx, Activation::Clip { min, max })
}

/// Before opset 7, broadcasting was opt-in (`broadcast`) and could align B at any `axis` of A;
/// numpy broadcasting means the same only when B ends where A ends.
fn binary(ctx: &NodeCtx, op: BinaryOp) -> R {
    let (a, b) = (ctx.required(0, "A")?, ctx.required(1, "B")?);
    if ctx.opset < 7 && ctx.attr_i("broadcast", 0)? == 1 && ctx.attr("axis").is_some() {
        let (ra, rb) = (ctx.rank(a), ctx.rank(b));
        let axis = ctx.axis("axis", ctx.attr_i("axis", 0)?, ra)?;
        if axis + rb != ra {
            return Err(ctx.attr_err(
                "axis",
                format!(
                    "legacy broadcast of rank {rb} at axis {axis} of rank {ra} is not supported"
                ),
            ));
        }
    }
    ctx.node(Op::Binary(op), vec![a, b])
}

fn sum(ctx: &NodeCtx) -> R {
    let inputs = (0..ctx.inputs.len())
        .map(|i| ctx.required(i, "data"))
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() {
        return Err(ctx.err("needs at least one input"));
    }
    ctx.node(Op::Sum, inputs)
}

/// `C` is optional from opset 11; the pre-7 `broadcast` attribute is implied by the IR.
fn gemm(ctx: &NodeCtx) -> R {
    let (a, b) = (ctx.required(0, "A")?, ctx.required(1, "B")?);
    let attrs = GemmAttrs {
        alpha: ctx.attr_f("alpha", 1.0)?,
        beta: ctx.attr_f("beta", 1.0)?,
        trans_a: ctx.attr_bool("transA", false)?,
        trans_b: ctx.attr_bool("transB", false)?,
    };
    let mut inputs = vec![a, b];
    inputs.extend(ctx.input(2));
    ctx.node(Op::Gemm(attrs), inputs)
}

fn matmul(ctx: &NodeCtx) -> R {
    let (a, b) = (ctx.required(0, "A")?, ctx.required(1, "B")?);
    ctx.node(Op::MatMul, vec![a, b])
}

/// Opset 13 changed Softmax from "flatten to 2-D at axis (default 1)" to "along axis
/// (default -1)".
fn softmax(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "input")?;
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.attr_i("axis", if coerce_2d { 1 } else { -1 })?;
    let axis = ctx.axis("axis", axis, ctx.rank(x))?;
    ctx.node(Op::Softmax { axis, coerce_2d }, vec![x])
}

fn lrn(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "X")?;
    let size = ctx.attr_i_required("size")?;
    if !(1..=1 << 24).contains(&size) {
        return Err(ctx.attr_err("size", format!("must be positive, is {size}")));
    }
    let attrs = LrnAttrs {
        alpha: ctx.attr_f("alpha", 1e-4)?,
        beta: ctx.attr_f("beta", 0.75)?,
        bias: ctx.attr_f("bias", 1.0)?,
        size: size as usize,
    };
    ctx.node(Op::Lrn(attrs), vec![x])
}

/// Inference-mode dropout: the ratio does not matter; a known `training_mode` of true does.
/// The mask is produced only when something reads it.
fn dropout(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    if ctx.opset >= 12 {
        if let Some(t) = ctx.known(2, "training_mode")? {
            if t.to_f64_vec().iter().any(|&v| v != 0.0) {
                return Err(ctx.err("training_mode = true is not supported"));
            }
        }
    }
    ctx.node(
        Op::Dropout {
            mask_output: ctx.output_used(1),
        },
        vec![x],
    )
}
