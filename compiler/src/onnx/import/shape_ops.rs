//! One function per ONNX op: shape manipulation, indexing, casts, reductions and constants.
//! Parameters that newer opsets pass as inputs must be known at import time; they become the
//! IR's static attributes, with negative axes normalised against the right rank.

use super::node::{Lowered, NodeCtx, MAX_SIZE_ATTR};
use super::ops::unary;
use super::tensor::{checked_dims, dtype_from_onnx, onnx_type_name, MAX_DIM, MAX_NUMEL};
use super::ImportError;
use qcc_ir::{Op, Tensor};

type R = Result<Lowered, ImportError>;

/// `axis` was optional (default 1) before opset 4.
pub(crate) fn concat(ctx: &NodeCtx) -> R {
    let inputs = (0..ctx.inputs.len())
        .map(|i| ctx.required(i, "inputs"))
        .collect::<Result<Vec<_>, _>>()?;
    let first = *inputs
        .first()
        .ok_or_else(|| ctx.err("needs at least one input"))?;
    let axis = if ctx.opset < 4 {
        ctx.attr_i("axis", 1)?
    } else {
        ctx.attr_i_required("axis")?
    };
    let axis = ctx.axis("axis", axis, ctx.rank(first))?;
    ctx.node(Op::Concat { axis }, inputs)
}

/// Sizes come from the `split` attribute before opset 13 and the `split` input after; without
/// them the axis is cut into equal parts, one per output (opset 18: `num_outputs` parts, the
/// last one smaller when the axis does not divide evenly).
pub(crate) fn split(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "input")?;
    let axis = ctx.axis("axis", ctx.attr_i("axis", 0)?, ctx.rank(x))?;
    let dim = ctx.ty(x).dims()[axis];
    let given = if ctx.opset < 13 {
        ctx.attr_ints("split")?
    } else {
        ctx.known_i64s(1, "split")?
    };
    let sizes = match given {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v).ok().filter(|&v| v <= dim))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ctx.err(format!(
                    "split sizes {s:?} do not fit axis {axis} of size {dim}"
                ))
            })?,
        None => {
            let num_outputs = if ctx.opset >= 18 {
                ctx.attr("num_outputs")
                    .map(|_| ctx.attr_i("num_outputs", 0))
                    .transpose()?
            } else {
                None
            };
            let parts = num_outputs.unwrap_or(ctx.proto.output.len() as i64);
            if !(1..=MAX_SIZE_ATTR).contains(&parts) {
                return Err(ctx.err(format!(
                    "cannot split axis {axis} of size {dim} into {parts} parts"
                )));
            }
            let parts = parts as usize;
            if dim.is_multiple_of(parts) {
                vec![dim / parts; parts]
            } else if num_outputs.is_some() {
                let chunk = dim.div_ceil(parts);
                let last = dim.checked_sub(chunk * (parts - 1)).ok_or_else(|| {
                    ctx.err(format!(
                        "cannot split axis {axis} of size {dim} into {parts} parts"
                    ))
                })?;
                let mut sizes = vec![chunk; parts - 1];
                sizes.push(last);
                sizes
            } else {
                return Err(ctx.err(format!(
                    "axis {axis} of size {dim} does not split evenly into {parts} outputs"
                )));
            }
        }
    };
    if sizes.len() != ctx.proto.output.len() {
        return Err(ctx.err(format!(
            "{} split sizes for {} outputs",
            sizes.len(),
            ctx.proto.output.len()
        )));
    }
    ctx.node(Op::Split { axis, sizes }, vec![x])
}

/// `axis` may be negative from opset 11 and may equal the rank.
pub(crate) fn flatten(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "input")?;
    let rank = ctx.rank(x);
    let axis = ctx.attr_i("axis", 1)?;
    // Negative axes count from the input's rank, yet `rank` itself is a valid axis.
    let normalized = if axis < 0 {
        axis.checked_add(rank as i64)
    } else {
        Some(axis)
    };
    let axis = normalized
        .filter(|a| (0..=rank as i64).contains(a))
        .ok_or_else(|| ctx.attr_err("axis", format!("{axis} is out of range for rank {rank}")))?
        as usize;
    ctx.node(Op::Flatten { axis }, vec![x])
}

/// The target shape is an attribute before opset 5 and an input after, often computed from
/// other shapes (the IR knows such values at build time).
pub(crate) fn reshape(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let shape = if ctx.opset < 5 {
        ctx.attr_ints("shape")?
            .ok_or_else(|| ctx.attr_err("shape", "is required"))?
    } else {
        ctx.known_i64s(1, "shape")?
            .ok_or_else(|| ctx.err("input 1 (shape) is missing"))?
    };
    // Bound the target before the IR multiplies it out.
    let mut numel: u64 = 1;
    for &s in &shape {
        if s < -1 || s > MAX_DIM as i64 {
            return Err(ctx.err(format!("invalid target shape {shape:?}")));
        }
        numel = numel.saturating_mul(s.max(1) as u64);
    }
    if numel > MAX_NUMEL {
        return Err(ctx.err(format!("target shape {shape:?} has too many elements")));
    }
    let allow_zero = ctx.attr_bool("allowzero", false)?;
    ctx.node(Op::Reshape { shape, allow_zero }, vec![x])
}

/// The default permutation reverses the dims.
pub(crate) fn transpose(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let rank = ctx.rank(x);
    let perm = match ctx.attr_ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&v| usize::try_from(v).ok().filter(|&v| v < rank))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ctx.attr_err("perm", format!("{p:?} is not a permutation of 0..{rank}"))
            })?,
    };
    ctx.node(Op::Transpose { perm }, vec![x])
}

/// Axes: attribute before opset 13, optional input after. None means every dim of size 1.
pub(crate) fn squeeze(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let axes = if ctx.opset < 13 {
        ctx.attr_ints("axes")?
    } else {
        ctx.known_i64s(1, "axes")?
    };
    let axes = ctx.axes("axes", &axes.unwrap_or_default(), ctx.rank(x))?;
    ctx.node(Op::Squeeze { axes }, vec![x])
}

/// Axes (required) index the output, whose rank is the input's plus the number of axes.
pub(crate) fn unsqueeze(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let axes = if ctx.opset < 13 {
        ctx.attr_ints("axes")?
            .ok_or_else(|| ctx.attr_err("axes", "is required"))?
    } else {
        ctx.known_i64s(1, "axes")?
            .ok_or_else(|| ctx.err("input 1 (axes) is missing"))?
    };
    let axes = ctx.axes("axes", &axes, ctx.rank(x) + axes.len())?;
    ctx.node(Op::Unsqueeze { axes }, vec![x])
}

/// Constant mode only. Pads and value are attributes before opset 11 (`paddings` in opset 1)
/// and inputs after; opset 18 adds `axes`, which selects the dims the pads apply to.
pub(crate) fn pad(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let mode = ctx.attr_str("mode")?.unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(ctx.attr_err(
            "mode",
            format!("pad mode '{mode}' is not supported (only 'constant')"),
        ));
    }
    let rank = ctx.rank(x);
    let (pads, value, axes) = if ctx.opset < 11 {
        let name = if ctx.opset < 2 { "paddings" } else { "pads" };
        let pads = ctx
            .attr_ints(name)?
            .ok_or_else(|| ctx.attr_err(name, "is required"))?;
        (pads, ctx.attr_f("value", 0.0)?, None)
    } else {
        let pads = ctx
            .known_i64s(1, "pads")?
            .ok_or_else(|| ctx.err("input 1 (pads) is missing"))?;
        let value = ctx.known_scalar(2, "constant_value")?.unwrap_or(0.0);
        let axes = if ctx.opset >= 18 {
            ctx.known_i64s(3, "axes")?
        } else {
            None
        };
        (pads, value, axes)
    };
    if let Some(p) = pads
        .iter()
        .find(|p| p.unsigned_abs() > MAX_SIZE_ATTR as u64)
    {
        return Err(ctx.err(format!("pad {p} is too large")));
    }
    let pads = match axes {
        None => pads,
        Some(axes) => {
            let n = axes.len();
            if pads.len() != 2 * n {
                return Err(ctx.err(format!("{} pads for {n} axes", pads.len())));
            }
            let mut full = vec![0; 2 * rank];
            let mut seen = vec![false; rank];
            for (j, &a) in axes.iter().enumerate() {
                let a = ctx.axis("axes", a, rank)?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(ctx.err(format!("axes {axes:?} repeat an axis")));
                }
                (full[a], full[a + rank]) = (pads[j], pads[j + n]);
            }
            full
        }
    };
    if pads.len() == 2 * rank {
        let dims = ctx
            .ty(x)
            .dims()
            .iter()
            .enumerate()
            .map(|(i, &d)| d as i64 + pads[i] + pads[i + rank]);
        let numel = dims.fold(1u64, |acc, d| acc.saturating_mul(d.max(0) as u64));
        if numel > MAX_NUMEL {
            return Err(ctx.err(format!("pads {pads:?} make the output too large")));
        }
    }
    ctx.node(Op::Pad { pads, value }, vec![x])
}

/// Opset 15 `start`/`end` select a range of dims, negative from the end, clamped to the rank.
pub(crate) fn shape(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let rank = ctx.rank(x) as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(rank) } else { v }).clamp(0, rank) as usize;
    let start = clamp(ctx.attr_i("start", 0)?);
    let end = clamp(ctx.attr_i("end", rank)?).max(start);
    ctx.node(Op::Shape { start, end }, vec![x])
}

pub(crate) fn gather(ctx: &NodeCtx) -> R {
    let (data, indices) = (ctx.required(0, "data")?, ctx.required(1, "indices")?);
    let axis = ctx.axis("axis", ctx.attr_i("axis", 0)?, ctx.rank(data))?;
    ctx.node(Op::Gather { axis }, vec![data, indices])
}

/// Attributes before opset 10 (no steps), inputs after; axes default to 0..n, steps to 1.
pub(crate) fn slice(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        let starts = ctx
            .attr_ints("starts")?
            .ok_or_else(|| ctx.attr_err("starts", "is required"))?;
        let ends = ctx
            .attr_ints("ends")?
            .ok_or_else(|| ctx.attr_err("ends", "is required"))?;
        (starts, ends, ctx.attr_ints("axes")?, None)
    } else {
        let starts = ctx
            .known_i64s(1, "starts")?
            .ok_or_else(|| ctx.err("input 1 (starts) is missing"))?;
        let ends = ctx
            .known_i64s(2, "ends")?
            .ok_or_else(|| ctx.err("input 2 (ends) is missing"))?;
        (
            starts,
            ends,
            ctx.known_i64s(3, "axes")?,
            ctx.known_i64s(4, "steps")?,
        )
    };
    let rank = ctx.rank(x);
    let axes = match axes {
        None => (0..starts.len()).collect(),
        Some(a) => a
            .iter()
            .map(|&v| ctx.axis("axes", v, rank))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    ctx.node(
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        },
        vec![x],
    )
}

pub(crate) fn cast(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "input")?;
    let to = ctx.attr_i_required("to")?;
    let code =
        i32::try_from(to).map_err(|_| ctx.attr_err("to", format!("unknown type code {to}")))?;
    let to = dtype_from_onnx(code).ok_or_else(|| {
        ctx.attr_err(
            "to",
            format!("casting to {} is not supported", onnx_type_name(code)),
        )
    })?;
    ctx.node(Op::Cast { to }, vec![x])
}

/// Axes: attribute before opset 18, optional input after. No axes reduces everything, unless
/// `noop_with_empty_axes` (opset 18) makes the node an identity.
pub(crate) fn reduce_mean(ctx: &NodeCtx) -> R {
    let x = ctx.required(0, "data")?;
    let keep_dims = ctx.attr_bool("keepdims", true)?;
    let axes = if ctx.opset < 18 {
        ctx.attr_ints("axes")?
    } else {
        ctx.known_i64s(1, "axes")?
    };
    let axes = axes.unwrap_or_default();
    if axes.is_empty() && ctx.opset >= 18 && ctx.attr_bool("noop_with_empty_axes", false)? {
        return unary(ctx, Op::Identity);
    }
    let axes = ctx.axes("axes", &axes, ctx.rank(x))?;
    ctx.node(Op::ReduceMean { axes, keep_dims }, vec![x])
}

/// The shape input must be known; the value defaults to a float 0.
pub(crate) fn constant_of_shape(ctx: &NodeCtx) -> R {
    let shape = ctx
        .known_i64s(0, "input")?
        .ok_or_else(|| ctx.err("input 0 (shape) is missing"))?;
    let shape = checked_dims(&shape).map_err(|m| ctx.err(m))?;
    let value = ctx
        .attr_tensor_value("value")?
        .unwrap_or_else(|| Tensor::scalar_f32(0.0));
    if value.numel() != 1 {
        return Err(ctx.attr_err(
            "value",
            format!("must have one element, has shape {}", value.shape()),
        ));
    }
    ctx.node(Op::ConstantOfShape { shape, value }, Vec::new())
}

/// A `Constant` node becomes a graph constant (sparse and string values are refused earlier).
pub(crate) fn constant(ctx: &NodeCtx) -> R {
    let value = if let Some(t) = ctx.attr_tensor_value("value")? {
        t
    } else if ctx.attr("value_float").is_some() {
        Tensor::scalar_f32(ctx.attr_f("value_float", 0.0)?)
    } else if let Some(v) = ctx.attr_floats("value_floats")? {
        Tensor::from_f32(&[v.len()], v)
    } else if ctx.attr("value_int").is_some() {
        Tensor::from_i64(&[], vec![ctx.attr_i("value_int", 0)?])
    } else if let Some(v) = ctx.attr_ints("value_ints")? {
        Tensor::from_i64(&[v.len()], v)
    } else {
        return Err(ctx.err("has no value attribute"));
    };
    Ok(Lowered::Constant(value))
}
